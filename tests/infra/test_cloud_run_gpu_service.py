"""CloudRunGpuService under Pulumi mocks: each flavour's GPU, probe, identity and invoker rules."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import pulumi
import pytest

from components.cloud_run_gpu_service import (
    CloudRunGpuService,
    CloudRunGpuServiceArgs,
    ServiceSettings,
    StartupProbe,
    finetuned_gemma,
    invokers_from,
    prebuilt_gemma,
    vllm_gemma,
)
from components.iam_wait import IAM_PROPAGATION
from tests.pulumi_harness import ProgramRun, render

PROJECT = "my-gcp-project"
CHAT = "serviceAccount:chat-invoker-dev@my-gcp-project.iam.gserviceaccount.com"
TEAM = "group:ml-team@example.com"
INVOKERS = {"chat-app": CHAT, "ml-team": TEAM}
HF_SECRET = "projects/123456789012/secrets/HF_TOKEN"
SERVICE = "gcp:cloudrunv2/service:Service"
ACCOUNT = "gcp:serviceaccount/account:Account"
INVOKER = "gcp:cloudrunv2/serviceIamMember:ServiceIamMember"
SLEEP = "time:index/sleep:Sleep"


def flavour_args(flavour: str, **overrides: Any) -> CloudRunGpuServiceArgs:
    common: dict[str, Any] = {"project_id": PROJECT, "region": "us-central1"}
    invokers = overrides.pop("invokers", INVOKERS)
    if flavour == "prebuilt":
        args = prebuilt_gemma(
            **common, variant="gemma3-4b", invokers=invokers, service_name="gemma-4b"
        )
    elif flavour == "vllm-hf":
        args = vllm_gemma(
            **common,
            model_id="google/gemma-3-1b-it",
            max_model_len=8192,
            hf_token_secret=HF_SECRET,
            invokers=invokers,
            service_name="gemma-vllm",
        )
    elif flavour == "vllm-gcs":
        args = vllm_gemma(
            **common,
            model_id="gemma-3-1b-sql",
            max_model_len=4096,
            model_bucket="team-models",
            model_path="merged/gemma-3-1b-sql",
            invokers=invokers,
            service_name="gemma-vllm-gcs",
        )
    else:
        args = finetuned_gemma(
            **common,
            image="us-central1-docker.pkg.dev/my-gcp-project/gemma-stack/inference:abc123",
            model_bucket="team-models",
            model_path="merged/gemma-3-1b-sql",
            invokers=invokers,
            service_name="gemma-sql",
        )
    return dataclasses.replace(args, **overrides)


def deploy(*args: CloudRunGpuServiceArgs) -> ProgramRun:
    def build() -> None:
        for args_ in args:
            svc = CloudRunGpuService(args_.service_name or "svc", args_)
            pulumi.export(f"{args_.service_name}-uri", svc.uri)
            pulumi.export(f"{args_.service_name}-sa", svc.runtime_service_account_email)
            pulumi.export(f"{args_.service_name}-curl", svc.curl_example)

    return render(build)


def template(run: ProgramRun, name: str | None = None) -> dict[str, Any]:
    result: dict[str, Any] = run.one(SERVICE, name).inputs["template"]
    return result


FLAVOURS = ["prebuilt", "vllm-hf", "vllm-gcs", "finetuned"]


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_runs_on_exactly_one_l4(flavour: str) -> None:
    args = flavour_args(flavour)
    tpl = template(deploy(args))
    assert tpl["nodeSelector"] == {"accelerator": "nvidia-l4"}
    (box,) = tpl["containers"]
    limits = box["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == "1"
    assert limits["cpu"] == args.cpu
    assert limits["memory"] == args.memory
    assert box["resources"]["cpuIdle"] is False  # no CPU throttling between requests
    assert box["resources"]["startupCpuBoost"] is True
    assert tpl["gpuZonalRedundancyDisabled"] is True
    assert tpl["maxInstanceRequestConcurrency"] == args.concurrency
    assert tpl["scaling"] == {"minInstanceCount": 0, "maxInstanceCount": 1}
    assert tpl["timeout"] == f"{args.timeout_seconds}s"
    assert box["ports"]["containerPort"] == 8080


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_each_flavour_startup_probe_fits_cloud_run_limits(flavour: str) -> None:
    args = flavour_args(flavour)
    (box,) = template(deploy(args))["containers"]
    probe = box["startupProbe"]
    assert probe["periodSeconds"] <= 240
    assert probe["initialDelaySeconds"] <= 240
    assert probe["failureThreshold"] * probe["periodSeconds"] <= 240
    assert probe["timeoutSeconds"] <= probe["periodSeconds"]
    budget = probe["initialDelaySeconds"] + probe["failureThreshold"] * probe["periodSeconds"]
    if flavour == "prebuilt":
        # Ollama's model list, through the image's proxy: not just the proxy's open port.
        assert probe["httpGet"] == {"path": "/api/tags", "port": 8080}
    else:
        assert probe["httpGet"] == {"path": "/health", "port": 8080}
        # vLLM's engine start alone takes 35-90 s before the weights load.
        assert budget >= 300


def test_startup_probe_longer_than_cloud_run_allows_is_refused() -> None:
    with pytest.raises(ValueError, match="Cloud Run rejects a period over 240"):
        StartupProbe(period_seconds=300, failure_threshold=1)
    with pytest.raises(ValueError, match="exceeds Cloud Run's 240 s"):
        StartupProbe(period_seconds=10, failure_threshold=25)
    with pytest.raises(ValueError, match="initial delay"):
        StartupProbe(initial_delay_seconds=241)
    with pytest.raises(ValueError, match="timeout_seconds"):
        StartupProbe(period_seconds=10, timeout_seconds=11)
    assert (
        StartupProbe(
            initial_delay_seconds=240, period_seconds=240, timeout_seconds=240, failure_threshold=1
        ).budget_seconds
        == 480
    )


def test_one_dedicated_runtime_account_per_service() -> None:
    run = deploy(*(flavour_args(f) for f in FLAVOURS))
    accounts = run.of_type(ACCOUNT)
    services = run.of_type(SERVICE)
    assert len(accounts) == len(services) == 4
    emails = {f"{a.inputs['accountId']}@{PROJECT}.iam.gserviceaccount.com" for a in accounts}
    assert {s.inputs["template"]["serviceAccount"] for s in services} == emails
    assert run.outputs["gemma-sql-sa"] == f"gemma-sql-run@{PROJECT}.iam.gserviceaccount.com"
    assert not any("compute@developer" in json.dumps(r.inputs) for r in run.resources)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_invokers_are_exactly_the_named_principals(flavour: str) -> None:
    run = deploy(flavour_args(flavour))
    bindings = run.of_type(INVOKER)
    assert sorted(b.inputs["member"] for b in bindings) == sorted(INVOKERS.values())
    assert {b.inputs["role"] for b in bindings} == {"roles/run.invoker"}
    service_name = run.one(SERVICE).inputs["name"]
    assert {b.inputs["name"] for b in bindings} == {service_name}
    dump = run.dump()
    assert "allUsers" not in dump
    assert "allAuthenticatedUsers" not in dump
    assert "gemma-stack-public" not in dump
    assert run.warnings() == []


def test_long_service_names_sharing_a_prefix_get_distinct_accounts() -> None:
    names = ("gemma-3-finetuned-sql-service-east", "gemma-3-finetuned-sql-service-west")
    run = deploy(*(flavour_args("prebuilt", service_name=n) for n in names))
    accounts = sorted(a.inputs["accountId"] for a in run.of_type(ACCOUNT))
    assert len(set(accounts)) == 2
    for account in accounts:
        assert 6 <= len(account) <= 30
        assert account.startswith("gemma-3-finetuned-sql")
        assert account.endswith("-run")


def test_public_adds_all_users_and_warns() -> None:
    run = deploy(flavour_args("prebuilt", public=True))
    members = sorted(b.inputs["member"] for b in run.of_type(INVOKER))
    assert members == sorted([*INVOKERS.values(), "allUsers"])
    assert run.one(SERVICE).inputs["labels"]["gemma-stack-public"] == "true"
    assert any("PUBLIC" in w and "gemma-4b" in w for w in run.warnings())


@pytest.mark.parametrize("member", ["allUsers", "allAuthenticatedUsers", "ana@example.com"])
def test_open_or_malformed_invokers_are_refused(member: str) -> None:
    with pytest.raises(ValueError, match="invoker"):
        deploy(flavour_args("vllm-hf", invokers={"anyone": member}))


def test_invokers_from_config_members_get_stable_distinct_labels() -> None:
    labelled = invokers_from([TEAM, "user:ana@example.com", "user:ana@example.org"])
    assert sorted(labelled.values()) == sorted(
        [TEAM, "user:ana@example.com", "user:ana@example.org"]
    )
    assert invokers_from([TEAM]) == {k: v for k, v in labelled.items() if v == TEAM}
    run = deploy(flavour_args("finetuned", invokers=labelled))
    assert len(run.of_type(INVOKER)) == 3


# The grants each flavour's revision uses as it deploys (the prebuilt image needs none).
DEPLOY_TIME_GRANTS = {
    "prebuilt": [],
    "vllm-hf": [("gcp:secretmanager/secretIamMember:SecretIamMember", HF_SECRET)],
    "vllm-gcs": [("gcp:storage/bucketIAMMember:BucketIAMMember", "team-models")],
    "finetuned": [("gcp:storage/bucketIAMMember:BucketIAMMember", "team-models")],
}


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_revision_waits_until_its_grants_have_had_time_to_apply(flavour: str) -> None:
    run = deploy(flavour_args(flavour))
    service = run.one(SERVICE)
    grants = [r for r in run.resources if "iam" in r.type.lower() and r.type != INVOKER]
    found = [(g.type, g.inputs.get("secretId") or g.inputs.get("bucket")) for g in grants]
    assert found == DEPLOY_TIME_GRANTS[flavour]
    waits = run.of_type(SLEEP)
    if not grants:
        assert waits == []  # nothing to wait for: no pause on deploy
        return
    (wait,) = waits
    assert wait.inputs["createDuration"] == IAM_PROPAGATION
    assert wait.parent_type == "gemma-stack:cloudrun:CloudRunGpuService"
    for grant in grants:
        assert run.waits_for(wait, grant), grant.name
    assert run.waits_for(service, wait)
    # The invokers are used by callers later, not by the deploy: they need not hold it up.
    assert not any(run.waits_for(service, b) for b in run.of_type(INVOKER))


def test_vllm_from_hugging_face_reads_the_token_by_secret_reference() -> None:
    run = deploy(flavour_args("vllm-hf"))
    (box,) = template(run)["containers"]
    env = {e["name"]: e for e in box["envs"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueSource": {"secretKeyRef": {"secret": HF_SECRET, "version": "latest"}},
    }
    grant = run.one("gcp:secretmanager/secretIamMember:SecretIamMember")
    assert grant.inputs["secretId"] == HF_SECRET
    assert grant.inputs["role"] == "roles/secretmanager.secretAccessor"
    assert (
        grant.inputs["member"] == f"serviceAccount:gemma-vllm-run@{PROJECT}.iam.gserviceaccount.com"
    )
    assert run.waits_for(run.one(SERVICE), grant)  # Cloud Run checks access at deploy
    args = box["args"]
    assert args[0] == "google/gemma-3-1b-it"  # `vllm serve MODEL`
    assert not any(a.startswith("--model") for a in args)
    assert "--gpu-memory-utilization=0.90" in args
    assert "--max-model-len=8192" in args
    assert "--port=8080" in args
    assert run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember") == []
    assert "volumes" not in template(run)


def test_vllm_from_gcs_mounts_the_bucket_read_only_and_reads_only_it() -> None:
    run = deploy(flavour_args("vllm-gcs"))
    tpl = template(run)
    assert tpl["volumes"] == [
        {
            "name": "model",
            "gcs": {"bucket": "team-models", "readOnly": True, "mountOptions": ["implicit-dirs"]},
        }
    ]
    (box,) = tpl["containers"]
    assert box["volumeMounts"] == [{"name": "model", "mountPath": "/models"}]
    assert box["args"][0] == "/models/merged/gemma-3-1b-sql"
    assert "--served-model-name=gemma-3-1b-sql" in box["args"]
    grant = run.one("gcp:storage/bucketIAMMember:BucketIAMMember")
    assert grant.inputs == {
        "bucket": "team-models",
        "role": "roles/storage.objectViewer",
        "member": f"serviceAccount:gemma-vllm-gcs-run@{PROJECT}.iam.gserviceaccount.com",
    }
    assert run.of_type("gcp:secretmanager/secretIamMember:SecretIamMember") == []
    assert all("valueSource" not in e for e in box["envs"])


def test_finetuned_reads_its_model_uri_with_bucket_only_viewer() -> None:
    run = deploy(flavour_args("finetuned"))
    (box,) = template(run)["containers"]
    env = {e["name"]: e.get("value") for e in box["envs"]}
    assert env["MODEL_URI"] == "gs://team-models/merged/gemma-3-1b-sql"
    assert "PORT" not in env  # Cloud Run sets PORT from the container port
    assert box["startupProbe"]["httpGet"]["path"] == "/health"
    grants = [r for r in run.resources if "IAM" in r.type and r.type != INVOKER]
    assert [(g.type, g.inputs["bucket"], g.inputs["role"]) for g in grants] == [
        ("gcp:storage/bucketIAMMember:BucketIAMMember", "team-models", "roles/storage.objectViewer")
    ]
    limits = box["resources"]["limits"]
    assert (limits["cpu"], limits["memory"]) == ("4", "16Gi")
    assert template(run)["maxInstanceRequestConcurrency"] == 1
    assert template(run)["timeout"] == "900s"


def test_prebuilt_follows_the_brief_settings() -> None:
    args = flavour_args("prebuilt")
    run = deploy(args)
    tpl = template(run)
    (box,) = tpl["containers"]
    assert box["image"] == "us-docker.pkg.dev/cloudrun/container/gemma/gemma3-4b"
    env = {e["name"]: e["value"] for e in box["envs"]}
    assert env == {"OLLAMA_NUM_PARALLEL": str(int(tpl["maxInstanceRequestConcurrency"]))}
    assert tpl["maxInstanceRequestConcurrency"] == 4
    assert (box["resources"]["limits"]["cpu"], box["resources"]["limits"]["memory"]) == (
        "8",
        "32Gi",
    )
    assert tpl["timeout"] == "600s"
    assert (args.api_kind, args.model_name) == ("gemini", "gemma3:4b")
    curl = run.outputs["gemma-4b-curl"]
    assert "print-identity-token" in curl
    assert "/v1beta/models/gemma3:4b:generateContent" in curl


def test_vllm_outputs_an_openai_curl_with_an_identity_token() -> None:
    run = deploy(flavour_args("vllm-hf"))
    uri = run.outputs["gemma-vllm-uri"]
    assert uri.startswith("https://gemma-vllm")
    curl = run.outputs["gemma-vllm-curl"]
    assert f"{uri}/v1/chat/completions" in curl
    assert '"model":"google/gemma-3-1b-it"' in curl
    assert "Authorization: Bearer $(gcloud auth print-identity-token)" in curl


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: flavour_args("vllm-hf", cpu="2"), "CPUs; set one of them"),
        (lambda: flavour_args("vllm-hf", memory="8Gi"), "needs at least 16Gi"),
        (lambda: flavour_args("vllm-hf", max_instances=0), "max_instances"),
        (lambda: flavour_args("vllm-hf", env={"PORT": "9000"}), "PORT is set by Cloud Run"),
        (lambda: flavour_args("vllm-hf", service_name="Gemma_VLLM"), "service name"),
    ],
)
def test_settings_cloud_run_rejects_fail_before_any_resource(
    make: Callable[[], CloudRunGpuServiceArgs], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        deploy(make())


def test_factories_refuse_ambiguous_model_sources() -> None:
    with pytest.raises(ValueError, match="exactly one model source"):
        vllm_gemma(
            project_id=PROJECT, region="us-central1", model_id="m", max_model_len=4096, invokers={}
        )
    with pytest.raises(ValueError, match="no image"):
        prebuilt_gemma(project_id=PROJECT, region="us-central1", variant="gemma3-2b", invokers={})
    with pytest.raises(ValueError, match="OLLAMA_NUM_PARALLEL"):
        prebuilt_gemma(
            project_id=PROJECT,
            region="us-central1",
            variant="gemma3-1b",
            invokers={},
            settings=ServiceSettings(concurrency=9),
            ollama_num_parallel=4,
        )
    with pytest.raises(ValueError, match="model folder"):
        finetuned_gemma(
            project_id=PROJECT,
            region="us-central1",
            image="i",
            model_bucket="b",
            model_path="gs://b/m",
            invokers={},
        )
