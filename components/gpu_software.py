"""Which CUDA runtime each GPU container needs, and whether the GPU's NVIDIA driver runs it.

A container's CUDA runtime must run on the host's driver, which the container cannot change.
NVIDIA's CUDA Compatibility guide: a CUDA 12.x runtime runs on any driver of the 12.x family
(525.60.13 or newer) through minor version compatibility; CUDA 13 needs a 580 driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

Cuda = tuple[int, int]

# Every GKE pod on an L4 (vLLM, fine-tuning). `latest` is the driver Google's GKE GPU samples
# select: our vLLM image is built on CUDA 13, which the default driver of older GKE versions
# cannot run.
L4_SELECTOR = {
    "cloud.google.com/gke-accelerator": "nvidia-l4",
    "cloud.google.com/gke-gpu-driver-version": "latest",
}


@dataclass(frozen=True)
class GpuDriver:
    """An NVIDIA driver a platform installs for us, and the newest CUDA major it runs."""

    platform: str
    version: str
    cuda: Cuda

    def runs(self, cuda: Cuda) -> bool:
        return cuda[0] <= self.cuda[0]


# Cloud Run docs, "GPU support for services", Supported GPU types (read 2026-12):
# "The current NVIDIA driver version: 535.216.03 (CUDA 12.2)".
CLOUD_RUN_L4_DRIVER = GpuDriver("Cloud Run", "535.216.03", (12, 2))

# The vLLM server we pin. Since v0.20.0 an unsuffixed tag is built on CUDA 13.0 and the
# `-cu129` tag on CUDA 12.9 (vLLM's release notes for the switch of its default CUDA).
VLLM_IMAGE = "vllm/vllm-openai:v0.32.0"
_VLLM_TAG = re.compile(r"^(?:docker\.io/)?vllm/vllm-openai:v(\d+)\.(\d+)\.(\d+)(?:-cu(\d\d)(\d))?$")
_CUDA_13_DEFAULT_SINCE = (0, 20)

# app/inference/Dockerfile installs torch built for this CUDA (its TORCH_CUDA build argument);
# a test keeps the two in step.
INFERENCE_IMAGE_CUDA: Cuda = (12, 8)
# Google builds its prebuilt Gemma images for Cloud Run's own driver.
PREBUILT_IMAGE_CUDA: Cuda = CLOUD_RUN_L4_DRIVER.cuda


def vllm_image_cuda(image: str) -> Cuda | None:
    """The CUDA a vllm/vllm-openai release tag is built on; None for any other image."""
    match = _VLLM_TAG.match(image)
    if match is None:
        return None
    major, minor, _, cuda_major, cuda_minor = match.groups()
    if cuda_major is not None:
        return int(cuda_major), int(cuda_minor)
    return (13, 0) if (int(major), int(minor)) >= _CUDA_13_DEFAULT_SINCE else (12, 8)


def cuda_12_vllm_image(image: str) -> str:
    """The CUDA 12.9 build of the same vLLM release (``-cu129``); ``image`` when unknown."""
    match = _VLLM_TAG.match(image)
    if match is None or vllm_image_cuda(image) is None or match.group(4) is not None:
        return image
    return f"{image}-cu129"


# The same vLLM release for Cloud Run, whose driver runs CUDA 12 only.
CLOUD_RUN_VLLM_IMAGE = cuda_12_vllm_image(VLLM_IMAGE)


def cuda_label(cuda: Cuda) -> str:
    """`12-8`: a CUDA version as a Google Cloud label value (no dots allowed)."""
    return f"{cuda[0]}-{cuda[1]}"


def cloud_run_cuda_problem(image: str, cuda: Cuda | None) -> str | None:
    """Why ``image`` (built on ``cuda``) cannot run on Cloud Run's driver, with the fix."""
    if cuda is None or CLOUD_RUN_L4_DRIVER.runs(cuda):
        return None
    fix = cuda_12_vllm_image(image)
    hint = f"use {fix}, its CUDA 12 build" if fix != image else "use an image built on CUDA 12"
    return (
        f"image {image} is built on CUDA {cuda[0]}.{cuda[1]}, which Cloud Run's L4 driver "
        f"{CLOUD_RUN_L4_DRIVER.version} (CUDA {CLOUD_RUN_L4_DRIVER.cuda[0]}."
        f"{CLOUD_RUN_L4_DRIVER.cuda[1]}) cannot run: {hint} (set `image` on the service)."
    )
