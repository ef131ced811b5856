"""The batching engine: concurrent requests decode together and each behaves as if alone.

Effects of the sampling settings are checked against a direct forward pass of the whole
sequence through the model (no cache, no batch), with transformers' own logits processors
where it has one.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from transformers import RepetitionPenaltyLogitsProcessor

from app.inference.engine import Completion, SamplingParams
from app.inference.transformers_engine import TransformersEngine

PROMPTS = ["Tell me a long story", "names of all users", "Write a haiku about the sea", "Hi"]


@pytest.fixture(scope="module", params=["eager", "sdpa"])
def engine(tiny_model_dir: Path, request: pytest.FixtureRequest) -> TransformersEngine:
    return TransformersEngine(tiny_model_dir, "tiny-gemma", attention=request.param)


def _ids(engine: TransformersEngine, text: str) -> list[int]:
    return engine.encode(engine.render_chat([{"role": "user", "content": text}]), chat=True)


def _tokens(completion: Completion) -> list[int]:
    assert completion.logprobs is not None
    return [entry.token_id for entry in completion.logprobs]


def _reference(
    engine: TransformersEngine, prompt: list[int], steps: int, adjust: Callable[..., torch.Tensor]
) -> list[int]:
    """Greedy tokens from full forward passes, ``adjust(ids, generated, logits)`` applied."""
    ids = list(prompt)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(steps):
            logits = engine.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
            token = int(adjust(ids, out, logits).argmax())
            out.append(token)
            ids.append(token)
    return out


def _run_together(
    engine: TransformersEngine, jobs: list[tuple[list[int], SamplingParams]]
) -> list[Completion]:
    """Start every job at once, so they share the batch."""
    barrier = threading.Barrier(len(jobs))

    def run(job: tuple[list[int], SamplingParams]) -> Completion:
        barrier.wait()
        return engine.generate(*job)

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        return list(pool.map(run, jobs))


def test_concurrent_seeded_requests_each_reproduce_their_solo_output(
    engine: TransformersEngine,
) -> None:
    # Prompts of different lengths, runs of different lengths (so some leave while others
    # decode), and more tokens than the tiny model's sliding window of 128.
    jobs = [
        (_ids(engine, PROMPTS[i % 4] * (i + 1)), SamplingParams(max_tokens=40 + 50 * i, seed=i))
        for i in range(5)
    ]
    jobs.append((_ids(engine, "greedy"), SamplingParams(max_tokens=60, temperature=0)))
    solo = [engine.generate(*job).text for job in jobs]
    together = [c.text for c in _run_together(engine, jobs)]
    assert together == solo
    assert len(set(solo)) == len(solo)  # different seeds, different text
    # A different seed gives a different reply: the seed is really the request's own.
    assert engine.generate(jobs[0][0], SamplingParams(max_tokens=40, seed=99)).text != solo[0]


def test_prompts_prefilled_together_each_see_only_themselves(engine: TransformersEngine) -> None:
    # Packed into one sequence: prompts longer than the sliding window (128 tokens), next to
    # a short one, each give what a full forward pass over that prompt alone gives.
    prompts = [_ids(engine, PROMPTS[0] * 40), _ids(engine, "Hi"), _ids(engine, PROMPTS[2] * 30)]
    assert min(len(prompts[0]), len(prompts[2])) > 128
    steps = 6
    jobs = [(ids, SamplingParams(max_tokens=steps, temperature=0, logprobs=0)) for ids in prompts]
    for (ids, _), completion in zip(jobs, _run_together(engine, jobs), strict=True):
        assert _tokens(completion) == _reference(engine, ids, steps, _penalized())


def test_requests_join_and_leave_a_running_batch(engine: TransformersEngine) -> None:
    long_ids = _ids(engine, PROMPTS[0])
    cancel = threading.Event()
    started, short_done, alone_again = threading.Event(), threading.Event(), threading.Event()
    batch_sizes: list[int] = []

    def on_text(piece: str) -> None:
        # Runs in the scheduler's thread, between steps.
        batch_sizes.append(engine.scheduler.running)
        started.set()
        if short_done.is_set() and batch_sizes[-1] == 1:
            alone_again.set()

    with ThreadPoolExecutor(max_workers=1) as pool:
        running = pool.submit(
            engine.generate,
            long_ids,
            SamplingParams(max_tokens=6000, temperature=0),
            on_text,
            cancel,
        )
        assert started.wait(timeout=60)
        # Three short requests join while the long one decodes, and leave before it ends.
        short = [
            (_ids(engine, text), SamplingParams(max_tokens=8, temperature=0))
            for text in PROMPTS[1:]
        ]
        joined = _run_together(engine, short)
        short_done.set()
        assert alone_again.wait(timeout=60)  # they left the batch, the long one goes on
        cancel.set()
        long_run = running.result(timeout=60)
    assert max(batch_sizes) >= 2  # they really shared the batch
    assert [c.text for c in joined] == [engine.generate(*job).text for job in short]
    assert long_run.finish_reason == "length"
    assert 0 < long_run.completion_tokens < 6000
    alone = engine.generate(
        long_ids, SamplingParams(max_tokens=long_run.completion_tokens, temperature=0)
    )
    assert long_run.text == alone.text


def test_cancelling_frees_the_row_at_once(engine: TransformersEngine) -> None:
    cancel = threading.Event()
    seen: list[int] = []

    def on_text(piece: str) -> None:
        seen.append(engine.scheduler.running)
        if len(seen) == 3:
            cancel.set()

    result = engine.generate(
        _ids(engine, "x"), SamplingParams(max_tokens=5000, temperature=0), on_text, cancel
    )
    assert result.completion_tokens < 10
    assert engine.scheduler.running == 0
    # A request cancelled while it waits never runs.
    cancel = threading.Event()
    cancel.set()
    waited = engine.generate(_ids(engine, "y"), SamplingParams(max_tokens=50), None, cancel)
    assert waited.completion_tokens == 0


def test_logprobs_are_the_models_own(engine: TransformersEngine) -> None:
    prompt = _ids(engine, PROMPTS[2])
    result = engine.generate(prompt, SamplingParams(max_tokens=6, temperature=0, logprobs=3))
    assert result.logprobs is not None
    assert len(result.logprobs) == 6
    ids = list(prompt)
    with torch.inference_mode():
        for entry in result.logprobs:
            expected = engine.model(input_ids=torch.tensor([ids])).logits[0, -1].log_softmax(-1)
            values, top = expected.topk(3)
            assert [t.token_id for t in entry.top] == top.tolist()
            assert [t.logprob for t in entry.top] == pytest.approx(values.tolist(), abs=1e-4)
            assert entry.logprob == pytest.approx(float(expected[entry.token_id]), abs=1e-4)
            assert entry.token == engine.tokenizer.decode([entry.token_id])
            ids.append(entry.token_id)
    assert "".join(e.token for e in result.logprobs) == result.text
    # None: no logprobs; 0: the chosen token's only.
    assert engine.generate(prompt, SamplingParams(max_tokens=2)).logprobs is None
    only = engine.generate(prompt, SamplingParams(max_tokens=2, logprobs=0)).logprobs
    assert only is not None
    assert all(entry.top == () for entry in only)


def _penalized(
    presence: float = 0.0, frequency: float = 0.0, repetition: float = 1.0
) -> Callable[..., torch.Tensor]:
    """vLLM's order: the repetition penalty (transformers' processor), then the OpenAI ones."""

    def adjust(ids: list[int], generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        if repetition != 1.0:
            processor = RepetitionPenaltyLogitsProcessor(repetition)
            logits = processor(torch.tensor([ids]), logits[None].clone())[0]
        counts = torch.bincount(torch.tensor(generated, dtype=torch.long), minlength=len(logits))
        return logits - frequency * counts - presence * (counts > 0).float()

    return adjust


@pytest.mark.parametrize(
    ("presence", "frequency", "repetition"),
    [(1.5, 0.0, 1.0), (0.0, 0.8, 1.0), (0.0, 0.0, 1.3), (0.5, 0.5, 1.2), (-1.0, 0.0, 1.0)],
)
def test_penalties_match_a_direct_forward_pass(
    engine: TransformersEngine, presence: float, frequency: float, repetition: float
) -> None:
    prompt = _ids(engine, PROMPTS[0])
    steps = 24
    params = SamplingParams(
        max_tokens=steps,
        temperature=0,
        logprobs=0,
        presence_penalty=presence,
        frequency_penalty=frequency,
        repetition_penalty=repetition,
    )
    # Next to a request without penalties, so each row's penalty stays its own.
    plain_params = SamplingParams(max_tokens=steps, temperature=0, logprobs=0)
    penalized, plain = _run_together(engine, [(prompt, params), (prompt, plain_params)])
    expected = _reference(engine, prompt, steps, _penalized(presence, frequency, repetition))
    assert _tokens(penalized) == expected
    assert _tokens(plain) == _reference(engine, prompt, steps, _penalized())
    assert _tokens(penalized) != _tokens(plain)  # the penalty changed the reply


def test_min_p_keeps_only_tokens_near_the_likeliest(engine: TransformersEngine) -> None:
    prompt = _ids(engine, PROMPTS[1])

    def worst_ratio(min_p: float) -> float:
        """The least likely chosen token's probability relative to the likeliest one."""
        result = engine.generate(
            prompt, SamplingParams(max_tokens=60, seed=5, min_p=min_p, logprobs=1)
        )
        assert result.logprobs is not None
        return min(math.exp(e.logprob - e.top[0].logprob) for e in result.logprobs)

    # The random model's distribution is flat: without min_p it picks unlikely tokens.
    assert worst_ratio(0.0) < 0.5
    assert worst_ratio(0.5) >= 0.5 - 1e-5
    assert worst_ratio(0.9) >= 0.9 - 1e-5


def test_logprobs_stream_with_the_text_they_belong_to(engine: TransformersEngine) -> None:
    pieces: list[tuple[str, tuple[int, ...]]] = []
    entries: list[tuple[int, ...]] = []

    def on_logprobs(batch: tuple[object, ...]) -> None:
        entries.append(tuple(e.token_id for e in batch))  # type: ignore[attr-defined]

    def on_text(piece: str) -> None:
        pieces.append((piece, entries.pop() if entries else ()))

    result = engine.generate(
        _ids(engine, PROMPTS[3]),
        SamplingParams(max_tokens=12, temperature=0, logprobs=2, stop=("zzz",)),
        on_text,
        None,
        on_logprobs,
    )
    assert "".join(piece for piece, _ in pieces) == result.text
    streamed = [token for _, batch in pieces for token in batch]
    assert streamed == _tokens(result)
