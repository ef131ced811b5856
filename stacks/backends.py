"""Chat backend entries for what the stack deploys: the only place that joins the components."""

from __future__ import annotations

import pulumi

from components.chat_app import ChatBackend
from components.cloud_run_gpu_service import CloudRunGpuService
from components.gemma_on_gke import GemmaOnGke


def gke_backend(gemma: GemmaOnGke, *, id: str, label: str) -> ChatBackend:
    """vLLM on GKE through its in-cluster Service (no auth: only the cluster reaches it)."""
    return ChatBackend(
        id=id, label=label, kind="openai", model=gemma.served_model_name, base_url=gemma.url
    )


def cloud_run_backend(service: CloudRunGpuService, *, id: str, label: str) -> ChatBackend:
    """A Cloud Run GPU service, called with a Google ID token for its URL.

    The token's account (ChatAppArgs.id_token_service_account) must be one of the service's
    invokers.
    """
    base_url = (
        pulumi.Output.concat(service.uri, "/v1") if service.api_kind == "openai" else service.uri
    )
    return ChatBackend(
        id=id,
        label=label,
        kind=service.api_kind,
        model=service.model_name,
        base_url=base_url,
        auth="google-id-token",
    )
