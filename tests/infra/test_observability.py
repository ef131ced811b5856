"""Scaling and observing under Pulumi mocks: the HPA and its adapter, PodMonitorings, the
dashboards' JSON, the alert policies, their channel and the outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import promql_parser
import pytest
from prometheus_client import CollectorRegistry

from app.chat import metrics as chat_metrics
from app.chat.history import ChatHistory
from app.inference import metrics as inference_metrics
from components.gemma_on_gke import STARTUP_FAILURE_THRESHOLD, STARTUP_PERIOD_S
from stacks.config import ConfigError
from tests.pulumi_harness import (
    FAKE_PROJECT_NUMBER,
    ProgramRun,
    RecordedResource,
    pod_spec,
    run_program,
    run_program_error,
)

HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
POD_MONITORING = "kubernetes:monitoring.googleapis.com/v1:PodMonitoring"
DASHBOARD = "gcp:monitoring/dashboard:Dashboard"
POLICY = "gcp:monitoring/alertPolicy:AlertPolicy"
CHANNEL = "gcp:monitoring/notificationChannel:NotificationChannel"
QUEUE_METRIC = "prometheus.googleapis.com|vllm:num_requests_waiting|gauge"
# Autopilot's GPU node provisioning, before any probe starts.
GPU_NODE_S = 15 * 60


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    """Pulumi.dev.yaml with every backend on: GKE Gemma (1..2 replicas), Cloud Run, chat."""
    return run_program()


def deployment(run: ProgramRun, name: str) -> RecordedResource:
    return next(d for d in run.of_type(DEPLOYMENT) if d.inputs["metadata"]["name"] == name)


def test_hpa_scales_vllm_on_waiting_requests_per_pod(dev: ProgramRun) -> None:
    (hpa,) = dev.of_type(HPA)
    spec = hpa.inputs["spec"]
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gemma-service",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 2)
    assert spec["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": QUEUE_METRIC},
                "target": {"type": "AverageValue", "averageValue": "4"},
            },
        }
    ]
    # The HPA owns the replica count; `pulumi up` must not reset it.
    assert "replicas" not in deployment(dev, "gemma-service").inputs["spec"]


def test_scale_down_waits_longer_than_a_gpu_pod_takes_to_start(dev: ProgramRun) -> None:
    behavior = dev.one(HPA).inputs["spec"]["behavior"]
    down = behavior["scaleDown"]
    assert down["stabilizationWindowSeconds"] >= GPU_NODE_S + 10 * 60
    assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 600}]
    assert behavior["scaleUp"]["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 120}]
    # The startup probe allows the weights an hour once the container runs.
    assert STARTUP_PERIOD_S * STARTUP_FAILURE_THRESHOLD == 3600


def test_the_adapter_serves_custom_metrics_with_least_privilege(dev: ProgramRun) -> None:
    adapter = deployment(dev, "custom-metrics-stackdriver-adapter")
    assert adapter.inputs["metadata"]["namespace"] == "custom-metrics"
    spec = pod_spec(adapter)
    (container,) = spec["containers"]
    assert container["image"].startswith("gcr.io/gke-release/custom-metrics-stackdriver-adapter:")
    assert "--secure-port=6443" in container["command"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert spec["serviceAccountName"] == "custom-metrics-stackdriver-adapter"
    apis = {
        a.inputs["metadata"]["name"]: a.inputs["spec"]
        for a in dev.of_type("kubernetes:apiregistration.k8s.io/v1:APIService")
    }
    assert set(apis) == {"v1beta1.custom.metrics.k8s.io", "v1beta2.custom.metrics.k8s.io"}
    for api in apis.values():
        assert api["service"] == {
            "name": "custom-metrics-stackdriver-adapter",
            "namespace": "custom-metrics",
            "port": 443,
        }
    principal = (
        f"principal://iam.googleapis.com/projects/{FAKE_PROJECT_NUMBER}/locations/global/"
        "workloadIdentityPools/my-gcp-project.svc.id.goog/subject/ns/custom-metrics/sa/"
        "custom-metrics-stackdriver-adapter"
    )
    roles = {
        b.inputs["role"]
        for b in dev.of_type("gcp:projects/iAMMember:IAMMember")
        if b.inputs["member"] == principal
    }
    assert roles == {"roles/monitoring.viewer"}
    ksa = dev.named("custom-metrics-ksa")
    assert ksa.inputs["metadata"] == {
        "name": "custom-metrics-stackdriver-adapter",
        "namespace": "custom-metrics",
        "labels": {"app.kubernetes.io/part-of": "gemma-stack"},
    }
    assert dev.waits_for(adapter, ksa)


def test_equal_bounds_fix_the_count_without_hpa_or_adapter() -> None:
    run = run_program(
        overrides={"gemma-stack:gkeGemmaMinReplicas": 2, "gemma-stack:gkeGemmaMaxReplicas": 2}
    )
    assert run.of_type(HPA) == []
    assert run.of_type("kubernetes:apiregistration.k8s.io/v1:APIService") == []
    assert deployment(run, "gemma-service").inputs["spec"]["replicas"] == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"gkeGemmaMinReplicas": 3, "gkeGemmaMaxReplicas": 2}, "1 <= min <= max <= 16"),
        ({"gkeGemmaMaxReplicas": 17}, "1 <= min <= max <= 16"),
        ({"gkeGemmaMinReplicas": 0}, "Equal values turn autoscaling off"),
        ({"gkeGemmaQueueTarget": 0}, "gkeGemmaQueueTarget=0 must be at least 1"),
        ({"alertEmail": "oncall"}, "alertEmail='oncall' must be an email address"),
    ],
)
def test_bad_scaling_and_alert_settings_fail_before_any_resource(
    overrides: dict[str, Any], message: str
) -> None:
    error, recorded = run_program_error(
        overrides={f"gemma-stack:{k}": v for k, v in overrides.items()}
    )
    assert isinstance(error, ConfigError)
    assert message in str(error)
    assert recorded == []


@pytest.mark.parametrize(
    ("name", "port_name", "port"), [("gemma-service", "http", 8000), ("chat-app", "metrics", 9090)]
)
def test_managed_prometheus_scrapes_each_workload(
    dev: ProgramRun, name: str, port_name: str, port: int
) -> None:
    monitoring = next(
        m for m in dev.of_type(POD_MONITORING) if m.inputs["metadata"]["name"] == name
    )
    spec = monitoring.inputs["spec"]
    workload = deployment(dev, name)
    assert spec["selector"] == {"matchLabels": workload.inputs["spec"]["selector"]["matchLabels"]}
    assert monitoring.inputs["metadata"]["namespace"] == "gemma-stack"
    (endpoint,) = spec["endpoints"]
    assert endpoint == {
        "port": port_name,
        "path": "/metrics",
        "interval": "30s",
        "timeout": "10s",
    }
    (container,) = pod_spec(workload)["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports[port_name] == port
    if name == "chat-app":
        # The app reads its metrics port from the environment; no Service offers it.
        assert {"name": "METRICS_PORT", "value": "9090"} in container["env"]
        service = next(
            s
            for s in dev.of_type("kubernetes:core/v1:Service")
            if s.inputs["metadata"]["name"] == name
        )
        assert [p["port"] for p in service.inputs["spec"]["ports"]] == [7860]


# --------------------------------------------------------------------------- dashboards

# The fields of the Cloud Monitoring Dashboard API (v1) the dashboards use.
_DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["displayName", "mosaicLayout"],
    "additionalProperties": False,
    "properties": {
        "displayName": {"type": "string", "minLength": 1, "maxLength": 512},
        "mosaicLayout": {
            "type": "object",
            "additionalProperties": False,
            "required": ["columns", "tiles"],
            "properties": {
                "columns": {"type": "integer", "minimum": 1, "maximum": 48},
                "tiles": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["xPos", "yPos", "width", "height", "widget"],
                        "properties": {
                            **{
                                k: {"type": "integer", "minimum": 0}
                                for k in ("xPos", "yPos", "width", "height")
                            },
                            "widget": {
                                "type": "object",
                                "additionalProperties": False,
                                "required": ["title", "xyChart"],
                                "properties": {
                                    "title": {"type": "string", "minLength": 1},
                                    "xyChart": {
                                        "type": "object",
                                        "additionalProperties": False,
                                        "required": ["dataSets"],
                                        "properties": {
                                            "dataSets": {
                                                "type": "array",
                                                "minItems": 1,
                                                "items": {
                                                    "type": "object",
                                                    "additionalProperties": False,
                                                    "required": ["timeSeriesQuery"],
                                                    "properties": {
                                                        "timeSeriesQuery": {
                                                            "type": "object",
                                                            "additionalProperties": False,
                                                            "required": ["prometheusQuery"],
                                                            "properties": {
                                                                "prometheusQuery": {
                                                                    "type": "string"
                                                                },
                                                                "unitOverride": {"type": "string"},
                                                            },
                                                        },
                                                        "plotType": {
                                                            "enum": [
                                                                "LINE",
                                                                "STACKED_AREA",
                                                                "STACKED_BAR",
                                                                "HEATMAP",
                                                            ]
                                                        },
                                                        "targetAxis": {"enum": ["Y1", "Y2"]},
                                                        "legendTemplate": {"type": "string"},
                                                    },
                                                },
                                            },
                                            "yAxis": {
                                                "type": "object",
                                                "properties": {
                                                    "scale": {"enum": ["LINEAR", "LOG10"]},
                                                    "label": {"type": "string"},
                                                },
                                                "additionalProperties": False,
                                            },
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _selectors(node: Any) -> Iterator[Any]:
    """Every VectorSelector in a parsed PromQL expression."""
    if isinstance(node, promql_parser.VectorSelector):
        yield node
        return
    if isinstance(node, promql_parser.MatrixSelector):
        yield node.vector_selector
        return
    for attribute in ("lhs", "rhs", "expr", "param"):
        child = getattr(node, attribute, None)
        if child is not None:
            yield from _selectors(child)
    for arg in getattr(node, "args", None) or ():
        yield from _selectors(arg)


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL query reads (parsing fails loudly on a syntax error)."""
    return {s.name for s in _selectors(promql_parser.parse(query)) if s.name}


def _exported(registry: Any) -> set[str]:
    names = set()
    for family in registry.collect():
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
        if family.type == "histogram":
            names.add(f"{family.name}_bucket")
        if family.type == "counter":
            names.add(f"{family.name}_total")
    return names


# What our apps export (vLLM's own names mirror the inference app's), with the chat app's
# history series (a ChatHistory connects to nothing until used).
_history = CollectorRegistry()
_history.register(chat_metrics.HistoryMetrics(ChatHistory(None, "chat-app-db")))
APP_METRICS = (
    _exported(inference_metrics.REGISTRY) | _exported(chat_metrics.REGISTRY) | _exported(_history)
)
# Series only vLLM, GKE and Cloud Run provide.
PLATFORM_METRICS = {
    "http_requests_total",
    "kube_pod_status_phase",
    "kube_deployment_status_replicas_available",
    "kubernetes_io:container_accelerator_duty_cycle",
    "run_googleapis_com:request_count",
    "run_googleapis_com:request_latencies_bucket",
    "run_googleapis_com:container_instance_count",
    "run_googleapis_com:container_gpu_utilizations_bucket",
}


def dashboards(run: ProgramRun) -> dict[str, dict[str, Any]]:
    return {d.name: json.loads(d.inputs["dashboardJson"]) for d in run.of_type(DASHBOARD)}


def queries(board: dict[str, Any]) -> list[str]:
    return [
        data["timeSeriesQuery"]["prometheusQuery"]
        for tile in board["mosaicLayout"]["tiles"]
        for data in tile["widget"]["xyChart"]["dataSets"]
    ]


def titles(board: dict[str, Any]) -> list[str]:
    return [tile["widget"]["title"] for tile in board["mosaicLayout"]["tiles"]]


def test_one_dashboard_per_backend_and_the_chat_app(dev: ProgramRun) -> None:
    boards = dashboards(dev)
    assert set(boards) == {
        "dashboard-gemma-gke-dashboard",
        "dashboard-gemma3-prebuilt-dashboard",
        "dashboard-chat-app-dashboard",
    }
    gke = boards["dashboard-gemma-gke-dashboard"]
    assert gke["displayName"] == "Gemma on GKE (vLLM) [dev]"
    assert titles(gke) == [
        "Tokens per second",
        "Time to first token",
        "Queue depth (the autoscaler's signal: waiting per pod)",
        "GPU utilization",
        "Errors per second",
        "Pods",
    ]
    assert titles(boards["dashboard-gemma3-prebuilt-dashboard"]) == [
        "Requests per second by response class",
        "Request latency (whole replies)",
        "Instances",
        "GPU utilization",
        "Errors per second",
    ]
    assert titles(boards["dashboard-chat-app-dashboard"]) == [
        "Messages per second",
        "Time to first token by backend",
        "History write failures per second",
        "History backlog",
        "Replies streaming",
    ]


def test_dashboard_json_is_what_the_monitoring_api_takes(dev: ProgramRun) -> None:
    for board in dashboards(dev).values():
        jsonschema.validate(board, _DASHBOARD_SCHEMA)
        cells: set[tuple[int, int]] = set()
        for tile in board["mosaicLayout"]["tiles"]:
            assert tile["xPos"] + tile["width"] <= board["mosaicLayout"]["columns"]
            area = {
                (x, y)
                for x in range(tile["xPos"], tile["xPos"] + tile["width"])
                for y in range(tile["yPos"], tile["yPos"] + tile["height"])
            }
            assert not area & cells, "tiles overlap"
            cells |= area


def test_every_query_parses_and_reads_only_series_that_exist(dev: ProgramRun) -> None:
    for name, board in dashboards(dev).items():
        for query in queries(board):
            names = metric_names(query)
            assert names, query
            unknown = names - APP_METRICS - PLATFORM_METRICS
            assert not unknown, f"{name}: {query} reads {unknown}"
            if "vllm:" in query or "chat:" in query:
                assert 'namespace="gemma-stack"' in query, query


def test_vllm_ttft_percentiles_and_tokens_come_from_vllms_series(dev: ProgramRun) -> None:
    gke = queries(dashboards(dev)["dashboard-gemma-gke-dashboard"])
    sel = 'namespace="gemma-stack",job="gemma-service"'
    assert (
        "histogram_quantile(0.95, sum by (le) "
        f"(rate(vllm:time_to_first_token_seconds_bucket{{{sel}}}[5m])))"
    ) in gke
    assert (
        'sum(rate(vllm:generation_tokens_total{namespace="gemma-stack",job="gemma-service"}[5m]))'
        in gke
    )


def test_the_query_check_catches_a_misspelt_metric() -> None:
    assert metric_names("sum(rate(vllm:generation_token_total[5m]))") - APP_METRICS == {
        "vllm:generation_token_total"
    }
    with pytest.raises(ValueError, match="parenthesis"):
        metric_names("sum(rate(vllm:generation_tokens_total[5m])")


# --------------------------------------------------------------------------- alerts


def policies(run: ProgramRun) -> dict[str, RecordedResource]:
    return {p.name.removeprefix("alerts-"): p for p in run.of_type(POLICY)}


def condition(policy: RecordedResource) -> dict[str, Any]:
    (only,) = policy.inputs["conditions"]
    promql: dict[str, Any] = only["conditionPrometheusQueryLanguage"]
    return promql


def test_alert_policies_cover_pending_gemma_5xx_and_stuck_history(dev: ProgramRun) -> None:
    found = policies(dev)
    assert set(found) == {"gemma-pending", "gemma-5xx", "cloud-run-5xx", "chat-history-stuck"}
    for policy in found.values():
        promql = condition(policy)
        assert metric_names(promql["query"]) <= APP_METRICS | PLATFORM_METRICS
        assert promql["disableMetricValidation"] is True
        assert promql["evaluationInterval"] == "60s"
        assert policy.inputs["documentation"]["mimeType"] == "text/markdown"
        assert policy.inputs["displayName"].endswith(" [dev]")
    pending = condition(found["gemma-pending"])
    assert pending["duration"] == "1800s"
    assert pending["query"] == (
        'max by (pod) (kube_pod_status_phase{namespace="gemma-stack",'
        'pod=~"gemma-service-.+",phase="Pending"}) > 0'
    )
    assert "gemmaPendingCommand" in found["gemma-pending"].inputs["documentation"]["content"]
    cloud_run = condition(found["cloud-run-5xx"])["query"]
    assert 'service_name=~"gemma3-prebuilt"' in cloud_run
    assert 'response_code_class="5xx"' in cloud_run
    assert "> 0.05" in cloud_run
    stuck = condition(found["chat-history-stuck"])
    assert stuck["query"] == (
        'max(chat:history_oldest_pending_seconds{namespace="gemma-stack",job="chat-app"}) > 300'
    )


def test_without_an_alert_email_incidents_stay_in_the_console(dev: ProgramRun) -> None:
    assert dev.of_type(CHANNEL) == []
    assert all(not p.inputs.get("notificationChannels") for p in dev.of_type(POLICY))


def test_alert_email_gets_an_email_channel_on_every_policy() -> None:
    run = run_program(overrides={"gemma-stack:alertEmail": "oncall@example.com"})
    channel = run.one(CHANNEL)
    assert channel.inputs["type"] == "email"
    assert channel.inputs["labels"] == {"email_address": "oncall@example.com"}
    for policy in run.of_type(POLICY):
        assert len(policy.inputs["notificationChannels"]) == 1
        assert run.waits_for(policy, channel)


def test_only_what_is_deployed_is_watched() -> None:
    run = run_program(overrides={"gemma-stack:gkeGemmaEnabled": False})
    assert set(policies(run)) == {"cloud-run-5xx", "chat-history-stuck"}
    assert "gemmaPendingCommand" not in run.outputs
    assert "dashboard-gemma-gke-dashboard" not in dashboards(run)


# --------------------------------------------------------------------------- outputs


def test_outputs_give_the_dashboard_urls_and_the_pending_reason_command(dev: ProgramRun) -> None:
    urls = dev.outputs["dashboardUrls"]
    assert set(urls) == {"gemma-gke", "gemma3-prebuilt", "chat-app"}
    for url in urls.values():
        assert url.startswith("https://console.cloud.google.com/monitoring/dashboards/builder/")
        assert url.endswith("?project=my-gcp-project")
    command = dev.outputs["gemmaPendingCommand"]
    assert "\n" not in command
    assert command.startswith("kubectl -n gemma-stack get events ")
    assert "--field-selector involvedObject.kind=Pod" in command
    assert command.endswith("| grep -E '^TIME|gemma-service-'")


def test_finetuned_cloud_run_logs_can_name_their_traces() -> None:
    service = {"name": "gemma-sql", "flavour": "finetuned", "modelUri": "gs://team-models/sql"}
    run = run_program(overrides={"gemma-stack:cloudRunServices": [service]})
    (deployed,) = run.of_type("gcp:cloudrunv2/service:Service")
    (container,) = deployed.inputs["template"]["containers"]
    envs = {e["name"]: e.get("value") for e in container["envs"]}
    assert envs["GOOGLE_CLOUD_PROJECT"] == "my-gcp-project"
