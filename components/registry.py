"""Artifact Registry for the stack's images, and image builds on Cloud Build with no local Docker.

Builds run `gcloud builds submit` through the pulumi-command provider. The image tag is a
hash of the app folder, so an unchanged folder gives the same command, no diff and no
rebuild. Builds run as a dedicated service account that holds exactly what a build needs:
logging.logWriter, artifactregistry.writer on this repository, and storage.objectViewer on
the staging bucket where gcloud uploads the source.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_command as command
import pulumi_gcp as gcp

from components.resource_ids import fixed_id_options

BUILD_CONFIG = Path(__file__).resolve().with_name("cloudbuild.yaml")
# Caches and bytecode change without the app changing; they must not trigger a rebuild.
_IGNORED_DIRS = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules", ".git"}
)
_IGNORED_SUFFIXES = (".pyc", ".pyo")
BUILD_ROLES = ("roles/logging.logWriter",)  # project level; the other two are resource level


def source_hash(folder: Path, length: int = 16) -> str:
    """A content hash of every file under `folder` (paths and bytes), stable across machines."""
    digest = hashlib.sha256()
    files = sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and not _IGNORED_DIRS.intersection(p.relative_to(folder).parts)
        and not p.name.endswith(_IGNORED_SUFFIXES)
    )
    for path in files:
        digest.update(path.relative_to(folder).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:length]


@dataclass(frozen=True)
class ArtifactRegistryArgs:
    """Where the repository lives; `depends_on` should hold the APIs it needs."""

    project_id: pulumi.Input[str]
    region: str
    repository_id: str = "gemma-stack"
    build_account_id: str = "gemma-stack-build"
    depends_on: Sequence[pulumi.Resource] = ()


class ArtifactRegistry(pulumi.ComponentResource):
    """A DOCKER repository, a source staging bucket and the service account builds run as."""

    repository: gcp.artifactregistry.Repository
    staging_bucket: gcp.storage.Bucket
    build_service_account: gcp.serviceaccount.Account
    url: pulumi.Output[str]
    build_service_account_email: pulumi.Output[str]
    staging_bucket_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        args: ArtifactRegistryArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:registry:ArtifactRegistry", name, None, opts)
        if not 6 <= len(args.build_account_id) <= 30:
            raise ValueError(
                f"ArtifactRegistry {name!r}: build_account_id {args.build_account_id!r} must "
                "be 6 to 30 characters (a service account id)."
            )
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        self.repository = gcp.artifactregistry.Repository(
            f"{name}-repository",
            project=args.project_id,
            location=args.region,
            repository_id=args.repository_id,
            format="DOCKER",
            description="Images built by gemma-stack (chat app, inference app).",
            opts=fixed_id_options(child),
        )
        self.url = pulumi.Output.concat(
            args.region, "-docker.pkg.dev/", self.repository.project, "/", args.repository_id
        )
        self.staging_bucket = gcp.storage.Bucket(
            f"{name}-staging",
            project=args.project_id,
            location=args.region,
            uniform_bucket_level_access=True,
            public_access_prevention="enforced",
            # Uploaded sources are only needed while a build runs.
            lifecycle_rules=[
                gcp.storage.BucketLifecycleRuleArgs(
                    action=gcp.storage.BucketLifecycleRuleActionArgs(type="Delete"),
                    condition=gcp.storage.BucketLifecycleRuleConditionArgs(age=7),
                )
            ],
            force_destroy=True,
            opts=child,
        )
        self.staging_bucket_name = self.staging_bucket.name
        self.build_service_account = gcp.serviceaccount.Account(
            f"{name}-builder",
            project=args.project_id,
            account_id=args.build_account_id,
            display_name="gemma-stack image builds (Cloud Build)",
            opts=fixed_id_options(child),
        )
        self.build_service_account_email = self.build_service_account.email
        member = self.build_service_account.member
        self.role_bindings: list[pulumi.Resource] = [
            gcp.projects.IAMMember(
                f"{name}-builder-log-writer",
                project=args.project_id,
                role="roles/logging.logWriter",
                member=member,
                opts=child,
            ),
            gcp.artifactregistry.RepositoryIamMember(
                f"{name}-builder-repo-writer",
                project=self.repository.project,
                location=self.repository.location,
                repository=self.repository.name,
                role="roles/artifactregistry.writer",
                member=member,
                opts=child,
            ),
            gcp.storage.BucketIAMMember(
                f"{name}-builder-source-reader",
                bucket=self.staging_bucket.name,
                role="roles/storage.objectViewer",
                member=member,
                opts=child,
            ),
        ]
        self.register_outputs(
            {
                "url": self.url,
                "buildServiceAccount": self.build_service_account_email,
                "stagingBucket": self.staging_bucket_name,
            }
        )


@dataclass(frozen=True)
class ImageBuildArgs:
    """One app folder (with a Dockerfile) to build and push as `image_name`."""

    project_id: pulumi.Input[str]
    region: str
    registry_url: pulumi.Input[str]
    image_name: str
    context_dir: Path
    build_service_account_email: pulumi.Input[str]
    staging_bucket: pulumi.Input[str]
    # Relative paths keep the command (and so the state) the same on every checkout.
    root_dir: Path = Path()
    depends_on: Sequence[pulumi.Resource] = ()


class ImageBuild(pulumi.ComponentResource):
    """An image built on Cloud Build from a folder, tagged with the folder's content hash."""

    tag: str
    image: pulumi.Output[str]
    build: command.local.Command

    def __init__(
        self,
        name: str,
        args: ImageBuildArgs,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__("gemma-stack:registry:ImageBuild", name, None, opts)
        context = args.root_dir / args.context_dir
        if not context.is_dir():
            raise ValueError(
                f"ImageBuild {name!r}: build folder {args.context_dir} does not exist."
            )
        if not (context / "Dockerfile").is_file():
            raise ValueError(
                f"ImageBuild {name!r}: {args.context_dir} has no Dockerfile; add one or set a "
                "prebuilt image URI in config to skip this build."
            )
        self.tag = source_hash(context)
        image = pulumi.Output.concat(args.registry_url, "/", args.image_name, ":", self.tag)
        config_path = BUILD_CONFIG.relative_to(Path(__file__).resolve().parents[1])
        create = pulumi.Output.all(
            args.project_id, args.build_service_account_email, args.staging_bucket, image
        ).apply(
            lambda v: shlex.join(
                [
                    "gcloud",
                    "builds",
                    "submit",
                    args.context_dir.as_posix(),
                    f"--project={v[0]}",
                    f"--region={args.region}",
                    f"--config={config_path.as_posix()}",
                    f"--substitutions=_IMAGE={v[3]}",
                    f"--service-account=projects/{v[0]}/serviceAccounts/{v[1]}",
                    f"--gcs-source-staging-dir=gs://{v[2]}/source",
                    "--quiet",
                ]
            )
        )
        self.build = command.local.Command(
            f"{name}-build",
            create=create,
            # A new tag means new sources: replace (rebuild) instead of keeping the old image.
            triggers=[self.tag],
            dir=str(args.root_dir) if args.root_dir != Path() else None,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(args.depends_on),
                custom_timeouts=pulumi.CustomTimeouts(create="60m"),
            ),
        )
        # Resolves once the build has pushed, so a Deployment or Cloud Run revision that uses
        # the image is created after the image exists, not while Cloud Build still runs.
        self.image = pulumi.Output.all(self.build.id, image).apply(lambda v: str(v[1]))
        self.register_outputs({"image": self.image, "tag": self.tag})
