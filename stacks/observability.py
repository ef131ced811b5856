"""Dashboards and alert policies for what the stack deploys, built from the same config.

Every chart and rule is PromQL over Cloud Monitoring: Managed Prometheus series from the
PodMonitorings (vLLM's and the chat app's /metrics, `job` = the PodMonitoring's name), GKE's
kube state metrics (on by default in Autopilot) and the built-in GKE and Cloud Run metrics.
docs/observability.md lists them.
"""

from __future__ import annotations

from typing import Any

from components.alerts import AlertRule, ServingAlerts, ServingAlertsArgs
from components.chat_app import APP_NAME
from components.dashboard import Chart, Series, ServingDashboard, ServingDashboardArgs
from components.gemma_on_gke import CONTAINER_NAME, QUEUE_METRIC, SERVICE_NAME
from stacks.platform import Platform

# PromQL's rate window: four scrapes at the PodMonitorings' 30 s interval.
WINDOW = "5m"
PENDING_ALERT_S = 1800
# 5xx responses above this share of all responses, sustained, page someone.
ERROR_RATIO = 0.05
ERROR_ALERT_S = 600
# A message Firestore has not confirmed after this long means the writer is stuck.
STUCK_WRITE_S = 300


def _quantiles(metric: str, selector: str, by: str = "le") -> tuple[Series, ...]:
    rate = f"rate({metric}_bucket{{{selector}}}[{WINDOW}])"
    return tuple(
        Series(
            f"histogram_quantile({q}, sum by ({by}) ({rate}))",
            f"p{round(q * 100)}" + (" ${labels.backend}" if "backend" in by else ""),
        )
        for q in (0.5, 0.95)
    )


def gke_gemma_charts(namespace: str) -> list[Chart]:
    """vLLM on GKE: tokens, latency, queue, GPUs, errors and pods."""
    sel = f'namespace="{namespace}",job="{SERVICE_NAME}"'
    pods = f'namespace="{namespace}",pod=~"{SERVICE_NAME}-.+"'
    return [
        Chart(
            "Tokens per second",
            (
                Series(f"sum(rate(vllm:generation_tokens_total{{{sel}}}[{WINDOW}]))", "generated"),
                Series(f"sum(rate(vllm:prompt_tokens_total{{{sel}}}[{WINDOW}]))", "prompt"),
            ),
            unit="1/s",
        ),
        Chart("Time to first token", _quantiles("vllm:time_to_first_token_seconds", sel), unit="s"),
        Chart(
            "Queue depth (the autoscaler's signal: waiting per pod)",
            (
                Series(f"sum({QUEUE_METRIC}{{{sel}}})", "waiting"),
                Series(f"avg({QUEUE_METRIC}{{{sel}}})", "waiting per pod"),
                Series(f"sum(vllm:num_requests_running{{{sel}}})", "running"),
            ),
        ),
        Chart(
            "GPU utilization",
            (
                Series(
                    "avg by (pod_name) (kubernetes_io:container_accelerator_duty_cycle"
                    f'{{monitored_resource="k8s_container",namespace_name="{namespace}",'
                    f'container_name="{CONTAINER_NAME}"}})',
                    "${labels.pod_name}",
                ),
            ),
            unit="%",
        ),
        Chart(
            "Errors per second",
            (
                Series(
                    f'sum(rate(http_requests_total{{{sel},status="5xx"}}[{WINDOW}]))', "HTTP 5xx"
                ),
                Series(
                    f'sum(rate(vllm:request_success_total{{{sel},finished_reason="abort"}}'
                    f"[{WINDOW}]))",
                    "aborted",
                ),
            ),
            unit="1/s",
        ),
        Chart(
            "Pods",
            (
                Series(
                    "sum(kube_deployment_status_replicas_available"
                    f'{{namespace="{namespace}",deployment="{SERVICE_NAME}"}})',
                    "available",
                ),
                Series(f'sum(kube_pod_status_phase{{{pods},phase="Pending"}})', "Pending"),
            ),
        ),
    ]


def cloud_run_selector(services: list[str]) -> str:
    names = "|".join(services)
    return f'monitored_resource="cloud_run_revision",service_name=~"{names}"'


def cloud_run_charts(service: str) -> list[Chart]:
    """A Cloud Run GPU service, from Cloud Run's built-in metrics."""
    sel = cloud_run_selector([service])
    return [
        Chart(
            "Requests per second by response class",
            (
                Series(
                    "sum by (response_code_class) "
                    f"(rate(run_googleapis_com:request_count{{{sel}}}[{WINDOW}]))",
                    "${labels.response_code_class}",
                ),
            ),
            unit="1/s",
        ),
        Chart(
            "Request latency (whole replies)",
            _quantiles("run_googleapis_com:request_latencies", sel),
            unit="ms",
        ),
        Chart(
            "Instances",
            (
                Series(
                    f"sum by (state) (run_googleapis_com:container_instance_count{{{sel}}})",
                    "${labels.state}",
                ),
            ),
        ),
        Chart(
            "GPU utilization",
            _quantiles("run_googleapis_com:container_gpu_utilizations", sel),
            unit="10^2.%",
        ),
        Chart(
            "Errors per second",
            (
                Series(
                    "sum(rate(run_googleapis_com:request_count"
                    f'{{{sel},response_code_class="5xx"}}[{WINDOW}]))',
                    "HTTP 5xx",
                ),
            ),
            unit="1/s",
        ),
    ]


def chat_charts(namespace: str) -> list[Chart]:
    """The chat app: replies per backend as users see them, and the history writer."""
    sel = f'namespace="{namespace}",job="{APP_NAME}"'
    return [
        Chart(
            "Messages per second",
            (
                Series(
                    f"sum by (backend, outcome) (rate(chat:messages_total{{{sel}}}[{WINDOW}]))",
                    "${labels.backend} ${labels.outcome}",
                ),
            ),
            unit="1/s",
        ),
        Chart(
            "Time to first token by backend",
            _quantiles("chat:time_to_first_token_seconds", sel, by="le, backend"),
            unit="s",
        ),
        Chart(
            "History write failures per second",
            (
                Series(
                    f"sum(rate(chat:history_write_failures_total{{{sel}}}[{WINDOW}]))",
                    "failed commits",
                ),
            ),
            unit="1/s",
        ),
        Chart(
            "History backlog",
            (
                Series(f"sum(chat:history_pending_writes{{{sel}}})", "pending messages"),
                Series(f"max(chat:history_oldest_pending_seconds{{{sel}}})", "oldest (s)"),
            ),
        ),
        Chart(
            "Replies streaming",
            (
                Series(
                    f"sum by (backend) (chat:num_requests_running{{{sel}}})", "${labels.backend}"
                ),
            ),
        ),
    ]


def alert_rules(platform: Platform) -> list[AlertRule]:
    """The rules for what is deployed: Gemma Pending, 5xx rates, stuck history writes."""
    config = platform.config
    namespace = config.namespace
    rules = []
    if config.gke_gemma.enabled and platform.gke is not None:
        sel = f'namespace="{namespace}",job="{SERVICE_NAME}"'
        rules += [
            AlertRule(
                slug="gemma-pending",
                title="GKE Gemma pod Pending for 30 minutes",
                query=(
                    "max by (pod) (kube_pod_status_phase"
                    f'{{namespace="{namespace}",pod=~"{SERVICE_NAME}-.+",phase="Pending"}}) > 0'
                ),
                for_seconds=PENDING_ALERT_S,
                runbook=(
                    "A vLLM pod has waited over 30 minutes for a node: usually no L4 capacity "
                    "in the region, or the L4 quota. Chat still works with Gemini. See why "
                    "(after `pulumi stack output clusterCredentialsCommand`): "
                    "`pulumi stack output gemmaPendingCommand`. See docs/observability.md."
                ),
            ),
            AlertRule(
                slug="gemma-5xx",
                title="GKE Gemma 5xx rate above 5%",
                query=(
                    f'sum(rate(http_requests_total{{{sel},status="5xx"}}[{WINDOW}])) / '
                    f"sum(rate(http_requests_total{{{sel}}}[{WINDOW}])) > {ERROR_RATIO}"
                ),
                for_seconds=ERROR_ALERT_S,
                runbook=(
                    "vLLM on GKE answers more than 5% of requests with a 5xx. Read its logs: "
                    f"`kubectl -n {namespace} logs deploy/{SERVICE_NAME} --tail=200`."
                ),
                severity="ERROR",
            ),
        ]
    services = [s.name for s in config.enabled_cloud_run_services]
    if services:
        sel = cloud_run_selector(services)
        rules.append(
            AlertRule(
                slug="cloud-run-5xx",
                title="Cloud Run Gemma 5xx rate above 5%",
                query=(
                    "sum by (service_name) (rate(run_googleapis_com:request_count"
                    f'{{{sel},response_code_class="5xx"}}[{WINDOW}])) / '
                    "sum by (service_name) (rate(run_googleapis_com:request_count"
                    f"{{{sel}}}[{WINDOW}])) > {ERROR_RATIO}"
                ),
                for_seconds=ERROR_ALERT_S,
                runbook=(
                    "A Cloud Run Gemma service answers more than 5% of requests with a 5xx "
                    "(the incident names it). Read its logs: `gcloud run services logs read "
                    f"SERVICE --region {config.region} --project {config.project}`."
                ),
                severity="ERROR",
            )
        )
    if platform.chat is not None:
        rules.append(
            AlertRule(
                slug="chat-history-stuck",
                title="Chat history writes stuck for 5 minutes",
                query=(
                    "max(chat:history_oldest_pending_seconds"
                    f'{{namespace="{namespace}",job="{APP_NAME}"}}) > {STUCK_WRITE_S}'
                ),
                for_seconds=STUCK_WRITE_S,
                runbook=(
                    "The chat app holds messages Firestore has not accepted for over 5 minutes "
                    "(they are kept in memory and retried; a restart loses them). Read why: "
                    f"`kubectl -n {namespace} logs deploy/{APP_NAME} | grep 'Firestore write'`."
                ),
                severity="ERROR",
            )
        )
    return rules


def deploy_observability(platform: Platform) -> dict[str, Any]:
    """Create a dashboard per deployed backend and the chat app, and the alert policies."""
    config = platform.config
    after_api = tuple(platform.services.for_apis("monitoring"))
    boards: dict[str, tuple[str, list[Chart]]] = {}
    if config.gke_gemma.enabled and platform.gke is not None:
        boards["gemma-gke"] = ("Gemma on GKE (vLLM)", gke_gemma_charts(config.namespace))
    for service in config.enabled_cloud_run_services:
        boards[service.name] = (
            f"Gemma on Cloud Run: {service.name}",
            cloud_run_charts(service.name),
        )
    if platform.chat is not None:
        boards["chat-app"] = ("Gemma chat app", chat_charts(config.namespace))
    urls = {
        key: ServingDashboard(
            f"dashboard-{key}",
            ServingDashboardArgs(
                project_id=config.project,
                title=f"{title} [{config.ids.suffix}]",
                charts=charts,
                depends_on=after_api,
            ),
        ).url
        for key, (title, charts) in boards.items()
    }
    outputs: dict[str, Any] = {}
    if urls:
        outputs["dashboardUrls"] = urls
    rules = alert_rules(platform)
    if rules:
        ServingAlerts(
            "alerts",
            ServingAlertsArgs(
                project_id=config.project,
                rules=rules,
                email=config.monitoring.alert_email,
                label=config.ids.suffix,
                depends_on=after_api,
            ),
        )
    return outputs
