"""Stack configuration: read `pulumi.Config` once into frozen dataclasses and validate all of it.

`load_stack_config()` is the only reader of Pulumi config in the program. Everything it
returns is checked before any resource exists; a bad value raises one `ConfigError` whose
message lists each problem with the `pulumi config set` that fixes it.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import pulumi

from components.cloud_run_gpu_service import (
    PREBUILT_IMAGE,
    PREBUILT_VARIANTS,
    SERVICE_NAME,
    ServiceSettings,
    parse_cpu,
    parse_memory_gib,
)
from components.cluster import RELEASE_CHANNELS
from components.gemma_fine_tune_job import FINE_TUNE_SIZING, JOB_NAME
from components.gemma_on_gke import MAX_REPLICAS, QUEUE_TARGET
from components.gpu_software import (
    VLLM_IMAGE,
    cloud_run_cuda_problem,
    cuda_12_vllm_image,
    vllm_image_cuda,
)
from components.iam_members import OPEN_MEMBERS, is_iam_member
from components.registry import DEFAULT_BUILD_REGION, build_region_problem
from components.resource_ids import fitted_id, id_part, scoped_id, service_account_id
from stacks.cloud_run_regions import CLOUD_RUN_L4_REGIONS
from stacks.gemma_sizing import GEMMA_SIZING, GEMMA_VARIANTS, GemmaSizing, sizing_problems

NAMESPACE = "gemma-stack"  # Pulumi config namespace: keys read as `gemma-stack:<key>`.

# Pinned on purpose: a vLLM upgrade changes flags and memory use, so it is a deliberate edit.
DEFAULT_VLLM_IMAGE = VLLM_IMAGE
CHAT_EXPOSURES = ("internal", "iap", "login")
PREFLIGHT_MODES = ("enforce", "warn", "off")
FLAVOURS = ("prebuilt", "vllm", "finetuned")
OLLAMA_NUM_PARALLEL = 4

Flavour = Literal["prebuilt", "vllm", "finetuned"]
Exposure = Literal["internal", "iap", "login"]
PreflightMode = Literal["enforce", "warn", "off"]

_GS_URI = re.compile(r"^gs://([a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(.*))?$")
_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_K8S_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_IAP_AUDIENCE = re.compile(r"^/projects/\d+/global/backendServices/\d+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class ConfigError(ValueError, pulumi.RunError):
    """The stack config cannot be deployed; the message says what to change.

    As a `pulumi.RunError`, `pulumi up` prints just this message, without a stack trace.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"gemma-stack config is invalid ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}); nothing was created:\n{lines}"
        )


# --------------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class ClusterConfig:
    """GKE Autopilot cluster settings."""

    name: str = "gemma-stack"
    release_channel: str = "REGULAR"
    deletion_protection: bool = True


@dataclass(frozen=True)
class GcsModel:
    """A model folder in Cloud Storage, `gs://bucket/path`."""

    uri: str
    bucket: str
    path: str


@dataclass(frozen=True)
class GkeGemmaConfig:
    """vLLM serving Gemma 3 on GKE Autopilot L4 GPUs; sizing already resolved from the table."""

    enabled: bool
    variant: str
    model_id: str
    gpu_count: int
    tensor_parallel: int
    max_model_len: int
    max_num_seqs: int
    vllm_image: str
    sizing: GemmaSizing
    model: GcsModel | None = None  # fine-tuned weights served from a GCS FUSE volume
    # Equal bounds fix the count; otherwise an HPA scales on vLLM's queue per pod.
    min_replicas: int = 1
    max_replicas: int = 2
    queue_target: int = QUEUE_TARGET

    @property
    def uses_hugging_face(self) -> bool:
        return self.enabled and self.model is None


@dataclass(frozen=True)
class CloudRunServiceConfig:
    """One Cloud Run service with an L4 GPU; defaults come from its flavour."""

    name: str
    flavour: Flavour
    enabled: bool
    image: str
    cpu: str
    memory: str
    concurrency: int
    max_instances: int
    min_instances: int
    timeout_seconds: int
    gpu_zonal_redundancy: bool
    public: bool
    invokers: tuple[str, ...]
    variant: str | None = None  # prebuilt: gemma3-1b|4b|12b|27b
    model: str | None = None  # vllm: Hugging Face id or gs:// folder
    model_uri: str | None = None  # finetuned: gs://bucket/path of a merged model folder
    fine_tune_job: str | None = None  # finetuned: the fineTuneJobs entry whose output it serves
    gcs_model: GcsModel | None = None  # vllm with gs://, or finetuned
    max_model_len: int | None = None  # vllm
    ollama_num_parallel: int | None = None  # prebuilt

    @property
    def uses_hugging_face(self) -> bool:
        return self.enabled and self.flavour == "vllm" and self.gcs_model is None

    @property
    def needs_inference_image(self) -> bool:
        """True when this service runs our own `app/inference` image built by the stack."""
        return self.enabled and self.flavour == "finetuned" and not self.image

    @property
    def cpu_count(self) -> float:
        """vCPUs per instance; `cpu` was checked by the Cloud Run component's rule when parsed."""
        return parse_cpu(self.cpu) or 0.0

    @property
    def memory_gib(self) -> float:
        """Memory per instance in GiB, likewise checked when parsed."""
        return parse_memory_gib(self.memory) or 0.0


@dataclass(frozen=True)
class ChatAppConfig:
    """The Gradio chat app on GKE."""

    enabled: bool = True
    exposure: Exposure = "internal"
    gemini_model: str = "gemini-2.5-flash"
    gemini_location: str = "global"
    system_prompt: str | None = None
    allowed_users: tuple[str, ...] = ()  # IAM members let through IAP (exposure=iap)
    domain: str | None = None  # DNS name for the IAP Ingress certificate (exposure=iap)
    # /projects/NUMBER/global/backendServices/ID: the app then verifies IAP's signed header.
    iap_audience: str | None = None
    namespace: str = "gemma-stack"
    ksa_name: str = "chat-app"
    # Days after their last write that conversations and messages expire; None keeps them.
    history_ttl_days: int | None = None
    # CIDRs that may reach the login load balancer (exposure=login); empty means any address.
    login_source_ranges: tuple[str, ...] = ()


@dataclass(frozen=True)
class FirestoreConfig:
    """The chat history database."""

    database: str = "chat-app-db"
    location: str = "nam5"
    delete_protection: bool = True


@dataclass(frozen=True)
class FineTuneJobConfig:
    """One fineTuneJobs entry: a LoRA run of app.finetune as a Kubernetes Job on GKE."""

    name: str
    dataset: str
    base_model: str
    output: str
    variant: str
    # Hyper-parameters as app.finetune's flags, only those set in config (the app owns defaults).
    train_args: tuple[str, ...] = ()

    @property
    def uses_hugging_face(self) -> bool:
        return not self.base_model.startswith("gs://")


@dataclass(frozen=True)
class ImagesConfig:
    """Prebuilt image URIs; a set one skips its Cloud Build."""

    chat: str | None = None
    inference: str | None = None
    finetune: str | None = None


# Short enough that `chat-invoker-<suffix>` still reads whole in a 30-character account id.
MAX_ID_SUFFIX = 16


@dataclass(frozen=True)
class ResourceIds:
    """IDs of project-wide resources, each `<base>-<idSuffix>` so two stacks never collide."""

    suffix: str  # idSuffix, default the stack name
    hf_token_secret: str
    chat_login_secret: str
    chat_session_secret: str
    build_account: str
    node_account: str
    chat_invoker_account: str


def resource_ids(suffix: str) -> ResourceIds:
    """Every stack-scoped ID for ``suffix`` (secret ids allow 255 characters, accounts 30)."""
    return ResourceIds(
        suffix=suffix,
        hf_token_secret=scoped_id("HF_TOKEN", suffix, 255),
        chat_login_secret=scoped_id("chat-login", suffix, 255),
        chat_session_secret=scoped_id("chat-session-key", suffix, 255),
        build_account=service_account_id(scoped_id("gemma-build", suffix, 30)),
        node_account=service_account_id(scoped_id("gemma-nodes", suffix, 30)),
        chat_invoker_account=service_account_id(scoped_id("chat-invoker", suffix, 30)),
    )


@dataclass(frozen=True)
class PreflightConfig:
    """Quota checks before any GPU is requested (see stacks.preflight)."""

    mode: PreflightMode = "enforce"
    # File a quota increase request for each shortfall (needs contact_email).
    request_quota: bool = False
    contact_email: str | None = None


@dataclass(frozen=True)
class MonitoringConfig:
    """Dashboards and alert policies; alerts email `alert_email` when it is set."""

    alert_email: str | None = None


@dataclass(frozen=True)
class StackConfig:
    """Everything the stack needs, validated."""

    project: str
    region: str
    namespace: str
    artifact_repository: str
    ids: ResourceIds
    cluster: ClusterConfig
    gke_gemma: GkeGemmaConfig
    cloud_run_services: tuple[CloudRunServiceConfig, ...]
    chat_app: ChatAppConfig
    firestore: FirestoreConfig
    images: ImagesConfig
    # Where Cloud Build runs the image builds; the images still go to `region`'s registry.
    build_region: str = DEFAULT_BUILD_REGION
    preflight: PreflightConfig = PreflightConfig()
    monitoring: MonitoringConfig = MonitoringConfig()
    fine_tune_jobs: tuple[FineTuneJobConfig, ...] = ()
    hf_token: pulumi.Output[str] | None = field(default=None, repr=False)
    chat_login_password: pulumi.Output[str] | None = field(default=None, repr=False)
    # Signs login sessions; None derives one from chatLoginPassword (see stacks/platform.py).
    chat_session_key: pulumi.Output[str] | None = field(default=None, repr=False)

    @property
    def enabled_cloud_run_services(self) -> tuple[CloudRunServiceConfig, ...]:
        return tuple(s for s in self.cloud_run_services if s.enabled)

    @property
    def needs_hf_token(self) -> bool:
        return (
            self.gke_gemma.uses_hugging_face
            or any(s.uses_hugging_face for s in self.cloud_run_services)
            or any(j.uses_hugging_face for j in self.fine_tune_jobs)
        )

    @property
    def builds_fine_tune_image(self) -> bool:
        return bool(self.fine_tune_jobs) and self.images.finetune is None

    @property
    def builds_chat_image(self) -> bool:
        return self.chat_app.enabled and self.images.chat is None

    @property
    def builds_inference_image(self) -> bool:
        return self.images.inference is None and any(
            s.needs_inference_image for s in self.cloud_run_services
        )


# --------------------------------------------------------------------------- reading


class _Reader:
    """Typed access to raw string config values that records problems instead of raising."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def text(self, key: str, default: str) -> str:
        value = self.values.get(key)
        return default if value is None or value == "" else value

    def optional_text(self, key: str) -> str | None:
        value = self.values.get(key)
        return value or None

    def flag(self, key: str, default: bool) -> bool:
        value = self.values.get(key)
        if value is None or value == "":
            return default
        if value.lower() in {"true", "false"}:
            return value.lower() == "true"
        self.problems.append(f"{key}={value!r} must be true or false.")
        return default

    def number(self, key: str, default: int) -> int:
        value = self.values.get(key)
        if value is None or value == "":
            return default
        try:
            return int(value)
        except ValueError:
            self.problems.append(f"{key}={value!r} must be a whole number.")
            return default

    def structured(self, key: str) -> Any:
        value = self.values.get(key)
        if value is None or value == "":
            return None
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            self.problems.append(
                f"{key} must be a YAML list of objects in Pulumi.<stack>.yaml "
                f"(or JSON with `pulumi config set --path`); got {value!r}."
            )
            return None

    def string_list(self, key: str) -> tuple[str, ...]:
        raw = self.structured(key)
        if raw is None:
            return ()
        if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
            self.problems.append(f"{key} must be a list of strings.")
            return ()
        return tuple(raw)


def _camel(field: str) -> str:
    """`max_instances` -> `maxInstances`: a component field as its config key."""
    first, *rest = field.split("_")
    return first + "".join(part.capitalize() for part in rest)


def parse_gcs_uri(uri: str) -> GcsModel | None:
    """Split `gs://bucket/path` (path may be empty); None when it is not a well-formed gs:// URI."""
    match = _GS_URI.match(uri)
    if not match or ".." in match.group(1):
        return None
    return GcsModel(
        uri=uri.rstrip("/"), bucket=match.group(1), path=(match.group(2) or "").strip("/")
    )


def _parse_gke_gemma(r: _Reader) -> GkeGemmaConfig:
    enabled = r.flag("gkeGemmaEnabled", True)
    variant = r.text("gkeGemmaVariant", "gemma-3-1b-it")
    if variant not in GEMMA_SIZING:
        r.problems.append(
            f"gkeGemmaVariant={variant!r} is not a Gemma 3 variant this stack serves; "
            f"choose one of {', '.join(GEMMA_VARIANTS)} "
            f"(pulumi config set gkeGemmaVariant gemma-3-4b-it)."
        )
        variant = "gemma-3-1b-it"
        sizing_known = False
    else:
        sizing_known = True
    sizing = GEMMA_SIZING[variant]
    # 0 means "from the sizing table"; Pulumi.yaml declares 0 as the default.
    gpu_count = r.number("gkeGemmaGpuCount", 0) or sizing.gpu_count
    tensor_parallel = r.number("gkeGemmaTensorParallel", 0) or gpu_count
    max_model_len = r.number("gkeGemmaMaxModelLen", 0) or sizing.max_model_len
    max_num_seqs = r.number("gkeGemmaMaxNumSeqs", 0) or sizing.max_num_seqs
    model_uri = r.optional_text("gkeGemmaModelUri")
    model: GcsModel | None = None
    if model_uri is not None:
        model = parse_gcs_uri(model_uri)
        if model is None or not model.path:
            r.problems.append(
                f"gkeGemmaModelUri={model_uri!r} must look like gs://BUCKET/PATH/TO/MODEL "
                "(a merged model folder with config.json); leave it unset to pull from "
                "Hugging Face."
            )
    if enabled and sizing_known:
        r.problems.extend(
            sizing_problems(variant, gpu_count, tensor_parallel, max_model_len, max_num_seqs)
        )
    min_replicas = r.number("gkeGemmaMinReplicas", GkeGemmaConfig.min_replicas)
    max_replicas = r.number("gkeGemmaMaxReplicas", GkeGemmaConfig.max_replicas)
    queue_target = r.number("gkeGemmaQueueTarget", GkeGemmaConfig.queue_target)
    if not 1 <= min_replicas <= max_replicas <= MAX_REPLICAS:
        r.problems.append(
            f"gkeGemmaMinReplicas={min_replicas} and gkeGemmaMaxReplicas={max_replicas} must "
            f"satisfy 1 <= min <= max <= {MAX_REPLICAS}; each replica holds {gpu_count} L4 "
            "GPU(s). Equal values turn autoscaling off (pulumi config set gkeGemmaMaxReplicas 2)."
        )
    if queue_target < 1:
        r.problems.append(
            f"gkeGemmaQueueTarget={queue_target} must be at least 1: the waiting requests per "
            "pod above which the autoscaler adds a pod (pulumi config set gkeGemmaQueueTarget 4)."
        )
    return GkeGemmaConfig(
        enabled=enabled,
        variant=variant,
        model_id=r.text("gkeGemmaModelId", sizing.default_model_id),
        gpu_count=gpu_count,
        tensor_parallel=tensor_parallel,
        max_model_len=max_model_len,
        max_num_seqs=max_num_seqs,
        vllm_image=r.text("vllmImage", DEFAULT_VLLM_IMAGE),
        sizing=sizing,
        model=model,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        queue_target=queue_target,
    )


_SERVICE_KEYS = {
    "name",
    "flavour",
    "enabled",
    "variant",
    "model",
    "modelUri",
    "cpu",
    "memory",
    "concurrency",
    "maxInstances",
    "minInstances",
    "timeoutSeconds",
    "gpuZonalRedundancy",
    "public",
    "invokers",
    "image",
    "maxModelLen",
    "ollamaNumParallel",
    "fineTuneJob",
}

# Flavour defaults: prebuilt and vllm from Google's Cloud Run references; finetuned from the
# team's SQL service (cpu 4, 16Gi, concurrency 1, 15 min timeout).
_FLAVOUR_DEFAULTS: dict[str, dict[str, Any]] = {
    "prebuilt": {
        "cpu": "8",
        "memory": "32Gi",
        "concurrency": OLLAMA_NUM_PARALLEL,
        "maxInstances": 1,
        "timeoutSeconds": 600,
    },
    "vllm": {
        "cpu": "8",
        "memory": "32Gi",
        "concurrency": 16,
        "maxInstances": 1,
        "timeoutSeconds": 600,
    },
    "finetuned": {
        "cpu": "4",
        "memory": "16Gi",
        "concurrency": 1,
        "maxInstances": 1,
        "timeoutSeconds": 900,
    },
}


@dataclass
class _Fields:
    """Typed reads from one raw service object, recording problems."""

    problems: list[str]
    where: str
    raw: Mapping[str, Any]

    def __call__(self, key: str, kind: type, default: Any) -> Any:
        return _typed(self.problems, self.where, self.raw, key, (kind, default))


def _typed(
    problems: list[str], where: str, raw: Mapping[str, Any], key: str, spec: tuple[type, Any]
) -> Any:
    kind, default = spec
    value = raw.get(key, default)
    if value is None:
        return None
    if kind is int and isinstance(value, bool):
        problems.append(f"{where}.{key} must be a whole number, not {value!r}.")
        return default
    if kind is str and isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    if not isinstance(value, kind):
        problems.append(f"{where}.{key}={value!r} must be a {kind.__name__}.")
        return default
    return value


def _list_entry(
    problems: list[str], key: str, index: int, raw: Any, *, known: AbstractSet[str], needs: str
) -> tuple[str, str] | None:
    """Check one object of the list config ``key``: where to name it in messages (by its
    name once it has one) and its name; None, with the problem noted, if it is no object."""
    where = f"{key}[{index}]"
    if not isinstance(raw, dict):
        problems.append(f"{where} must be an object with {needs}.")
        return None
    unknown = sorted(set(raw) - known)
    if unknown:
        problems.append(f"{where} has unknown keys {unknown}; known keys: {sorted(known)}.")
    name = str(raw.get("name", ""))
    return (f"{key}[{name}]" if name else where), name


def _parse_service(  # noqa: PLR0912, PLR0915 - one flat checklist reads best
    problems: list[str],
    index: int,
    raw: Any,
    region: str,
    vllm_image: str,
    *,
    job_outputs: Mapping[str, str] | None = None,
) -> CloudRunServiceConfig | None:
    entry = _list_entry(
        problems,
        "cloudRunServices",
        index,
        raw,
        known=_SERVICE_KEYS,
        needs="at least `name` and `flavour`",
    )
    if entry is None:
        return None
    where, name = entry
    if not SERVICE_NAME.match(name):
        problems.append(
            f"{where}.name={name!r} must be a Cloud Run service name: lowercase letters, "
            "digits and hyphens, starting with a letter, at most 49 characters."
        )
    flavour = raw.get("flavour")
    if flavour not in FLAVOURS:
        problems.append(f"{where}.flavour={flavour!r} must be one of {', '.join(FLAVOURS)}.")
        return None
    defaults = _FLAVOUR_DEFAULTS[flavour]
    t = _Fields(problems, where, raw)
    enabled = t("enabled", bool, True)
    cpu = t("cpu", str, defaults["cpu"])
    memory = t("memory", str, defaults["memory"])
    concurrency = t("concurrency", int, defaults["concurrency"])
    max_instances = t("maxInstances", int, defaults["maxInstances"])
    min_instances = t("minInstances", int, 0)
    timeout = t("timeoutSeconds", int, defaults["timeoutSeconds"])
    zonal = t("gpuZonalRedundancy", bool, False)
    public = t("public", bool, False)
    invokers_raw = raw.get("invokers", [])
    image = t("image", str, "") or ""
    variant = model = model_uri = fine_tune_job = None
    gcs_model: GcsModel | None = None
    max_model_len: int | None = None
    ollama_num_parallel: int | None = None

    if not isinstance(invokers_raw, list) or not all(isinstance(m, str) for m in invokers_raw):
        problems.append(f"{where}.invokers must be a list of IAM members such as user:me@x.com.")
        invokers: tuple[str, ...] = ()
    else:
        invokers = tuple(invokers_raw)
    for member in invokers:
        if member in OPEN_MEMBERS:
            problems.append(
                f"{where}.invokers lists {member}; GPU endpoints are private. Set "
                f"`public: true` on the service if you really want anyone to call it."
            )
        elif not is_iam_member(member):
            problems.append(
                f"{where}.invokers entry {member!r} is not an IAM member "
                "(user:, group:, serviceAccount:, domain:, principal://, principalSet://)."
            )

    if flavour == "prebuilt":
        variant = t("variant", str, "gemma3-1b")
        if variant not in PREBUILT_VARIANTS:
            problems.append(
                f"{where}.variant={variant!r} has no prebuilt image; choose one of "
                f"{', '.join(PREBUILT_VARIANTS)}."
            )
        image = image or PREBUILT_IMAGE.format(variant=variant)
        ollama_num_parallel = t("ollamaNumParallel", int, min(concurrency, OLLAMA_NUM_PARALLEL))
        if isinstance(ollama_num_parallel, int) and not (
            ollama_num_parallel <= concurrency <= 2 * ollama_num_parallel
        ):
            problems.append(
                f"{where}.concurrency={concurrency} should be between ollamaNumParallel="
                f"{ollama_num_parallel} (best latency) and twice it (best utilization)."
            )
    elif flavour == "vllm":
        model = t("model", str, "google/gemma-3-1b-it")
        max_model_len = t("maxModelLen", int, 8192)
        # Cloud Run's driver runs CUDA 12 only: by default the CUDA 12 build of vllmImage.
        image = image or cuda_12_vllm_image(vllm_image)
        if problem := cloud_run_cuda_problem(image, vllm_image_cuda(image)):
            problems.append(f"{where}: {problem}")
        if isinstance(model, str) and model.startswith("gs://"):
            gcs_model = parse_gcs_uri(model)
            if gcs_model is None or not gcs_model.path:
                problems.append(
                    f"{where}.model={model!r} must look like gs://BUCKET/PATH/TO/MODEL."
                )
        elif not (isinstance(model, str) and _HF_ID.match(model)):
            problems.append(
                f"{where}.model={model!r} must be a Hugging Face id (google/gemma-3-1b-it) "
                "or a gs://BUCKET/PATH model folder."
            )
        if isinstance(max_model_len, int) and max_model_len < 512:
            problems.append(f"{where}.maxModelLen={max_model_len} must be at least 512.")
    else:
        model_uri = raw.get("modelUri")
        fine_tune_job = raw.get("fineTuneJob")
        outputs = job_outputs or {}
        if fine_tune_job is not None:
            if model_uri is not None:
                problems.append(
                    f"{where}: set modelUri or fineTuneJob, not both; fineTuneJob serves that "
                    "job's output."
                )
            if fine_tune_job not in outputs:
                problems.append(
                    f"{where}.fineTuneJob={fine_tune_job!r} names no fineTuneJobs entry; "
                    f"known: {sorted(outputs) or 'none'}."
                )
            model_uri = outputs.get(str(fine_tune_job), model_uri)
        gcs_model = parse_gcs_uri(model_uri) if isinstance(model_uri, str) else None
        # An unknown fineTuneJob is reported above; a job's output was checked with the job.
        if fine_tune_job is None and (gcs_model is None or not gcs_model.path):
            problems.append(
                f"{where}.modelUri={model_uri!r} must look like gs://BUCKET/PATH/TO/MODEL, "
                "the merged model folder (config.json, model.safetensors, tokenizer files)."
            )

    if all(isinstance(v, str) for v in (cpu, memory)) and all(
        isinstance(v, int) for v in (concurrency, max_instances, min_instances, timeout)
    ):
        settings = ServiceSettings(
            cpu=cpu,
            memory=memory,
            concurrency=concurrency,
            max_instances=max_instances,
            min_instances=min_instances,
            timeout_seconds=timeout,
        )
        problems.extend(f"{where}.{_camel(f)}={m}" for f, m in settings.problems())
    if enabled and region not in CLOUD_RUN_L4_REGIONS:
        problems.append(
            f"{where}: Cloud Run offers no L4 GPU in gcp:region={region!r}. Use one of "
            f"{', '.join(sorted(CLOUD_RUN_L4_REGIONS))} (pulumi config set gcp:region "
            f"us-central1), or set `enabled: false` on this service."
        )
    return CloudRunServiceConfig(
        name=name,
        flavour=cast(Flavour, flavour),
        enabled=bool(enabled),
        image=image,
        cpu=str(cpu),
        memory=str(memory),
        concurrency=int(concurrency),
        max_instances=int(max_instances),
        min_instances=int(min_instances),
        timeout_seconds=int(timeout),
        gpu_zonal_redundancy=bool(zonal),
        public=bool(public),
        invokers=invokers,
        variant=variant,
        model=model,
        model_uri=model_uri if isinstance(model_uri, str) else None,
        fine_tune_job=str(fine_tune_job) if fine_tune_job is not None else None,
        gcs_model=gcs_model,
        max_model_len=max_model_len,
        ollama_num_parallel=ollama_num_parallel,
    )


def _parse_services(
    r: _Reader, region: str, job_outputs: Mapping[str, str] | None = None
) -> tuple[CloudRunServiceConfig, ...]:
    raw = r.structured("cloudRunServices")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problems.append("cloudRunServices must be a list of service objects.")
        return ()
    vllm_image = r.text("vllmImage", DEFAULT_VLLM_IMAGE)
    services = [
        s
        for i, item in enumerate(raw)
        if (s := _parse_service(r.problems, i, item, region, vllm_image, job_outputs=job_outputs))
    ]
    names = [s.name for s in services]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        r.problems.append(f"cloudRunServices names must be unique; repeated: {duplicates}.")
    return tuple(services)


# fineTuneJobs keys that are app.finetune flags, with the type each takes.
_FINE_TUNE_FLAGS: dict[str, type] = {
    "epochs": float,
    "maxSteps": int,
    "learningRate": float,
    "batchSize": int,
    "gradientAccumulation": int,
    "loraR": int,
    "loraAlpha": int,
    "loraDropout": float,
    "maxSeqLength": int,
    "saveSteps": int,
    "seed": int,
}
_FINE_TUNE_KEYS = {"name", "dataset", "baseModel", "output", "variant", *_FINE_TUNE_FLAGS}
_GEMMA_SIZE = re.compile(r"gemma-?3-(\d+b)", re.IGNORECASE)


def _flag(key: str) -> str:
    """`learningRate` -> `--learning-rate`, as app.finetune spells it."""
    return "--" + re.sub(r"(?<!^)([A-Z])", r"-\1", key).lower()


def _parse_fine_tune_job(  # noqa: PLR0912 - one flat checklist reads best
    problems: list[str], index: int, raw: Any
) -> FineTuneJobConfig | None:
    entry = _list_entry(
        problems,
        "fineTuneJobs",
        index,
        raw,
        known=_FINE_TUNE_KEYS,
        needs="name, dataset, baseModel and output",
    )
    if entry is None:
        return None
    where, name = entry
    if not JOB_NAME.match(name):
        problems.append(
            f"{where}.name={name!r} must be lowercase letters, digits and hyphens, starting "
            "with a letter (it names the Kubernetes Job)."
        )
    texts = {key: raw.get(key) for key in ("dataset", "baseModel", "output")}
    for key, value in texts.items():
        if not isinstance(value, str) or not value:
            problems.append(f"{where}.{key} is required.")
    dataset, base, output = (str(texts[k] or "") for k in ("dataset", "baseModel", "output"))
    parsed_dataset = parse_gcs_uri(dataset)
    if dataset and (parsed_dataset is None or not parsed_dataset.path):
        problems.append(
            f"{where}.dataset={dataset!r} must be gs://BUCKET/PATH/train.jsonl, a dataset that "
            "`python -m app.tuning validate` passes."
        )
    parsed_output = parse_gcs_uri(output)
    if output and (parsed_output is None or not parsed_output.path):
        problems.append(
            f"{where}.output={output!r} must be gs://BUCKET/PATH, the folder the merged model "
            "is written to."
        )
    if base and not (base.startswith("gs://") or _HF_ID.match(base)):
        problems.append(
            f"{where}.baseModel={base!r} must be a Hugging Face id (google/gemma-3-1b-it) or a "
            "gs://BUCKET/PATH model folder."
        )
    size = _GEMMA_SIZE.search(base)
    variant = raw.get("variant") or (f"gemma3-{size.group(1).lower()}" if size else None)
    if variant not in FINE_TUNE_SIZING:
        problems.append(
            f"{where}.variant={variant!r}: set the base's size, one of "
            f"{', '.join(FINE_TUNE_SIZING)} (larger Gemma 3 models do not fit one L4 for LoRA)."
        )
    train_args = []
    for key, kind in _FINE_TUNE_FLAGS.items():
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{where}.{key}={value!r} must be a number.")
        elif kind is int and not isinstance(value, int):
            problems.append(f"{where}.{key}={value!r} must be a whole number.")
        elif value < 0 or (value == 0 and key not in {"loraDropout", "seed"}):
            problems.append(f"{where}.{key}={value!r} must be above 0.")
        else:
            train_args.append(f"{_flag(key)}={value}")
    return FineTuneJobConfig(
        name=name,
        dataset=dataset,
        base_model=base,
        output=output,
        variant=str(variant),
        train_args=tuple(train_args),
    )


def _parse_fine_tune_jobs(r: _Reader) -> tuple[FineTuneJobConfig, ...]:
    raw = r.structured("fineTuneJobs")
    if raw is None:
        return ()
    if not isinstance(raw, list):
        r.problems.append("fineTuneJobs must be a list of job objects.")
        return ()
    jobs = [j for i, item in enumerate(raw) if (j := _parse_fine_tune_job(r.problems, i, item))]
    names = [j.name for j in jobs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        r.problems.append(f"fineTuneJobs names must be unique; repeated: {duplicates}.")
    outputs = [j.output for j in jobs]
    shared = sorted({o for o in outputs if outputs.count(o) > 1})
    if shared:
        r.problems.append(f"fineTuneJobs write to the same output {shared}; give each its own.")
    return tuple(jobs)


def _parse_chat_app(
    r: _Reader, namespace: str, chat_login_password: pulumi.Output[str] | None
) -> ChatAppConfig:
    exposure = r.text("chatExposure", ChatAppConfig.exposure)
    if exposure not in CHAT_EXPOSURES:
        r.problems.append(
            f"chatExposure={exposure!r} must be one of {', '.join(CHAT_EXPOSURES)}: internal "
            "(cluster-internal only, reach it with kubectl port-forward), iap (load balancer "
            "behind Identity-Aware Proxy) or login (load balancer with the app's own sign-in)."
        )
        exposure = "internal"
    chat_app = ChatAppConfig(
        enabled=r.flag("chatAppEnabled", ChatAppConfig.enabled),
        exposure=cast(Exposure, exposure),
        gemini_model=r.text("geminiModel", ChatAppConfig.gemini_model),
        gemini_location=r.text("geminiLocation", ChatAppConfig.gemini_location),
        system_prompt=r.optional_text("chatSystemPrompt"),
        allowed_users=r.string_list("chatAllowedUsers"),
        domain=r.optional_text("chatDomain"),
        iap_audience=r.optional_text("chatIapAudience"),
        namespace=namespace,
        history_ttl_days=r.number("chatHistoryTtlDays", 0) or None,
        login_source_ranges=r.string_list("chatLoginSourceRanges"),
    )
    if chat_app.history_ttl_days is not None and chat_app.history_ttl_days < 1:
        r.problems.append(
            f"chatHistoryTtlDays={chat_app.history_ttl_days} must be a number of days, at "
            "least 1 (or 0 to keep conversations until they are deleted)."
        )
    for cidr in chat_app.login_source_ranges:
        try:
            ipaddress.ip_network(cidr)
        except ValueError:
            r.problems.append(
                f"chatLoginSourceRanges entry {cidr!r} must be an address range such as "
                "203.0.113.0/24 (pulumi config set --path 'chatLoginSourceRanges[0]' ...)."
            )
    if chat_app.login_source_ranges and chat_app.exposure != "login":
        r.problems.append(
            "chatLoginSourceRanges applies to chatExposure=login only (IAP decides who gets "
            "in otherwise); unset it or set chatExposure login."
        )
    if chat_app.iap_audience is not None and not _IAP_AUDIENCE.match(chat_app.iap_audience):
        r.problems.append(
            f"chatIapAudience={chat_app.iap_audience!r} must look like "
            "/projects/PROJECT_NUMBER/global/backendServices/BACKEND_SERVICE_ID; find the ID "
            "with `gcloud compute backend-services list` after the first deploy."
        )
    if chat_app.enabled and chat_app.exposure == "iap" and not chat_app.allowed_users:
        r.problems.append(
            "chatExposure=iap needs chatAllowedUsers, the IAM members IAP lets in "
            '(pulumi config set --path "chatAllowedUsers[0]" user:you@example.com).'
        )
    for member in chat_app.allowed_users:
        if not is_iam_member(member):
            r.problems.append(
                f"chatAllowedUsers entry {member!r} must name people or groups, such as "
                "user:ana@example.com or group:ml-team@example.com (IAP lets in exactly these)."
            )
    if chat_app.enabled and chat_app.exposure == "iap" and not chat_app.domain:
        r.problems.append(
            "chatExposure=iap needs chatDomain, the DNS name you will point at the load "
            "balancer (IAP needs HTTPS and a managed certificate): "
            "pulumi config set chatDomain chat.example.com."
        )
    if chat_app.enabled and chat_app.exposure == "login" and chat_login_password is None:
        r.problems.append(
            "chatExposure=login needs the sign-in password as a secret: "
            "pulumi config set --secret chatLoginPassword <password>."
        )
    return chat_app


def _parse_preflight(r: _Reader) -> PreflightConfig:
    mode = r.text("preflight", PreflightConfig.mode)
    if mode not in PREFLIGHT_MODES:
        r.problems.append(
            f"preflight={mode!r} must be one of {', '.join(PREFLIGHT_MODES)}: enforce (stop "
            "before anything is created when quota is short), warn (say so and deploy anyway) "
            "or off (do not read quotas): pulumi config set preflight warn."
        )
        mode = PreflightConfig.mode
    preflight = PreflightConfig(
        mode=cast(PreflightMode, mode),
        request_quota=r.flag("requestQuota", PreflightConfig.request_quota),
        contact_email=r.optional_text("quotaContactEmail"),
    )
    if preflight.request_quota and preflight.mode == "off":
        r.problems.append(
            "requestQuota=true files requests for the shortfalls that the pre-flight check "
            "finds, so it needs preflight enforce or warn (pulumi config set preflight enforce)."
        )
    if preflight.request_quota and preflight.contact_email is None:
        r.problems.append(
            "requestQuota=true needs quotaContactEmail, the address Google asks about the "
            "request: pulumi config set quotaContactEmail you@example.com."
        )
    if preflight.contact_email is not None and not _EMAIL.match(preflight.contact_email):
        r.problems.append(
            f"quotaContactEmail={preflight.contact_email!r} must be an email address."
        )
    return preflight


def _parse_monitoring(r: _Reader) -> MonitoringConfig:
    monitoring = MonitoringConfig(alert_email=r.optional_text("alertEmail"))
    if monitoring.alert_email is not None and not _EMAIL.match(monitoring.alert_email):
        r.problems.append(
            f"alertEmail={monitoring.alert_email!r} must be an email address, the one alert "
            "policies notify (pulumi config set alertEmail oncall@example.com)."
        )
    return monitoring


def parse_stack_config(
    values: Mapping[str, str],
    *,
    stack: str = "dev",
    hf_token: pulumi.Output[str] | None = None,
    chat_login_password: pulumi.Output[str] | None = None,
    chat_session_key: pulumi.Output[str] | None = None,
) -> StackConfig:
    """Build and validate a StackConfig from raw config values.

    `values` maps keys to strings as the engine passes them: `gcp:project`, `gcp:region`,
    and gemma-stack keys without their namespace. `stack` names the stack; project-wide ids
    end with it unless `idSuffix` is set. Secrets come separately so their values
    are never inspected here, only whether they are set.
    """
    r = _Reader(values)
    explicit_suffix = r.optional_text("idSuffix")
    if explicit_suffix is None:
        # A long stack name keeps a hash, so two such stacks still differ.
        suffix = fitted_id(id_part(stack), MAX_ID_SUFFIX) or "stack"
        suffix = suffix if suffix[0].isalpha() else f"s{suffix}"
    else:
        suffix = id_part(explicit_suffix)
        if not suffix[:1].isalpha() or len(suffix) > MAX_ID_SUFFIX:
            r.problems.append(
                f"idSuffix={explicit_suffix!r} must start with a letter and have at most "
                f"{MAX_ID_SUFFIX} lowercase letters, digits and hyphens; it ends every "
                "project-wide resource id (pulumi config set idSuffix dev)."
            )
    ids = resource_ids(suffix)
    project = values.get("gcp:project") or ""
    region = values.get("gcp:region") or "us-central1"
    if not _PROJECT_ID.match(project):
        r.problems.append(
            f"gcp:project={project!r} must be a Google Cloud project id "
            "(pulumi config set gcp:project my-gcp-project)."
        )

    cluster = ClusterConfig(
        name=r.text("clusterName", scoped_id("gemma", suffix, 40)),
        release_channel=r.text("clusterReleaseChannel", ClusterConfig.release_channel).upper(),
        deletion_protection=r.flag("clusterDeletionProtection", ClusterConfig.deletion_protection),
    )
    if cluster.release_channel not in RELEASE_CHANNELS:
        r.problems.append(
            f"clusterReleaseChannel={cluster.release_channel!r} must be one of "
            f"{', '.join(RELEASE_CHANNELS)}."
        )
    if not _K8S_NAME.match(cluster.name) or len(cluster.name) > 40:
        r.problems.append(
            f"clusterName={cluster.name!r} must be lowercase letters, digits and hyphens, "
            "at most 40 characters."
        )

    gke_gemma = _parse_gke_gemma(r)
    fine_tune_jobs = _parse_fine_tune_jobs(r)
    services = _parse_services(r, region, {j.name: j.output for j in fine_tune_jobs})

    namespace = r.text("namespace", "gemma-stack")
    if not _K8S_NAME.match(namespace):
        r.problems.append(f"namespace={namespace!r} must be a Kubernetes namespace name.")
    chat_app = _parse_chat_app(r, namespace, chat_login_password)

    firestore = FirestoreConfig(
        database=r.text("firestoreDatabase", scoped_id(FirestoreConfig.database, suffix, 63)),
        location=r.text("firestoreLocation", FirestoreConfig.location),
        delete_protection=r.flag("firestoreDeleteProtection", FirestoreConfig.delete_protection),
    )
    images = ImagesConfig(
        chat=r.optional_text("chatImage"),
        inference=r.optional_text("inferenceImage"),
        finetune=r.optional_text("fineTuneImage"),
    )
    build_region = r.text("buildRegion", DEFAULT_BUILD_REGION)
    if problem := build_region_problem(build_region):
        r.problems.append(problem)

    config = StackConfig(
        project=project,
        region=region,
        namespace=namespace,
        artifact_repository=r.text("artifactRepository", scoped_id("gemma", suffix, 63)),
        ids=ids,
        cluster=cluster,
        gke_gemma=gke_gemma,
        cloud_run_services=services,
        chat_app=chat_app,
        firestore=firestore,
        images=images,
        build_region=build_region,
        preflight=_parse_preflight(r),
        monitoring=_parse_monitoring(r),
        fine_tune_jobs=fine_tune_jobs,
        hf_token=hf_token,
        chat_login_password=chat_login_password,
        chat_session_key=chat_session_key,
    )
    if config.needs_hf_token and hf_token is None:
        users = []
        if gke_gemma.uses_hugging_face:
            users.append(f"GKE Gemma ({gke_gemma.model_id})")
        users += [f"Cloud Run {s.name} ({s.model})" for s in services if s.uses_hugging_face]
        users += [
            f"fine-tune job {j.name} ({j.base_model})"
            for j in fine_tune_jobs
            if j.uses_hugging_face
        ]
        r.problems.append(
            f"{' and '.join(users)} download Gemma from Hugging Face, which needs an access "
            "token with the Gemma license accepted: pulumi config set --secret hfToken hf_... "
            "(or serve the model from Cloud Storage with a gs:// URI)."
        )
    if r.problems:
        raise ConfigError(r.problems)
    return config


# Keys read from the `gemma-stack:` namespace (secrets are read separately).
STACK_KEYS: tuple[str, ...] = (
    "idSuffix",
    "namespace",
    "artifactRepository",
    "clusterName",
    "clusterReleaseChannel",
    "clusterDeletionProtection",
    "gkeGemmaEnabled",
    "gkeGemmaVariant",
    "gkeGemmaModelId",
    "gkeGemmaModelUri",
    "gkeGemmaGpuCount",
    "gkeGemmaTensorParallel",
    "gkeGemmaMaxModelLen",
    "gkeGemmaMaxNumSeqs",
    "vllmImage",
    "cloudRunServices",
    "chatAppEnabled",
    "chatExposure",
    "chatAllowedUsers",
    "chatDomain",
    "chatIapAudience",
    "chatSystemPrompt",
    "chatHistoryTtlDays",
    "chatLoginSourceRanges",
    "geminiModel",
    "geminiLocation",
    "firestoreDatabase",
    "firestoreLocation",
    "firestoreDeleteProtection",
    "chatImage",
    "inferenceImage",
    "fineTuneJobs",
    "fineTuneImage",
    "buildRegion",
    "preflight",
    "requestQuota",
    "quotaContactEmail",
    "gkeGemmaMinReplicas",
    "gkeGemmaMaxReplicas",
    "gkeGemmaQueueTarget",
    "alertEmail",
)
SECRET_KEYS: tuple[str, ...] = ("hfToken", "chatLoginPassword", "chatSessionKey")


def load_stack_config() -> StackConfig:
    """Read this stack's Pulumi config once and validate it (raises ConfigError)."""
    ours = pulumi.Config(NAMESPACE)
    gcp = pulumi.Config("gcp")
    values: dict[str, str] = {}
    for key in STACK_KEYS:
        value = ours.get(key)
        if value is not None:
            values[key] = value
    for key in ("project", "region"):
        value = gcp.get(key)
        if value is not None:
            values[f"gcp:{key}"] = value
    return parse_stack_config(
        values,
        stack=pulumi.get_stack(),
        hf_token=ours.get_secret("hfToken"),
        chat_login_password=ours.get_secret("chatLoginPassword"),
        chat_session_key=ours.get_secret("chatSessionKey"),
    )
