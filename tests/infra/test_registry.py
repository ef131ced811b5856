"""Artifact Registry, the build service account's exact rights, and content-hash image builds."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from components.iam_wait import IAM_PROPAGATION
from components.registry import (
    CLOUD_BUILD_REGIONS,
    DELETE_IMAGES_OLDER_THAN,
    KEEP_RECENT_IMAGES,
    image_tag,
    source_hash,
)
from stacks.config import ConfigError, parse_stack_config
from stacks.platform import check_build_folders
from tests.pulumi_harness import (
    REPO_ROOT,
    ProgramRun,
    run_program,
    run_program_error,
    run_snippet,
    run_snippet_error,
)

BUILD_SA = "gemma-build-dev@my-gcp-project.iam.gserviceaccount.com"
BUILD_MEMBER = f"serviceAccount:{BUILD_SA}"
SLEEP = "time:index/sleep:Sleep"


@pytest.fixture(scope="module")
def dev() -> ProgramRun:
    return run_program()


def _build_args(run: ProgramRun, name: str) -> list[str]:
    build = run.one("command:local:Command", f"{name}-build")
    return shlex.split(build.inputs["create"])


def test_repository_is_docker_in_the_stack_region(dev: ProgramRun) -> None:
    repo = dev.one("gcp:artifactregistry/repository:Repository")
    assert repo.inputs["repositoryId"] == "gemma-dev"
    assert repo.inputs["format"] == "DOCKER"
    assert repo.parent_type == "gemma-stack:registry:ArtifactRegistry"


def test_build_account_holds_exactly_three_grants(dev: ProgramRun) -> None:
    grants = [
        (
            r.type.split(":")[-1],
            r.inputs["role"],
            r.inputs.get("repository") or r.inputs.get("bucket") or r.inputs.get("project"),
        )
        for r in dev.resources
        if r.inputs.get("member") == BUILD_MEMBER
    ]
    staging = dev.one("gcp:storage/bucket:Bucket").outputs["name"]
    assert sorted(grants) == sorted(
        [
            ("IAMMember", "roles/logging.logWriter", "my-gcp-project"),
            ("RepositoryIamMember", "roles/artifactregistry.writer", "gemma-dev"),
            ("BucketIAMMember", "roles/storage.objectViewer", staging),
        ]
    )


def test_staging_bucket_is_private(dev: ProgramRun) -> None:
    bucket = dev.one("gcp:storage/bucket:Bucket")
    assert bucket.inputs["uniformBucketLevelAccess"] is True
    assert bucket.inputs["publicAccessPrevention"] == "enforced"


def test_repository_cleanup_keeps_the_newest_images_and_deletes_old_ones(dev: ProgramRun) -> None:
    repo = dev.one("gcp:artifactregistry/repository:Repository")
    assert repo.inputs["cleanupPolicyDryRun"] is False
    policies = {p["id"]: p for p in repo.inputs["cleanupPolicies"]}
    assert policies == {
        # KEEP outranks DELETE: the latest build of each image, the deployed one, always stays.
        "keep-recent-images": {
            "id": "keep-recent-images",
            "action": "KEEP",
            "mostRecentVersions": {"keepCount": KEEP_RECENT_IMAGES},
        },
        "delete-old-images": {
            "id": "delete-old-images",
            "action": "DELETE",
            "condition": {"tagState": "ANY", "olderThan": DELETE_IMAGES_OLDER_THAN},
        },
    }
    assert KEEP_RECENT_IMAGES >= 2  # the deployed image and at least one to roll back to
    assert DELETE_IMAGES_OLDER_THAN == "30d"


def test_chat_image_is_built_on_cloud_build_as_the_build_account(dev: ProgramRun) -> None:
    args = _build_args(dev, "chat-image")
    tag = image_tag(REPO_ROOT / "app/chat")
    image = f"us-central1-docker.pkg.dev/my-gcp-project/gemma-dev/chat:{tag}"
    # The script runs `gcloud builds submit` with these arguments, retrying IAM refusals.
    assert args[:3] == ["sh", "components/submit_build.sh", "app/chat"]
    assert "--region=us-central1" in args
    assert f"--substitutions=_IMAGE={image}" in args
    assert f"--service-account=projects/my-gcp-project/serviceAccounts/{BUILD_SA}" in args
    assert "--config=components/cloudbuild.yaml" in args
    staging = dev.one("gcp:storage/bucket:Bucket").outputs["name"]
    assert f"--gcs-source-staging-dir=gs://{staging}/source" in args
    assert dev.outputs["chatImage"] == image
    build = dev.one("command:local:Command", "chat-image-build")
    assert build.inputs["triggers"] == [build.inputs["create"]]
    assert build.parent_type == "gemma-stack:registry:ImageBuild"


def test_builds_run_in_build_region_and_push_to_the_stack_region() -> None:
    run = run_program(overrides={"gcp:region": "europe-west4"})
    args = _build_args(run, "chat-image")
    assert "--region=us-central1" in args  # buildRegion's default, not the stack's region
    assert "--region=europe-west4" not in args
    registry = "europe-west4-docker.pkg.dev/my-gcp-project/gemma-dev"
    assert run.outputs["registryUrl"] == registry
    assert run.one("gcp:artifactregistry/repository:Repository").inputs["location"] == (
        "europe-west4"
    )
    image = f"{registry}/chat:{image_tag(REPO_ROOT / 'app/chat')}"
    assert f"--substitutions=_IMAGE={image}" in args
    assert run.outputs["chatImage"] == image
    # The uploaded source sits beside the builds that read it.
    assert run.one("gcp:storage/bucket:Bucket").inputs["location"] == "us-central1"

    chosen = run_program(
        overrides={"gcp:region": "europe-west4", "gemma-stack:buildRegion": "europe-west1"}
    )
    args = _build_args(chosen, "chat-image")
    assert "--region=europe-west1" in args
    assert chosen.outputs["chatImage"] == image
    assert chosen.one("gcp:storage/bucket:Bucket").inputs["location"] == "europe-west1"


def test_a_build_region_cloud_build_may_refuse_is_refused_with_the_fix() -> None:
    error, registered = run_program_error(
        overrides={"gcp:region": "europe-west4", "gemma-stack:buildRegion": "europe-west4"}
    )
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "buildRegion='europe-west4'" in message
    assert ", ".join(CLOUD_BUILD_REGIONS) in message
    assert "pulumi config set buildRegion europe-west1" in message
    assert not [r for r in registered if r.custom]


def test_rebuild_trigger_changes_with_the_build_region_and_flags(dev: ProgramRun) -> None:
    build = dev.one("command:local:Command", "chat-image-build")
    moved = run_program(overrides={"gemma-stack:buildRegion": "us-west2"}).one(
        "command:local:Command", "chat-image-build"
    )
    assert moved.inputs["triggers"] != build.inputs["triggers"]
    assert "--region=us-west2" in moved.inputs["triggers"][0]
    renamed = run_program(overrides={"gemma-stack:artifactRepository": "other-images"}).one(
        "command:local:Command", "chat-image-build"
    )
    assert renamed.inputs["triggers"] != build.inputs["triggers"]


def test_image_tag_follows_the_build_config_as_well_as_the_folder(tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM python:3.11-slim\n")
    config = tmp_path / "cloudbuild.yaml"
    config.write_text("steps: []\n")
    first = image_tag(app, config)
    assert len(first) == 16
    assert image_tag(app, config) == first
    config.write_text("steps: []\noptions: {machineType: E2_HIGHCPU_8}\n")
    assert image_tag(app, config) != first
    config.write_text("steps: []\n")
    (app / "Dockerfile").write_text("FROM python:3.12-slim\n")
    assert image_tag(app, config) != first


def test_build_waits_for_every_grant_of_the_build_account(dev: ProgramRun) -> None:
    build = dev.one("command:local:Command", "chat-image-build")
    for grant in (r for r in dev.resources if r.inputs.get("member") == BUILD_MEMBER):
        assert dev.waits_for(build, grant), grant.name


def test_builds_start_only_after_the_build_grants_have_had_time_to_apply(
    dev: ProgramRun,
) -> None:
    wait = dev.one(SLEEP, "registry-builder-grants-applied")
    assert wait.parent_type == "gemma-stack:registry:ArtifactRegistry"
    assert wait.inputs["createDuration"] == IAM_PROPAGATION
    grants = [r for r in dev.resources if r.inputs.get("member") == BUILD_MEMBER]
    assert len(grants) == 3
    for grant in grants:
        assert dev.waits_for(wait, grant), grant.name
    # A replaced grant has a new id, which starts the wait again.
    assert sorted(wait.inputs["triggers"]) == sorted(g.name for g in grants)
    assert dev.waits_for(dev.one("command:local:Command", "chat-image-build"), wait)


def test_build_config_logs_to_cloud_logging_only() -> None:
    config = (REPO_ROOT / "components/cloudbuild.yaml").read_text()
    assert "logging: CLOUD_LOGGING_ONLY" in config
    assert "${_IMAGE}" in config


def test_unchanged_sources_give_the_same_build_command(dev: ProgramRun) -> None:
    again = run_program()
    assert _build_args(again, "chat-image") == _build_args(dev, "chat-image")


def test_prebuilt_image_skips_the_build() -> None:
    image = "us-docker.pkg.dev/other/images/chat:v1"
    run = run_program(overrides={"gemma-stack:chatImage": image})
    assert not run.of_type("command:local:Command")
    assert not run.of_type("gemma-stack:registry:ImageBuild")
    assert run.outputs["chatImage"] == image


def test_inference_image_is_built_only_for_an_enabled_finetuned_service() -> None:
    service = {"name": "sql", "flavour": "finetuned", "modelUri": "gs://models/sql"}
    run = run_program(overrides={"gemma-stack:cloudRunServices": [service]})
    args = _build_args(run, "inference-image")
    assert args[2] == "app/inference"
    assert run.outputs["inferenceImage"].endswith(
        f"/inference:{image_tag(REPO_ROOT / 'app/inference')}"
    )
    assert run.waits_for(
        run.one("command:local:Command", "inference-image-build"),
        run.one(SLEEP, "registry-builder-grants-applied"),
    )
    skipped = run_program(
        overrides={
            "gemma-stack:cloudRunServices": [service],
            "gemma-stack:inferenceImage": "us-docker.pkg.dev/p/r/inference:v2",
        }
    )
    assert [c.name for c in skipped.of_type("command:local:Command")] == ["chat-image-build"]
    assert skipped.outputs["inferenceImage"] == "us-docker.pkg.dev/p/r/inference:v2"


def test_source_hash_follows_content_and_ignores_caches(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM python:3.11-slim\n")
    (tmp_path / "main.py").write_text("print('hi')\n")
    first = source_hash(tmp_path)
    assert len(first) == 16
    assert source_hash(tmp_path) == first
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    assert source_hash(tmp_path) == first
    (tmp_path / "main.py").write_text("print('bye')\n")
    assert source_hash(tmp_path) != first
    (tmp_path / "main.py").write_text("print('hi')\n")
    (tmp_path / "main.py").rename(tmp_path / "app.py")
    assert source_hash(tmp_path) != first  # a rename is a change too


SNIPPET = """
from pathlib import Path
from components.registry import ImageBuild, ImageBuildArgs
ImageBuild("img", ImageBuildArgs(
    project_id="p-123456", registry_url="r.example/p/repo",
    image_name="thing", context_dir=Path("thing"), build_service_account_email="b@p",
    staging_bucket="stage", root_dir=Path({root!r}), build_region={build_region!r},
))
"""


def test_image_build_needs_a_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "thing").mkdir()
    error, _ = run_snippet_error(
        SNIPPET.format(root=str(tmp_path), build_region="us-central1"), tmp_path
    )
    assert isinstance(error, ValueError)
    assert "thing has no Dockerfile" in str(error)
    (tmp_path / "thing" / "Dockerfile").write_text("FROM scratch\n")
    run = run_snippet(SNIPPET.format(root=str(tmp_path), build_region="us-central1"), tmp_path)
    build = run.one("command:local:Command")
    assert build.inputs["dir"] == str(tmp_path)
    assert (
        f"_IMAGE=r.example/p/repo/thing:{image_tag(tmp_path / 'thing')}" in build.inputs["create"]
    )


def test_image_build_refuses_a_build_region_cloud_build_may_refuse(tmp_path: Path) -> None:
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "Dockerfile").write_text("FROM scratch\n")
    error, registered = run_snippet_error(
        SNIPPET.format(root=str(tmp_path), build_region="asia-northeast1"), tmp_path
    )
    assert isinstance(error, ValueError)
    assert "pulumi config set buildRegion asia-east1" in str(error)
    assert not [r for r in registered if r.custom]


def test_missing_dockerfile_is_refused_before_any_resource(tmp_path: Path) -> None:
    config = parse_stack_config({"gcp:project": "my-gcp-project", "gkeGemmaEnabled": "false"})
    with pytest.raises(ConfigError) as info:
        check_build_folders(config, root=tmp_path)
    assert "app/chat has no Dockerfile" in str(info.value)
    assert "pulumi config set chatImage" in str(info.value)
    (tmp_path / "app" / "chat").mkdir(parents=True)
    (tmp_path / "app" / "chat" / "Dockerfile").write_text("FROM scratch\n")
    check_build_folders(config, root=tmp_path)


# --------------------------------------------------------------------------- submit_build.sh

SUBMIT = REPO_ROOT / "components/submit_build.sh"
# A gcloud that prints each canned reply in turn (exit status on the first line) and logs
# its arguments; a sleep that only records how long it was asked to wait.
FAKE_GCLOUD = """#!/bin/sh
n=$(cat "$FAKE/count" 2>/dev/null || echo 0); n=$((n + 1)); echo "$n" >"$FAKE/count"
echo "$*" >>"$FAKE/calls"
reply="$FAKE/reply$n"; [ -f "$reply" ] || reply="$FAKE/reply-last"
tail -n +2 "$reply"; exit "$(head -n 1 "$reply")"
"""
FAKE_SLEEP = '#!/bin/sh\necho "$1" >>"$FAKE/sleeps"\n'
DENIED = (
    "ERROR: (gcloud.builds.submit) INVALID_ARGUMENT: could not resolve source: googleapi: "
    "Error 403: gemma-stack-build@p.iam.gserviceaccount.com does not have "
    "storage.objects.get access to the Google Cloud Storage object."
)
PUSH_DENIED = (
    'denied: Permission "artifactregistry.repositories.uploadArtifacts" denied on resource'
)


def _submit(
    tmp_path: Path, *replies: tuple[int, str]
) -> tuple[subprocess.CompletedProcess[str], Path]:
    fake = tmp_path / "fake"
    bin_dir = tmp_path / "bin"
    fake.mkdir()
    bin_dir.mkdir()
    for name, script in (("gcloud", FAKE_GCLOUD), ("sleep", FAKE_SLEEP)):
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    for index, (status, text) in enumerate(replies, start=1):
        (fake / f"reply{index}").write_text(f"{status}\n{text}\n")
    (fake / "reply-last").write_text((fake / f"reply{len(replies)}").read_text())
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE": str(fake)}
    result = subprocess.run(
        ["sh", str(SUBMIT), "app/chat", "--region=us-central1"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        timeout=60,
    )
    return result, fake


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_submit_retries_a_build_refused_a_fresh_grant_with_backoff(tmp_path: Path) -> None:
    result, fake = _submit(tmp_path, (1, DENIED), (1, PUSH_DENIED), (0, "DONE"))
    assert result.returncode == 0, result.stderr
    assert _lines(fake / "calls") == ["builds submit app/chat --region=us-central1"] * 3
    assert _lines(fake / "sleeps") == ["30", "60"]
    assert "DONE" in result.stdout
    assert DENIED in result.stdout  # gcloud's own words still reach `pulumi up`
    assert "retrying in 30s" in result.stderr


def test_submit_fails_at_once_on_any_other_error(tmp_path: Path) -> None:
    result, fake = _submit(tmp_path, (2, "ERROR: build step 0 failed: exit status 1"))
    assert result.returncode == 2
    assert len(_lines(fake / "calls")) == 1
    assert _lines(fake / "sleeps") == []


def test_submit_gives_up_after_five_refusals(tmp_path: Path) -> None:
    result, fake = _submit(tmp_path, (1, "ERROR: PERMISSION_DENIED: The caller does not have"))
    assert result.returncode == 1
    assert len(_lines(fake / "calls")) == 5
    assert _lines(fake / "sleeps") == ["30", "60", "90", "120"]
