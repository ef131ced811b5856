"""The GKE Autopilot cluster and a Kubernetes provider that talks to it through gcloud."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.resource_ids import fixed_id_options

RELEASE_CHANNELS = ("RAPID", "REGULAR", "STABLE", "EXTENDED")
# The google provider's own defaults for clusters; Autopilot upgrades can take the whole hour,
# and a shorter timeout leaves Pulumi's state behind the cluster's real one.
CLUSTER_TIMEOUTS = pulumi.CustomTimeouts(create="40m", update="60m", delete="40m")
# What a node needs to run (logging, monitoring, pulling Google's images). Organisations
# created since May 2024 give the default compute account no roles, so nodes get their own.
NODE_ROLES = ("roles/container.defaultNodeServiceAccount",)
NODE_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


@dataclass(frozen=True)
class AutopilotClusterArgs:
    """Where the cluster runs and how it is protected and upgraded."""

    project_id: pulumi.Input[str]
    region: str
    cluster_name: str
    node_account_id: str
    # The stack's image repository, which the nodes pull the chat image from.
    image_repository: gcp.artifactregistry.Repository | None = None
    release_channel: str = "REGULAR"
    deletion_protection: bool = True
    network: str = "default"
    depends_on: Sequence[pulumi.Resource] = ()


def kubeconfig_for(
    cluster_name: pulumi.Input[str],
    endpoint: pulumi.Input[str],
    ca_certificate: pulumi.Input[str],
) -> pulumi.Output[str]:
    """A kubeconfig that authenticates with the gke-gcloud-auth-plugin, so no token is stored."""

    def render(values: list[str]) -> str:
        name, host, ca = values
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": name,
                        "cluster": {
                            "server": f"https://{host}",
                            "certificate-authority-data": ca,
                        },
                    }
                ],
                "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
                "current-context": name,
                "users": [
                    {
                        "name": name,
                        "user": {
                            "exec": {
                                "apiVersion": "client.authentication.k8s.io/v1beta1",
                                "command": "gke-gcloud-auth-plugin",
                                "installHint": (
                                    "Install gke-gcloud-auth-plugin: gcloud components install "
                                    "gke-gcloud-auth-plugin"
                                ),
                                "provideClusterInfo": True,
                                "interactiveMode": "Never",
                            }
                        },
                    }
                ],
            }
        )

    return pulumi.Output.all(cluster_name, endpoint, ca_certificate).apply(render)


class AutopilotCluster(pulumi.ComponentResource):
    """A GKE Autopilot cluster on the default network, plus a provider for its workloads.

    Its nodes run as a dedicated service account, never as the default compute account.
    """

    node_account: gcp.serviceaccount.Account
    cluster: gcp.container.Cluster
    provider: kubernetes.Provider
    name: pulumi.Output[str]
    endpoint: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: AutopilotClusterArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:cluster:AutopilotCluster", name, None, opts)
        if args.release_channel not in RELEASE_CHANNELS:
            raise ValueError(
                f"AutopilotCluster {name!r}: release channel {args.release_channel!r} must be "
                f"one of {', '.join(RELEASE_CHANNELS)}."
            )
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.node_account = gcp.serviceaccount.Account(
            f"{name}-nodes",
            project=args.project_id,
            account_id=args.node_account_id,
            display_name=f"GKE nodes of {args.cluster_name}",
            opts=fixed_id_options(child),
        )
        node_member = self.node_account.member
        grants: list[pulumi.Resource] = [
            gcp.projects.IAMMember(
                f"{name}-nodes-{role.rsplit('/', 1)[-1].lower()}",
                project=args.project_id,
                role=role,
                member=node_member,
                opts=child,
            )
            for role in NODE_ROLES
        ]
        if args.image_repository is not None:
            grants.append(
                gcp.artifactregistry.RepositoryIamMember(
                    f"{name}-nodes-image-reader",
                    project=args.image_repository.project,
                    location=args.image_repository.location,
                    repository=args.image_repository.name,
                    role="roles/artifactregistry.reader",
                    member=node_member,
                    opts=child,
                )
            )
        self.cluster = gcp.container.Cluster(
            f"{name}-cluster",
            project=args.project_id,
            name=args.cluster_name,
            location=args.region,
            enable_autopilot=True,
            network=args.network,
            release_channel=gcp.container.ClusterReleaseChannelArgs(channel=args.release_channel),
            # On Autopilot this is where the nodes' service account is set.
            cluster_autoscaling=gcp.container.ClusterClusterAutoscalingArgs(
                auto_provisioning_defaults=gcp.container.ClusterClusterAutoscalingAutoProvisioningDefaultsArgs(
                    service_account=self.node_account.email, oauth_scopes=list(NODE_SCOPES)
                )
            ),
            deletion_protection=args.deletion_protection,
            resource_labels={"part-of": "gemma-stack"},
            opts=fixed_id_options(
                pulumi.ResourceOptions(
                    parent=self,
                    depends_on=[*args.depends_on, *grants],
                    custom_timeouts=CLUSTER_TIMEOUTS,
                    # Autopilot manages node settings itself; a diff there would replace it.
                    ignore_changes=["nodeConfig", "nodePoolAutoConfig", "nodePoolDefaults"],
                )
            ),
        )
        self.name = self.cluster.name
        self.endpoint = self.cluster.endpoint
        # No credential inside: the exec plugin fetches a short-lived token on each call.
        self.kubeconfig = kubeconfig_for(
            self.cluster.name,
            self.cluster.endpoint,
            self.cluster.master_auth.cluster_ca_certificate.apply(lambda ca: ca or ""),
        )
        self.provider = kubernetes.Provider(
            f"{name}-k8s",
            kubeconfig=self.kubeconfig,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs(
            {
                "name": self.name,
                "endpoint": self.endpoint,
                "kubeconfig": self.kubeconfig,
                "nodeServiceAccount": self.node_account.email,
            }
        )
