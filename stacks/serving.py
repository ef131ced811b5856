"""Where the serving backends (GemmaOnGke, CloudRunGpuService, ChatApp) join the platform."""

from __future__ import annotations

from typing import Any

from stacks.platform import Platform


def deploy_serving(platform: Platform) -> dict[str, Any]:
    """Deploy the enabled backends onto `platform` and return their stack outputs.

    The lead wires the components of the GPU issue here, reading only `platform` and
    `platform.config`:
    - GemmaOnGke when `config.gke_gemma.enabled`: `platform.k8s_provider`, `platform.namespace`,
      `platform.hf_token` (HF id) or `config.gke_gemma.model` (GCS FUSE);
    - one CloudRunGpuService per `config.enabled_cloud_run_services`, invokers including
      `platform.chat_invoker.member`, finetuned ones on `platform.inference_image`;
    - ChatApp when `config.chat_app.enabled`: `platform.chat_identity`, `platform.chat_image`,
      `platform.firestore`, and the backend list built from what was deployed above.
    Until then the foundation alone is deployed and this adds no outputs.
    """
    del platform
    return {}
