"""Choosing each request's next token from a batch of logits, with that request's own settings.

The order follows vLLM's sampler: penalties, then temperature, then min_p, then top-k and
top-p, then one draw. Every request draws from its own generator when it has a seed, and
each draw depends only on that request's logits, so seeded output does not depend on which
other requests share the batch.
"""

from __future__ import annotations

import math

import torch

from app.inference.engine import SamplingParams


def finite_logits(logits: torch.Tensor) -> torch.Tensor:
    """Float32 logits that can neither overflow nor spread NaN into the sampler.

    A NaN logit never wins and +inf logits share the choice among themselves. A row without a
    single finite logit means broken weights, reported as such.
    """
    logits = logits.float()
    # The usual case in one pass: a row's maximum is finite only without NaN and +inf.
    if bool(torch.isfinite(logits.amax(dim=-1)).all()):
        return logits
    logits = torch.nan_to_num(logits, nan=-torch.inf, posinf=torch.inf)
    infinite = torch.isposinf(logits)
    rows = infinite.any(dim=-1, keepdim=True)
    logits = torch.where(rows, torch.where(infinite, 0.0, -torch.inf), logits)
    if not bool(torch.isfinite(logits.max(dim=-1).values).all()):
        raise RuntimeError(
            "the model produced no finite logit (all NaN or -inf): its weights are broken; "
            "re-export the merged model"
        )
    return logits


class TokenChooser:
    """One request's sampling state: its settings, its generator and the tokens it has seen."""

    def __init__(
        self,
        params: SamplingParams,
        prompt_ids: list[int],
        vocab_size: int,
        device: torch.device,
        default_top_k: int | None,
    ) -> None:
        self.params = params
        # None means the model's default; 0 means no top-k cut, as in vLLM and Gemini.
        self.top_k = int(default_top_k or 0) if params.top_k is None else params.top_k
        self.generator: torch.Generator | None = None
        if params.seed is not None and not params.greedy:
            # Any integer a client sends is a valid seed; torch only takes 64 bits.
            self.generator = torch.Generator(device=device).manual_seed(params.seed % 2**64)
        self.device = device
        # Counts of generated tokens (presence and frequency) and the prompt's tokens
        # (repetition), kept only when a penalty needs them.
        self.counts: torch.Tensor | None = None
        self.seen: torch.Tensor | None = None
        if params.presence_penalty or params.frequency_penalty:
            self.counts = torch.zeros(vocab_size, dtype=torch.float32, device=device)
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros(vocab_size, dtype=torch.bool, device=device)
            ids = [i for i in prompt_ids if 0 <= i < vocab_size]
            self.seen[torch.tensor(ids, dtype=torch.long, device=device)] = True

    @property
    def penalized(self) -> bool:
        return self.counts is not None or self.seen is not None

    def record(self, token: int) -> None:
        """Note a generated token for the penalties."""
        if self.counts is not None:
            self.counts[token] += 1
        if self.seen is not None:
            self.seen[token] = True

    def penalize(self, logits: torch.Tensor) -> torch.Tensor:
        """One row of logits with the repetition, frequency and presence penalties applied."""
        params = self.params
        if self.seen is not None:
            penalty = params.repetition_penalty
            scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
            logits = torch.where(self.seen, scaled, logits)
        if self.counts is not None:
            logits = (
                logits
                - params.frequency_penalty * self.counts
                - params.presence_penalty * (self.counts > 0).float()
            )
        return logits

    def sample(self, logits: torch.Tensor) -> int:
        """Draw one token from one row of (finite, penalized) logits."""
        params = self.params
        # Shifted to a maximum of 0 before the division, so every value stays in [-inf, 0].
        scaled = (logits - logits.max()) / params.temperature
        if params.min_p > 0:
            # exp(scaled) is each token's probability relative to the likeliest one.
            scaled = scaled.masked_fill(scaled < math.log(params.min_p), -torch.inf)
        ids: torch.Tensor | None = None
        if 0 < self.top_k < scaled.numel():
            scaled, ids = scaled.topk(self.top_k)
        elif params.top_p < 1:
            scaled, ids = scaled.sort(descending=True)
        probs = scaled.softmax(dim=-1)
        if params.top_p < 1:
            # Keep the likeliest tokens whose mass before them is below top_p (at least one).
            probs = probs.masked_fill(probs.cumsum(dim=-1) - probs > params.top_p, 0.0)
        cumulative = probs.cumsum(dim=-1)
        draw = torch.rand((), generator=self.generator, device=self.device) * cumulative[-1]
        choice = torch.searchsorted(cumulative, draw.reshape(1), right=True)
        index = int(choice.clamp(max=cumulative.numel() - 1))
        return int(ids[index]) if ids is not None else index


def choose_tokens(logits: torch.Tensor, choosers: list[TokenChooser]) -> list[int]:
    """The next token of every row of ``logits`` (finite), one chooser per row."""
    rows = list(range(len(choosers)))
    if any(c.penalized for c in choosers):
        logits = logits.clone()
        for row in rows:
            if choosers[row].penalized:
                logits[row] = choosers[row].penalize(logits[row])
    greedy = [row for row in rows if choosers[row].params.greedy]
    tokens = [0] * len(rows)
    if greedy:
        picked = logits[greedy].argmax(dim=-1).tolist()
        for row, token in zip(greedy, picked, strict=True):
            tokens[row] = int(token)
    for row in rows:
        if not choosers[row].params.greedy:
            tokens[row] = choosers[row].sample(logits[row])
    for row, token in zip(rows, tokens, strict=True):
        choosers[row].record(token)
    return tokens
