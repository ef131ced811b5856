"""Faster float32 linear layers on CPU: oneDNN matrix products on pre-packed weights.

On this project's CPUs PyTorch's default path for ``nn.Linear`` (MKL) is 2-3x slower than
oneDNN with the weight packed once into oneDNN's blocked layout, for the few-row products
of decoding: the output projection of Gemma 3's 262,144-token vocabulary took 150 ms at 16
rows and 46 ms at one, against 53 ms and 20 ms packed. Packing happens once at load; the
packed weight replaces the original (for the tied output projection it is a second copy of
the embedding table). Results match ``F.linear`` to float32 rounding.

The operator is PyTorch's own (``torch.ops.mkldnn``, what ``torch.compile`` uses for the same
job), not a public API: ``pack_linear_layers`` checks it on a small layer first and leaves
the model as it is, with a warning, where it is missing or disagrees.

A packed product also costs about 22 microseconds more per call, so only layers of at least
``MIN_PACKED_WEIGHTS`` weights are packed: at the 270M shape the MLP projections (2048 x 640)
and the output head gain, the attention projections (up to 1024 x 640) break even, and every
layer of the tiny test model (64 wide) would lose a quarter of its speed.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

MIN_PACKED_WEIGHTS = 1 << 20


class PackedLinear(torch.nn.Module):
    """``nn.Linear``'s forward pass on a weight packed for oneDNN."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach())
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        product: torch.Tensor = torch.ops.mkldnn._linear_pointwise(
            x, self.packed, self.bias, "none", [], ""
        )
        return product

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, packed"


def packing_works() -> bool:
    """Whether packed products run here and agree with ``F.linear``."""
    try:
        generator = torch.Generator().manual_seed(0)
        linear = torch.nn.Linear(64, 48)
        x = torch.randn(3, 5, 64, generator=generator)
        with torch.inference_mode():
            return bool(torch.allclose(PackedLinear(linear)(x), linear(x), atol=1e-5, rtol=1e-4))
    except (RuntimeError, AttributeError) as error:  # no oneDNN, or an op that changed
        logger.warning("packed CPU linear layers unavailable (%s); using nn.Linear", error)
        return False


def pack_linear_layers(model: torch.nn.Module, min_weights: int = MIN_PACKED_WEIGHTS) -> int:
    """Replace each float32 ``nn.Linear`` of a CPU model with at least ``min_weights`` weights
    by a ``PackedLinear``; returns how many were replaced (0 where packing is unavailable)."""
    targets = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is torch.nn.Linear
        and child.weight.device.type == "cpu"
        and child.weight.dtype == torch.float32
        and child.weight.numel() >= min_weights
    ]
    if not targets or not packing_works():
        return 0
    for parent, name, child in targets:
        setattr(parent, name, PackedLinear(child))
    return len(targets)
