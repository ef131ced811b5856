"""GPU containers state the CUDA they need, and the stack refuses what the driver cannot run."""

from __future__ import annotations

import json

import pulumi
import pytest

from components.gpu_software import (
    CLOUD_RUN_L4_DRIVER,
    CLOUD_RUN_VLLM_IMAGE,
    VLLM_IMAGE,
    cuda_12_vllm_image,
    vllm_image_cuda,
)
from stacks.config import ConfigError, parse_stack_config
from tests.pulumi_harness import run_program, run_program_error

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
SERVICE = "gcp:cloudrunv2/service:Service"


@pytest.mark.parametrize(
    ("image", "cuda"),
    [
        ("vllm/vllm-openai:v0.32.0", (13, 0)),
        ("vllm/vllm-openai:v0.20.0", (13, 0)),
        ("vllm/vllm-openai:v0.32.0-cu129", (12, 9)),
        ("vllm/vllm-openai:v0.19.1", (12, 8)),
        ("vllm/vllm-openai:v0.9.0", (12, 8)),
        ("docker.io/vllm/vllm-openai:v0.32.0-cu130", (13, 0)),
        ("vllm/vllm-openai:latest", None),
        ("us-docker.pkg.dev/p/r/vllm:abc", None),
    ],
)
def test_the_cuda_of_a_vllm_tag(image: str, cuda: tuple[int, int] | None) -> None:
    assert vllm_image_cuda(image) == cuda


def test_cloud_runs_driver_runs_cuda_12_only() -> None:
    assert CLOUD_RUN_L4_DRIVER.version == "535.216.03"
    assert CLOUD_RUN_L4_DRIVER.runs((12, 9))
    assert not CLOUD_RUN_L4_DRIVER.runs((13, 0))
    assert cuda_12_vllm_image(VLLM_IMAGE) == CLOUD_RUN_VLLM_IMAGE == f"{VLLM_IMAGE}-cu129"


def test_gke_pods_select_the_latest_driver_and_state_their_cuda() -> None:
    run = run_program(overrides={"gemma-stack:gkeGemmaEnabled": True})
    pod = run.one(DEPLOYMENT, "gemma-vllm").inputs["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {
        "cloud.google.com/gke-accelerator": "nvidia-l4",
        "cloud.google.com/gke-gpu-driver-version": "latest",
    }
    assert pod["metadata"]["annotations"]["gemma-stack/cuda"] == "13.0"


def _vllm_service(**fields: object) -> list[dict[str, object]]:
    return [{"name": "gemma-vllm", "flavour": "vllm", "model": "google/gemma-3-1b-it", **fields}]


def test_cloud_run_vllm_defaults_to_the_cuda_12_build_and_labels_it() -> None:
    run = run_program(overrides={"gemma-stack:cloudRunServices": _vllm_service()})
    service = run.one(SERVICE, "gemma-vllm-service")
    assert service.inputs["template"]["containers"][0]["image"] == CLOUD_RUN_VLLM_IMAGE
    assert service.inputs["labels"]["gemma-stack-cuda"] == "12-9"


def test_cloud_run_with_a_cuda_13_vllm_image_is_refused_with_the_fix() -> None:
    error, registered = run_program_error(
        overrides={"gemma-stack:cloudRunServices": _vllm_service(image=VLLM_IMAGE)}
    )
    message = str(error)
    assert "built on CUDA 13.0" in message
    assert "535.216.03" in message
    assert f"use {VLLM_IMAGE}-cu129" in message
    assert registered == []


def test_a_stack_wide_vllm_image_gives_cloud_run_its_cuda_12_build() -> None:
    config = parse_stack_config(
        {
            "gcp:project": "my-gcp-project",
            "vllmImage": "vllm/vllm-openai:v0.21.0",
            "cloudRunServices": json.dumps(_vllm_service()),
        },
        hf_token=pulumi.Output.from_input("hf_x"),
    )
    assert config.gke_gemma.vllm_image == "vllm/vllm-openai:v0.21.0"
    assert config.cloud_run_services[0].image == "vllm/vllm-openai:v0.21.0-cu129"


def test_config_refuses_a_cuda_13_image_for_cloud_run() -> None:
    services = _vllm_service(image="vllm/vllm-openai:v0.21.0")
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(
            {"gcp:project": "my-gcp-project", "cloudRunServices": json.dumps(services)},
            hf_token=pulumi.Output.from_input("hf_x"),
        )
    assert "cloudRunServices[gemma-vllm]: image vllm/vllm-openai:v0.21.0" in str(caught.value)
    assert "use vllm/vllm-openai:v0.21.0-cu129" in str(caught.value)
