"""Continuous batching: one thread runs the model for every request at once.

Requests join between steps and leave between steps (finished, stopped or cancelled).
Joining prompts are prefilled together in one forward pass, packed end to end in one
sequence with a block-diagonal causal mask, so no compute goes to padding; arrivals waiting
after a prefill are prefilled next, before the running requests' next decode step, so a
burst gets its first tokens as soon as its prompts are read. Every decode step runs one
forward pass over all running requests. The KV cache keeps one row per running request,
each at its own length, so nothing is re-padded when requests join or leave.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from app.inference.engine import TokenLogprob, TopLogprob
from app.inference.sampler import TokenChooser, choose_tokens, finite_logits

logger = logging.getLogger(__name__)

# Prompts prefilled together in one forward pass hold at most this many tokens, so a burst
# of long prompts cannot take the memory of one huge attention mask; a prompt longer than
# this is prefilled alone. It also bounds how long the running requests wait for arrivals'
# prefills between two decode steps.
PREFILL_TOKEN_BUDGET = 4096
# How long an idle engine gathers arriving requests before their prefill (a prefill of the
# 270M shape on CPU takes about 170 ms).
JOIN_WINDOW_S = 0.02
# The cache grows its length in steps of this many positions.
LENGTH_STEP = 256


# The attention implementation the engine loads models with for SDPA (see ``packed_sdpa``).
PACKED_SDPA = "gemma_stack_packed_sdpa"


def packed_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *,
    packed_lengths: list[int] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' SDPA attention, except that in a packed prefill (``packed_lengths``) it
    attends within each prompt's own diagonal block of the sequence, the only unmasked part:
    the work is the sum of the prompts' squared lengths instead of the square of their sum
    (at 16 short prompts, about a sixth of a prefill's time)."""
    if packed_lengths is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    parts = []
    start = 0
    for size in packed_lengths:
        end = start + size
        block = None if attention_mask is None else attention_mask[..., start:end, start:end]
        part, _ = sdpa_attention_forward(
            module,
            query[:, :, start:end],
            key[:, :, start:end],
            value[:, :, start:end],
            block,
            **kwargs,
        )
        parts.append(part)  # (batch, positions, heads, head size)
        start = end
    return torch.cat(parts, dim=1), None


AttentionInterface.register(PACKED_SDPA, packed_sdpa)
# Where transformers builds the masks itself (a plain forward pass), they are SDPA's.
AttentionMaskInterface.register(PACKED_SDPA, sdpa_mask)


class SlotCache:
    """Keys and values of the running requests: row ``i`` is request ``i``, at its own length.

    transformers' attention layers call ``update`` once per layer in each forward pass; what
    they get back, and the masks ``decode_masks``/``prefill_masks`` build, depend on whether
    the pass is a prefill (new rows, their prompts packed in one sequence) or a decode step
    (one token a row).
    Sliding-window layers keep every position too; their mask and key range end at the window.
    """

    def __init__(self, config: Any, device: torch.device, dtype: torch.dtype, eager: bool) -> None:
        text = getattr(config, "text_config", None) or config
        self.layers = int(text.num_hidden_layers)
        self.kv_heads = int(text.num_key_value_heads)
        self.head_dim = int(
            getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        )
        types = getattr(text, "layer_types", None) or ["full_attention"] * self.layers
        self.window: int | None = getattr(text, "sliding_window", None)
        self.sliding = [kind == "sliding_attention" and self.window is not None for kind in types]
        self.device = device
        self.dtype = dtype
        self.eager = eager  # eager attention adds a float mask; SDPA takes a boolean one
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.rows = 0  # capacity
        self.length = 0  # capacity
        # The pass in progress: decode (rows 0..n, write at ``positions``, read ``spans``) or
        # prefill (rows ``first``.., each prompt's part of the packed sequence written from
        # position 0, returned as computed).
        self._positions: torch.Tensor | None = None
        self._slots = torch.zeros(0, dtype=torch.long)  # flat (row, head, position) indices
        self._spans: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
        self._first = 0
        self._prompt_lengths: list[int] = []

    def reserve(self, rows: int, length: int) -> None:
        """Make room for ``rows`` requests of ``length`` positions, keeping what is stored."""
        if rows <= self.rows and length <= self.length:
            return
        new_rows = max(rows, self.rows)
        if rows > self.rows:
            new_rows = max(rows, 2 * self.rows)
        new_length = max(length, self.length)
        if length > self.length:
            new_length = max(length, self.length + self.length // 2)
            new_length = -(-new_length // LENGTH_STEP) * LENGTH_STEP
        shape = (new_rows, self.kv_heads, new_length, self.head_dim)
        # Zeros, not empty memory: masked positions are multiplied by 0, and NaN * 0 is NaN.
        for store in (self.keys, self.values):
            for layer in range(self.layers):
                grown = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if store and self.rows:
                    grown[: self.rows, :, : self.length] = store[layer]
                if len(store) > layer:
                    store[layer] = grown
                else:
                    store.append(grown)
        self.rows, self.length = new_rows, new_length

    def move(self, source: int, target: int, length: int) -> None:
        """Copy row ``source``'s first ``length`` positions onto row ``target``."""
        for store in (self.keys, self.values):
            for tensor in store:
                tensor[target, :, :length] = tensor[source, :, :length]

    # -- the attention layers' side ---------------------------------------------------------

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, **_: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self._positions is None:  # prefill: store each prompt's part, attend to this pass
            start = 0
            for offset, size in enumerate(self._prompt_lengths):
                row = self._first + offset
                keys[row, :, :size] = key_states[0, :, start : start + size]
                values[row, :, :size] = value_states[0, :, start : start + size]
                start += size
            return key_states, value_states
        batch = key_states.shape[0]
        # One (row, head, position) vector each; index_copy_ on the flat view is much faster
        # than indexing rows and positions together.
        keys.view(-1, self.head_dim).index_copy_(
            0, self._slots, key_states.reshape(-1, self.head_dim)
        )
        values.view(-1, self.head_dim).index_copy_(
            0, self._slots, value_states.reshape(-1, self.head_dim)
        )
        start, end = self._spans[1 if self.sliding[layer_idx] else 0]
        return keys[:batch, :, start:end], values[:batch, :, start:end]

    # -- masks ------------------------------------------------------------------------------

    def _as_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        if not self.eager:
            return allowed
        zero = torch.zeros((), dtype=self.dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(self.dtype).min)

    def decode_masks(self, positions: torch.Tensor, top: int) -> dict[str, torch.Tensor]:
        """Masks for one new token per row at ``positions`` (the largest being ``top``)."""
        self._positions = positions
        rows = torch.arange(len(positions), device=self.device)[:, None]
        heads = torch.arange(self.kv_heads, device=self.device)[None, :]
        self._slots = ((rows * self.kv_heads + heads) * self.length + positions[:, None]).reshape(
            -1
        )
        end = top + 1
        start = 0
        if self.window is not None:
            start = max(0, int(positions.min()) - self.window + 1)
        self._spans = ((0, end), (start, end))
        columns = torch.arange(end, device=self.device)[None, :]
        reach = positions[:, None]
        full = columns <= reach
        sliding = full
        if self.window is not None:
            sliding = (full & (columns > reach - self.window))[:, start:]
        return {
            "full_attention": self._as_mask(full[:, None, None, :]),
            "sliding_attention": self._as_mask(sliding[:, None, None, :]),
        }

    def prefill_masks(self, first: int, lengths: list[int]) -> dict[str, torch.Tensor]:
        """Masks for prompts of ``lengths`` packed end to end in one sequence (each sees only
        itself, causally), stored from row ``first`` on."""
        self._positions = None
        self._first = first
        self._prompt_lengths = lengths
        sizes = torch.tensor(lengths, device=self.device)
        prompt = torch.repeat_interleave(torch.arange(len(lengths), device=self.device), sizes)
        index = torch.arange(len(prompt), device=self.device)
        query, key = index[:, None], index[None, :]
        causal = (prompt[:, None] == prompt[None, :]) & (key <= query)
        sliding = causal
        if self.window is not None:
            sliding = causal & (key > query - self.window)
        return {
            "full_attention": self._as_mask(causal[None, None]),
            "sliding_attention": self._as_mask(sliding[None, None]),
        }


@dataclass(eq=False)
class BatchRequest:
    """One request in the batch. ``on_token`` gets each token (and its logprobs when asked
    for) in the scheduler's thread and returns True to stop; ``done`` is set once it ended."""

    prompt_ids: list[int]
    max_tokens: int
    chooser: TokenChooser
    on_token: Callable[[int, TokenLogprob | None], bool]
    logprobs: int | None = None
    cancel: threading.Event | None = None
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    generated: int = 0
    position: int = 0  # where the next token's key and value go
    last_token: int = 0


class Scheduler:
    """Owns the model and its cache; runs prefill and decode steps in a thread of its own."""

    def __init__(
        self,
        model: Any,
        device: torch.device,
        dtype: torch.dtype,
        token_text: Callable[[int], str],
    ) -> None:
        self.model = model
        self.device = device
        self.token_text = token_text
        eager = model.config._attn_implementation == "eager"
        self.cache = SlotCache(model.config, device, dtype, eager=eager)
        self._waiting: deque[BatchRequest] = deque()
        self._running: list[BatchRequest] = []
        self._prefilled_since_decode = 0  # prompt tokens prefilled since the last decode step
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler", daemon=True)
        self._thread.start()

    @property
    def running(self) -> int:
        return len(self._running)

    def submit(self, request: BatchRequest) -> None:
        with self._wake:
            if self._closed:
                raise RuntimeError("the engine is shut down")
            self._waiting.append(request)
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        with torch.inference_mode():
            while True:
                with self._wake:
                    while not self._waiting and not self._running and not self._closed:
                        self._wake.wait()
                    if not self._running and not self._closed:
                        # An idle engine waits a moment for a burst's other requests, so
                        # they are prefilled in one pass instead of one after the other.
                        deadline = time.monotonic() + JOIN_WINDOW_S
                        while (left := deadline - time.monotonic()) > 0 and not self._closed:
                            self._wake.wait(left)
                    if self._closed:
                        for request in [*self._waiting, *self._running]:
                            self._fail(request, RuntimeError("the engine is shut down"))
                        return
                    joining = self._take_joining()
                try:
                    if joining:
                        self._prefill(joining)
                        self._leave_finished()
                        if self._prefill_next():
                            continue
                    if self._running:
                        self._decode()
                        self._leave_finished()
                except Exception as error:
                    # A failed forward pass (out of memory, a device fault) fails the requests
                    # that were in it; the scheduler goes on with the next ones.
                    logger.exception("batch step failed")
                    for request in [*joining, *self._running]:
                        if not request.done.is_set():
                            self._fail(request, error)
                    self._running = []

    def _take_joining(self) -> list[BatchRequest]:
        joining: list[BatchRequest] = []
        tokens = 0
        while self._waiting:
            request = self._waiting[0]
            if request.cancel is not None and request.cancel.is_set():
                self._waiting.popleft()
                request.done.set()
                continue
            tokens += len(request.prompt_ids)
            if joining and tokens > PREFILL_TOKEN_BUDGET:
                break
            joining.append(self._waiting.popleft())
        return joining

    def _prefill_next(self) -> bool:
        """Whether the next pass is another prefill, for requests that arrived during this
        one: their first tokens come sooner, and the running requests wait at most one
        budget of prompt tokens for their next one."""
        with self._wake:
            return bool(self._waiting) and self._prefilled_since_decode < PREFILL_TOKEN_BUDGET

    def _prefill(self, joining: list[BatchRequest]) -> None:
        first = len(self._running)
        lengths = [len(r.prompt_ids) for r in joining]
        self._prefilled_since_decode += sum(lengths)
        self.cache.reserve(first + len(joining), max(lengths) + 1)
        # One sequence of every prompt end to end; positions restart at each prompt, and the
        # mask keeps each prompt to itself.
        ids = torch.tensor([[t for r in joining for t in r.prompt_ids]], device=self.device)
        positions = torch.cat([torch.arange(n, device=self.device) for n in lengths])[None, :]
        last = torch.tensor(lengths, device=self.device).cumsum(0) - 1
        masks = self.cache.prefill_masks(first, lengths)
        logits = self._forward(ids, positions, masks, last, packed_lengths=lengths)
        for request, size in zip(joining, lengths, strict=True):
            request.position = size
        self._running.extend(joining)
        self._advance(joining, logits)

    def _decode(self) -> None:
        self._prefilled_since_decode = 0
        running = self._running
        top = max(r.position for r in running)
        self.cache.reserve(len(running), top + 1)
        positions = torch.tensor([r.position for r in running], device=self.device)
        masks = self.cache.decode_masks(positions, top)
        ids = torch.tensor([[r.last_token] for r in running], device=self.device)
        logits = self._forward(ids, positions[:, None], masks, 1)
        for request in running:
            request.position += 1
        self._advance(running, logits)

    def _forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        masks: dict[str, torch.Tensor],
        keep: int | torch.Tensor,
        **attention: Any,
    ) -> torch.Tensor:
        """Logits (a row per request) at the ``keep`` positions: the last of each row (1) or
        the given columns of a packed sequence. ``attention`` goes to the attention layers."""
        output = self.model(
            input_ids=ids,
            position_ids=positions,
            attention_mask=masks,
            cache=self.cache,
            use_cache=True,
            logits_to_keep=keep,
            **attention,
        )
        return finite_logits(output.logits.reshape(-1, output.logits.shape[-1]))

    def _advance(self, requests: list[BatchRequest], logits: torch.Tensor) -> None:
        """Choose each request's next token and hand it over."""
        tokens = choose_tokens(logits, [r.chooser for r in requests])
        entries = self._logprobs(requests, logits, tokens)
        for request, token, entry in zip(requests, tokens, entries, strict=True):
            request.generated += 1
            request.last_token = token
            try:
                stop = request.on_token(token, entry)
            except Exception as error:
                self._fail(request, error)
                continue
            if stop or request.generated >= request.max_tokens:
                request.done.set()

    def _logprobs(
        self, requests: list[BatchRequest], logits: torch.Tensor, tokens: list[int]
    ) -> list[TokenLogprob | None]:
        wanted = [i for i, r in enumerate(requests) if r.logprobs is not None]
        entries: list[TokenLogprob | None] = [None] * len(requests)
        if not wanted:
            return entries
        logprobs = logits[wanted].log_softmax(dim=-1)
        most = max(requests[i].logprobs or 0 for i in wanted)
        top_values, top_ids = logprobs.topk(max(most, 1), dim=-1)
        picked = torch.tensor([tokens[i] for i in wanted], device=logprobs.device)
        chosen = logprobs.gather(1, picked[:, None])[:, 0].tolist()
        for row, index in enumerate(wanted):
            count = requests[index].logprobs or 0
            top = tuple(
                TopLogprob(self.token_text(int(t)), int(t), float(v))
                for t, v in zip(
                    top_ids[row, :count].tolist(), top_values[row, :count].tolist(), strict=True
                )
            )
            token = tokens[index]
            entries[index] = TokenLogprob(self.token_text(token), token, float(chosen[row]), top)
        return entries

    def _leave_finished(self) -> None:
        """Drop finished and cancelled requests; the last row fills each gap."""
        keep: list[BatchRequest] = []
        for request in self._running:
            if request.cancel is not None and request.cancel.is_set():
                request.done.set()
            if not request.done.is_set():
                keep.append(request)
        if len(keep) == len(self._running):
            return
        # Compact the cache: each kept request moves to its new row if it changed.
        for target, request in enumerate(keep):
            source = self._running.index(request)
            if source != target:
                self.cache.move(source, target, request.position)
        self._running = keep

    def _fail(self, request: BatchRequest, error: BaseException) -> None:
        request.error = error
        request.done.set()
