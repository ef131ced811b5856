"""Artifact Registry for the stack's images, and image builds on Cloud Build with no local Docker.

Builds run `gcloud builds submit` through the pulumi-command provider, in the build region
(config `buildRegion`), which may differ from the stack's region: Cloud Build can restrict a
project to a few regions. Images are still pushed to the repository in the stack's region.
The image tag is a hash of the app folder and the Cloud Build config, so an unchanged image
gives the same command, no diff and no rebuild. Builds run as a dedicated service account
that holds exactly what a build needs: logging.logWriter, artifactregistry.writer on this
repository, and storage.objectViewer on the staging bucket where gcloud uploads the source.
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

from components.iam_wait import wait_for_grants
from components.resource_ids import fixed_id_options

BUILD_CONFIG = Path(__file__).resolve().with_name("cloudbuild.yaml")
# Retries a build refused a permission granted moments ago; see the script's header.
SUBMIT_SCRIPT = Path(__file__).resolve().with_name("submit_build.sh")
# "Depending on usage, certain projects may be restricted to only use Cloud Build in" these
# regions (https://cloud.google.com/build/docs/locations); only they work for every project.
CLOUD_BUILD_REGIONS = (
    "us-central1",
    "us-west2",
    "europe-west1",
    "asia-east1",
    "australia-southeast1",
    "southamerica-east1",
)
DEFAULT_BUILD_REGION = "us-central1"
# Content-hash tags pile up with every change; the newest few per image are always kept, so
# whatever is deployed (the latest build) and a few rollbacks survive the cleanup.
KEEP_RECENT_IMAGES = 5
DELETE_IMAGES_OLDER_THAN = "30d"
# Caches and bytecode change without the app changing; they must not trigger a rebuild.
_IGNORED_DIRS = frozenset(
    {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv", "node_modules", ".git"}
)
_IGNORED_SUFFIXES = (".pyc", ".pyo")
BUILD_ROLES = ("roles/logging.logWriter",)  # project level; the other two are resource level


def build_region_problem(region: str) -> str | None:
    """Why Cloud Build may refuse to run in `region`, with the fix; None when it is safe."""
    if region in CLOUD_BUILD_REGIONS:
        return None
    continent = region.split("-", 1)[0]
    nearest = next(
        (r for r in CLOUD_BUILD_REGIONS if r.startswith(f"{continent}-")), DEFAULT_BUILD_REGION
    )
    return (
        f"buildRegion={region!r} is not a region Cloud Build always runs in: it may restrict "
        f"a project to {', '.join(CLOUD_BUILD_REGIONS)}. Images still go to the registry in "
        f"the stack's region; choose one of those for the builds "
        f"(pulumi config set buildRegion {nearest})."
    )


def image_tag(context: Path, build_config: Path = BUILD_CONFIG, length: int = 16) -> str:
    """The tag of the image built from `context`: a hash of the folder (Dockerfile included)
    and of the Cloud Build config that builds it, so a change to either is a new image."""
    digest = hashlib.sha256(source_hash(context, length=64).encode())
    digest.update(b"\0")
    digest.update(build_config.read_bytes())
    return digest.hexdigest()[:length]


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
    # Where builds run and read their uploaded source from; see CLOUD_BUILD_REGIONS.
    build_region: str = DEFAULT_BUILD_REGION
    depends_on: Sequence[pulumi.Resource] = ()


class ArtifactRegistry(pulumi.ComponentResource):
    """A DOCKER repository, a source staging bucket and the service account builds run as."""

    repository: gcp.artifactregistry.Repository
    staging_bucket: gcp.storage.Bucket
    build_service_account: gcp.serviceaccount.Account
    url: pulumi.Output[str]
    build_service_account_email: pulumi.Output[str]
    staging_bucket_name: pulumi.Output[str]
    # Ends once the build account's grants have had time to apply; builds depend on it.
    build_access: pulumi.Resource

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
        if problem := build_region_problem(args.build_region):
            raise ValueError(f"ArtifactRegistry {name!r}: {problem}")
        child = pulumi.ResourceOptions(parent=self, depends_on=list(args.depends_on))
        ar = gcp.artifactregistry
        self.repository = ar.Repository(
            f"{name}-repository",
            project=args.project_id,
            location=args.region,
            repository_id=args.repository_id,
            format="DOCKER",
            description="Images built by gemma-stack (chat app, inference app).",
            # KEEP wins over DELETE, so the newest tags of each image stay however old they are.
            cleanup_policy_dry_run=False,
            cleanup_policies=[
                ar.RepositoryCleanupPolicyArgs(
                    id="keep-recent-images",
                    action="KEEP",
                    most_recent_versions=ar.RepositoryCleanupPolicyMostRecentVersionsArgs(
                        keep_count=KEEP_RECENT_IMAGES
                    ),
                ),
                ar.RepositoryCleanupPolicyArgs(
                    id="delete-old-images",
                    action="DELETE",
                    condition=ar.RepositoryCleanupPolicyConditionArgs(
                        tag_state="ANY", older_than=DELETE_IMAGES_OLDER_THAN
                    ),
                ),
            ],
            opts=fixed_id_options(child),
        )
        self.url = pulumi.Output.concat(
            args.region, "-docker.pkg.dev/", self.repository.project, "/", args.repository_id
        )
        self.staging_bucket = gcp.storage.Bucket(
            f"{name}-staging",
            project=args.project_id,
            # Beside the builds that read it: no cross-region transfer on every build.
            location=args.build_region,
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
        self.role_bindings: list[pulumi.CustomResource] = [
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
        self.build_access = wait_for_grants(
            f"{name}-builder-grants-applied", self.role_bindings, parent=self
        )
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
    registry_url: pulumi.Input[str]
    image_name: str
    context_dir: Path
    build_service_account_email: pulumi.Input[str]
    staging_bucket: pulumi.Input[str]
    # Where Cloud Build runs; the image still goes to `registry_url`, wherever that is.
    build_region: str = DEFAULT_BUILD_REGION
    # Relative paths keep the command (and so the state) the same on every checkout.
    root_dir: Path = Path()
    # Include ArtifactRegistry.build_access, so the build starts once its grants apply.
    depends_on: Sequence[pulumi.Resource] = ()
    # Relative to context_dir: an app that also ships sibling folders (app/finetune runs
    # app/tuning) builds from their parent with its own Dockerfile.
    dockerfile: str = "Dockerfile"


class ImageBuild(pulumi.ComponentResource):
    """An image built on Cloud Build from a folder, tagged with the hash of what shapes it."""

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
        if not (context / args.dockerfile).is_file():
            raise ValueError(
                f"ImageBuild {name!r}: {args.context_dir} has no {args.dockerfile}; add one or "
                "set a prebuilt image URI in config to skip this build."
            )
        if problem := build_region_problem(args.build_region):
            raise ValueError(f"ImageBuild {name!r}: {problem}")
        self.tag = image_tag(context)
        image = pulumi.Output.concat(args.registry_url, "/", args.image_name, ":", self.tag)
        repo_root = Path(__file__).resolve().parents[1]
        dockerfile = "" if args.dockerfile == "Dockerfile" else f",_DOCKERFILE={args.dockerfile}"
        config_path = BUILD_CONFIG.relative_to(repo_root)
        script_path = SUBMIT_SCRIPT.relative_to(repo_root)
        create = pulumi.Output.all(
            args.project_id, args.build_service_account_email, args.staging_bucket, image
        ).apply(
            lambda v: shlex.join(
                [
                    "sh",
                    script_path.as_posix(),
                    args.context_dir.as_posix(),
                    f"--project={v[0]}",
                    f"--region={args.build_region}",
                    f"--config={config_path.as_posix()}",
                    f"--substitutions=_IMAGE={v[3]}{dockerfile}",
                    f"--service-account=projects/{v[0]}/serviceAccounts/{v[1]}",
                    f"--gcs-source-staging-dir=gs://{v[2]}/source",
                    "--quiet",
                ]
            )
        )
        self.build = command.local.Command(
            f"{name}-build",
            create=create,
            # The command holds the tag (sources and build config), the build region and every
            # flag: a change to any of them replaces (rebuilds) instead of keeping the old image.
            triggers=[create],
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
