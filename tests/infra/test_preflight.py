"""Pre-flight quota checks: the whole program under mocks whose Cloud Quotas invokes answer
zero, exactly enough, or fail, plus the needs and limit reading they rest on."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest
from pulumi_gcp.cloudquota.outputs import (
    GetSQuotaInfoDimensionsInfoDetailResult,
    GetSQuotaInfoDimensionsInfoResult,
)

from stacks.config import ConfigError, StackConfig, parse_stack_config
from stacks.preflight import QuotaShortfall, quota_needs, quota_value
from tests.pulumi_harness import (
    QUOTA_INFO,
    REPO_ROOT,
    RecordedResource,
    dev_config,
    run_program,
    run_program_error,
)

GIB = 2**30
L4_RUN = "NvidiaL4GpuAllocNoZonalRedundancyPerProjectRegion"
L4_RUN_ZONAL = "NvidiaL4GpuAllocPerProjectRegion"
RUN_CPU = "CpuAllocPerProjectRegion"
RUN_MEMORY = "MemAllocPerProjectRegion"
L4_COMPUTE = "NVIDIA-L4-GPUS-per-project-region"
ALL_GPUS = "GPUS-ALL-REGIONS-per-project"
# What Pulumi.dev.yaml asks for: gemma3-prebuilt (1 instance, 8 vCPU, 32Gi) and GKE 1B on 1 L4.
DEV_NEEDS = {L4_RUN: 1, RUN_CPU: 8000, RUN_MEMORY: 32 * GIB, L4_COMPUTE: 1, ALL_GPUS: 1}
GPU_TYPES = ("gcp:cloudrunv2/service:Service", "kubernetes:apps/v1:Deployment")
API_OFF = (
    "googleapi: Error 403: Cloud Quotas API has not been used in project my-gcp-project "
    "before or it is disabled. SERVICE_DISABLED"
)


def _created(recorded: list[RecordedResource]) -> list[str]:
    return [r.type for r in recorded if r.custom and not r.type.startswith("pulumi:providers:")]


def _quota_reads(calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
    return [args["quotaId"] for token, args in calls if token == QUOTA_INFO]


def _preflight_warnings(warnings: list[str]) -> list[str]:
    return [w for w in warnings if w.startswith("Pre-flight")]


def _config(overrides: dict[str, Any] | None = None) -> StackConfig:
    values = {**dev_config(), **(overrides or {})}
    return parse_stack_config(
        {
            key.removeprefix("gemma-stack:"): value if isinstance(value, str) else json.dumps(value)
            for key, value in values.items()
        },
        hf_token=pulumi.Output.from_input("hf_x"),
    )


# --------------------------------------------------------------------------- the program


def test_zero_quota_stops_the_default_stack_before_any_resource() -> None:
    error, recorded = run_program_error(quotas={"*": 0})

    assert isinstance(error, QuotaShortfall)
    assert isinstance(error, pulumi.RunError)  # `pulumi up` prints the message, no traceback
    assert not [t for t in _created(recorded) if t in GPU_TYPES]
    assert _created(recorded) == []
    message = str(error)
    assert "project my-gcp-project has too little quota for this stack (5 shortfalls)" in message
    assert (
        f"Cloud Run L4 GPUs without zonal redundancy in us-central1 (run.googleapis.com {L4_RUN})"
        ": the stack needs 1 L4 (gemma3-prebuilt: 1 max instance(s) x 1 L4), the project has 0 L4."
    ) in message
    assert "the stack needs 8 vCPU (gemma3-prebuilt: 1 x 8 vCPU), the project has 0 vCPU" in message
    assert "the stack needs 32 GiB (gemma3-prebuilt: 1 x 32Gi), the project has 0 GiB" in message
    assert (
        f"Compute Engine L4 GPUs in us-central1 (compute.googleapis.com {L4_COMPUTE}): the stack "
        "needs 1 L4 (GKE Gemma gemma-3-1b-it: 1 L4)"
    ) in message
    assert f"Compute Engine GPUs across all regions (compute.googleapis.com {ALL_GPUS})" in message
    # How to ask: the exact command per shortfall, in the quota's own unit, and the console.
    assert (
        "gcloud beta quotas preferences create --project=my-gcp-project "
        f"--service=run.googleapis.com --quota-id={L4_RUN} --preferred-value=1 "
        "--dimensions=region=us-central1 --email=YOU@example.com"
    ) in message
    assert f"--quota-id={RUN_CPU} --preferred-value=8000 " in message
    assert f"--quota-id={RUN_MEMORY} --preferred-value={32 * GIB} " in message
    assert (
        f"--service=compute.googleapis.com --quota-id={ALL_GPUS} --preferred-value=1 "
        "--email=YOU@example.com"
    ) in message
    assert "https://console.cloud.google.com/iam-admin/quotas?project=my-gcp-project" in message
    assert "Nothing was created." in message


def test_the_docs_show_the_message_the_program_prints() -> None:
    error, _ = run_program_error(quotas={**DEV_NEEDS, L4_RUN: 0, ALL_GPUS: 0})
    assert str(error) in (REPO_ROOT / "docs" / "first-deploy.md").read_text()


def test_exactly_enough_quota_lets_the_deploy_proceed_without_warnings() -> None:
    run = run_program(quotas=DEV_NEEDS)

    assert sorted(_quota_reads(run.calls)) == sorted(DEV_NEEDS)
    assert _preflight_warnings(run.warnings()) == []
    assert run.one("gcp:cloudrunv2/service:Service").inputs["name"] == "gemma3-prebuilt"
    assert run.one("kubernetes:apps/v1:Deployment", "gemma-vllm")


def test_one_unit_short_is_the_only_shortfall_reported() -> None:
    error, recorded = run_program_error(quotas={**DEV_NEEDS, RUN_CPU: 7999})

    assert isinstance(error, QuotaShortfall)
    assert _created(recorded) == []
    message = str(error)
    assert "(1 shortfall):" in message
    assert "the stack needs 8 vCPU (gemma3-prebuilt: 1 x 8 vCPU), the project has 7.999 vCPU" in (
        message
    )
    assert L4_RUN not in message
    assert L4_COMPUTE not in message


def test_unlimited_quota_is_enough() -> None:
    run = run_program(quotas={"*": -1})
    assert _preflight_warnings(run.warnings()) == []
    assert run.one("gcp:cloudrunv2/service:Service")


def test_an_unavailable_quota_api_warns_once_and_proceeds() -> None:
    run = run_program(quotas={"*": API_OFF})

    warnings = _preflight_warnings(run.warnings())
    assert len(warnings) == 1
    assert "\n" not in warnings[0]
    assert "the Cloud Quotas API could not answer" in warnings[0]
    assert all(quota_id in warnings[0] for quota_id in DEV_NEEDS)
    assert "SERVICE_DISABLED" in warnings[0]
    assert "cloudquotas.googleapis.com" in warnings[0]
    assert run.one("gcp:cloudrunv2/service:Service")
    assert run.one("kubernetes:apps/v1:Deployment", "gemma-vllm")


def test_quotas_that_answer_are_still_enforced_when_others_cannot() -> None:
    error, recorded = run_program_error(quotas={**DEV_NEEDS, L4_RUN: 0, L4_COMPUTE: API_OFF})

    assert isinstance(error, QuotaShortfall)
    assert _created(recorded) == []
    assert L4_RUN in str(error)
    assert L4_COMPUTE not in str(error)


def test_preflight_warn_prints_the_same_shortfalls_and_deploys() -> None:
    enforced, _ = run_program_error(quotas={"*": 0})
    run = run_program(overrides={"gemma-stack:preflight": "warn"}, quotas={"*": 0})

    warnings = _preflight_warnings(run.warnings())
    assert len(warnings) == 1
    shortfall_lines = [line for line in str(enforced).splitlines() if line.startswith("  ")]
    assert len(shortfall_lines) == 10  # five shortfalls, each with its gcloud command
    assert [line for line in warnings[0].splitlines() if line.startswith("  ")] == shortfall_lines
    assert "preflight=warn: deploying anyway" in warnings[0]
    assert run.one("gcp:cloudrunv2/service:Service")
    assert run.one("kubernetes:apps/v1:Deployment", "gemma-vllm")


def test_preflight_off_reads_no_quota_and_deploys() -> None:
    run = run_program(overrides={"gemma-stack:preflight": "off"}, quotas={"*": 0})

    assert _quota_reads(run.calls) == []
    assert _preflight_warnings(run.warnings()) == []
    assert run.one("gcp:cloudrunv2/service:Service")
    apis = {s.inputs["service"] for s in run.of_type("gcp:projects/service:Service")}
    assert "cloudquotas.googleapis.com" not in apis


def test_the_quota_api_is_enabled_for_the_next_deploy() -> None:
    run = run_program()
    apis = {s.inputs["service"] for s in run.of_type("gcp:projects/service:Service")}
    assert "cloudquotas.googleapis.com" in apis


def test_a_bad_preflight_value_is_a_config_error() -> None:
    error, recorded = run_program_error(overrides={"gemma-stack:preflight": "strict"})

    assert isinstance(error, ConfigError)
    assert recorded == []
    assert "preflight='strict' must be one of enforce, warn, off" in str(error)
    assert "pulumi config set preflight warn" in str(error)


def test_zonal_redundancy_asks_for_its_own_quota() -> None:
    services = [
        {"name": "plain", "flavour": "prebuilt"},
        {"name": "zonal", "flavour": "prebuilt", "gpuZonalRedundancy": True, "maxInstances": 2},
    ]
    error, recorded = run_program_error(
        overrides={"gemma-stack:cloudRunServices": services},
        quotas={L4_RUN: 1, L4_RUN_ZONAL: 0},
    )

    assert isinstance(error, QuotaShortfall)
    assert _created(recorded) == []
    message = str(error)
    assert "(1 shortfall):" in message
    assert (
        f"Cloud Run L4 GPUs with zonal redundancy in us-central1 (run.googleapis.com "
        f"{L4_RUN_ZONAL}): the stack needs 2 L4 (zonal: 2 max instance(s) x 1 L4), the project "
        "has 0 L4."
    ) in message
    assert f"--quota-id={L4_RUN_ZONAL} --preferred-value=2 " in message


def test_request_quota_files_each_shortfall_and_still_stops() -> None:
    error, recorded = run_program_error(
        overrides={
            "gemma-stack:requestQuota": True,
            "gemma-stack:quotaContactEmail": "ml-team@example.com",
        },
        quotas={**DEV_NEEDS, L4_RUN: 0, ALL_GPUS: 0},
    )

    assert isinstance(error, QuotaShortfall)
    assert not [t for t in _created(recorded) if t in GPU_TYPES]
    filed = {r.inputs["quotaId"]: r for r in recorded if r.type.startswith("gcp:cloudquota/sQuota")}
    assert set(filed) == {L4_RUN, ALL_GPUS}
    assert _created(recorded) == ["gcp:cloudquota/sQuotaPreference:SQuotaPreference"] * 2
    gpu = filed[L4_RUN]
    assert gpu.inputs["parent"] == "projects/my-gcp-project"
    assert gpu.inputs["service"] == "run.googleapis.com"
    assert gpu.inputs["dimensions"] == {"region": "us-central1"}
    assert gpu.inputs["quotaConfig"]["preferredValue"] == "1"
    assert gpu.inputs["contactEmail"] == "ml-team@example.com"
    assert gpu.options["retainOnDelete"] is True  # dropping a granted request keeps the quota
    assert gpu.parent_type == "gemma-stack:quota:QuotaRequests"
    assert "dimensions" not in filed[ALL_GPUS].inputs
    message = str(error)
    assert "requestQuota=true filed these requests" in message
    assert "--email=ml-team@example.com" in message
    assert "Nothing else was created." in message


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"gemma-stack:requestQuota": True}, "requestQuota=true needs quotaContactEmail"),
        (
            {
                "gemma-stack:requestQuota": True,
                "gemma-stack:quotaContactEmail": "a@example.com",
                "gemma-stack:preflight": "off",
            },
            "requestQuota=true files requests for the shortfalls",
        ),
        ({"gemma-stack:quotaContactEmail": "not-an-address"}, "must be an email address"),
    ],
)
def test_request_quota_config_is_checked(overrides: dict[str, Any], expected: str) -> None:
    error, recorded = run_program_error(overrides=overrides)
    assert isinstance(error, ConfigError)
    assert recorded == []
    assert expected in str(error)


# --------------------------------------------------------------------------- needs and limits


def test_needs_sum_every_enabled_service_at_max_scale() -> None:
    config = _config(
        {
            "gemma-stack:gkeGemmaVariant": "gemma-3-12b-it",
            "gemma-stack:cloudRunServices": [
                {"name": "a", "flavour": "prebuilt", "maxInstances": 2},
                {
                    "name": "b",
                    "flavour": "finetuned",
                    "modelUri": "gs://my-models/sql",
                    "maxInstances": 3,
                },
                {"name": "c", "flavour": "prebuilt", "enabled": False, "maxInstances": 9},
                {"name": "d", "flavour": "vllm", "memory": "24576Mi", "maxInstances": 1},
            ],
        }
    )
    needs = {need.quota.quota_id: need for need in quota_needs(config)}

    assert needs[L4_RUN].amount == 2 + 3 + 1
    assert needs[RUN_CPU].amount == 2 * 8000 + 3 * 4000 + 1 * 8000
    assert needs[RUN_MEMORY].amount == 2 * 32 * GIB + 3 * 16 * GIB + 24 * GIB
    assert needs[RUN_CPU].region == "us-central1"
    assert needs[L4_COMPUTE].amount == needs[ALL_GPUS].amount == 2  # 12B on 2 L4
    assert needs[ALL_GPUS].region is None
    assert L4_RUN_ZONAL not in needs


def test_disabled_backends_need_no_quota() -> None:
    config = _config({"gemma-stack:gkeGemmaEnabled": False, "gemma-stack:cloudRunServices": []})
    assert quota_needs(config) == ()


def _info(
    value: str | None, dimensions: dict[str, str] | None = None, locations: tuple[str, ...] = ()
) -> GetSQuotaInfoDimensionsInfoResult:
    details = [] if value is None else [GetSQuotaInfoDimensionsInfoDetailResult(value=value)]
    return GetSQuotaInfoDimensionsInfoResult(
        applicable_locations=list(locations), details=details, dimensions=dimensions or {}
    )


def test_a_region_specific_limit_overrides_the_default() -> None:
    infos = [
        _info("0", locations=("us-central1", "europe-west4")),
        _info("3", {"region": "us-central1"}, ("us-central1",)),
    ]
    assert quota_value(infos, "us-central1") == 3
    assert quota_value(infos, "europe-west4") == 0


def test_a_region_the_quota_does_not_cover_has_none() -> None:
    assert quota_value([_info("5", locations=("europe-west4",))], "us-central1") == 0
    assert quota_value([], "us-central1") == 0
    assert quota_value([_info(None, locations=("us-central1",))], "us-central1") == 0


def test_global_and_unlimited_limits() -> None:
    assert quota_value([_info("4", locations=("global",))], None) == 4
    assert quota_value([_info("-1", locations=("us-central1",))], "us-central1") == float("inf")
