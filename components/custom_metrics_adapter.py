"""Google's Custom Metrics Stackdriver Adapter, so an HPA can scale on Managed Prometheus metrics.

This is the route the Managed Prometheus HPA guide and GKE's "Optimize Pod autoscaling based
on metrics" tutorial document, on every GKE version: the adapter serves the Kubernetes
custom metrics API (custom.metrics.k8s.io) from Cloud Monitoring, where an HPA names a
Prometheus gauge as `prometheus.googleapis.com|<metric>|gauge`. Objects follow the
adapter's `deploy/production/adapter_new_resource_model.yaml` (GoogleCloudPlatform/
k8s-stackdriver), hardened: non-root on an unprivileged port, read-only root filesystem,
and its own Workload Identity (made by the stack) with roles/monitoring.viewer only. The
external metrics API is left out: nothing here scales on metrics of non-Kubernetes resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as kubernetes

from components.pod_security import restricted_container, restricted_pod

ADAPTER_IMAGE = "gcr.io/gke-release/custom-metrics-stackdriver-adapter:v0.15.1-gke.0"
ADAPTER_NAMESPACE = "custom-metrics"
ADAPTER_NAME = "custom-metrics-stackdriver-adapter"
# The upstream manifest listens on 443, which needs root; the Service still offers 443.
SECURE_PORT = 6443
# The adapter's two custom metrics API versions, as its upstream manifest registers them.
CUSTOM_METRICS_VERSIONS = (("v1beta1", 100), ("v1beta2", 200))


@dataclass(frozen=True)
class CustomMetricsAdapterArgs:
    """The adapter's namespace and its Kubernetes service account, whose Workload Identity
    principal holds roles/monitoring.viewer (both made by the stack, ADAPTER_NAMESPACE and
    ADAPTER_NAME by convention)."""

    k8s_provider: pulumi.ProviderResource
    namespace: pulumi.Input[str]
    ksa_name: pulumi.Input[str]
    image: str = ADAPTER_IMAGE
    depends_on: Sequence[pulumi.Resource] = ()


class CustomMetricsAdapter(pulumi.ComponentResource):
    """The adapter's RBAC, Deployment, Service, NetworkPolicy and APIServices."""

    deployment: kubernetes.apps.v1.Deployment
    api_services: list[kubernetes.apiregistration.v1.APIService]

    def __init__(
        self,
        name: str,
        args: CustomMetricsAdapterArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:gke:CustomMetricsAdapter", name, None, opts)
        k8s = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=list(args.depends_on)
        )
        labels = {"k8s-app": ADAPTER_NAME, "app.kubernetes.io/part-of": "gemma-stack"}
        subject = kubernetes.rbac.v1.SubjectArgs(
            kind="ServiceAccount", name=args.ksa_name, namespace=args.namespace
        )

        def cluster_binding(suffix: str, role: str) -> kubernetes.rbac.v1.ClusterRoleBinding:
            return kubernetes.rbac.v1.ClusterRoleBinding(
                f"{name}-{suffix}",
                metadata=kubernetes.meta.v1.ObjectMetaArgs(name=f"custom-metrics:{suffix}"),
                role_ref=kubernetes.rbac.v1.RoleRefArgs(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role
                ),
                subjects=[subject],
                opts=k8s,
            )

        # Delegated authentication and authorization of the API server's calls.
        cluster_binding("auth-delegator", "system:auth-delegator")
        kubernetes.rbac.v1.RoleBinding(
            f"{name}-auth-reader",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name="custom-metrics-auth-reader", namespace="kube-system"
            ),
            role_ref=kubernetes.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io",
                kind="Role",
                name="extension-apiserver-authentication-reader",
            ),
            subjects=[subject],
            opts=k8s,
        )
        # Reads pods and nodes to map Cloud Monitoring series onto Kubernetes objects.
        reader = kubernetes.rbac.v1.ClusterRole(
            f"{name}-resource-reader",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name="custom-metrics-resource-reader"),
            rules=[
                kubernetes.rbac.v1.PolicyRuleArgs(
                    api_groups=[""],
                    resources=["pods", "nodes", "nodes/stats"],
                    verbs=["get", "list", "watch"],
                )
            ],
            opts=k8s,
        )
        kubernetes.rbac.v1.ClusterRoleBinding(
            f"{name}-resource-reader-binding",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(name="custom-metrics-resource-reader"),
            role_ref=kubernetes.rbac.v1.RoleRefArgs(
                api_group="rbac.authorization.k8s.io",
                kind="ClusterRole",
                name=reader.metadata.apply(lambda m: m.name or "custom-metrics-resource-reader"),
            ),
            subjects=[subject],
            opts=k8s,
        )

        # The generic API server answers /readyz and /livez without authentication.
        def probe(path: str, period: int) -> kubernetes.core.v1.ProbeArgs:
            return kubernetes.core.v1.ProbeArgs(
                http_get=kubernetes.core.v1.HTTPGetActionArgs(
                    path=path, port="https", scheme="HTTPS"
                ),
                period_seconds=period,
                timeout_seconds=5,
                failure_threshold=3,
            )

        resources = {"cpu": "250m", "memory": "400Mi", "ephemeral-storage": "100Mi"}
        self.deployment = kubernetes.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=ADAPTER_NAME, namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.apps.v1.DeploymentSpecArgs(
                replicas=1,
                selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=kubernetes.core.v1.PodTemplateSpecArgs(
                    metadata=kubernetes.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=kubernetes.core.v1.PodSpecArgs(
                        service_account_name=args.ksa_name,
                        # It serves an API for the API server, so it needs its own token.
                        automount_service_account_token=True,
                        security_context=restricted_pod(),
                        containers=[
                            kubernetes.core.v1.ContainerArgs(
                                name="adapter",
                                image=args.image,
                                command=[
                                    "/adapter",
                                    "--use-new-resource-model=true",
                                    "--fallback-for-container-metrics=true",
                                    f"--secure-port={SECURE_PORT}",
                                    "--cert-dir=/tmp/certs",
                                ],
                                ports=[
                                    kubernetes.core.v1.ContainerPortArgs(
                                        name="https", container_port=SECURE_PORT, protocol="TCP"
                                    )
                                ],
                                resources=kubernetes.core.v1.ResourceRequirementsArgs(
                                    requests=dict(resources), limits=dict(resources)
                                ),
                                readiness_probe=probe("/readyz", 10),
                                liveness_probe=probe("/livez", 20),
                                security_context=restricted_container(),
                                volume_mounts=[
                                    kubernetes.core.v1.VolumeMountArgs(
                                        name="tmp",
                                        mount_path="/tmp",  # noqa: S108
                                    )
                                ],
                                image_pull_policy="Always",
                            )
                        ],
                        volumes=[
                            kubernetes.core.v1.VolumeArgs(
                                name="tmp",
                                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                                    size_limit="64Mi"
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=k8s,
        )
        service = kubernetes.core.v1.Service(
            f"{name}-service",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=ADAPTER_NAME, namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[
                    kubernetes.core.v1.ServicePortArgs(
                        name="https", port=443, target_port="https", protocol="TCP"
                    )
                ],
            ),
            opts=k8s,
        )
        # Only the API server calls it (from the control plane), on its one port.
        kubernetes.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=ADAPTER_NAME, namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.networking.v1.NetworkPolicySpecArgs(
                pod_selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                policy_types=["Ingress"],
                ingress=[
                    kubernetes.networking.v1.NetworkPolicyIngressRuleArgs(
                        ports=[
                            kubernetes.networking.v1.NetworkPolicyPortArgs(
                                port=SECURE_PORT, protocol="TCP"
                            )
                        ]
                    )
                ],
            ),
            opts=k8s,
        )
        self.api_services = [
            kubernetes.apiregistration.v1.APIService(
                f"{name}-{version}",
                metadata=kubernetes.meta.v1.ObjectMetaArgs(
                    name=f"{version}.custom.metrics.k8s.io", labels=labels
                ),
                spec=kubernetes.apiregistration.v1.APIServiceSpecArgs(
                    group="custom.metrics.k8s.io",
                    version=version,
                    group_priority_minimum=100,
                    version_priority=priority,
                    # The adapter's certificate is self-signed, as upstream deploys it.
                    insecure_skip_tls_verify=True,
                    service=kubernetes.apiregistration.v1.ServiceReferenceArgs(
                        name=ADAPTER_NAME, namespace=args.namespace, port=443
                    ),
                ),
                opts=pulumi.ResourceOptions.merge(
                    k8s, pulumi.ResourceOptions(depends_on=[service, self.deployment])
                ),
            )
            for version, priority in CUSTOM_METRICS_VERSIONS
        ]
        self.register_outputs({})
