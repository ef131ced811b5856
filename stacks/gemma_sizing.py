"""Per-variant sizing of Gemma 3 on NVIDIA L4 GPUs for vLLM, and checks refusing impossible setups.

Sources: Google's GKE samples (1B and 4B on 1 L4; 12B on 2 L4 with tensor parallel 2,
`--max-model-len 16384`, `--max-num-seqs 4`; 27B needs 4 to 8 L4 or one 80 GB GPU) and the
model cards (parameter counts, context windows, attention heads). Gemma 3's default 128K
context exhausts an L4's KV cache, so a `--max-model-len` is always chosen here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.gemma_on_gke import AUTOPILOT_L4_COUNTS

L4_MEMORY_GB = 24.0
# vLLM's --gpu-memory-utilization default share of each GPU.
GPU_MEMORY_UTILIZATION = 0.90
# Weights may take at most this share of vLLM's budget; the rest holds the KV cache and
# activations. Below that, vLLM starts but serves almost no context.
MAX_WEIGHT_SHARE = 0.75
# GPU counts GKE Autopilot offers for nvidia-l4 (g2-standard machine shapes).
AUTOPILOT_L4_GPU_COUNTS = AUTOPILOT_L4_COUNTS


@dataclass(frozen=True)
class GemmaSizing:
    """What one Gemma 3 variant needs on L4 GPUs and the settings Google's samples use."""

    variant: str
    parameters_billion: float
    attention_heads: int
    context_window: int
    gpu_count: int
    tensor_parallel: int
    max_model_len: int
    max_num_seqs: int
    # Pod requests next to the GPUs; ephemeral storage holds the downloaded weights.
    cpu: str
    memory: str
    ephemeral_storage: str

    @property
    def weights_gb(self) -> float:
        """bf16 weights: two bytes per parameter."""
        return self.parameters_billion * 2.0

    @property
    def min_l4_gpus(self) -> int:
        """Fewest L4 GPUs whose memory holds the weights with room left for the KV cache."""
        per_gpu = L4_MEMORY_GB * GPU_MEMORY_UTILIZATION * MAX_WEIGHT_SHARE
        return math.ceil(self.weights_gb / per_gpu)

    @property
    def default_model_id(self) -> str:
        return f"google/{self.variant}"


GEMMA_SIZING: dict[str, GemmaSizing] = {
    s.variant: s
    for s in (
        GemmaSizing(
            variant="gemma-3-1b-it",
            parameters_billion=1.0,
            attention_heads=4,
            context_window=32_768,
            gpu_count=1,
            tensor_parallel=1,
            max_model_len=32_768,
            max_num_seqs=16,
            cpu="4",
            memory="16Gi",
            ephemeral_storage="20Gi",
        ),
        GemmaSizing(
            variant="gemma-3-4b-it",
            parameters_billion=4.3,
            attention_heads=8,
            context_window=131_072,
            gpu_count=1,
            tensor_parallel=1,
            max_model_len=32_768,
            max_num_seqs=8,
            cpu="4",
            memory="24Gi",
            ephemeral_storage="40Gi",
        ),
        GemmaSizing(
            variant="gemma-3-12b-it",
            parameters_billion=12.2,
            attention_heads=16,
            context_window=131_072,
            gpu_count=2,
            tensor_parallel=2,
            max_model_len=16_384,
            max_num_seqs=4,
            cpu="8",
            memory="48Gi",
            ephemeral_storage="80Gi",
        ),
        # 4 L4 is the minimum on L4 (54 GB of weights over 4 x 24 GB leaves a small KV
        # cache); use 8 L4 for longer contexts or more parallel sequences.
        GemmaSizing(
            variant="gemma-3-27b-it",
            parameters_billion=27.4,
            attention_heads=32,
            context_window=131_072,
            gpu_count=4,
            tensor_parallel=4,
            max_model_len=8_192,
            max_num_seqs=4,
            cpu="16",
            memory="96Gi",
            ephemeral_storage="150Gi",
        ),
    )
}

GEMMA_VARIANTS = tuple(GEMMA_SIZING)


def sizing_problems(
    variant: str, gpu_count: int, tensor_parallel: int, max_model_len: int, max_num_seqs: int
) -> list[str]:
    """Why this vLLM setup cannot serve `variant` on L4 GPUs under Autopilot (empty when it can)."""
    sizing = GEMMA_SIZING[variant]
    problems: list[str] = []
    if gpu_count not in AUTOPILOT_L4_GPU_COUNTS:
        problems.append(
            f"gkeGemmaGpuCount={gpu_count} is not offered: GKE Autopilot gives a pod "
            f"{', '.join(map(str, AUTOPILOT_L4_GPU_COUNTS))} L4 GPUs."
        )
    elif gpu_count < sizing.min_l4_gpus:
        problems.append(
            f"{variant} has {sizing.weights_gb:.0f} GB of bf16 weights and needs at least "
            f"{sizing.min_l4_gpus} L4 GPUs (24 GB each, with room for the KV cache); "
            f"gkeGemmaGpuCount={gpu_count} is too small. Set gkeGemmaGpuCount to "
            f"{sizing.gpu_count} (or unset it to use the sizing table), or pick a smaller variant."
        )
    if tensor_parallel != gpu_count:
        problems.append(
            f"gkeGemmaTensorParallel={tensor_parallel} must equal gkeGemmaGpuCount={gpu_count}: "
            "one vLLM engine shards the model over every GPU of its pod, and GPUs it does "
            "not use are paid for but idle."
        )
    elif sizing.attention_heads % tensor_parallel != 0:
        problems.append(
            f"{variant} has {sizing.attention_heads} attention heads, which "
            f"gkeGemmaTensorParallel={tensor_parallel} does not divide."
        )
    if not 512 <= max_model_len <= sizing.context_window:
        problems.append(
            f"gkeGemmaMaxModelLen={max_model_len} is outside 512..{sizing.context_window} "
            f"(the context window of {variant})."
        )
    if max_num_seqs < 1:
        problems.append(f"gkeGemmaMaxNumSeqs={max_num_seqs} must be at least 1.")
    return problems
