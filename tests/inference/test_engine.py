"""Engine: chat template, stop at end of turn (and at a new turn), stop strings, cancellation."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from app.inference import transformers_engine
from app.inference.engine import PromptError, SamplingParams, stream_generate
from app.inference.protocol_generate import sql_user_turn
from app.inference.sampler import TokenChooser
from app.inference.transformers_engine import TransformersEngine, pick_device_and_dtype
from tests.inference.inference_fixtures import SCRIPTED_REPLY


@pytest.fixture(scope="module")
def scripted(scripted_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(scripted_model_dir, "gemma-sql")


@pytest.fixture(scope="module")
def random_engine(tiny_model_dir: Path) -> TransformersEngine:
    return TransformersEngine(tiny_model_dir, "tiny-gemma")


def _chat_ids(engine: TransformersEngine, text: str = "names of all users") -> list[int]:
    return engine.encode(engine.render_chat([{"role": "user", "content": text}]), chat=True)


def test_unstopped_model_runs_past_its_turn(scripted: TransformersEngine) -> None:
    # The failure the server must prevent (a reply running past its turn), from the real model.
    ids = torch.tensor([_chat_ids(scripted)])
    out = scripted.model.generate(
        input_ids=ids, max_new_tokens=20, do_sample=False, eos_token_id=None
    )
    text = scripted.tokenizer.decode(out[0, ids.shape[1] :])
    assert text.startswith(SCRIPTED_REPLY + "<end_of_turn><start_of_turn>user\n" + SCRIPTED_REPLY)


def test_generation_stops_at_end_of_turn_and_returns_only_new_text(
    scripted: TransformersEngine,
) -> None:
    pieces: list[str] = []
    result = scripted.generate(
        _chat_ids(scripted), SamplingParams(max_tokens=50, temperature=0), pieces.append
    )
    assert result.text == SCRIPTED_REPLY
    assert "".join(pieces) == SCRIPTED_REPLY
    assert len(pieces) == 5  # token by token
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 6


def test_a_new_start_of_turn_also_stops(
    scripted: TransformersEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vocab = scripted.tokenizer.get_vocab()
    monkeypatch.setattr(scripted, "stop_ids", {vocab["<eos>"], vocab["<start_of_turn>"]})
    result = scripted.generate(_chat_ids(scripted), SamplingParams(max_tokens=50, temperature=0))
    assert result.text == SCRIPTED_REPLY
    assert result.finish_reason == "stop"


def test_stop_string_is_never_streamed(scripted: TransformersEngine) -> None:
    pieces: list[str] = []
    result = scripted.generate(
        _chat_ids(scripted),
        SamplingParams(max_tokens=50, temperature=0, stop=("ROM us",)),
        pieces.append,
    )
    assert result.text == "SELECT name F"
    assert "".join(pieces) == "SELECT name F"
    assert result.finish_reason == "stop"


def test_chat_template_is_gemmas(scripted: TransformersEngine) -> None:
    prompt = scripted.render_chat(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    )
    assert (
        prompt == "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    )
    with pytest.raises(PromptError, match="alternate"):
        scripted.render_chat([{"role": "assistant", "content": "x"}])


def test_sql_prompt_matches_the_fine_tuning_turn_exactly() -> None:
    assert sql_user_turn("How many users?", "CREATE TABLE users (id INT);") == (
        "Given the <USER_QUERY> and the <SCHEMA>, generate the corresponding SQL command to "
        "retrieve the desired data, considering the query's syntax, semantics, and schema "
        "constraints.\n"
        "\n"
        "<SCHEMA>\n"
        "CREATE TABLE users (id INT);\n"
        "</SCHEMA>\n"
        "\n"
        "<USER_QUERY>\n"
        "How many users?\n"
        "</USER_QUERY>"
    )


def test_length_limit_and_too_long_prompt(random_engine: TransformersEngine) -> None:
    ids = _chat_ids(random_engine)
    result = random_engine.generate(ids, SamplingParams(max_tokens=7, temperature=0))
    assert result.completion_tokens == 7
    assert result.finish_reason == "length"
    with pytest.raises(PromptError, match="longer than this model's context"):
        random_engine.check_length(random_engine.max_model_len, 1)
    with pytest.raises(PromptError, match="Set max_tokens to at most"):
        random_engine.check_length(10, random_engine.max_model_len)


def test_cancel_stops_a_long_generation(random_engine: TransformersEngine) -> None:
    cancel = threading.Event()
    seen: list[str] = []

    def on_text(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 3:
            cancel.set()

    result = random_engine.generate(
        _chat_ids(random_engine), SamplingParams(max_tokens=2000, temperature=0), on_text, cancel
    )
    assert result.completion_tokens < 10


async def test_stream_generate_leaving_early_frees_the_worker(
    random_engine: TransformersEngine,
) -> None:
    executor = ThreadPoolExecutor(max_workers=1)
    events = stream_generate(
        random_engine,
        _chat_ids(random_engine),
        SamplingParams(max_tokens=4000, temperature=0),
        executor,
    )
    async for _ in events:
        break
    await events.aclose()
    # The only worker must be free again soon, not busy with 4000 tokens.
    done = asyncio.get_running_loop().run_in_executor(executor, lambda: "free")
    assert await asyncio.wait_for(done, timeout=5) == "free"
    executor.shutdown()


def test_any_integer_seed_is_accepted_and_reproducible(random_engine: TransformersEngine) -> None:
    # Clients send seeds beyond torch's 64 bits (or negative); that was a 500.
    ids = _chat_ids(random_engine)
    runs = [
        random_engine.generate(ids, SamplingParams(max_tokens=8, seed=seed)).text
        for seed in (2**70 + 5, 2**70 + 5, -3)
    ]
    assert runs[0] == runs[1]
    assert runs[2]


def test_top_k_zero_turns_the_cut_off() -> None:
    def top_k(requested: int | None) -> int:
        params = SamplingParams(max_tokens=1, top_k=requested)
        # 64 is Gemma 3's generation_config default.
        return TokenChooser(params, [], 100, torch.device("cpu"), default_top_k=64).top_k

    assert top_k(None) == 64
    assert top_k(0) == 0
    assert top_k(7) == 7


def test_a_gpu_that_torch_cannot_use_stops_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if torch.cuda.is_available():
        pytest.skip("this torch can use a GPU here")
    assert pick_device_and_dtype()[0].type == "cpu"  # no GPU device file: CPU is right
    fake_gpu = tmp_path / "nvidia0"
    fake_gpu.touch()
    monkeypatch.setattr(transformers_engine, "NVIDIA_DEVICE", fake_gpu)
    # This machine's torch cannot use any GPU, like a CUDA 13 wheel on an older driver.
    with pytest.raises(RuntimeError, match=r"GPU is attached .* cannot use it.*driver"):
        pick_device_and_dtype()
