"""The Gemma 3 sizing table matches Google's published sizing, and its checks follow L4 memory."""

from __future__ import annotations

import pytest

from stacks.gemma_sizing import (
    AUTOPILOT_L4_GPU_COUNTS,
    GEMMA_SIZING,
    GEMMA_VARIANTS,
    L4_MEMORY_GB,
    sizing_problems,
)


def test_variants() -> None:
    assert GEMMA_VARIANTS == ("gemma-3-1b-it", "gemma-3-4b-it", "gemma-3-12b-it", "gemma-3-27b-it")


def test_table_follows_googles_samples() -> None:
    small, medium, large, largest = (GEMMA_SIZING[v] for v in GEMMA_VARIANTS)
    assert (small.gpu_count, medium.gpu_count) == (1, 1)
    assert (large.gpu_count, large.tensor_parallel) == (2, 2)
    assert (large.max_model_len, large.max_num_seqs) == (16_384, 4)
    assert (largest.gpu_count, largest.tensor_parallel) == (4, 4)


@pytest.mark.parametrize("variant", GEMMA_VARIANTS)
def test_table_entries_pass_their_own_checks(variant: str) -> None:
    s = GEMMA_SIZING[variant]
    assert s.gpu_count in AUTOPILOT_L4_GPU_COUNTS
    assert s.gpu_count >= s.min_l4_gpus
    assert s.max_model_len < 131_072  # never Gemma 3's default context on L4
    assert (
        sizing_problems(variant, s.gpu_count, s.tensor_parallel, s.max_model_len, s.max_num_seqs)
        == []
    )


@pytest.mark.parametrize(
    ("variant", "minimum"),
    [("gemma-3-1b-it", 1), ("gemma-3-4b-it", 1), ("gemma-3-12b-it", 2), ("gemma-3-27b-it", 4)],
)
def test_minimum_gpus_follow_weights_over_l4_memory(variant: str, minimum: int) -> None:
    s = GEMMA_SIZING[variant]
    assert s.min_l4_gpus == minimum
    # One GPU fewer cannot hold the weights with room to spare; the minimum can.
    assert s.weights_gb <= minimum * L4_MEMORY_GB * 0.9
    if minimum > 1:
        assert s.weights_gb > (minimum // 2) * L4_MEMORY_GB * 0.9 * 0.75


def test_too_few_gpus_for_27b_is_refused_with_the_fix() -> None:
    (problem,) = sizing_problems("gemma-3-27b-it", 2, 2, 8192, 4)
    assert "needs at least 4 L4 GPUs" in problem
    assert "Set gkeGemmaGpuCount to 4" in problem


def test_gpu_count_must_be_offered_by_autopilot() -> None:
    problems = sizing_problems("gemma-3-4b-it", 6, 6, 8192, 4)
    assert any("GKE Autopilot gives a pod 1, 2, 4, 8 L4 GPUs" in p for p in problems)
