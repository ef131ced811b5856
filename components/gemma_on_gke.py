"""Gemma 3 behind vLLM's OpenAI-compatible server on GKE Autopilot L4 GPUs."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.gpu_software import L4_SELECTOR, VLLM_IMAGE, vllm_image_cuda
from components.pod_monitoring import collector_peer, pod_monitoring, prometheus_pod_metric
from components.pod_security import restricted_container, restricted_pod

VLLM_PORT = 8000
SERVICE_NAME = "gemma-service"
# The vLLM container's name, as Cloud Monitoring's GPU metrics label it.
CONTAINER_NAME = "vllm"
# States the CUDA runtime the container needs, for whoever debugs a driver mismatch.
CUDA_ANNOTATION = "gemma-stack/cuda"
# Autopilot offers L4 pods with these GPU counts only.
AUTOPILOT_L4_COUNTS = (1, 2, 4, 8)
# Probes start once the container runs (image pull and GPU node provisioning do not count):
# 360 x 10 s = 60 min for the weight download and the engine's load and warm-up.
STARTUP_PERIOD_S = 10
STARTUP_FAILURE_THRESHOLD = 360
# Must outlast Autopilot's 10-15 min GPU node provisioning plus the image pull.
PROGRESS_DEADLINE_S = 1800
MODEL_MOUNT = "/models"
CACHE_MOUNT = "/cache"
# Tells the Pulumi Kubernetes provider not to wait for readiness (GPUs may take hours).
SKIP_AWAIT = {"pulumi.com/skipAwait": "true"}
# The HPA scales on vLLM's queue: requests waiting for a slot, averaged over the pods.
QUEUE_METRIC = "vllm:num_requests_waiting"
# Waiting requests per pod the HPA aims for: a few queued behind --max-num-seqs is normal.
QUEUE_TARGET = 4
MAX_REPLICAS = 16
# A removed pod's L4s are gone: a new one waits 10-15 min for a GPU node, then loads the
# weights. Scale down only after the queue has stayed short for longer than that.
SCALE_DOWN_STABILIZATION_S = 1800
# One pod at a time each way: every new pod asks Autopilot for more GPUs.
SCALE_UP_PERIOD_S = 120
SCALE_DOWN_PERIOD_S = 600


def pending_command(
    namespace: pulumi.Input[str], service_name: pulumi.Input[str]
) -> pulumi.Output[str]:
    """One line that prints why the vLLM pods wait: the scheduler's and Autopilot's events
    (FailedScheduling, FailedScaleUp, GPU stockouts, quota), newest last."""
    return pulumi.Output.format(
        "kubectl -n {0} get events --field-selector involvedObject.kind=Pod "
        "--sort-by=.lastTimestamp -o custom-columns="
        "TIME:.lastTimestamp,POD:.involvedObject.name,REASON:.reason,MESSAGE:.message "
        "| grep -E '^TIME|{1}-'",
        namespace,
        service_name,
    )


@dataclass(frozen=True)
class PodResources:
    """CPU, memory and local disk for one vLLM pod (Autopilot sets limits to requests).

    Take them from the sizing table (stacks/gemma_sizing.py): the disk must hold the
    downloaded weights plus vLLM's compile caches; Autopilot's 1 GiB default does not.
    """

    cpu: str
    memory: str
    ephemeral_storage: str


@dataclass(frozen=True)
class GemmaOnGkeArgs:
    """Resolved settings for one vLLM Deployment and its Service.

    `model_id` is the Hugging Face id and the name clients send as `model`. With
    `gcs_bucket` set, weights come read-only from `gs://gcs_bucket/gcs_path` through the
    Cloud Storage FUSE CSI driver instead of the Hub, and no token is needed.
    """

    namespace: pulumi.Input[str]
    k8s_provider: pulumi.ProviderResource
    model_id: str
    gpu_count: int
    tensor_parallel: int
    max_model_len: int
    max_num_seqs: int
    resources: PodResources
    # The pod's own Kubernetes service account (from WorkloadIdentity) and its IAM principal.
    ksa_name: pulumi.Input[str]
    ksa_principal: pulumi.Input[str]
    # A secret Output, e.g. gcp.secretmanager.get_secret_version_output(...).secret_data.
    hf_token: pulumi.Input[str] | None = None
    gcs_bucket: pulumi.Input[str] | None = None
    gcs_path: str = ""
    served_model_name: str | None = None
    image: str = VLLM_IMAGE
    gpu_memory_utilization: float = 0.90
    service_name: str = SERVICE_NAME
    hf_secret_name: str = "hf-secret"  # noqa: S105 - a Secret's name, not its value
    # Equal bounds fix the replica count; otherwise an HPA keeps `queue_target` waiting
    # requests per pod (vllm:num_requests_waiting through the CustomMetricsAdapter).
    min_replicas: int = 1
    max_replicas: int = 1
    queue_target: int = QUEUE_TARGET
    depends_on: tuple[pulumi.Resource, ...] = ()

    @property
    def autoscaled(self) -> bool:
        return self.max_replicas > self.min_replicas

    def validate(self, name: str) -> None:
        """Refuse combinations vLLM or Autopilot would reject, before any resource exists."""
        where = f"GemmaOnGke {name!r}"
        if self.gpu_count not in AUTOPILOT_L4_COUNTS:
            raise ValueError(
                f"{where}: gpu_count {self.gpu_count} is not an Autopilot L4 shape; "
                f"use one of {list(AUTOPILOT_L4_COUNTS)}."
            )
        if self.tensor_parallel != self.gpu_count:
            raise ValueError(
                f"{where}: tensor_parallel ({self.tensor_parallel}) must equal gpu_count "
                f"({self.gpu_count}); vLLM on one pod uses exactly tensor_parallel GPUs, "
                "so other values either fail or leave L4s idle."
            )
        if not 512 <= self.max_model_len <= 131072:
            raise ValueError(
                f"{where}: max_model_len {self.max_model_len} is outside 512..131072; "
                "Gemma 3's 128K default exhausts an L4's KV cache, e.g. use 8192 or 16384."
            )
        if self.max_num_seqs < 1:
            raise ValueError(f"{where}: max_num_seqs must be at least 1.")
        if not 0.1 <= self.gpu_memory_utilization <= 0.95:
            raise ValueError(f"{where}: gpu_memory_utilization must be within 0.1..0.95.")
        if self.gcs_bucket is None and self.hf_token is None:
            raise ValueError(
                f"{where}: serving {self.model_id!r} from Hugging Face needs hf_token "
                "(Gemma is gated); set `pulumi config set --secret hfToken ...` "
                "or serve a model folder from a GCS bucket."
            )
        if self.gcs_bucket is not None and (
            self.gcs_path.startswith(("gs://", "/")) or ".." in self.gcs_path.split("/")
        ):
            raise ValueError(
                f"{where}: gcs_path {self.gcs_path!r} must be a folder inside the bucket, "
                "e.g. 'models/gemma-3-1b-sql' (no gs:// prefix, no leading slash)."
            )
        if not self.model_id:
            raise ValueError(f"{where}: model_id must not be empty.")
        if not 1 <= self.min_replicas <= self.max_replicas <= MAX_REPLICAS:
            raise ValueError(
                f"{where}: replicas must satisfy 1 <= min_replicas ({self.min_replicas}) <= "
                f"max_replicas ({self.max_replicas}) <= {MAX_REPLICAS}; each replica holds "
                f"{self.gpu_count} L4 GPU(s) around the clock."
            )
        if self.queue_target < 1:
            raise ValueError(
                f"{where}: queue_target ({self.queue_target}) must be at least 1 waiting "
                "request per pod."
            )


class GemmaOnGke(pulumi.ComponentResource):
    """vLLM serving Gemma 3 on Autopilot L4s, reachable in-cluster on port 8000."""

    deployment: kubernetes.apps.v1.Deployment
    service: kubernetes.core.v1.Service
    service_name: pulumi.Output[str]
    url: pulumi.Output[str]
    served_model_name: pulumi.Output[str]
    access_command: pulumi.Output[str]
    pending_command: pulumi.Output[str]
    pod_monitoring: kubernetes.apiextensions.CustomResource
    autoscaler: kubernetes.autoscaling.v2.HorizontalPodAutoscaler | None

    def __init__(
        self, name: str, args: GemmaOnGkeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("gemma-stack:gke:GemmaOnGke", name, None, opts)
        args.validate(name)
        k8s_opts = pulumi.ResourceOptions(
            parent=self, provider=args.k8s_provider, depends_on=list(args.depends_on)
        )
        labels = {
            "app.kubernetes.io/name": args.service_name,
            "app.kubernetes.io/component": "model-server",
            "app.kubernetes.io/part-of": "gemma-stack",
        }
        served = args.served_model_name or args.model_id
        env = [
            kubernetes.core.v1.EnvVarArgs(name="HOME", value=CACHE_MOUNT),
            kubernetes.core.v1.EnvVarArgs(name="XDG_CACHE_HOME", value=CACHE_MOUNT),
            kubernetes.core.v1.EnvVarArgs(name="HF_HOME", value=f"{CACHE_MOUNT}/huggingface"),
            kubernetes.core.v1.EnvVarArgs(name="VLLM_CACHE_ROOT", value=f"{CACHE_MOUNT}/vllm"),
            kubernetes.core.v1.EnvVarArgs(name="TRITON_CACHE_DIR", value=f"{CACHE_MOUNT}/triton"),
            # torch's compile cache calls getpass.getuser(), which fails for a uid with no
            # passwd entry unless USER is set.
            kubernetes.core.v1.EnvVarArgs(name="USER", value="vllm"),
            kubernetes.core.v1.EnvVarArgs(name="VLLM_NO_USAGE_STATS", value="1"),
            kubernetes.core.v1.EnvVarArgs(name="DO_NOT_TRACK", value="1"),
        ]
        volumes: list[kubernetes.core.v1.VolumeArgs] = [
            kubernetes.core.v1.VolumeArgs(
                name="cache",
                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                    size_limit=args.resources.ephemeral_storage
                ),
            ),
            kubernetes.core.v1.VolumeArgs(
                name="tmp",
                empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(size_limit="4Gi"),
            ),
        ]
        mounts = [
            kubernetes.core.v1.VolumeMountArgs(name="cache", mount_path=CACHE_MOUNT),
            kubernetes.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),  # noqa: S108
        ]
        pod_annotations: dict[str, str] = {}
        if (cuda := vllm_image_cuda(args.image)) is not None:
            pod_annotations[CUDA_ANNOTATION] = f"{cuda[0]}.{cuda[1]}"

        self.hf_secret: kubernetes.core.v1.Secret | None = None
        if args.hf_token is not None:
            self.hf_secret = kubernetes.core.v1.Secret(
                f"{name}-hf-token",
                metadata=kubernetes.meta.v1.ObjectMetaArgs(
                    name=args.hf_secret_name, namespace=args.namespace, labels=labels
                ),
                type="Opaque",
                string_data={"hf_api_token": pulumi.Output.secret(args.hf_token)},
                opts=k8s_opts,
            )
            env.append(
                kubernetes.core.v1.EnvVarArgs(
                    name="HF_TOKEN",
                    value_from=kubernetes.core.v1.EnvVarSourceArgs(
                        secret_key_ref=kubernetes.core.v1.SecretKeySelectorArgs(
                            name=self.hf_secret.metadata.apply(
                                lambda m: m.name or args.hf_secret_name
                            ),
                            key="hf_api_token",
                        )
                    ),
                )
            )

        self.bucket_reader: gcp.storage.BucketIAMMember | None = None
        if args.gcs_bucket is not None:
            model_arg = f"{MODEL_MOUNT}/{args.gcs_path}".rstrip("/")
            # Read on this one bucket only; the FUSE sidecar authenticates as the pod's KSA.
            self.bucket_reader = gcp.storage.BucketIAMMember(
                f"{name}-model-reader",
                bucket=args.gcs_bucket,
                role="roles/storage.objectViewer",
                member=args.ksa_principal,
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on)),
            )
            pod_annotations["gke-gcsfuse/volumes"] = "true"
            volumes.append(
                kubernetes.core.v1.VolumeArgs(
                    name="model",
                    csi=kubernetes.core.v1.CSIVolumeSourceArgs(
                        driver="gcsfuse.csi.storage.gke.io",
                        read_only=True,
                        volume_attributes={
                            "bucketName": args.gcs_bucket,
                            "mountOptions": "implicit-dirs",
                        },
                    ),
                )
            )
            mounts.append(
                kubernetes.core.v1.VolumeMountArgs(
                    name="model", mount_path=MODEL_MOUNT, read_only=True
                )
            )
            env.append(kubernetes.core.v1.EnvVarArgs(name="HF_HUB_OFFLINE", value="1"))
        else:
            model_arg = args.model_id

        if args.tensor_parallel > 1:
            # NCCL exchanges tensors between the L4s through /dev/shm; the runtime's 64 MiB
            # default is far too small.
            volumes.append(
                kubernetes.core.v1.VolumeArgs(
                    name="dshm",
                    empty_dir=kubernetes.core.v1.EmptyDirVolumeSourceArgs(
                        medium="Memory", size_limit="2Gi"
                    ),
                )
            )
            mounts.append(
                kubernetes.core.v1.VolumeMountArgs(name="dshm", mount_path="/dev/shm")  # noqa: S108
            )

        # The image's entrypoint is `vllm serve`, which takes the model as its first argument
        # (the `--model` option is deprecated there).
        vllm_args = [
            model_arg,
            f"--served-model-name={served}",
            f"--tensor-parallel-size={args.tensor_parallel}",
            f"--max-model-len={args.max_model_len}",
            f"--max-num-seqs={args.max_num_seqs}",
            f"--gpu-memory-utilization={args.gpu_memory_utilization:.2f}",
            "--host=0.0.0.0",
            f"--port={VLLM_PORT}",
        ]
        limits = {
            "cpu": args.resources.cpu,
            "memory": args.resources.memory,
            "ephemeral-storage": args.resources.ephemeral_storage,
            "nvidia.com/gpu": str(args.gpu_count),
        }
        health = kubernetes.core.v1.HTTPGetActionArgs(path="/health", port="http")
        container = kubernetes.core.v1.ContainerArgs(
            name=CONTAINER_NAME,
            image=args.image,
            args=vllm_args,
            env=env,
            ports=[
                kubernetes.core.v1.ContainerPortArgs(
                    name="http", container_port=VLLM_PORT, protocol="TCP"
                )
            ],
            resources=kubernetes.core.v1.ResourceRequirementsArgs(
                requests=dict(limits), limits=dict(limits)
            ),
            startup_probe=kubernetes.core.v1.ProbeArgs(
                http_get=health,
                period_seconds=STARTUP_PERIOD_S,
                timeout_seconds=5,
                failure_threshold=STARTUP_FAILURE_THRESHOLD,
            ),
            readiness_probe=kubernetes.core.v1.ProbeArgs(
                http_get=health, period_seconds=10, timeout_seconds=5, failure_threshold=3
            ),
            liveness_probe=kubernetes.core.v1.ProbeArgs(
                http_get=health, period_seconds=30, timeout_seconds=10, failure_threshold=5
            ),
            # vLLM's image runs as root by default; it works as any uid once HOME and the
            # caches point at writable volumes.
            security_context=restricted_container(),
            volume_mounts=mounts,
            # Re-checks the tag's digest only; cached layers are reused.
            image_pull_policy="Always",
        )
        self.deployment = kubernetes.apps.v1.Deployment(
            f"{name}-vllm",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.service_name,
                namespace=args.namespace,
                labels=labels,
                annotations=dict(SKIP_AWAIT),
            ),
            spec=kubernetes.apps.v1.DeploymentSpecArgs(
                # The HPA owns the count when there is one; `pulumi up` must not reset it.
                replicas=None if args.autoscaled else args.min_replicas,
                # A rolling update would need a second set of L4s that may not exist.
                strategy=kubernetes.apps.v1.DeploymentStrategyArgs(type="Recreate"),
                progress_deadline_seconds=PROGRESS_DEADLINE_S,
                selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                template=kubernetes.core.v1.PodTemplateSpecArgs(
                    metadata=kubernetes.meta.v1.ObjectMetaArgs(
                        labels=labels, annotations=pod_annotations or None
                    ),
                    spec=kubernetes.core.v1.PodSpecArgs(
                        service_account_name=args.ksa_name,
                        automount_service_account_token=False,
                        node_selector=dict(L4_SELECTOR),
                        security_context=restricted_pod(),
                        termination_grace_period_seconds=60,
                        containers=[container],
                        volumes=volumes,
                    ),
                ),
            ),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts,
                pulumi.ResourceOptions(
                    depends_on=[r for r in (self.hf_secret, self.bucket_reader) if r]
                ),
            ),
        )
        self.service = kubernetes.core.v1.Service(
            f"{name}-service",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.service_name,
                namespace=args.namespace,
                labels=labels,
                # Service await waits for endpoints, which never appear while GPUs are Pending.
                annotations=dict(SKIP_AWAIT),
            ),
            spec=kubernetes.core.v1.ServiceSpecArgs(
                type="ClusterIP",
                selector=labels,
                ports=[
                    kubernetes.core.v1.ServicePortArgs(
                        name="http", port=VLLM_PORT, target_port="http", protocol="TCP"
                    )
                ],
            ),
            opts=k8s_opts,
        )
        # Only pods of this namespace (the chat app) may call the model server, and Managed
        # Prometheus's collectors may scrape its /metrics.
        self.network_policy = kubernetes.networking.v1.NetworkPolicy(
            f"{name}-clients",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=f"{args.service_name}-clients", namespace=args.namespace, labels=labels
            ),
            spec=kubernetes.networking.v1.NetworkPolicySpecArgs(
                pod_selector=kubernetes.meta.v1.LabelSelectorArgs(match_labels=labels),
                policy_types=["Ingress"],
                ingress=[
                    kubernetes.networking.v1.NetworkPolicyIngressRuleArgs(
                        from_=[
                            kubernetes.networking.v1.NetworkPolicyPeerArgs(
                                pod_selector=kubernetes.meta.v1.LabelSelectorArgs()
                            ),
                            collector_peer(),
                        ],
                        ports=[
                            kubernetes.networking.v1.NetworkPolicyPortArgs(
                                port=VLLM_PORT, protocol="TCP"
                            )
                        ],
                    )
                ],
            ),
            opts=k8s_opts,
        )
        self.pod_monitoring = pod_monitoring(
            f"{name}-metrics",
            object_name=args.service_name,
            namespace=args.namespace,
            labels=labels,
            port="http",
            opts=k8s_opts,
        )
        self.autoscaler = (
            self._autoscaler(name, args, labels, k8s_opts) if args.autoscaled else None
        )
        self.service_name = self.service.metadata.apply(lambda m: m.name or args.service_name)
        self.url = pulumi.Output.format(
            "http://{0}.{1}.svc.cluster.local:{2}/v1",
            self.service_name,
            args.namespace,
            VLLM_PORT,
        )
        self.served_model_name = pulumi.Output.from_input(served)
        # The service has no address outside the cluster: reach it through kubectl.
        self.access_command = pulumi.Output.format(
            "kubectl -n {0} port-forward svc/{1} {2}:{2} & curl -s "
            "localhost:{2}/v1/chat/completions -H 'Content-Type: application/json' "
            '-d \'{{"model":"{3}","messages":[{{"role":"user","content":"Hello"}}]}}\'',
            args.namespace,
            self.service_name,
            VLLM_PORT,
            self.served_model_name,
        )
        self.pending_command = pending_command(args.namespace, self.service_name)
        self.register_outputs(
            {
                "serviceName": self.service_name,
                "url": self.url,
                "servedModelName": self.served_model_name,
                "accessCommand": self.access_command,
                "pendingCommand": self.pending_command,
            }
        )

    def _autoscaler(
        self,
        name: str,
        args: GemmaOnGkeArgs,
        labels: dict[str, str],
        k8s_opts: pulumi.ResourceOptions,
    ) -> kubernetes.autoscaling.v2.HorizontalPodAutoscaler:
        v2 = kubernetes.autoscaling.v2
        return v2.HorizontalPodAutoscaler(
            f"{name}-autoscaler",
            metadata=kubernetes.meta.v1.ObjectMetaArgs(
                name=args.service_name, namespace=args.namespace, labels=labels
            ),
            spec=v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1",
                    kind="Deployment",
                    name=self.deployment.metadata.apply(lambda m: m.name or args.service_name),
                ),
                min_replicas=args.min_replicas,
                max_replicas=args.max_replicas,
                metrics=[
                    v2.MetricSpecArgs(
                        type="Pods",
                        pods=v2.PodsMetricSourceArgs(
                            metric=v2.MetricIdentifierArgs(
                                name=prometheus_pod_metric(QUEUE_METRIC)
                            ),
                            target=v2.MetricTargetArgs(
                                type="AverageValue", average_value=str(args.queue_target)
                            ),
                        ),
                    )
                ],
                behavior=v2.HorizontalPodAutoscalerBehaviorArgs(
                    scale_up=v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=0,
                        policies=[
                            v2.HPAScalingPolicyArgs(
                                type="Pods", value=1, period_seconds=SCALE_UP_PERIOD_S
                            )
                        ],
                    ),
                    scale_down=v2.HPAScalingRulesArgs(
                        stabilization_window_seconds=SCALE_DOWN_STABILIZATION_S,
                        policies=[
                            v2.HPAScalingPolicyArgs(
                                type="Pods", value=1, period_seconds=SCALE_DOWN_PERIOD_S
                            )
                        ],
                    ),
                ),
            ),
            opts=k8s_opts,
        )
