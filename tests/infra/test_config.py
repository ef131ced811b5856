"""Config validation: each bad config fails before any resource, with a message saying the fix."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
import yaml

from components.registry import CLOUD_BUILD_REGIONS
from stacks.config import (
    DEFAULT_VLLM_IMAGE,
    STACK_KEYS,
    ConfigError,
    StackConfig,
    parse_stack_config,
)
from tests.pulumi_harness import REPO_ROOT, dev_config, run_program, run_program_error

TOKEN = pulumi.Output.from_input("hf_x")


def parse(overrides: dict[str, Any] | None = None, *, token: bool = True, **kw: Any) -> StackConfig:
    """parse_stack_config over Pulumi.dev.yaml's values, the way the engine passes them."""
    values: dict[str, str] = {}
    for key, value in {**dev_config(), **(overrides or {})}.items():
        if value is None:
            continue
        short = key.removeprefix("gemma-stack:")
        if isinstance(value, str):
            values[short] = value
        elif isinstance(value, bool):
            values[short] = "true" if value else "false"
        else:
            values[short] = json.dumps(value)
    return parse_stack_config(values, hf_token=TOKEN if token else None, **kw)


def problems(overrides: dict[str, Any] | None = None, **kw: Any) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse(overrides, **kw)
    return info.value.problems


def service(**fields: Any) -> dict[str, Any]:
    return {"gemma-stack:cloudRunServices": [fields]}


# --------------------------------------------------------------------------- four invalid configs


FOUR_INVALID = {
    "unknown variant": (
        {"gemma-stack:gkeGemmaVariant": "gemma-3-9b-it"},
        True,
        "gkeGemmaVariant='gemma-3-9b-it' is not a Gemma 3 variant",
    ),
    "gpu count too small": (
        {"gemma-stack:gkeGemmaVariant": "gemma-3-12b-it", "gemma-stack:gkeGemmaGpuCount": 1},
        True,
        "gemma-3-12b-it has 24 GB of bf16 weights and needs at least 2 L4 GPUs",
    ),
    "region without cloud run L4": (
        {"gcp:region": "europe-west2"},
        True,
        "Cloud Run offers no L4 GPU in gcp:region='europe-west2'",
    ),
    "missing hf token": (
        {},
        False,
        "pulumi config set --secret hfToken",
    ),
}


@pytest.mark.parametrize("case", FOUR_INVALID)
def test_each_invalid_config_fails_before_any_resource(case: str) -> None:
    overrides, with_token, expected = FOUR_INVALID[case]
    error, registered = run_program_error(
        overrides=overrides, hf_token=None if not with_token else "hf_test"
    )
    assert isinstance(error, ConfigError)
    assert isinstance(error, pulumi.RunError)  # pulumi up prints the message, no traceback
    assert registered == []
    assert len(error.problems) == 1, error.problems
    assert expected in error.problems[0]
    assert "nothing was created" in str(error)
    others = [v[2] for k, v in FOUR_INVALID.items() if k != case]
    assert not any(other in str(error) for other in others)


def test_missing_token_message_names_each_backend_that_needs_it() -> None:
    (message,) = problems(
        service(name="vllm-hf", flavour="vllm", model="google/gemma-3-4b-it"), token=False
    )
    assert "GKE Gemma (google/gemma-3-1b-it)" in message
    assert "Cloud Run vllm-hf (google/gemma-3-4b-it)" in message


def test_no_token_needed_when_every_model_comes_from_cloud_storage() -> None:
    config = parse(
        {
            "gemma-stack:gkeGemmaModelUri": "gs://my-models/gemma-3-1b-sql",
            **service(name="vllm-gcs", flavour="vllm", model="gs://my-models/gemma-3-1b-it"),
        },
        token=False,
    )
    assert not config.needs_hf_token
    assert config.gke_gemma.model is not None
    assert config.gke_gemma.model.bucket == "my-models"
    assert config.gke_gemma.model.path == "gemma-3-1b-sql"
    assert config.cloud_run_services[0].gcs_model is not None


def test_disabled_backends_need_no_token() -> None:
    config = parse({"gemma-stack:gkeGemmaEnabled": False}, token=False)
    assert not config.needs_hf_token


def test_several_problems_are_reported_together() -> None:
    found = problems(
        {
            "gemma-stack:gkeGemmaVariant": "gemma-2-2b",
            "gemma-stack:chatExposure": "public",
            "gemma-stack:clusterReleaseChannel": "nightly",
        }
    )
    assert len(found) == 3
    assert any("chatExposure='public'" in p for p in found)
    assert any("clusterReleaseChannel='NIGHTLY'" in p for p in found)


# --------------------------------------------------------------------------- GKE Gemma sizing


def test_defaults_come_from_the_sizing_table() -> None:
    gemma = parse({"gemma-stack:gkeGemmaVariant": "gemma-3-12b-it"}).gke_gemma
    assert (gemma.gpu_count, gemma.tensor_parallel) == (2, 2)
    assert (gemma.max_model_len, gemma.max_num_seqs) == (16_384, 4)
    assert gemma.model_id == "google/gemma-3-12b-it"
    assert gemma.vllm_image == DEFAULT_VLLM_IMAGE


def test_max_model_len_is_never_left_unset() -> None:
    for variant in ("gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it"):
        gemma = parse(
            {"gemma-stack:gkeGemmaVariant": variant, "gemma-stack:gkeGemmaMaxModelLen": 0}
        ).gke_gemma
        assert 0 < gemma.max_model_len < 131_072


def test_overrides_are_kept_when_they_fit() -> None:
    gemma = parse(
        {
            "gemma-stack:gkeGemmaVariant": "gemma-3-27b-it",
            "gemma-stack:gkeGemmaGpuCount": 8,
            "gemma-stack:gkeGemmaMaxModelLen": 32768,
            "gemma-stack:gkeGemmaMaxNumSeqs": 8,
        }
    ).gke_gemma
    assert (gemma.gpu_count, gemma.tensor_parallel, gemma.max_model_len) == (8, 8, 32768)


def test_gpu_counts_autopilot_does_not_offer_are_refused() -> None:
    found = problems({"gemma-stack:gkeGemmaGpuCount": 3, "gemma-stack:gkeGemmaTensorParallel": 3})
    assert any("gkeGemmaGpuCount=3 is not offered" in p for p in found)


def test_tensor_parallel_must_match_the_gpu_count() -> None:
    (message,) = problems(
        {
            "gemma-stack:gkeGemmaVariant": "gemma-3-12b-it",
            "gemma-stack:gkeGemmaGpuCount": 4,
            "gemma-stack:gkeGemmaTensorParallel": 2,
        }
    )
    assert "gkeGemmaTensorParallel=2 must equal gkeGemmaGpuCount=4" in message


def test_tensor_parallel_must_divide_attention_heads() -> None:
    (message,) = problems({"gemma-stack:gkeGemmaGpuCount": 8})
    assert "4 attention heads" in message


def test_context_longer_than_the_model_is_refused() -> None:
    (message,) = problems({"gemma-stack:gkeGemmaMaxModelLen": 65536})
    assert "outside 512..32768" in message


def test_malformed_model_uri_is_refused() -> None:
    (message,) = problems({"gemma-stack:gkeGemmaModelUri": "gs:/bucket"})
    assert "gkeGemmaModelUri='gs:/bucket' must look like gs://BUCKET/PATH" in message
    (message,) = problems({"gemma-stack:gkeGemmaModelUri": "gs://bucket-only"})
    assert "must look like gs://BUCKET/PATH" in message


def test_wrongly_typed_scalars_are_reported() -> None:
    found = problems({"gemma-stack:gkeGemmaEnabled": "yes", "gemma-stack:gkeGemmaGpuCount": "two"})
    assert "gkeGemmaEnabled='yes' must be true or false." in found
    assert "gkeGemmaGpuCount='two' must be a whole number." in found


# --------------------------------------------------------------------------- Cloud Run services


def test_flavour_defaults() -> None:
    config = parse(
        {
            "gemma-stack:cloudRunServices": [
                {"name": "a", "flavour": "prebuilt", "variant": "gemma3-4b"},
                {"name": "b", "flavour": "vllm"},
                {"name": "c", "flavour": "finetuned", "modelUri": "gs://models/sql"},
            ]
        }
    )
    prebuilt, vllm, finetuned = config.cloud_run_services
    assert prebuilt.image == "us-docker.pkg.dev/cloudrun/container/gemma/gemma3-4b"
    assert (prebuilt.cpu, prebuilt.memory, prebuilt.concurrency) == ("8", "32Gi", 4)
    assert prebuilt.ollama_num_parallel == 4
    assert (prebuilt.max_instances, prebuilt.min_instances, prebuilt.timeout_seconds) == (1, 0, 600)
    assert not prebuilt.gpu_zonal_redundancy
    assert not prebuilt.public
    assert vllm.model == "google/gemma-3-1b-it"
    assert vllm.image == f"{DEFAULT_VLLM_IMAGE}-cu129"  # Cloud Run runs CUDA 12 only
    assert vllm.max_model_len == 8192
    assert (finetuned.cpu, finetuned.memory, finetuned.concurrency) == ("4", "16Gi", 1)
    assert finetuned.timeout_seconds == 900
    assert finetuned.gcs_model is not None
    assert finetuned.gcs_model.bucket == "models"
    assert finetuned.needs_inference_image
    assert config.builds_inference_image


def test_dev_stack_defaults() -> None:
    config = parse()
    assert [(s.name, s.flavour, s.enabled) for s in config.cloud_run_services] == [
        ("gemma3-prebuilt", "prebuilt", True),
        ("gemma-sql", "finetuned", False),
    ]
    assert config.gke_gemma.variant == "gemma-3-1b-it"
    assert config.gke_gemma.gpu_count == 1
    assert config.chat_app.exposure == "internal"
    assert not config.builds_inference_image


def test_region_check_ignores_disabled_services() -> None:
    config = parse(
        {
            "gcp:region": "europe-west2",
            **service(name="off", flavour="prebuilt", enabled=False),
        }
    )
    assert config.region == "europe-west2"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"name": "Bad_Name", "flavour": "prebuilt"}, "must be a Cloud Run service name"),
        ({"name": "x", "flavour": "ollama"}, "flavour='ollama' must be one of"),
        ({"name": "x", "flavour": "prebuilt", "variant": "gemma3-2b"}, "has no prebuilt image"),
        ({"name": "x", "flavour": "finetuned"}, "modelUri=None must look like gs://"),
        ({"name": "x", "flavour": "finetuned", "modelUri": "s3://b/m"}, "must look like gs://"),
        ({"name": "x", "flavour": "vllm", "model": "gemma"}, "must be a Hugging Face id"),
        ({"name": "x", "flavour": "vllm", "model": "gs://b"}, "gs://BUCKET/PATH/TO/MODEL"),
        ({"name": "x", "flavour": "prebuilt", "cpu": 2}, "takes 4, 6, 8 CPUs"),
        ({"name": "x", "flavour": "prebuilt", "memory": "8Gi"}, "at least 16Gi"),
        ({"name": "x", "flavour": "prebuilt", "memory": "32GB"}, "write it with a unit"),
        ({"name": "x", "flavour": "prebuilt", "minInstances": 2}, "minInstances=2 must be"),
        ({"name": "x", "flavour": "prebuilt", "timeoutSeconds": 7200}, "within 1..3600"),
        ({"name": "x", "flavour": "prebuilt", "concurrency": 16}, "ollamaNumParallel=4"),
        ({"name": "x", "flavour": "prebuilt", "invokers": ["allUsers"]}, "Set `public: true`"),
        ({"name": "x", "flavour": "prebuilt", "invokers": ["bob@x.com"]}, "is not an IAM member"),
        ({"name": "x", "flavour": "prebuilt", "maxInstances": "1"}, "must be a int"),
        ({"name": "x", "flavour": "prebuilt", "gpu": 2}, "unknown keys ['gpu']"),
    ],
)
def test_bad_service_fields_are_refused(fields: dict[str, Any], expected: str) -> None:
    found = problems(service(**fields))
    assert any(expected in p for p in found), found


def test_costly_or_public_choices_deploy_with_one_warning_per_cause() -> None:
    open_service = service(
        name="open", flavour="prebuilt", public=True, minInstances=1, gpuZonalRedundancy=True
    )
    run = run_program(overrides=open_service)
    mine = [w for w in run.warnings() if "Cloud Run service open" in w]
    assert len(mine) == 3, mine
    assert "open is PUBLIC" in mine[0]
    assert "keeps 1 L4 instance(s) warm" in mine[1]
    assert "zonal redundancy" in mine[2]
    assert not [w for w in run_program().warnings() if "Cloud Run service" in w]


def test_an_invalid_config_prints_no_warning_before_its_error() -> None:
    error, _ = run_program_error(
        overrides={**service(name="open", flavour="prebuilt", public=True), "gcp:project": "X"}
    )
    assert isinstance(error, ConfigError)


def test_duplicate_service_names_are_refused() -> None:
    found = problems(
        {
            "gemma-stack:cloudRunServices": [
                {"name": "same", "flavour": "prebuilt"},
                {"name": "same", "flavour": "prebuilt"},
            ]
        }
    )
    assert any("repeated: ['same']" in p for p in found)


def test_named_invokers_and_explicit_public_are_kept() -> None:
    (svc,) = parse(
        service(name="x", flavour="prebuilt", public=True, invokers=["group:ml@example.com"])
    ).cloud_run_services
    assert svc.public
    assert svc.invokers == ("group:ml@example.com",)


# --------------------------------------------------------------------------- chat app


def test_iap_needs_allowed_users_and_a_domain_and_login_needs_a_password() -> None:
    users, domain = problems({"gemma-stack:chatExposure": "iap"})
    assert "chatAllowedUsers" in users
    assert "pulumi config set chatDomain" in domain
    config = parse(
        {
            "gemma-stack:chatExposure": "iap",
            "gemma-stack:chatAllowedUsers": ["user:a@b.com"],
            "gemma-stack:chatDomain": "chat.example.com",
        }
    )
    assert config.chat_app.allowed_users == ("user:a@b.com",)
    assert config.chat_app.domain == "chat.example.com"
    for member in ("allUsers", "ana@example.com"):
        (message,) = problems(
            {
                "gemma-stack:chatExposure": "iap",
                "gemma-stack:chatAllowedUsers": [member],
                "gemma-stack:chatDomain": "chat.example.com",
            }
        )
        assert f"chatAllowedUsers entry {member!r} must name people or groups" in message
    (message,) = problems({"gemma-stack:chatIapAudience": "123/backend"})
    assert "chatIapAudience='123/backend' must look like /projects/PROJECT_NUMBER/" in message
    (message,) = problems({"gemma-stack:chatExposure": "login"})
    assert "pulumi config set --secret chatLoginPassword" in message
    config = parse(
        {"gemma-stack:chatExposure": "login"},
        chat_login_password=pulumi.Output.from_input("pw"),
    )
    assert config.chat_app.exposure == "login"


def test_chat_retention_and_login_source_ranges() -> None:
    config = parse(
        {
            "gemma-stack:chatExposure": "login",
            "gemma-stack:chatHistoryTtlDays": "30",
            "gemma-stack:chatLoginSourceRanges": ["203.0.113.0/24", "2001:db8::/32"],
        },
        chat_login_password=pulumi.Output.from_input("pw"),
    )
    assert config.chat_app.history_ttl_days == 30
    assert config.chat_app.login_source_ranges == ("203.0.113.0/24", "2001:db8::/32")
    assert parse({}).chat_app.history_ttl_days is None
    (message,) = problems({"gemma-stack:chatHistoryTtlDays": "-3"})
    assert "chatHistoryTtlDays=-3 must be a number of days" in message
    (message,) = problems(
        {"gemma-stack:chatExposure": "login", "gemma-stack:chatLoginSourceRanges": ["office"]},
        chat_login_password=pulumi.Output.from_input("pw"),
    )
    assert "chatLoginSourceRanges entry 'office'" in message
    (message,) = problems({"gemma-stack:chatLoginSourceRanges": ["203.0.113.0/24"]})
    assert "applies to chatExposure=login only" in message


def test_prebuilt_images_skip_builds() -> None:
    config = parse({"gemma-stack:chatImage": "us-docker.pkg.dev/p/r/chat:1"})
    assert not config.builds_chat_image
    assert config.images.chat == "us-docker.pkg.dev/p/r/chat:1"


# --------------------------------------------------------------------------- image builds


def test_builds_run_in_us_central1_unless_build_region_says_otherwise() -> None:
    assert parse({"gcp:region": "europe-west4"}).build_region == "us-central1"
    chosen = parse({"gcp:region": "europe-west4", "gemma-stack:buildRegion": "europe-west1"})
    assert (chosen.region, chosen.build_region) == ("europe-west4", "europe-west1")


@pytest.mark.parametrize(
    ("region", "fix"),
    [
        ("europe-west4", "europe-west1"),
        ("us-east4", "us-central1"),
        ("asia-southeast1", "asia-east1"),
        ("me-west1", "us-central1"),
    ],
)
def test_a_build_region_cloud_build_may_refuse_names_the_allowed_ones(
    region: str, fix: str
) -> None:
    (problem,) = problems({"gemma-stack:buildRegion": region})
    assert f"buildRegion={region!r}" in problem
    assert ", ".join(CLOUD_BUILD_REGIONS) in problem
    assert problem.endswith(f"(pulumi config set buildRegion {fix}).")


def test_the_schema_lists_the_build_regions_the_registry_allows() -> None:
    description = _project()["config"]["buildRegion"]["description"]
    assert ", ".join(CLOUD_BUILD_REGIONS) in description


# --------------------------------------------------------------------------- Pulumi.yaml schema


def _project() -> dict[str, Any]:
    return dict(yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text()))


def test_project_file_declares_runtime_and_name() -> None:
    project = _project()
    assert project["name"] == "gemma-stack"
    assert project["runtime"] == {
        "name": "python",
        "options": {"toolchain": "pip", "virtualenv": ".venv", "typechecker": "mypy"},
    }


def test_every_scalar_key_is_declared_with_type_default_and_description() -> None:
    schema = {k: v for k, v in _project()["config"].items() if ":" not in k}
    declared = set(schema)
    # Objects and optional secrets cannot be declared in a Pulumi project schema.
    assert declared == set(STACK_KEYS) - {"cloudRunServices", "fineTuneJobs"}
    for key, entry in schema.items():
        assert {"type", "default", "description"} <= set(entry), key
        assert entry["type"] in {"string", "integer", "boolean", "array"}, key
        assert entry["description"].strip(), key


def test_schema_defaults_mean_the_same_as_the_parser_defaults() -> None:
    schema = {k: v["default"] for k, v in _project()["config"].items() if ":" not in k}
    from_schema = parse_stack_config(
        {
            "gcp:project": "my-gcp-project",
            **{k: v if isinstance(v, str) else json.dumps(v) for k, v in schema.items()},
        },
        hf_token=TOKEN,
    )
    from_nothing = parse_stack_config({"gcp:project": "my-gcp-project"}, hf_token=TOKEN)
    assert from_schema == from_nothing


def test_dev_stack_uses_only_known_keys() -> None:
    for key in dev_config():
        namespace, _, name = key.partition(":")
        assert namespace in {"gcp", "gemma-stack"}, key
        if namespace == "gemma-stack":
            assert name in STACK_KEYS, key
