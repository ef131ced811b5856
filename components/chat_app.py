"""The Gradio chat app on GKE: its Deployment, Service, exposure and Cloud Run caller rights."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.pod_monitoring import collector_peer, pod_monitoring
from components.pod_security import restricted_container, restricted_pod

BackendKind = Literal["openai", "gemini"]
BackendAuth = Literal["none", "google-id-token", "api-key"]
Exposure = Literal["internal", "iap", "login"]

CHAT_PORT = 7860
# GET /metrics for Managed Prometheus; no Service offers it, so no load balancer exposes it.
METRICS_PORT = 9090
APP_NAME = "chat-app"
# Where Google's external Application Load Balancers and their health checks connect from.
GOOGLE_FRONT_END_RANGES = ("130.211.0.0/22", "35.191.0.0/16")
AUTH_ANNOTATION = "gemma-stack/auth"
_AUTH_MODE: dict[Exposure, str] = {"internal": "none", "iap": "iap", "login": "login"}
_BACKEND_ID = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


def model_title(model: str) -> str:
    """`gemini-2.5-flash-lite` -> `Gemini 2.5 Flash Lite`: a model id as people write it."""
    return " ".join(part.capitalize() for part in model.split("-"))


@dataclass(frozen=True)
class ChatBackend:
    """One `CHAT_BACKENDS` entry, in the format the chat app reads (see app/chat/settings.py)."""

    id: str
    label: str
    kind: BackendKind
    model: pulumi.Input[str]
    base_url: pulumi.Input[str] | None = None
    auth: BackendAuth = "none"
    api_key_env: str | None = None
    vertex: bool = False
    location: str | None = None

    def __post_init__(self) -> None:
        where = f"chat backend {self.id!r}"
        if not _BACKEND_ID.match(self.id):
            raise ValueError(
                f"{where}: id must be 1-32 lowercase letters, digits or hyphens "
                "(it names IAM bindings too), e.g. 'gemma-gke'."
            )
        if not self.label:
            raise ValueError(f"{where}: label must not be empty.")
        if self.kind == "openai" and self.base_url is None:
            raise ValueError(f"{where}: kind 'openai' needs a base_url ending in /v1.")
        if self.vertex and (self.kind != "gemini" or self.base_url is not None):
            raise ValueError(f"{where}: vertex applies to kind 'gemini' without a base_url.")
        no_endpoint = self.base_url is None and not self.vertex and self.auth != "api-key"
        if self.kind == "gemini" and no_endpoint:
            raise ValueError(f"{where}: a gemini backend needs vertex, a base_url or an API key.")
        if (self.auth == "api-key") != (self.api_key_env is not None):
            raise ValueError(f"{where}: auth 'api-key' and api_key_env go together.")
        if self.auth == "google-id-token" and self.base_url is None:
            raise ValueError(f"{where}: auth 'google-id-token' needs the service's base_url.")

    def to_env(self) -> dict[str, pulumi.Input[Any]]:
        """The JSON object for this backend, with only the keys that are set."""
        item: dict[str, pulumi.Input[Any]] = {
            "id": self.id,
            "label": self.label,
            "kind": self.kind,
            "model": self.model,
        }
        if self.base_url is not None:
            item["base_url"] = self.base_url
        if self.auth != "none":
            item["auth"] = self.auth
        if self.api_key_env is not None:
            item["api_key_env"] = self.api_key_env
        if self.vertex:
            item["vertex"] = True
        if self.location is not None:
            item["location"] = self.location
        return item

    @classmethod
    def gemini_on_vertex(
        cls,
        *,
        id: str = "gemini",
        label: str | None = None,
        model: str = "gemini-2.5-flash",
        location: str = "global",
    ) -> ChatBackend:
        """Gemini on Vertex AI, reached with the chat app's Workload Identity; the label
        defaults to the model's own name (`gemini-2.5-pro` -> "Gemini 2.5 Pro (Vertex AI)")."""
        return cls(
            id=id,
            label=label or f"{model_title(model)} (Vertex AI)",
            kind="gemini",
            model=model,
            vertex=True,
            location=location,
        )


def chat_backends_env(backends: Sequence[ChatBackend]) -> pulumi.Output[str]:
    """The `CHAT_BACKENDS` value: one JSON list of exactly these backends, in order."""
    if not backends:
        raise ValueError("the chat app needs at least one backend, e.g. Gemini on Vertex AI.")
    ids = [b.id for b in backends]
    labels = [b.label for b in backends]
    if len(set(ids)) != len(ids) or len(set(labels)) != len(labels):
        raise ValueError(f"chat backend ids and labels must be unique, got {ids} / {labels}.")
    return pulumi.Output.json_dumps([b.to_env() for b in backends])


# Tearing down a global load balancer, its backend services and NEGs takes a few minutes.
INGRESS_DELETE_TIMEOUT = "20m"
# On SIGTERM the app lets open requests finish, then flushes queued history writes; the pod's
# grace period covers both plus this margin (Python start-up of the shutdown, the exit).
SHUTDOWN_MARGIN_S = 15


@dataclass(frozen=True)
class ChatAppArgs:
    """Resolved settings for the chat app's workload and how users reach it.

    exposure: `internal` (ClusterIP; `kubectl port-forward`), `iap` (HTTPS Ingress behind
    Identity-Aware Proxy; needs `iap_domain`), or `login` (LoadBalancer with the app's own
    sign-in; needs `login_credentials`).
    """

    project_id: pulumi.Input[str]
    namespace: pulumi.Input[str]
    k8s_provider: pulumi.ProviderResource
    image: pulumi.Input[str]
    # The chat app's KSA from WorkloadIdentity (aiplatform.user, datastore.user bound there).
    ksa_name: pulumi.Input[str]
    ksa_principal: pulumi.Input[str]
    backends: Sequence[ChatBackend]
    firestore_database: pulumi.Input[str] = "chat-app-db"
    # True for the stack's own content-hash tags, which never change: nodes reuse a pulled copy.
    image_is_immutable: bool = False
    exposure: Exposure = "internal"
    # Email of the service account the chat app's principal may mint ID tokens for; it must
    # be an invoker of every Cloud Run backend (a federated KSA cannot hold an ID token).
    id_token_service_account: pulumi.Input[str] | None = None
    iap_domain: str | None = None
    iap_static_ip_name: str | None = None
    # `/projects/NUMBER/global/backendServices/ID`, known after the first deploy.
    iap_audience: str | None = None
    # Label -> IAM member allowed through IAP (roles/iap.httpsResourceAccessor).
    iap_accessors: Mapping[str, str] = field(default_factory=dict)
    # A secret Output 'user:password,...', e.g. from Secret Manager.
    login_credentials: pulumi.Input[str] | None = None
    # A secret Output of at least 32 characters that signs login session cookies.
    session_key: pulumi.Input[str] | None = None
    # Without iap_audience, the app looks its audience up with this project number once the
    # Ingress has made its backend service (needs compute.backendServices.list).
    iap_project_number: pulumi.Input[str] | None = None
    # Days after their last write that conversations and messages expire (Firestore TTL).
    history_ttl_days: int | None = None
    # Seconds for open requests to finish, then for queued history writes to reach Firestore.
    shutdown_grace_s: int = 15
    shutdown_flush_s: int = 30
    # CIDRs allowed to reach the `login` LoadBalancer; empty means any address.
    allowed_source_ranges: Sequence[str] = ()
    system_prompt: str | None = None
    app_name: str = APP_NAME
    replicas: int = 1
    cpu: str = "1"
    memory: str = "2Gi"
    depends_on: tuple[pulumi.Resource, ...] = ()

    def validate(self, name: str) -> None:
        """Refuse an exposure that would leave the app open or unreachable."""
        where = f"ChatApp {name!r}"
        if self.exposure not in _AUTH_MODE:
            raise ValueError(f"{where}: exposure must be one of {sorted(_AUTH_MODE)}.")
        if self.exposure == "iap" and not self.iap_domain:
            raise ValueError(
                f"{where}: exposure 'iap' needs iap_domain (a DNS name you point at the "
                "Ingress address) for the managed HTTPS certificate IAP requires."
            )
        if self.exposure == "login" and (
            self.login_credentials is None or self.session_key is None
        ):
            raise ValueError(
                f"{where}: exposure 'login' needs login_credentials ('user:password,...' from "
                "Secret Manager) and session_key (signs session cookies); the app never runs "
                "public without sign-in."
            )
        if self.exposure == "iap" and self.iap_audience is None and self.iap_project_number is None:
            raise ValueError(
                f"{where}: exposure 'iap' needs iap_audience or iap_project_number (to look "
                "the audience up); without either the app refuses every request."
            )
        if self.history_ttl_days is not None and self.history_ttl_days < 1:
            raise ValueError(f"{where}: history_ttl_days must be at least 1.")
        if self.shutdown_grace_s < 0 or self.shutdown_flush_s < 0:
            raise ValueError(f"{where}: shutdown_grace_s and shutdown_flush_s must be >= 0.")
        if self.exposure != "login" and self.allowed_source_ranges:
            raise ValueError(f"{where}: allowed_source_ranges applies to exposure 'login' only.")
        if self.iap_accessors and self.exposure != "iap":
            raise ValueError(f"{where}: iap_accessors applies to exposure 'iap' only.")
        uses_id_tokens = [b.id for b in self.backends if b.auth == "google-id-token"]
        if uses_id_tokens and self.id_token_service_account is None:
            raise ValueError(
                f"{where}: backends {uses_id_tokens} are called with Google ID tokens; set "
                "id_token_service_account to an account that may invoke them."
            )
        if self.replicas < 1:
            raise ValueError(f"{where}: replicas must be at least 1.")
        chat_backends_env(self.backends)  # unique ids and labels, at least one


class ChatApp(pulumi.ComponentResource):
    """The chat UI as a hardened Deployment, exposed only the way `exposure` says."""

    deployment: kubernetes.apps.v1.Deployment
    service: kubernetes.core.v1.Service
    service_name: pulumi.Output[str]
    internal_url: pulumi.Output[str]
    url: pulumi.Output[str]
    access_hint: pulumi.Output[str]
    backends_json: pulumi.Output[str]

    def __init__(
        self, name: str, args: ChatAppArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gemma-stack:chat:ChatApp", name, None, opts)
        args.validate(name)
        k8s_opts = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=list(args.depends_on)
        )
        labels = {
            "app.kubernetes.io/name": args.app_name,
            "app.kubernetes.io/component": "chat-ui",
            "app.kubernetes.io/part-of": "gemma-stack",
        }
        self.backends_json = chat_backends_env(args.backends)
        env: list[kubernetes.core.v1.EnvVarArgs] = [
            _env("CHAT_BACKENDS", self.backends_json),
            _env("GOOGLE_CLOUD_PROJECT", args.project_id),
            _env("FIRESTORE_DATABASE", args.firestore_database),
            _env("PORT", str(CHAT_PORT)),
            _env("METRICS_PORT", str(METRICS_PORT)),
            _env("AUTH_MODE", _AUTH_MODE[args.exposure]),
            # The root filesystem is read-only; Gradio and libraries write under /tmp.
            _env("HOME", "/tmp"),  # noqa: S108
            _env("GRADIO_TEMP_DIR", "/tmp/gradio"),  # noqa: S108
            _env("MPLCONFIGDIR", "/tmp/matplotlib"),  # noqa: S108
            _env("GRADIO_ANALYTICS_ENABLED", "False"),
            _env("SHUTDOWN_GRACE_S", str(args.shutdown_grace_s)),
            _env("SHUTDOWN_FLUSH_S", str(args.shutdown_flush_s)),
        ]
        if args.system_prompt is not None:
            env.append(_env("SYSTEM_PROMPT", args.system_prompt))
        if args.history_ttl_days is not None:
            env.append(_env("HISTORY_TTL_DAYS", str(args.history_ttl_days)))
        if args.exposure == "iap" and args.iap_audience is not None:
            env.append(_env("IAP_AUDIENCE", args.iap_audience))
        elif args.exposure == "iap" and args.iap_project_number is not None:
            env.append(_env("IAP_PROJECT_NUMBER", args.iap_project_number))
            # The `<namespace>-<service>-<port>` part of the GKE Ingress backend service name.
            env.append(
                _env(
                    "IAP_BACKEND_SERVICE",
                    pulumi.Output.format("{0}-{1}-{2}", args.namespace, args.app_name, CHAT_PORT),
                )
            )

        if args.id_token_service_account is not None:
            env.append(_env("ID_TOKEN_SERVICE_ACCOUNT", args.id_token_service_account))

        self.login_secret: kubernetes.core.v1.Secret | None = None
        if args.exposure == "login" and args.login_credentials is not None:
            self.login_secret = kubernetes.core.v1.Secret(
                f"{name}-login",
                metadata=kubernetes.meta.v1.ObjectMetaArgs(
                    name=f"{args.app_name}-login", namespace=args.namespace, labels=labels
                ),
                type="Opaque",
                string_data={
                    "credentials": pulumi.Output.secret(args.login_credentials),
                    "session-key": pulumi.Output.secret(args.session_key or ""),
                },
                opts=k8s_opts,
            )
            secret_name = self.login_secret.metadata.apply(
                lambda m: m.name or f"{args.app_name}-login"
            )
            for variable, key in (
                ("LOGIN_CREDENTIALS", "credentials"),
                ("SESSION_SECRET", "session-key"),
            ):
                env.append(
                    kubernetes.core.v1.EnvVarArgs(
                        name=variable,
                        value_from=kubernetes.core.v1.EnvVarSourceArgs(
                            secret_key_ref=kubernetes.core.v1.SecretKeySelectorArgs(
                                name=secret_name, key=key
                            )
                        ),
                    )
                )

        resources = {"cpu": args.cpu, "memory": args.memory, "ephemeral-storage": "1Gi"}
        # Readiness is /healthz, which fails while history writes are stuck, so a replica
        # that cannot save takes no new chats. Liveness is /livez: restarting such a pod would
        # drop its queue.
        health = kubernetes.core.v1.HTTPGetActionArgs(path="/healthz", port="http")
        alive = kubernetes.core.v1.HTTPGetActionArgs(path="/livez", port="http")
        self.deployment = kubernetes.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.app_name, namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.apps.v1.DeploymentSpecArgs(
                replicas=args.replicas,
                selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=kubernetes.core.v1.PodTemplateSpecArgs(
                    metadata=kubernetes.meta.v1.ObjectMetaArgs(labels=labels),
                    spec=kubernetes.core.v1.PodSpecArgs(
                        service_account_name=args.ksa_name,
                        # Google APIs use the Workload Identity metadata server, not this token.
                        automount_service_account_token=False,
                        security_context=restricted_pod(),
                        termination_grace_period_seconds=(
                            args.shutdown_grace_s + args.shutdown_flush_s + SHUTDOWN_MARGIN_S
                        ),
                        containers=[
                            kubernetes.core.v1.ContainerArgs(
                                name="chat",
                                image=args.image,
                                command=["python", "-m", "app.chat"],
                                env=env,
                                ports=[
                                    kubernetes.core.v1.ContainerPortArgs(
                                        name="http", container_port=CHAT_PORT, protocol="TCP"
                                    ),
                                    kubernetes.core.v1.ContainerPortArgs(
                                        name="metrics", container_port=METRICS_PORT, protocol="TCP"
                                    ),
                                ],
                                resources=kubernetes.core.v1.ResourceRequirementsArgs(
                                    requests=dict(resources), limits=dict(resources)
                                ),
                                startup_probe=kubernetes.core.v1.ProbeArgs(
                                    http_get=alive, period_seconds=5, failure_threshold=36
                                ),
                                readiness_probe=kubernetes.core.v1.ProbeArgs(
                                    http_get=health,
                                    period_seconds=10,
                                    timeout_seconds=3,
                                    failure_threshold=3,
                                ),
                                liveness_probe=kubernetes.core.v1.ProbeArgs(
                                    http_get=alive,
                                    period_seconds=20,
                                    timeout_seconds=5,
                                    failure_threshold=3,
                                ),
                                security_context=restricted_container(),
                                volume_mounts=[
                                    kubernetes.core.v1.VolumeMountArgs(
                                        name="tmp",
                                        mount_path="/tmp",  # noqa: S108
                                    )
                                ],
                                image_pull_policy=(
                                    "IfNotPresent" if args.image_is_immutable else "Always"
                                ),
                            )
                        ],
                        volumes=[
                            kubernetes.core.v1.VolumeArgs(
                                name="tmp",
                                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                                    size_limit="512Mi"
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts,
                pulumi.ResourceOptions(depends_on=[r for r in (self.login_secret,) if r]),
            ),
        )

        self.service = self._service(name, args, labels, k8s_opts)
        # Users arrive on the app port only (port-forward, the IAP or the login load balancer).
        # Behind IAP the app trusts IAP's identity header, so only Google's front ends (the
        # load balancer and its health checks) may connect; no pod can forge a user.
        sources = (
            [
                kubernetes.networking.v1.NetworkPolicyPeerArgs(
                    ip_block=kubernetes.networking.v1.IPBlockArgs(cidr=cidr)
                )
                for cidr in GOOGLE_FRONT_END_RANGES
            ]
            if args.exposure == "iap"
            else None
        )
        self.network_policy = kubernetes.networking.v1.NetworkPolicy(
            f"{name}-ingress",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=f"{args.app_name}-ingress", namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.networking.v1.NetworkPolicySpecArgs(
                pod_selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                policy_types=["Ingress"],
                ingress=[
                    kubernetes.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=sources,
                        ports=[
                            kubernetes.networking.v1.NetworkPolicyPortArgs(
                                port=CHAT_PORT, protocol="TCP"
                            )
                        ],
                    ),
                    # Only Managed Prometheus's collectors reach the metrics port.
                    kubernetes.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[collector_peer()],
                        ports=[
                            kubernetes.networking.v1.NetworkPolicyPortArgs(
                                port=METRICS_PORT, protocol="TCP"
                            )
                        ],
                    ),
                ],
            ),
            opts=k8s_opts,
        )
        self.pod_monitoring = pod_monitoring(
            f"{name}-metrics",
            object_name=args.app_name,
            namespace=args.namespace,
            labels=labels,
            port="metrics",
            opts=k8s_opts,
        )
        self.service_name = self.service.metadata.apply(lambda m: m.name or args.app_name)
        self.internal_url = pulumi.Output.format(
            "http://{0}.{1}.svc.cluster.local:{2}", self.service_name, args.namespace, CHAT_PORT
        )
        self.url, self.access_hint = self._expose(name, args, labels, k8s_opts)
        self.register_outputs(
            {
                "serviceName": self.service_name,
                "internalUrl": self.internal_url,
                "url": self.url,
                "accessHint": self.access_hint,
            }
        )

    def _service(
        self,
        name: str,
        args: ChatAppArgs,
        labels: dict[str, str],
        k8s_opts: pulumi.ResourceOptions,
    ) -> kubernetes.core.v1.Service:
        annotations = {
            AUTH_ANNOTATION: {"internal": "none", "iap": "iap", "login": "app-login"}[args.exposure]
        }
        service_type = "ClusterIP"
        if args.exposure == "iap":
            # Container-native load balancing; the BackendConfig turns IAP on for this port.
            annotations["cloud.google.com/neg"] = json.dumps({"ingress": True})
            annotations["cloud.google.com/backend-config"] = json.dumps(
                {"default": f"{args.app_name}-iap"}
            )
        if args.exposure == "login":
            service_type = "LoadBalancer"
        return kubernetes.core.v1.Service(
            f"{name}-service",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.app_name,
                namespace=args.namespace,
                labels=labels,
                annotations=annotations,
            ),
            spec=kubernetes.core.v1.ServiceSpecArgs(
                type=service_type,
                selector=labels,
                ports=[
                    kubernetes.core.v1.ServicePortArgs(
                        name="http", port=CHAT_PORT, target_port="http", protocol="TCP"
                    )
                ],
                load_balancer_source_ranges=list(args.allowed_source_ranges) or None,
                # Keeps the client's address, which the login throttle counts failures by.
                external_traffic_policy="Local" if args.exposure == "login" else None,
            ),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts, pulumi.ResourceOptions(depends_on=[self.deployment])
            ),
        )

    def _expose(
        self,
        name: str,
        args: ChatAppArgs,
        labels: dict[str, str],
        k8s_opts: pulumi.ResourceOptions,
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        port_forward = pulumi.Output.format(
            "kubectl -n {0} port-forward svc/{1} {2}:{2}",
            args.namespace,
            self.service_name,
            CHAT_PORT,
        )
        if args.exposure == "internal":
            return pulumi.Output.from_input(f"http://localhost:{CHAT_PORT}"), port_forward
        if args.exposure == "login":
            address = self.service.status.apply(_load_balancer_address)
            url = address.apply(lambda a: f"http://{a}:{CHAT_PORT}" if a else "")
            hint = pulumi.Output.from_input(
                "Sign in with a user from the login secret; traffic is plain HTTP unless you "
                "put TLS in front, so prefer exposure 'iap' for anything beyond a trial."
            )
            return url, hint
        return self._iap_ingress(name, args, labels, k8s_opts)

    def _iap_ingress(
        self,
        name: str,
        args: ChatAppArgs,
        labels: dict[str, str],
        k8s_opts: pulumi.ResourceOptions,
    ) -> tuple[pulumi.Output[str], pulumi.Output[str]]:
        domain = args.iap_domain or ""
        meta = kubernetes.meta.v1.ObjectMetaArgs
        kubernetes.apiextensions.CustomResource(
            f"{name}-iap-backend",
            api_version="cloud.google.com/v1",
            kind="BackendConfig",
            metadata=meta(name=f"{args.app_name}-iap", namespace=args.namespace, labels=labels),
            spec={
                # Uses Google's managed OAuth client: only your organisation's users, unless
                # you configure IAP for external identities.
                "iap": {"enabled": True},
                "healthCheck": {"type": "HTTP", "requestPath": "/healthz", "port": CHAT_PORT},
                # Long streamed replies must outlive the load balancer's 30 s default.
                "timeoutSec": 3600,
            },
            opts=k8s_opts,
        )
        kubernetes.apiextensions.CustomResource(
            f"{name}-certificate",
            api_version="networking.gke.io/v1",
            kind="ManagedCertificate",
            metadata=meta(name=f"{args.app_name}-cert", namespace=args.namespace, labels=labels),
            spec={"domains": [domain]},
            opts=k8s_opts,
        )
        annotations = {
            "kubernetes.io/ingress.class": "gce",
            "kubernetes.io/ingress.allow-http": "false",
            "networking.gke.io/managed-certificates": f"{args.app_name}-cert",
            AUTH_ANNOTATION: "iap",
            # The load balancer and certificate take 10-60 min, so `pulumi up` counts the
            # Ingress ready once it exists. Unlike skipAwait, this still waits on delete until
            # the controller's finalizer has removed the load balancer and its backends.
            "pulumi.com/waitFor": "jsonpath={.metadata.name}",
        }
        if args.iap_static_ip_name:
            annotations["kubernetes.io/ingress.global-static-ip-name"] = args.iap_static_ip_name
        kubernetes.networking.v1.Ingress(
            f"{name}-ingress",
            metadata=meta(
                name=args.app_name,
                namespace=args.namespace,
                labels=labels,
                annotations=annotations,
            ),
            spec=kubernetes.networking.v1.IngressSpecArgs(
                default_backend=kubernetes.networking.v1.IngressBackendArgs(
                    service=kubernetes.networking.v1.IngressServiceBackendArgs(
                        name=self.service_name,
                        port=kubernetes.networking.v1.ServiceBackendPortArgs(number=CHAT_PORT),
                    )
                )
            ),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts,
                pulumi.ResourceOptions(
                    depends_on=[self.service],
                    custom_timeouts=pulumi.CustomTimeouts(delete=INGRESS_DELETE_TIMEOUT),
                ),
            ),
        )
        for label, member in sorted(args.iap_accessors.items()):
            gcp.iap.WebIamMember(
                f"{name}-iap-user-{label}",
                project=args.project_id,
                role="roles/iap.httpsResourceAccessor",
                member=member,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            )
        hint = pulumi.Output.format(
            "Point DNS for {0} at the address of `kubectl -n {1} get ingress {2}`; the "
            "certificate and IAP follow within an hour. IAP lets in the members of config "
            "chatAllowedUsers (roles/iap.httpsResourceAccessor).",
            domain,
            args.namespace,
            args.app_name,
        )
        return pulumi.Output.from_input(f"https://{domain}"), hint


def _env(name: str, value: pulumi.Input[str]) -> kubernetes.core.v1.EnvVarArgs:
    return kubernetes.core.v1.EnvVarArgs(name=name, value=value)


def _load_balancer_address(status: Any) -> str:
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    first = ingress[0] if ingress else None
    return str(getattr(first, "ip", None) or getattr(first, "hostname", None) or "")
