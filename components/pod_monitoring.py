"""Google Managed Prometheus scraping of a workload's /metrics: its PodMonitoring, and the peer
its NetworkPolicy must admit.

GKE Autopilot runs managed collection by default: collectors in the `gmp-system` namespace
scrape what a PodMonitoring (monitoring.googleapis.com/v1) selects and write the samples
to Cloud Monitoring as `prometheus.googleapis.com/<name>/<kind>`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as kubernetes

POD_MONITORING_API = "monitoring.googleapis.com/v1"
COLLECTOR_NAMESPACE = "gmp-system"
SCRAPE_INTERVAL = "30s"
# Managed collection asks for text format; the scrape must end well inside the interval.
SCRAPE_TIMEOUT = "10s"


def pod_monitoring(
    name: str,
    *,
    object_name: str,
    namespace: pulumi.Input[str],
    labels: Mapping[str, str],
    port: str,
    opts: pulumi.ResourceOptions,
    path: str = "/metrics",
) -> kubernetes.apiextensions.CustomResource:
    """A PodMonitoring that scrapes `path` on the named container `port` of pods with `labels`."""
    return kubernetes.apiextensions.CustomResource(
        name,
        api_version=POD_MONITORING_API,
        kind="PodMonitoring",
        metadata=kubernetes.meta.v1.ObjectMetaArgs(
            name=object_name, namespace=namespace, labels=dict(labels)
        ),
        spec={
            "selector": {"matchLabels": dict(labels)},
            "endpoints": [
                {
                    "port": port,
                    "path": path,
                    "interval": SCRAPE_INTERVAL,
                    "timeout": SCRAPE_TIMEOUT,
                }
            ],
        },
        opts=opts,
    )


def prometheus_pod_metric(metric: str) -> str:
    """How the Custom Metrics Stackdriver Adapter names a Managed Prometheus gauge to an HPA's
    `pods` metric."""
    return f"prometheus.googleapis.com|{metric}|gauge"


def collector_peer() -> kubernetes.networking.v1.NetworkPolicyPeerArgs:
    """The managed collectors' pods, which a NetworkPolicy must let reach the metrics port."""
    return kubernetes.networking.v1.NetworkPolicyPeerArgs(
        namespace_selector=kubernetes.meta.v1.LabelSelectorArgs(
            match_labels={"kubernetes.io/metadata.name": COLLECTOR_NAMESPACE}
        )
    )
