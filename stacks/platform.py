"""The foundation of every deployment: APIs, registry and builds, cluster, data and identity."""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_gcp as gcp
import pulumi_kubernetes as kubernetes

from components.cluster import AutopilotCluster, AutopilotClusterArgs
from components.firestore import ChatHistoryDatabase, ChatHistoryDatabaseArgs
from components.identity import (
    ImpersonatedServiceAccount,
    ImpersonatedServiceAccountArgs,
    WorkloadIdentity,
    WorkloadIdentityArgs,
)
from components.project_services import STACK_APIS, ProjectServices, ProjectServicesArgs
from components.registry import ArtifactRegistry, ArtifactRegistryArgs, ImageBuild, ImageBuildArgs
from components.secrets import StoredSecret, StoredSecretArgs
from stacks.config import ConfigError, StackConfig
from stacks.preflight import QUOTAS_API

IAP_API = "iap.googleapis.com"
CHAT_APP_DIR = Path("app/chat")
INFERENCE_APP_DIR = Path("app/inference")
# The fine-tuning image also ships app/tuning and app/inference's model checks, so it builds
# from app/ with its own Dockerfile.
FINETUNE_APP_DIR = Path("app/finetune")
CHAT_PROJECT_ROLES = ("roles/aiplatform.user", "roles/datastore.user")
# The user name for chatExposure=login; the password is the chatLoginPassword secret.
CHAT_LOGIN_USER = "chat"
# chatExposure=iap without chatIapAudience: the app lists backend services to find its own.
CHAT_IAP_LOOKUP_ROLE = "roles/compute.viewer"


@dataclass(frozen=True)
class Gke:
    """The Autopilot cluster and the namespace every workload runs in: made together."""

    cluster: AutopilotCluster
    namespace: kubernetes.core.v1.Namespace
    namespace_name: pulumi.Output[str]

    @property
    def provider(self) -> kubernetes.Provider:
        return self.cluster.provider


@dataclass(frozen=True)
class ChatLogin:
    """chatExposure=login's secrets in Secret Manager: `user:password`, and the key that signs
    session cookies (the same on every replica and after restarts)."""

    credentials: StoredSecret
    session_key: StoredSecret


@dataclass(frozen=True)
class Chat:
    """Everything the chat app needs, made only when it is enabled (on the stack's GKE)."""

    gke: Gke
    firestore: ChatHistoryDatabase
    # The chat app's Kubernetes identity and the account it impersonates for Cloud Run ID tokens.
    identity: WorkloadIdentity
    invoker: ImpersonatedServiceAccount
    image: pulumi.Output[str]
    # chatExposure=login's secrets; None otherwise.
    login: ChatLogin | None


@dataclass(frozen=True)
class Platform:
    """What the foundation built, handed to the serving components (see stacks.serving)."""

    config: StackConfig
    project_id: str
    project_number: pulumi.Output[str]
    region: str
    services: ProjectServices
    registry: ArtifactRegistry
    # Present when a backend downloads Gemma from Hugging Face.
    hf_token: StoredSecret | None
    # Present when a finetuned Cloud Run service is enabled.
    inference_image: pulumi.Output[str] | None
    # Present when something runs on GKE (GKE Gemma, the chat app or a fine-tune job).
    gke: Gke | None
    chat: Chat | None
    # Present when fineTuneJobs has an entry.
    finetune_image: pulumi.Output[str] | None = None


def _image(
    name: str,
    folder: Path,
    config: StackConfig,
    registry: ArtifactRegistry,
    apis: ProjectServices,
    *,
    context: Path | None = None,
) -> pulumi.Output[str]:
    """Build `folder`'s Dockerfile; with `context`, from that parent folder instead."""
    build = ImageBuild(
        name,
        ImageBuildArgs(
            project_id=config.project,
            registry_url=registry.url,
            image_name=folder.name,
            context_dir=context or folder,
            dockerfile=(folder / "Dockerfile").relative_to(context).as_posix()
            if context
            else "Dockerfile",
            build_service_account_email=registry.build_service_account_email,
            staging_bucket=registry.staging_bucket_name,
            build_region=config.build_region,
            depends_on=[
                registry,
                registry.build_access,
                *apis.for_apis("cloudbuild", "artifactregistry"),
            ],
        ),
    )
    return build.image


def check_build_folders(config: StackConfig, root: Path = Path()) -> None:
    """Refuse, before any resource exists, to build an app folder that has no Dockerfile."""
    wanted = []
    if config.builds_chat_image:
        wanted.append((CHAT_APP_DIR, "chatImage"))
    if config.builds_inference_image:
        wanted.append((INFERENCE_APP_DIR, "inferenceImage"))
    if config.builds_fine_tune_image:
        wanted.append((FINETUNE_APP_DIR, "fineTuneImage"))
    problems = [
        f"{folder} has no Dockerfile to build; add it, or set a prebuilt image with "
        f"pulumi config set {key} REGION-docker.pkg.dev/PROJECT/REPO/IMAGE:TAG."
        for folder, key in wanted
        if not (root / folder / "Dockerfile").is_file()
    ]
    if problems:
        raise ConfigError(problems)


def stack_apis(config: StackConfig) -> tuple[str, ...]:
    """The APIs this stack uses; IAP's only when the chat app sits behind it, Cloud Quotas'
    while the pre-flight reads quotas (so the next `pulumi up` of a new project can)."""
    apis = STACK_APIS
    if config.chat_app.enabled and config.chat_app.exposure == "iap":
        apis = (*apis, IAP_API)
    if config.preflight.mode != "off":
        apis = (*apis, QUOTAS_API)
    return apis


def build_platform(config: StackConfig) -> Platform:
    """Create the shared resources every backend needs, in dependency order."""
    check_build_folders(config)
    apis = ProjectServices(
        "apis", ProjectServicesArgs(project_id=config.project, apis=stack_apis(config))
    )
    project_number = gcp.organizations.get_project_output(
        project_id=config.project,
        opts=pulumi.InvokeOutputOptions(depends_on=apis.for_apis("cloudresourcemanager")),
    ).number

    registry = ArtifactRegistry(
        "registry",
        ArtifactRegistryArgs(
            project_id=config.project,
            region=config.region,
            repository_id=config.artifact_repository,
            build_account_id=config.ids.build_account,
            build_region=config.build_region,
            depends_on=apis.for_apis("artifactregistry", "storage", "iam", "cloudresourcemanager"),
        ),
    )
    inference_image: pulumi.Output[str] | None = None
    if config.builds_inference_image:
        inference_image = _image("inference-image", INFERENCE_APP_DIR, config, registry, apis)
    elif config.images.inference:
        inference_image = pulumi.Output.from_input(config.images.inference)

    hf_token = None
    if config.hf_token is not None:
        hf_token = StoredSecret(
            "hf-token",
            StoredSecretArgs(
                project_id=config.project,
                value=config.hf_token,
                secret_id=config.ids.hf_token_secret,
                depends_on=apis.for_apis("secretmanager"),
            ),
        )
    finetune_image: pulumi.Output[str] | None = None
    if config.builds_fine_tune_image:
        finetune_image = _image(
            "finetune-image", FINETUNE_APP_DIR, config, registry, apis, context=Path("app")
        )
    elif config.images.finetune and config.fine_tune_jobs:
        finetune_image = pulumi.Output.from_input(config.images.finetune)
    gke = (
        _gke(config, apis, registry)
        if config.gke_gemma.enabled or config.chat_app.enabled or config.fine_tune_jobs
        else None
    )
    chat = (
        _chat(config, apis, registry, gke, project_number)
        if config.chat_app.enabled and gke is not None
        else None
    )
    return Platform(
        config=config,
        project_id=config.project,
        project_number=project_number,
        region=config.region,
        services=apis,
        registry=registry,
        hf_token=hf_token,
        inference_image=inference_image,
        gke=gke,
        chat=chat,
        finetune_image=finetune_image,
    )


def _gke(config: StackConfig, apis: ProjectServices, registry: ArtifactRegistry) -> Gke:
    cluster = AutopilotCluster(
        "gke",
        AutopilotClusterArgs(
            project_id=config.project,
            region=config.region,
            cluster_name=config.cluster.name,
            node_account_id=config.ids.node_account,
            image_repository=registry.repository,
            release_channel=config.cluster.release_channel,
            deletion_protection=config.cluster.deletion_protection,
            depends_on=apis.for_apis(
                "container", "compute", "iam", "artifactregistry", "cloudresourcemanager"
            ),
        ),
    )
    namespace = kubernetes.core.v1.Namespace(
        "workloads-namespace",
        metadata=kubernetes.meta.v1.ObjectMetaArgs(
            name=config.namespace,
            labels={
                "app.kubernetes.io/part-of": "gemma-stack",
                # Our pods meet restricted; enforcing baseline lets a swapped-in image
                # that needs root still start, and restricted breaches are reported.
                "pod-security.kubernetes.io/enforce": "baseline",
                "pod-security.kubernetes.io/warn": "restricted",
            },
        ),
        opts=pulumi.ResourceOptions(provider=cluster.provider),
    )
    default = config.namespace
    return Gke(
        cluster=cluster,
        namespace=namespace,
        namespace_name=namespace.metadata.apply(lambda m: m.name or default),
    )


def _chat(
    config: StackConfig,
    apis: ProjectServices,
    registry: ArtifactRegistry,
    gke: Gke,
    project_number: pulumi.Output[str],
) -> Chat:
    image = (
        pulumi.Output.from_input(config.images.chat)
        if config.images.chat
        else _image("chat-image", CHAT_APP_DIR, config, registry, apis)
    )
    login = None
    if config.chat_app.exposure == "login" and config.chat_login_password is not None:
        session_key = StoredSecret(
            "chat-session-key",
            StoredSecretArgs(
                project_id=config.project,
                value=config.chat_session_key or _derived_session_key(config.chat_login_password),
                secret_id=config.ids.chat_session_secret,
                depends_on=apis.for_apis("secretmanager"),
            ),
        )
        credentials = StoredSecret(
            "chat-login-credentials",
            StoredSecretArgs(
                project_id=config.project,
                value=pulumi.Output.concat(f"{CHAT_LOGIN_USER}:", config.chat_login_password),
                secret_id=config.ids.chat_login_secret,
                depends_on=apis.for_apis("secretmanager"),
            ),
        )
        login = ChatLogin(credentials, session_key)
    firestore = ChatHistoryDatabase(
        "chat-history",
        ChatHistoryDatabaseArgs(
            project_id=config.project,
            database=config.firestore.database,
            location=config.firestore.location,
            delete_protection=config.firestore.delete_protection,
            ttl_days=config.chat_app.history_ttl_days,
            depends_on=apis.for_apis("firestore"),
        ),
    )
    # The workload pool PROJECT.svc.id.goog exists once the cluster does.
    identity = WorkloadIdentity(
        "chat-app",
        WorkloadIdentityArgs(
            project_id=config.project,
            project_number=project_number,
            namespace=gke.namespace_name,
            ksa_name=config.chat_app.ksa_name,
            project_roles=(
                (*CHAT_PROJECT_ROLES, CHAT_IAP_LOOKUP_ROLE)
                if config.chat_app.exposure == "iap" and config.chat_app.iap_audience is None
                else CHAT_PROJECT_ROLES
            ),
            k8s_provider=gke.provider,
            depends_on=[
                gke.namespace,
                gke.cluster.cluster,
                *apis.for_apis("cloudresourcemanager", "aiplatform", "firestore"),
            ],
        ),
    )
    invoker = ImpersonatedServiceAccount(
        "chat-invoker",
        ImpersonatedServiceAccountArgs(
            project_id=config.project,
            account_id=config.ids.chat_invoker_account,
            display_name="gemma-stack chat app: ID tokens for Cloud Run backends",
            impersonators=[identity.principal],
            depends_on=[gke.cluster.cluster, *apis.for_apis("iam", "iamcredentials")],
        ),
    )
    return Chat(
        gke=gke,
        firestore=firestore,
        identity=identity,
        invoker=invoker,
        image=image,
        login=login,
    )


def _derived_session_key(password: pulumi.Output[str]) -> pulumi.Output[str]:
    """A stable session key from the login password (chatSessionKey unset): changing the
    password then also signs everyone out."""
    return pulumi.Output.secret(
        password.apply(
            lambda p: hmac.new(
                p.encode(), b"gemma-stack chat session key", hashlib.sha256
            ).hexdigest()
        )
    )


def platform_outputs(platform: Platform) -> dict[str, Any]:
    """Stack outputs a user needs after `pulumi up` (camelCase, like `pulumi stack output`)."""
    config = platform.config
    outputs: dict[str, Any] = {
        "projectId": platform.project_id,
        "projectNumber": platform.project_number,
        "region": platform.region,
        "enabledApis": sorted(platform.services.services),
        "registryUrl": platform.registry.url,
        "buildServiceAccount": platform.registry.build_service_account_email,
        "buildStagingBucket": platform.registry.staging_bucket_name,
    }
    if platform.inference_image is not None:
        outputs["inferenceImage"] = platform.inference_image
    if platform.finetune_image is not None:
        outputs["fineTuneImage"] = platform.finetune_image
    if platform.hf_token is not None:
        outputs["hfTokenSecret"] = platform.hf_token.secret_id
    if platform.gke is not None:
        cluster = platform.gke.cluster
        outputs["clusterName"] = cluster.name
        outputs["namespace"] = config.namespace
        outputs["clusterCredentialsCommand"] = pulumi.Output.concat(
            "gcloud container clusters get-credentials ",
            cluster.name,
            f" --region {config.region} --project {config.project}",
        )
    if platform.chat is not None:
        chat = platform.chat
        outputs["chatImage"] = chat.image
        outputs["firestoreDatabase"] = chat.firestore.name
        outputs["chatPrincipal"] = chat.identity.principal
        outputs["chatInvokerServiceAccount"] = chat.invoker.email
        if chat.login is not None:
            outputs["chatLoginSecret"] = chat.login.credentials.secret_id
            outputs["chatLoginUser"] = CHAT_LOGIN_USER
    return outputs
