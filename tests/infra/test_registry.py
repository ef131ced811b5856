"""Artifact Registry, the build service account's exact rights, and content-hash image builds."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from components.registry import source_hash
from stacks.config import ConfigError, parse_stack_config
from stacks.platform import check_build_folders
from tests.pulumi_harness import (
    REPO_ROOT,
    ProgramRun,
    run_program,
    run_snippet,
    run_snippet_error,
)

BUILD_SA = "gemma-build-dev@my-gcp-project.iam.gserviceaccount.com"
BUILD_MEMBER = f"serviceAccount:{BUILD_SA}"


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


def test_chat_image_is_built_on_cloud_build_as_the_build_account(dev: ProgramRun) -> None:
    args = _build_args(dev, "chat-image")
    tag = source_hash(REPO_ROOT / "app/chat")
    image = f"us-central1-docker.pkg.dev/my-gcp-project/gemma-dev/chat:{tag}"
    assert args[:4] == ["gcloud", "builds", "submit", "app/chat"]
    assert f"--substitutions=_IMAGE={image}" in args
    assert f"--service-account=projects/my-gcp-project/serviceAccounts/{BUILD_SA}" in args
    assert "--config=components/cloudbuild.yaml" in args
    staging = dev.one("gcp:storage/bucket:Bucket").outputs["name"]
    assert f"--gcs-source-staging-dir=gs://{staging}/source" in args
    assert dev.outputs["chatImage"] == image
    build = dev.one("command:local:Command", "chat-image-build")
    assert build.inputs["triggers"] == [tag]
    assert build.parent_type == "gemma-stack:registry:ImageBuild"


def test_build_waits_for_every_grant_of_the_build_account(dev: ProgramRun) -> None:
    build = dev.one("command:local:Command", "chat-image-build")
    for grant in (r for r in dev.resources if r.inputs.get("member") == BUILD_MEMBER):
        assert dev.waits_for(build, grant), grant.name


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
    assert args[3] == "app/inference"
    assert run.outputs["inferenceImage"].endswith(
        f"/inference:{source_hash(REPO_ROOT / 'app/inference')}"
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
    project_id="p-123456", region="us-central1", registry_url="r.example/p/repo",
    image_name="thing", context_dir=Path("thing"), build_service_account_email="b@p",
    staging_bucket="stage", root_dir=Path({root!r}),
))
"""


def test_image_build_needs_a_dockerfile(tmp_path: Path) -> None:
    (tmp_path / "thing").mkdir()
    error, _ = run_snippet_error(SNIPPET.format(root=str(tmp_path)), tmp_path)
    assert isinstance(error, ValueError)
    assert "thing has no Dockerfile" in str(error)
    (tmp_path / "thing" / "Dockerfile").write_text("FROM scratch\n")
    run = run_snippet(SNIPPET.format(root=str(tmp_path)), tmp_path)
    build = run.one("command:local:Command")
    assert build.inputs["dir"] == str(tmp_path)
    assert (
        f"_IMAGE=r.example/p/repo/thing:{source_hash(tmp_path / 'thing')}" in build.inputs["create"]
    )


def test_missing_dockerfile_is_refused_before_any_resource(tmp_path: Path) -> None:
    config = parse_stack_config({"gcp:project": "my-gcp-project", "gkeGemmaEnabled": "false"})
    with pytest.raises(ConfigError) as info:
        check_build_folders(config, root=tmp_path)
    assert "app/chat has no Dockerfile" in str(info.value)
    assert "pulumi config set chatImage" in str(info.value)
    (tmp_path / "app" / "chat").mkdir(parents=True)
    (tmp_path / "app" / "chat" / "Dockerfile").write_text("FROM scratch\n")
    check_build_folders(config, root=tmp_path)
