"""Where the serving backends (GemmaOnGke, CloudRunGpuService, ChatApp) join the platform."""

from __future__ import annotations

import dataclasses
from typing import Any

import pulumi
import pulumi_kubernetes as kubernetes

from components.chat_app import ChatApp, ChatAppArgs, ChatBackend
from components.cloud_run_gpu_service import (
    CloudRunGpuService,
    CloudRunGpuServiceArgs,
    ServiceSettings,
    finetuned_gemma,
    invokers_from,
    prebuilt_gemma,
    vllm_gemma,
)
from components.custom_metrics_adapter import (
    ADAPTER_NAME,
    ADAPTER_NAMESPACE,
    CustomMetricsAdapter,
    CustomMetricsAdapterArgs,
)
from components.gemma_fine_tune_job import GemmaFineTuneJob
from components.gemma_on_gke import GemmaOnGke, GemmaOnGkeArgs, PodResources
from components.identity import WorkloadIdentity, WorkloadIdentityArgs
from stacks.backends import cloud_run_backend, gke_backend
from stacks.config import CloudRunServiceConfig
from stacks.fine_tuning import deploy_fine_tune_jobs
from stacks.platform import Chat, Gke, Platform

GEMMA_KSA = "gemma"


def deploy_serving(platform: Platform) -> dict[str, Any]:
    """Deploy the enabled backends onto `platform` and return their stack outputs.

    The chat app's backend list is built from exactly what this function deploys, so the
    dropdown never offers a backend that does not exist.
    """
    config = platform.config
    outputs: dict[str, Any] = {}
    backends: list[ChatBackend] = []
    if platform.chat is not None:
        backends.append(
            ChatBackend.gemini_on_vertex(
                model=config.chat_app.gemini_model, location=config.chat_app.gemini_location
            )
        )

    if config.gke_gemma.enabled and platform.gke is not None:
        gemma = _gemma_on_gke(platform, platform.gke)
        backends.append(
            gke_backend(
                gemma, id="gemma-gke", label=f"Gemma 3 {_size(config.gke_gemma.variant)} (GKE)"
            )
        )
        outputs["gemmaEndpoint"] = gemma.url
        outputs["gemmaServedModel"] = gemma.served_model_name
        outputs["gemmaAccessCommand"] = gemma.access_command
        outputs["gemmaPendingCommand"] = gemma.pending_command

    jobs = deploy_fine_tune_jobs(platform)
    if jobs:
        outputs["fineTuneModels"] = {name: job.model_uri for name, job in jobs.items()}
    urls: dict[str, pulumi.Output[str]] = {}
    curls: dict[str, pulumi.Output[str]] = {}
    for service_config in config.enabled_cloud_run_services:
        args = dataclasses.replace(
            _cloud_run_args(platform, service_config, jobs),
            account_suffix=config.ids.suffix,
        )
        service = CloudRunGpuService(service_config.name, args)
        backends.append(
            cloud_run_backend(
                service, id=service_config.name, label=_cloud_run_label(service_config)
            )
        )
        urls[service_config.name] = service.uri
        curls[service_config.name] = service.curl_example
    if urls:
        outputs["cloudRunUrls"] = urls
        outputs["cloudRunCurlExamples"] = curls

    if platform.chat is not None:
        chat = _chat_app(platform, platform.chat, backends)
        outputs["chatUrl"] = chat.url
        outputs["chatAccess"] = chat.access_hint
        outputs["chatBackends"] = [backend.id for backend in backends]
    return outputs


def _gemma_on_gke(platform: Platform, gke: Gke) -> GemmaOnGke:
    config = platform.config.gke_gemma
    namespace = gke.namespace_name
    identity = WorkloadIdentity(
        "gemma",
        WorkloadIdentityArgs(
            project_id=platform.project_id,
            project_number=platform.project_number,
            namespace=namespace,
            ksa_name=GEMMA_KSA,
            # vLLM needs no Google API; a GCS model adds read on that one bucket.
            project_roles=[],
            k8s_provider=gke.provider,
            depends_on=[gke.namespace],
        ),
    )
    if config.max_replicas > config.min_replicas:
        _metrics_adapter(platform, gke)
    hf_token: pulumi.Output[str] | None = None
    if config.model is None:
        if platform.hf_token is None:
            raise ValueError("GKE Gemma from Hugging Face needs the hfToken secret")
        # The Kubernetes Secret is filled from the Secret Manager version, never a literal.
        hf_token = platform.hf_token.stored_value
    return GemmaOnGke(
        "gemma",
        GemmaOnGkeArgs(
            namespace=namespace,
            k8s_provider=gke.provider,
            model_id=config.model_id,
            gpu_count=config.gpu_count,
            tensor_parallel=config.tensor_parallel,
            max_model_len=config.max_model_len,
            max_num_seqs=config.max_num_seqs,
            resources=PodResources(
                config.sizing.cpu, config.sizing.memory, config.sizing.ephemeral_storage
            ),
            ksa_name=identity.ksa_name,
            ksa_principal=identity.principal,
            hf_token=hf_token,
            gcs_bucket=config.model.bucket if config.model else None,
            gcs_path=config.model.path if config.model else "",
            image=config.vllm_image,
            min_replicas=config.min_replicas,
            max_replicas=config.max_replicas,
            queue_target=config.queue_target,
            depends_on=(identity,),
        ),
    )


def _metrics_adapter(platform: Platform, gke: Gke) -> CustomMetricsAdapter:
    """The custom metrics API the vLLM HPA reads vllm:num_requests_waiting through."""
    namespace = kubernetes.core.v1.Namespace(
        "custom-metrics-namespace",
        metadata=kubernetes.meta.v1.ObjectMetaArgs(
            name=ADAPTER_NAMESPACE, labels={"app.kubernetes.io/part-of": "gemma-stack"}
        ),
        opts=pulumi.ResourceOptions(provider=gke.provider, depends_on=[gke.cluster.cluster]),
    )
    identity = WorkloadIdentity(
        "custom-metrics",
        WorkloadIdentityArgs(
            project_id=platform.project_id,
            project_number=platform.project_number,
            namespace=ADAPTER_NAMESPACE,
            ksa_name=ADAPTER_NAME,
            # It reads the Managed Prometheus series from Cloud Monitoring, nothing else.
            project_roles=["roles/monitoring.viewer"],
            k8s_provider=gke.provider,
            depends_on=[namespace],
        ),
    )
    return CustomMetricsAdapter(
        "custom-metrics",
        CustomMetricsAdapterArgs(
            k8s_provider=gke.provider,
            namespace=namespace.metadata.apply(lambda m: m.name or ADAPTER_NAMESPACE),
            ksa_name=identity.ksa_name,
            depends_on=(identity,),
        ),
    )


def _cloud_run_args(
    platform: Platform,
    service: CloudRunServiceConfig,
    jobs: dict[str, GemmaFineTuneJob] | None = None,
) -> CloudRunGpuServiceArgs:
    invokers: dict[str, pulumi.Input[str]] = dict(invokers_from(service.invokers))
    if platform.chat is not None:
        invokers["chat-app"] = platform.chat.invoker.member
    common: dict[str, Any] = {
        "project_id": platform.project_id,
        "region": platform.region,
        "invokers": invokers,
        "service_name": service.name,
        "depends_on": tuple(platform.services.for_apis("run", "iam")),
        "settings": ServiceSettings(
            cpu=service.cpu,
            memory=service.memory,
            concurrency=service.concurrency,
            max_instances=service.max_instances,
            min_instances=service.min_instances,
            timeout_seconds=service.timeout_seconds,
            gpu_zonal_redundancy_disabled=not service.gpu_zonal_redundancy,
            public=service.public,
        ),
    }
    if service.flavour == "prebuilt":
        return prebuilt_gemma(
            **common,
            variant=service.variant or "gemma3-1b",
            ollama_num_parallel=service.ollama_num_parallel,
            image=service.image,
        )
    if service.flavour == "vllm":
        model = service.gcs_model
        hf_secret = None
        if model is None:
            if platform.hf_token is None:
                raise ValueError(f"Cloud Run {service.name} from Hugging Face needs hfToken")
            hf_secret = platform.hf_token.secret_id
            # The revision reads version `latest`; Cloud Run refuses it until a version exists.
            common["depends_on"] = (*common["depends_on"], platform.hf_token.version)
        return vllm_gemma(
            **common,
            model_id=service.model or "",
            max_model_len=service.max_model_len or 8192,
            hf_token_secret=hf_secret,
            model_bucket=model.bucket if model else None,
            model_path=model.path if model else "",
            image=service.image or platform.config.gke_gemma.vllm_image,
        )
    image = service.image or platform.inference_image
    if service.gcs_model is None or image is None:
        raise ValueError(f"Cloud Run {service.name}: a finetuned service needs modelUri")
    if service.fine_tune_job is not None and jobs:
        # The revision starts once the job has written the model (Pulumi awaits the Job).
        common["depends_on"] = (*common["depends_on"], jobs[service.fine_tune_job])
    return finetuned_gemma(
        **common,
        image=image,
        model_bucket=service.gcs_model.bucket,
        model_path=service.gcs_model.path,
    )


def _chat_app(platform: Platform, chat: Chat, backends: list[ChatBackend]) -> ChatApp:
    config = platform.config
    iap = config.chat_app.exposure == "iap"
    return ChatApp(
        "chat",
        ChatAppArgs(
            project_id=platform.project_id,
            namespace=chat.gke.namespace_name,
            k8s_provider=chat.gke.provider,
            image=chat.image,
            image_is_immutable=config.builds_chat_image,
            ksa_name=chat.identity.ksa_name,
            ksa_principal=chat.identity.principal,
            backends=backends,
            firestore_database=chat.firestore.name,
            exposure=config.chat_app.exposure,
            id_token_service_account=chat.invoker.email,
            iap_domain=config.chat_app.domain,
            iap_audience=config.chat_app.iap_audience if iap else None,
            iap_accessors=invokers_from(config.chat_app.allowed_users) if iap else {},
            login_credentials=chat.login.credentials.stored_value if chat.login else None,
            session_key=chat.login.session_key.stored_value if chat.login else None,
            allowed_source_ranges=config.chat_app.login_source_ranges,
            iap_project_number=platform.project_number if iap else None,
            history_ttl_days=config.chat_app.history_ttl_days,
            system_prompt=config.chat_app.system_prompt,
            depends_on=(
                chat.identity,
                chat.firestore,
                # IAP's access bindings need its API.
                *(platform.services.for_apis("iap") if iap else ()),
            ),
        ),
    )


def _size(variant: str) -> str:
    """`gemma-3-12b-it` -> `12B`, for dropdown labels."""
    return variant.removeprefix("gemma-3-").removesuffix("-it").upper()


def _cloud_run_label(service: CloudRunServiceConfig) -> str:
    what = {
        "prebuilt": f"Gemma 3 {(service.variant or 'gemma3-1b').removeprefix('gemma3-').upper()}",
        "vllm": f"{service.model or 'Gemma'} on vLLM",
        "finetuned": "Fine-tuned Gemma",
    }[service.flavour]
    return f"{what} (Cloud Run {service.name})"
