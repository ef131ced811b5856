"""fineTuneJobs under mocks: the Job on an L4, its narrow grants, the token by reference, and a
finetuned Cloud Run service that serves the job's output once the Job is complete."""

from __future__ import annotations

import json
from typing import Any

import pytest

from components.gemma_fine_tune_job import FINE_TUNE_SIZING
from stacks.config import ConfigError
from tests.pulumi_harness import (
    ProgramRun,
    manifests_from_resources,
    pod_spec,
    run_program,
    run_program_error,
    schema_failures,
)

JOB = {
    "name": "sql",
    "dataset": "gs://my-gcp-project-data/sql/train.jsonl",
    "baseModel": "google/gemma-3-1b-it",
    "output": "gs://my-gcp-project-models/gemma-3-1b-sql",
    "epochs": 3,
    "loraR": 16,
    "learningRate": 0.0002,
}
SERVICE = {"name": "gemma-sql", "flavour": "finetuned", "fineTuneJob": "sql"}
FAKE_TOKEN = "hf_FAKEtokenFORtestsONLY0123456789ab"  # pragma: allowlist secret


@pytest.fixture(scope="module")
def run() -> ProgramRun:
    return run_program(
        overrides={
            "gemma-stack:fineTuneJobs": [JOB],
            "gemma-stack:cloudRunServices": [SERVICE],
        },
        hf_token=FAKE_TOKEN,
    )


def _container(run: ProgramRun) -> dict[str, Any]:
    (container,) = pod_spec(run.one("kubernetes:batch/v1:Job"))["containers"]
    return container


def test_the_job_runs_app_finetune_on_one_l4_with_the_disk_it_needs(run: ProgramRun) -> None:
    job = run.one("kubernetes:batch/v1:Job")
    spec = pod_spec(job)
    assert spec["nodeSelector"]["cloud.google.com/gke-accelerator"] == "nvidia-l4"
    assert spec["restartPolicy"] == "OnFailure"  # the same pod, so /work and its checkpoints stay
    assert spec["serviceAccountName"] == "finetune-sql"
    container = _container(run)
    sizing = FINE_TUNE_SIZING["gemma3-1b"]
    assert container["resources"]["limits"] == {
        "cpu": sizing.cpu,
        "memory": sizing.memory,
        "ephemeral-storage": sizing.ephemeral_storage,
        "nvidia.com/gpu": "1",
    }
    assert container["command"][:4] == ["python", "-m", "app.finetune", "train"]
    assert f"--dataset={JOB['dataset']}" in container["command"]
    assert f"--base={JOB['baseModel']}" in container["command"]
    assert f"--output={JOB['output']}" in container["command"]
    assert {"--epochs=3", "--lora-r=16", "--learning-rate=0.0002"} <= set(container["command"])
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    work = next(v for v in spec["volumes"] if v["name"] == "work")
    assert work["emptyDir"]["sizeLimit"] == sizing.ephemeral_storage
    # Pulumi waits for the Job to complete, longer than its own deadline.
    assert job.options["customTimeouts"]["create"] == f"{6 * 60 + 30}m"


def test_the_hf_token_is_passed_by_reference_only(run: ProgramRun) -> None:
    job = run.one("kubernetes:batch/v1:Job")
    assert FAKE_TOKEN not in json.dumps(job.inputs)
    env = {e["name"]: e.get("value") for e in _container(run)["env"]}
    secret = run.one("gcp:secretmanager/secret:Secret").inputs["secretId"]
    assert env["HF_TOKEN_SECRET"] == f"projects/my-gcp-project/secrets/{secret}"
    reader = run.one(
        "gcp:secretmanager/secretIamMember:SecretIamMember", "finetune-sql-hf-token-reader"
    )
    assert reader.inputs["role"] == "roles/secretmanager.secretAccessor"
    assert reader.inputs["secretId"] == secret


def test_the_jobs_identity_reads_the_dataset_bucket_and_writes_the_model_bucket_only(
    run: ProgramRun,
) -> None:
    principal = run.one("kubernetes:core/v1:ServiceAccount", "finetune-sql-ksa")
    grants = {
        (r.inputs["bucket"], r.inputs["role"])
        for r in run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.name.startswith("finetune-sql-")
    }
    assert grants == {
        ("my-gcp-project-data", "roles/storage.objectViewer"),
        ("my-gcp-project-models", "roles/storage.objectUser"),
    }
    members = {
        r.inputs["member"]
        for r in run.of_type("gcp:storage/bucketIAMMember:BucketIAMMember")
        if r.name.startswith("finetune-sql-")
    }
    assert len(members) == 1
    (member,) = members
    assert member.endswith("/subject/ns/gemma-stack/sa/finetune-sql")
    assert principal is not None
    project_grants = [
        r
        for r in run.resources
        if r.type.startswith("gcp:projects/") and r.inputs.get("member") == member
    ]
    assert project_grants == []


def test_a_finetuned_service_serves_the_jobs_output_after_the_job(run: ProgramRun) -> None:
    service = run.one("gcp:cloudrunv2/service:Service")
    (container,) = service.inputs["template"]["containers"]
    env = {e["name"]: e.get("value") for e in container["envs"]}
    assert env["MODEL_URI"] == JOB["output"]
    # Depending on the component is depending on its Job, which Pulumi awaits to completion.
    assert run.one("kubernetes:batch/v1:Job").urn in service.all_dependencies()
    assert run.outputs["fineTuneModels"] == {"sql": JOB["output"]}


def test_the_image_is_built_from_app_with_its_own_dockerfile(run: ProgramRun) -> None:
    build = run.one("command:local:Command", "finetune-image-build")
    create = build.inputs["create"]
    assert " app " in f" {create} "
    assert "_DOCKERFILE=finetune/Dockerfile" in create
    assert run.outputs["fineTuneImage"] in _container(run)["image"]


def test_the_rendered_job_is_a_valid_kubernetes_object(run: ProgramRun) -> None:
    manifests = [m for m in manifests_from_resources(run.resources) if m["kind"] == "Job"]
    assert len(manifests) == 1
    assert schema_failures(manifests, "1.33") == []


@pytest.mark.parametrize(
    ("jobs", "services", "expected"),
    [
        ([JOB], [{**SERVICE, "fineTuneJob": "nope"}], "fineTuneJob='nope' names no fineTuneJobs"),
        ([{**JOB, "baseModel": "google/gemma-3-12b-it"}], [], "variant='gemma3-12b'"),
        ([{**JOB, "dataset": "/data/train.jsonl"}], [], "must be gs://BUCKET/PATH/train.jsonl"),
        ([{**JOB, "loraR": 0}], [], "loraR=0 must be above 0"),
        ([{**JOB, "epochs": "three"}], [], "epochs='three' must be a number"),
        ([JOB, {**JOB, "name": "other"}], [], "write to the same output"),
        ([{**JOB, "warmup": 1}], [], "unknown keys ['warmup']"),
    ],
)
def test_bad_fine_tune_config_is_refused_before_anything_is_created(
    jobs: list[dict[str, Any]], services: list[dict[str, Any]], expected: str
) -> None:
    error, recorded = run_program_error(
        overrides={
            "gemma-stack:fineTuneJobs": jobs,
            "gemma-stack:cloudRunServices": services or None,
        }
    )
    assert isinstance(error, ConfigError)
    assert expected in str(error)
    assert [r for r in recorded if r.custom] == []
