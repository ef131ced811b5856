"""Linear layers packed for oneDNN on CPU: the same logits as nn.Linear, or no packing."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import pytest
import torch
from transformers import AutoModelForCausalLM

from app.inference import cpu_linear
from app.inference.cpu_linear import PackedLinear, pack_linear_layers


def _model(model_dir: Path) -> torch.nn.Module:
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    return model.eval()


def _embeddings(model: torch.nn.Module) -> torch.Tensor:
    return cast(torch.nn.Embedding, model.get_submodule("model.embed_tokens")).weight


def test_a_packed_model_gives_the_same_logits(tiny_model_dir: Path) -> None:
    plain, packed = _model(tiny_model_dir), _model(tiny_model_dir)
    linears = sum(type(m) is torch.nn.Linear for m in plain.modules())
    assert pack_linear_layers(packed, min_weights=0) == linears > 0
    assert not any(type(m) is torch.nn.Linear for m in packed.modules())
    assert isinstance(packed.get_submodule("lm_head"), PackedLinear)
    ids = torch.randint(0, 200, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected, got = plain(input_ids=ids).logits, packed(input_ids=ids).logits
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # The input embeddings the output projection was tied to are still there, unchanged.
    torch.testing.assert_close(_embeddings(packed), _embeddings(plain))


def test_packing_leaves_small_and_bfloat16_layers_alone(tiny_model_dir: Path) -> None:
    model = _model(tiny_model_dir)
    head = model.get_submodule("lm_head")
    assert isinstance(head, torch.nn.Linear)
    # Only layers big enough to gain: here the output head and nothing else.
    assert pack_linear_layers(model, min_weights=head.weight.numel()) == 1
    assert isinstance(model.get_submodule("lm_head"), PackedLinear)
    assert pack_linear_layers(_model(tiny_model_dir)) == 0  # the tiny model's layers are small
    # float32 only: this CPU has no fast bfloat16 path.
    assert pack_linear_layers(_model(tiny_model_dir).to(torch.bfloat16), min_weights=0) == 0


def test_without_a_working_operator_the_model_stays_as_it_is(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(*_: object) -> torch.Tensor:
        raise RuntimeError("mkldnn::_linear_pointwise is not available")

    monkeypatch.setattr(cpu_linear.PackedLinear, "forward", missing)
    model = _model(tiny_model_dir)
    with caplog.at_level(logging.WARNING, logger=cpu_linear.__name__):
        assert pack_linear_layers(model, min_weights=0) == 0
    assert "packed CPU linear layers unavailable" in caplog.text
    assert any(type(m) is torch.nn.Linear for m in model.modules())
