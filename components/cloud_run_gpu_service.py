"""A Cloud Run service on one NVIDIA L4 serving Gemma 3, private to named invokers."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pulumi
import pulumi_gcp as gcp

from components.gpu_software import (
    CLOUD_RUN_VLLM_IMAGE,
    INFERENCE_IMAGE_CUDA,
    PREBUILT_IMAGE_CUDA,
    Cuda,
    cloud_run_cuda_problem,
    cuda_label,
    vllm_image_cuda,
)
from components.iam_members import OPEN_MEMBERS, is_iam_member
from components.iam_wait import wait_for_grants
from components.resource_ids import fixed_id_options, scoped_id, service_account_id

Flavour = Literal["prebuilt", "vllm", "finetuned"]
ApiKind = Literal["openai", "gemini"]
# Google's prebuilt images, by the name their image has (`.../gemma/gemma3-4b`).
PREBUILT_VARIANTS = ("gemma3-1b", "gemma3-4b", "gemma3-12b", "gemma3-27b")

PREBUILT_IMAGE = "us-docker.pkg.dev/cloudrun/container/gemma/{variant}"
L4 = "nvidia-l4"
# Cloud Run attaches at most one GPU to an instance; each instance counts once against L4 quota.
GPUS_PER_INSTANCE = 1
# Cloud Run rejects a startup probe whose period, initial delay, or failureThreshold x period
# exceeds this, so the longest possible startup window is 240 + 240 s.
CLOUD_RUN_PROBE_MAX_S = 240
MODEL_MOUNT = "/models"
# Cloud Run service names: lowercase letters, digits and hyphens, a letter first, <= 49.
SERVICE_NAME = re.compile(r"^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$")


@dataclass(frozen=True)
class StartupProbe:
    """When Cloud Run may send traffic; `path=None` probes the TCP port instead of HTTP."""

    path: str | None = "/health"
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 5
    failure_threshold: int = 24

    def __post_init__(self) -> None:
        limit = CLOUD_RUN_PROBE_MAX_S
        if not 1 <= self.period_seconds <= limit:
            raise ValueError(
                f"startup probe period_seconds={self.period_seconds} is outside 1..{limit}; "
                f"Cloud Run rejects a period over {limit} s. Raise failure_threshold or "
                "initial_delay_seconds instead to allow a longer start."
            )
        if not 0 <= self.initial_delay_seconds <= limit:
            raise ValueError(
                f"startup probe initial_delay_seconds={self.initial_delay_seconds} is outside "
                f"0..{limit}; Cloud Run rejects a longer initial delay."
            )
        if not 1 <= self.timeout_seconds <= self.period_seconds:
            raise ValueError(
                f"startup probe timeout_seconds={self.timeout_seconds} must be within "
                f"1..period_seconds ({self.period_seconds})."
            )
        if self.failure_threshold < 1 or self.failure_threshold * self.period_seconds > limit:
            raise ValueError(
                f"startup probe failure_threshold x period_seconds = "
                f"{self.failure_threshold} x {self.period_seconds} s exceeds Cloud Run's "
                f"{limit} s; lower failure_threshold and use initial_delay_seconds "
                "(up to 240 s) for the rest of the startup time."
            )

    @property
    def budget_seconds(self) -> int:
        """The longest a container may take to pass the probe before Cloud Run stops it."""
        return self.initial_delay_seconds + self.failure_threshold * self.period_seconds


@dataclass(frozen=True)
class CloudRunGpuServiceArgs:
    """Everything one GPU service needs; build it with `prebuilt_gemma`, `vllm_gemma` or
    `finetuned_gemma`, and adjust with `dataclasses.replace`."""

    project_id: pulumi.Input[str]
    region: str
    flavour: Flavour
    image: pulumi.Input[str]
    # What clients send as `model` (the chat app's backend `model`).
    model_name: str
    api_kind: ApiKind
    startup_probe: StartupProbe
    cpu: str = "8"
    memory: str = "32Gi"
    concurrency: int = 4
    max_instances: int = 1
    min_instances: int = 0
    timeout_seconds: int = 600
    container_port: int = 8080
    args: tuple[str, ...] = ()
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Env var name -> Secret Manager secret (id or projects/*/secrets/* name), read as
    # `latest`; the runtime account gets secretAccessor on exactly these secrets.
    secret_env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Mounted read-only at /models; the runtime account gets objectViewer on it alone.
    model_bucket: pulumi.Input[str] | None = None
    # Read without a mount (e.g. MODEL_URI=gs://...); same bucket-only objectViewer grant.
    reads_bucket: pulumi.Input[str] | None = None
    # Label (used in resource names) -> IAM member, e.g. {"chat": "serviceAccount:..."}.
    invokers: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    public: bool = False
    ingress: str = "INGRESS_TRAFFIC_ALL"
    gpu_zonal_redundancy_disabled: bool = True
    startup_cpu_boost: bool = True
    # Stateless: nothing is lost on delete, and protection would block `pulumi destroy`.
    deletion_protection: bool = False
    service_name: str | None = None
    # The CUDA runtime the image is built on (None: unknown, not checked against the driver).
    cuda: Cuda | None = None
    # Ends the runtime account id, `<service>-<suffix>-run`, so stacks never share one.
    account_suffix: str = ""
    depends_on: tuple[pulumi.Resource, ...] = ()

    def warnings(self, service: str) -> list[str]:
        """Deployable but costly or exposed choices, printed once each by `pulumi up`."""
        found = []
        if self.public:
            found.append(
                f"Cloud Run service {service} is PUBLIC: anyone on the internet may call this "
                "GPU endpoint and run up its bill. Set public to false unless that is the aim."
            )
        if self.min_instances > 0:
            found.append(
                f"Cloud Run service {service} keeps {self.min_instances} L4 instance(s) warm, "
                "billed around the clock."
            )
        if not self.gpu_zonal_redundancy_disabled:
            found.append(
                f"Cloud Run service {service} uses GPU zonal redundancy: it costs more and "
                "needs its own L4 quota."
            )
        return found

    def validate(self, name: str) -> None:
        """Refuse settings Cloud Run GPUs reject, with the fix in the message."""
        where = f"CloudRunGpuService {name!r}"
        service = self.service_name or name
        if not SERVICE_NAME.match(service):
            raise ValueError(
                f"{where}: service name {service!r} must be 1-49 lowercase letters, digits "
                "or hyphens, starting with a letter."
            )
        settings = ServiceSettings(
            cpu=self.cpu,
            memory=self.memory,
            concurrency=self.concurrency,
            max_instances=self.max_instances,
            min_instances=self.min_instances,
            timeout_seconds=self.timeout_seconds,
        )
        if problems := settings.problems():
            raise ValueError(f"{where}: " + " ".join(f"{f}={m}" for f, m in problems))
        if isinstance(self.image, str) and (
            problem := cloud_run_cuda_problem(self.image, self.cuda)
        ):
            raise ValueError(f"{where}: {problem}")
        if "PORT" in self.env:
            raise ValueError(f"{where}: PORT is set by Cloud Run from container_port.")
        if overlap := sorted(set(self.env) & set(self.secret_env)):
            raise ValueError(f"{where}: {overlap} set both as plain env and as secret env.")
        for label, member in self.invokers.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,30}", label):
                raise ValueError(
                    f"{where}: invoker label {label!r} must be short lowercase-hyphenated "
                    "(it names the IAM binding)."
                )
            if isinstance(member, str):
                if member in OPEN_MEMBERS:
                    raise ValueError(
                        f"{where}: invoker {label!r} is {member}; open a service to everyone "
                        "only with public=True, which also warns on every `pulumi up`."
                    )
                if not is_iam_member(member):
                    raise ValueError(
                        f"{where}: invoker {label!r}={member!r} is not an IAM member; write "
                        "e.g. 'user:ana@example.com' or 'group:ml-team@example.com'."
                    )


MAX_CONCURRENCY = 1000
MAX_TIMEOUT_S = 3600
# An instance with an L4 takes 4, 6 or 8 CPUs, and Cloud Run caps memory by CPU count
# ("Configure memory limits", Cloud Run docs): 4 CPUs up to 16 GiB, 6 up to 24, 8 up to 32.
L4_MAX_MEMORY_GIB_BY_CPU = {4: 16.0, 6: 24.0, 8: 32.0}
L4_MIN_MEMORY_GIB = 16.0
_MEMORY_UNITS = {"Gi": 1.0, "Mi": 1 / 1024, "G": 1e9 / 2**30, "M": 1e6 / 2**30}


def parse_cpu(value: str) -> float | None:
    """CPUs in Cloud Run's spelling (`8`, `8000m`); None when it is not a number."""
    try:
        return float(value[:-1]) / 1000 if value.endswith("m") else float(value)
    except ValueError:
        return None


def parse_memory_gib(value: str) -> float | None:
    """GiB in Cloud Run's spelling (`32Gi`, `16384Mi`, `34G`); None without a known unit."""
    for suffix, scale in _MEMORY_UNITS.items():
        if value.endswith(suffix):
            try:
                return float(value[: -len(suffix)]) * scale
            except ValueError:
                return None
    return None


def resource_problems(cpu: str, memory: str) -> list[tuple[str, str]]:
    """What Cloud Run would refuse in one L4 instance's cpu and memory: (field, why and fix)."""
    cpus = parse_cpu(cpu)
    gib = parse_memory_gib(memory)
    problems = []
    allowed = ", ".join(str(c) for c in L4_MAX_MEMORY_GIB_BY_CPU)
    if cpus not in L4_MAX_MEMORY_GIB_BY_CPU:
        problems.append(("cpu", f"{cpu!r}: an L4 instance takes {allowed} CPUs; set one of them."))
    if gib is None:
        problems.append(("memory", f"{memory!r}: write it with a unit, like 32Gi or 16384Mi."))
    elif gib < L4_MIN_MEMORY_GIB:
        problems.append(("memory", f"{memory!r}: an L4 instance needs at least 16Gi."))
    if cpus in L4_MAX_MEMORY_GIB_BY_CPU and gib is not None:
        cap = L4_MAX_MEMORY_GIB_BY_CPU[int(cpus)]
        if gib > cap:
            more = [f"{c} CPUs" for c, m in L4_MAX_MEMORY_GIB_BY_CPU.items() if m >= gib]
            fix = f"set cpu to {more[0].split()[0]} or more" if more else "lower memory"
            problems.append(
                (
                    "memory",
                    f"{memory!r} is more than Cloud Run allows with {cpu} CPUs "
                    f"(at most {cap:g}Gi): {fix}, or set memory to {cap:g}Gi.",
                )
            )
    return problems


@dataclass(frozen=True)
class ServiceSettings:
    """The knobs every flavour shares; defaults are Google's advice for the prebuilt image."""

    cpu: str = "8"
    memory: str = "32Gi"
    concurrency: int = 4
    max_instances: int = 1
    min_instances: int = 0
    timeout_seconds: int = 600
    gpu_zonal_redundancy_disabled: bool = True
    public: bool = False
    ingress: str = "INGRESS_TRAFFIC_ALL"
    deletion_protection: bool = False

    def problems(self) -> list[tuple[str, str]]:
        """What Cloud Run would refuse here, as (field, why and how to fix it)."""
        found = resource_problems(self.cpu, self.memory)
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            found.append(("concurrency", f"{self.concurrency} must be within 1..1000."))
        if self.max_instances < 1:
            found.append(
                ("max_instances", f"{self.max_instances} must be at least 1 (one L4 each).")
            )
        elif not 0 <= self.min_instances <= self.max_instances:
            found.append(
                (
                    "min_instances",
                    f"{self.min_instances} must be within 0 and the most instances "
                    f"({self.max_instances}); every warm instance bills a GPU around the clock.",
                )
            )
        if not 1 <= self.timeout_seconds <= MAX_TIMEOUT_S:
            found.append(("timeout_seconds", f"{self.timeout_seconds} must be within 1..3600."))
        return found


VLLM_SETTINGS = ServiceSettings(concurrency=16)
# The team's working settings for a fine-tuned 1B: one request at a time, 15 min timeout.
FINETUNED_SETTINGS = ServiceSettings(cpu="4", memory="16Gi", concurrency=1, timeout_seconds=900)


def invokers_from(members: Sequence[str]) -> dict[str, str]:
    """Stable binding labels for plain IAM members from config (label -> member)."""
    labelled: dict[str, str] = {}
    for member in members:
        slug = re.sub(r"[^a-z0-9]+", "-", member.lower().split(":", 1)[-1]).strip("-")
        digest = hashlib.sha256(member.encode()).hexdigest()[:6]
        labelled[f"{slug[:24].strip('-')}-{digest}"] = member
    return labelled


def _common(settings: ServiceSettings) -> dict[str, Any]:
    return {
        "cpu": settings.cpu,
        "memory": settings.memory,
        "concurrency": settings.concurrency,
        "max_instances": settings.max_instances,
        "min_instances": settings.min_instances,
        "timeout_seconds": settings.timeout_seconds,
        "gpu_zonal_redundancy_disabled": settings.gpu_zonal_redundancy_disabled,
        "public": settings.public,
        "ingress": settings.ingress,
        "deletion_protection": settings.deletion_protection,
    }


OLLAMA_READY_PATH = "/api/tags"


def prebuilt_gemma(
    *,
    project_id: pulumi.Input[str],
    region: str,
    variant: str,
    invokers: Mapping[str, pulumi.Input[str]],
    settings: ServiceSettings = ServiceSettings(),
    ollama_num_parallel: int | None = None,
    image: str | None = None,
    service_name: str | None = None,
    depends_on: tuple[pulumi.Resource, ...] = (),
) -> CloudRunGpuServiceArgs:
    """Google's prebuilt Gemma 3 image (Ollama inside), spoken to through its Gemini API.

    `variant` is one of PREBUILT_VARIANTS, the image's name (`gemma3-4b`).
    `ollama_num_parallel` defaults to the concurrency; keep concurrency between it and twice it.
    """
    if variant not in PREBUILT_VARIANTS:
        raise ValueError(
            f"prebuilt Gemma 3 variant {variant!r} has no image; choose one of "
            f"{', '.join(PREBUILT_VARIANTS)}."
        )
    size = variant.removeprefix("gemma3-")
    parallel = ollama_num_parallel or settings.concurrency
    if not parallel <= settings.concurrency <= 2 * parallel:
        raise ValueError(
            f"prebuilt Gemma: concurrency {settings.concurrency} should be between "
            f"OLLAMA_NUM_PARALLEL={parallel} (best latency) and twice it (best utilization)."
        )
    return CloudRunGpuServiceArgs(
        project_id=project_id,
        region=region,
        flavour="prebuilt",
        image=image or PREBUILT_IMAGE.format(variant=variant),
        cuda=None if image else PREBUILT_IMAGE_CUDA,
        model_name=f"gemma3:{size}",
        api_kind="gemini",
        # Ollama's parallelism must match what Cloud Run sends one instance, or requests queue.
        env={"OLLAMA_NUM_PARALLEL": str(parallel)},
        # The image's proxy opens its port before Ollama answers, so a TCP probe passes too
        # early. Ollama's model list answers, through the proxy, once the server behind it
        # is up and has the weights (they ship in the image); it loads them on first use.
        startup_probe=StartupProbe(
            path=OLLAMA_READY_PATH, initial_delay_seconds=0, period_seconds=10, failure_threshold=24
        ),
        invokers=invokers,
        service_name=service_name,
        depends_on=depends_on,
        **_common(settings),
    )


def vllm_gemma(
    *,
    project_id: pulumi.Input[str],
    region: str,
    model_id: str,
    max_model_len: int,
    invokers: Mapping[str, pulumi.Input[str]],
    hf_token_secret: pulumi.Input[str] | None = None,
    model_bucket: pulumi.Input[str] | None = None,
    model_path: str = "",
    settings: ServiceSettings = VLLM_SETTINGS,
    image: str = CLOUD_RUN_VLLM_IMAGE,
    service_name: str | None = None,
    depends_on: tuple[pulumi.Resource, ...] = (),
) -> CloudRunGpuServiceArgs:
    """vLLM's OpenAI server; weights from a GCS bucket mount, or from the Hub with the token
    read from Secret Manager at run time (never at build time).

    `model_id` is the name clients send as `model` (for a bucket, any name you choose).
    """
    if (model_bucket is None) == (hf_token_secret is None):
        raise ValueError(
            "vllm_gemma: give exactly one model source: model_bucket (a folder in GCS) or "
            "hf_token_secret (download model_id from Hugging Face with that secret)."
        )
    if model_path.startswith(("gs://", "/")):
        raise ValueError(
            f"vllm_gemma: model_path {model_path!r} is a folder inside the bucket, "
            "without gs:// or a leading slash."
        )
    if not 512 <= max_model_len <= 131072:
        raise ValueError(
            f"vllm_gemma: max_model_len {max_model_len} is outside 512..131072; Gemma 3's "
            "128K default does not fit an L4's KV cache."
        )
    model_arg = f"{MODEL_MOUNT}/{model_path}".rstrip("/") if model_bucket else model_id
    env: dict[str, pulumi.Input[str]] = {
        "HF_HOME": "/tmp/huggingface",  # noqa: S108 - Cloud Run's writable in-memory disk
        "VLLM_NO_USAGE_STATS": "1",
    }
    if model_bucket is not None:
        env["HF_HUB_OFFLINE"] = "1"
    return CloudRunGpuServiceArgs(
        project_id=project_id,
        region=region,
        flavour="vllm",
        image=image,
        cuda=vllm_image_cuda(image),
        model_name=model_id,
        api_kind="openai",
        # After the image's `vllm serve` entrypoint: the model first, then the flags.
        args=(
            model_arg,
            f"--served-model-name={model_id}",
            "--gpu-memory-utilization=0.90",
            f"--max-model-len={max_model_len}",
            # One instance batches exactly what Cloud Run sends it.
            f"--max-num-seqs={settings.concurrency}",
            "--host=0.0.0.0",
            "--port=8080",
        ),
        env=env,
        secret_env={"HF_TOKEN": hf_token_secret} if hf_token_secret is not None else {},
        model_bucket=model_bucket,
        # Engine start (35-90 s) plus weights and CUDA graphs: 180 + 24 x 10 = 420 s.
        startup_probe=StartupProbe(
            path="/health", initial_delay_seconds=180, period_seconds=10, failure_threshold=24
        ),
        invokers=invokers,
        service_name=service_name,
        depends_on=depends_on,
        **_common(settings),
    )


def finetuned_gemma(
    *,
    project_id: pulumi.Input[str],
    region: str,
    image: pulumi.Input[str],
    model_bucket: pulumi.Input[str],
    model_path: str,
    invokers: Mapping[str, pulumi.Input[str]],
    model_name: str = "gemma-3-finetuned",
    settings: ServiceSettings = FINETUNED_SETTINGS,
    service_name: str | None = None,
    depends_on: tuple[pulumi.Resource, ...] = (),
) -> CloudRunGpuServiceArgs:
    """Our inference app serving a merged model folder it reads from gs:// at start."""
    if model_path.startswith(("gs://", "/")) or not model_path:
        raise ValueError(
            f"finetuned_gemma: model_path {model_path!r} must be the model folder inside the "
            "bucket, e.g. 'models/gemma-3-1b-sql' (no gs://, no leading slash)."
        )
    return CloudRunGpuServiceArgs(
        project_id=project_id,
        region=region,
        flavour="finetuned",
        image=image,
        # Our app/inference image, unless a caller passes another one.
        cuda=INFERENCE_IMAGE_CUDA,
        model_name=model_name,
        api_kind="openai",
        env={
            "MODEL_URI": pulumi.Output.concat("gs://", model_bucket, "/", model_path),
            "SERVED_MODEL_NAME": model_name,
            # Lets the app's JSON logs name each request's Cloud Trace trace.
            "GOOGLE_CLOUD_PROJECT": project_id,
        },
        reads_bucket=model_bucket,
        # Download of the merged folder plus load: 60 + 24 x 10 = 300 s.
        startup_probe=StartupProbe(
            path="/health", initial_delay_seconds=60, period_seconds=10, failure_threshold=24
        ),
        invokers=invokers,
        service_name=service_name,
        depends_on=depends_on,
        **_common(settings),
    )


class CloudRunGpuService(pulumi.ComponentResource):
    """One Cloud Run service on an L4 with its own runtime account and named invokers."""

    service: gcp.cloudrunv2.Service
    runtime_account: gcp.serviceaccount.Account
    uri: pulumi.Output[str]
    service_name: pulumi.Output[str]
    location: str
    runtime_service_account_email: pulumi.Output[str]
    api_kind: ApiKind
    model_name: str
    curl_example: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: CloudRunGpuServiceArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:cloudrun:CloudRunGpuService", name, None, opts)
        args.validate(name)
        service_name = args.service_name or name
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))

        # One account per service, so a grant to one model server never reaches another.
        self.runtime_account = gcp.serviceaccount.Account(
            f"{name}-runtime",
            project=args.project_id,
            account_id=runtime_account_id(service_name, args.account_suffix),
            display_name=f"Cloud Run runtime for {service_name}",
            opts=fixed_id_options(child),
        )
        runtime_member = self.runtime_account.email.apply(lambda e: f"serviceAccount:{e}")
        grants: list[pulumi.CustomResource] = []
        for env_name, secret in sorted(args.secret_env.items()):
            grants.append(
                gcp.secretmanager.SecretIamMember(
                    f"{name}-reads-{env_name.lower().replace('_', '-')}",
                    project=args.project_id,
                    secret_id=secret,
                    role="roles/secretmanager.secretAccessor",
                    member=runtime_member,
                    opts=child,
                )
            )
        buckets = [b for b in (args.model_bucket, args.reads_bucket) if b is not None]
        for index, bucket in enumerate(buckets):
            grants.append(
                gcp.storage.BucketIAMMember(
                    f"{name}-model-reader" + (f"-{index}" if index else ""),
                    bucket=bucket,
                    role="roles/storage.objectViewer",
                    member=runtime_member,
                    opts=child,
                )
            )

        # The image needs no grant: Cloud Run's service agent reads this project's registry.
        waits: list[pulumi.Resource] = (
            [wait_for_grants(f"{name}-grants-applied", grants, parent=self)] if grants else []
        )

        envs = [
            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(name=key, value=value)
            for key, value in sorted(args.env.items())
        ] + [
            gcp.cloudrunv2.ServiceTemplateContainerEnvArgs(
                name=key,
                value_source=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=gcp.cloudrunv2.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=secret, version="latest"
                    )
                ),
            )
            for key, secret in sorted(args.secret_env.items())
        ]
        probe = args.startup_probe
        volumes: list[gcp.cloudrunv2.ServiceTemplateVolumeArgs] = []
        mounts: list[gcp.cloudrunv2.ServiceTemplateContainerVolumeMountArgs] = []
        if args.model_bucket is not None:
            volumes.append(
                gcp.cloudrunv2.ServiceTemplateVolumeArgs(
                    name="model",
                    gcs=gcp.cloudrunv2.ServiceTemplateVolumeGcsArgs(
                        bucket=args.model_bucket,
                        read_only=True,
                        # Folders uploaded with `gcloud storage cp -r` have no directory
                        # objects; without this the model folder is not visible.
                        mount_options=["implicit-dirs"],
                    ),
                )
            )
            mounts.append(
                gcp.cloudrunv2.ServiceTemplateContainerVolumeMountArgs(
                    name="model", mount_path=MODEL_MOUNT
                )
            )
        labels: dict[str, str] = {"gemma-stack-flavour": args.flavour}
        if args.cuda is not None:
            labels["gemma-stack-cuda"] = cuda_label(args.cuda)
        if args.public:
            # Lets policy checks tell a deliberate public service from an accident.
            labels["gemma-stack-public"] = "true"

        self.service = gcp.cloudrunv2.Service(
            f"{name}-service",
            name=service_name,
            project=args.project_id,
            location=args.region,
            ingress=args.ingress,
            deletion_protection=args.deletion_protection,
            labels=labels,
            template=gcp.cloudrunv2.ServiceTemplateArgs(
                service_account=self.runtime_account.email,
                execution_environment="EXECUTION_ENVIRONMENT_GEN2",
                gpu_zonal_redundancy_disabled=args.gpu_zonal_redundancy_disabled,
                node_selector=gcp.cloudrunv2.ServiceTemplateNodeSelectorArgs(accelerator=L4),
                max_instance_request_concurrency=args.concurrency,
                timeout=f"{args.timeout_seconds}s",
                scaling=gcp.cloudrunv2.ServiceTemplateScalingArgs(
                    min_instance_count=args.min_instances,
                    max_instance_count=args.max_instances,
                ),
                labels=labels,
                volumes=volumes or None,
                containers=[
                    gcp.cloudrunv2.ServiceTemplateContainerArgs(
                        name="model-server",
                        image=args.image,
                        args=list(args.args) or None,
                        envs=envs or None,
                        ports=gcp.cloudrunv2.ServiceTemplateContainerPortsArgs(
                            name="http1", container_port=args.container_port
                        ),
                        resources=gcp.cloudrunv2.ServiceTemplateContainerResourcesArgs(
                            limits={
                                "cpu": args.cpu,
                                "memory": args.memory,
                                "nvidia.com/gpu": str(GPUS_PER_INSTANCE),
                            },
                            # GPU instances must keep their CPU between requests.
                            cpu_idle=False,
                            startup_cpu_boost=args.startup_cpu_boost,
                        ),
                        startup_probe=_startup_probe(probe, args.container_port),
                        volume_mounts=mounts or None,
                    )
                ],
            ),
            # Cloud Run checks secret access when it creates the revision, and the first
            # instance reads the model bucket before the revision turns ready.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*args.depends_on, *waits]),
        )

        self.invoker_bindings: list[gcp.cloudrunv2.ServiceIamMember] = [
            self._invoker(name, label, member, args)
            for label, member in sorted(args.invokers.items())
        ]
        for warning in args.warnings(service_name):
            pulumi.log.warn(warning, resource=self)
        if args.public:
            self.invoker_bindings.append(self._invoker(name, "public", "allUsers", args))

        self.uri = self.service.uri
        self.service_name = self.service.name
        self.location = args.region
        self.runtime_service_account_email = self.runtime_account.email
        self.api_kind = args.api_kind
        self.model_name = args.model_name
        self.curl_example = _curl_example(self.uri, args)
        self.register_outputs(
            {
                "uri": self.uri,
                "serviceName": self.service_name,
                "runtimeServiceAccountEmail": self.runtime_service_account_email,
                "apiKind": self.api_kind,
                "modelName": self.model_name,
            }
        )

    def _invoker(
        self, name: str, label: str, member: pulumi.Input[str], args: CloudRunGpuServiceArgs
    ) -> gcp.cloudrunv2.ServiceIamMember:
        return gcp.cloudrunv2.ServiceIamMember(
            f"{name}-invoker-{label}",
            project=args.project_id,
            location=args.region,
            name=self.service.name,
            role="roles/run.invoker",
            member=member,
            opts=pulumi.ResourceOptions(parent=self),
        )


def _startup_probe(
    probe: StartupProbe, port: int
) -> gcp.cloudrunv2.ServiceTemplateContainerStartupProbeArgs:
    run = gcp.cloudrunv2
    return run.ServiceTemplateContainerStartupProbeArgs(
        initial_delay_seconds=probe.initial_delay_seconds,
        period_seconds=probe.period_seconds,
        timeout_seconds=probe.timeout_seconds,
        failure_threshold=probe.failure_threshold,
        http_get=(
            run.ServiceTemplateContainerStartupProbeHttpGetArgs(path=probe.path, port=port)
            if probe.path
            else None
        ),
        tcp_socket=(
            None if probe.path else run.ServiceTemplateContainerStartupProbeTcpSocketArgs(port=port)
        ),
    )


def runtime_account_id(service_name: str, suffix: str = "") -> str:
    """`<service>[-<suffix>]-run` within IAM's 30 characters (long names keep a hash)."""
    return service_account_id(scoped_id(service_name, suffix, 26) + "-run")


def _curl_example(uri: pulumi.Output[str], args: CloudRunGpuServiceArgs) -> pulumi.Output[str]:
    auth = 'curl -sS -H "Authorization: Bearer $(gcloud auth print-identity-token)" '
    auth += "-H 'Content-Type: application/json' "
    if args.api_kind == "gemini":
        body = '{"contents":[{"role":"user","parts":[{"text":"Hello"}]}]}'
        return pulumi.Output.format(
            "{0}{1}/v1beta/models/{2}:generateContent -d '{3}'", auth, uri, args.model_name, body
        )
    body = (
        f'{{"model":"{args.model_name}","messages":[{{"role":"user","content":"Hello"}}],'
        '"max_tokens":64}'
    )
    return pulumi.Output.format("{0}{1}/v1/chat/completions -d '{2}'", auth, uri, body)
