"""Engine backed by transformers: chat template prompts, stop at end of turn, token streaming."""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import jinja2
import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
)
from transformers.generation.streamers import BaseStreamer

from app.inference.engine import Completion, Engine, PromptError, SamplingParams

logger = logging.getLogger(__name__)

# Tokens that end the model's turn. A new <start_of_turn> means the model is writing the
# user's next turn (replies that run on past the model's turn), so it stops generation too.
TURN_STOP_TOKENS = ("<end_of_turn>", "<start_of_turn>", "<eos>", "<|im_end|>", "<|eot_id|>")


# Cloud Run and GKE expose an attached GPU as this device file.
NVIDIA_DEVICE = Path("/dev/nvidia0")


def pick_device_and_dtype(dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """bf16 on a GPU, float32 on CPU, unless ``dtype`` says otherwise."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cuda = torch.cuda.is_available()
    if not cuda and NVIDIA_DEVICE.exists():
        # Running on CPU next to a paid-for GPU is slow and silent; say why and stop instead.
        reason = "; ".join(str(w.message).strip().splitlines()[0] for w in caught) or (
            "torch.cuda.is_available() is False"
        )
        raise RuntimeError(
            f"an NVIDIA GPU is attached ({NVIDIA_DEVICE}) but torch {torch.__version__} "
            f"(CUDA {torch.version.cuda}) cannot use it: {reason}. The NVIDIA driver is "
            "probably older than this torch build needs: install a torch wheel built for the "
            "driver's CUDA version (nvidia-smi shows it) in the image."
        )
    device = torch.device("cuda" if cuda else "cpu")
    if dtype == "auto":
        return device, torch.bfloat16 if device.type == "cuda" else torch.float32
    return device, getattr(torch, dtype)


class _TextStreamer(BaseStreamer):
    """Incremental detokenizer: turns new token ids into text, holding back partial characters
    and anything that might be the start of a stop string."""

    def __init__(
        self,
        tokenizer: Any,
        stop_ids: set[int],
        stop_strings: tuple[str, ...],
        on_text: Callable[[str], None] | None,
    ) -> None:
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.stop_strings = stop_strings
        self.on_text = on_text
        self.ids: list[int] = []
        self.generated = 0
        self.prompt_seen = False
        self.prefix_offset = 0
        self.read_offset = 0
        self.text = ""  # decoded text of ``ids``
        self.sent = 0  # characters of ``text`` already handed to ``on_text``
        self.hit_stop = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:  # generate() first hands over the prompt
            self.prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            if self.hit_stop:
                return
            self.generated += 1
            if token in self.stop_ids:
                self.hit_stop = True
                return
            self.ids.append(int(token))
            self._decode_new()

    def _decode_new(self) -> None:
        prefix = self.tokenizer.decode(
            self.ids[self.prefix_offset : self.read_offset], skip_special_tokens=True
        )
        full = self.tokenizer.decode(self.ids[self.prefix_offset :], skip_special_tokens=True)
        # A trailing U+FFFD is usually a character split across tokens: wait for the rest,
        # but only as long as a UTF-8 character can be (4 bytes), else it is really invalid.
        incomplete = full.endswith("\ufffd") and len(self.ids) - self.read_offset < 4
        if len(full) > len(prefix) and not incomplete:
            self.text += full[len(prefix) :]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
        self._emit(final=False)

    def _emit(self, *, final: bool) -> None:
        ready = len(self.text)
        for stop in self.stop_strings:
            index = self.text.find(stop)
            if index != -1:
                self.text = self.text[:index]
                self.hit_stop = True
                ready = len(self.text)
                break
        if not self.hit_stop and not final:
            # Hold back a suffix that could grow into a stop string.
            for stop in self.stop_strings:
                for size in range(min(len(stop) - 1, len(self.text)), 0, -1):
                    if self.text.endswith(stop[:size]):
                        ready = min(ready, len(self.text) - size)
                        break
        if ready > self.sent:
            piece = self.text[self.sent : ready]
            self.sent = ready
            if self.on_text is not None:
                self.on_text(piece)

    def end(self) -> None:
        self._emit(final=True)


class _StopWhen(StoppingCriteria):
    def __init__(self, streamer: _TextStreamer, cancel: threading.Event | None) -> None:
        self.streamer = streamer
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs: Any) -> Any:
        stop = self.streamer.hit_stop or (self.cancel is not None and self.cancel.is_set())
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _FiniteLogits(LogitsProcessor):
    """Temperature scaling that can neither overflow nor spread NaN into the sampler.

    transformers divides the raw logits by the temperature, so a tiny temperature or an inf
    logit turns them into inf and NaN, and sampling then fails. Here a NaN logit never wins,
    +inf logits share the choice among themselves, and the logits are shifted to a maximum of
    0 before the division, so every result stays in [-inf, 0].
    """

    def __init__(self, temperature: float | None) -> None:
        self.temperature = temperature  # None: greedy, no scaling

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> Any:
        logits = torch.nan_to_num(scores.float(), nan=-torch.inf, posinf=torch.inf)
        infinite = torch.isposinf(logits)
        rows = infinite.any(dim=-1, keepdim=True)
        logits = torch.where(rows, torch.where(infinite, 0.0, -torch.inf), logits)
        best = logits.max(dim=-1, keepdim=True).values
        if not bool(torch.isfinite(best).all()):
            raise RuntimeError(
                "the model produced no finite logit (all NaN or -inf): its weights are broken; "
                "re-export the merged model"
            )
        if self.temperature is None:
            return logits
        return (logits - best) / self.temperature


class TransformersEngine(Engine):
    """Loads a merged model folder with transformers and generates one request per call."""

    def __init__(
        self,
        model_dir: Path,
        model_name: str,
        max_model_len: int | None = None,
        dtype: str = "auto",
        attention: str = "auto",
    ) -> None:
        started = time.monotonic()
        self.model_name = model_name
        self.device, self.dtype = pick_device_and_dtype(dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if attention == "auto":
            # On CPU, eager attention decoded the tiny test model 4.5x faster than SDPA and
            # matched it on the 270M shape; GPUs want SDPA.
            attention = "sdpa" if self.device.type == "cuda" else "eager"
        self.model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=self.dtype, attn_implementation=attention
        )
        # As a Module: PreTrainedModel.to's functools.wraps hides its signature from mypy.
        module: torch.nn.Module = self.model
        module.to(self.device).eval()
        config = self.model.config
        text_config = getattr(config, "text_config", None) or config
        limit = int(getattr(text_config, "max_position_embeddings", 0) or 8192)
        if max_model_len and max_model_len > limit:
            logger.warning(
                "MAX_MODEL_LEN=%d is above the model's %d positions; using %d",
                max_model_len,
                limit,
                limit,
            )
        self.max_model_len = min(max_model_len or limit, limit)
        # Typed as a Module; a causal LM's input embeddings are an nn.Embedding.
        embeddings = cast(torch.nn.Embedding, self.model.get_input_embeddings())
        self.vocab_size = int(embeddings.num_embeddings)
        self.stop_ids = self._stop_token_ids()
        defaults = self.model.generation_config
        self.default_top_k = getattr(defaults, "top_k", None)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = next(iter(self.stop_ids))
        if not getattr(self.tokenizer, "chat_template", None):
            logger.warning("the tokenizer has no chat template; chat requests will be rejected")
        logger.info(
            "model: loaded %s on %s (%s) in %.1f s; context %d tokens; stop ids %s",
            model_name,
            self.device,
            str(self.dtype).removeprefix("torch."),
            time.monotonic() - started,
            self.max_model_len,
            sorted(self.stop_ids),
        )

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = self.model.generation_config.eos_token_id
        if isinstance(eos, int):
            ids.add(eos)
        elif eos:
            ids.update(int(i) for i in eos)
        if self.tokenizer.eos_token_id is not None:
            ids.add(int(self.tokenizer.eos_token_id))
        vocab = self.tokenizer.get_vocab()
        ids.update(vocab[token] for token in TURN_STOP_TOKENS if token in vocab)
        return ids

    def render_chat(self, messages: list[dict[str, Any]]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise PromptError(
                f"model {self.model_name} has no chat template; use /v1/completions with a "
                "raw prompt, or save the tokenizer with its chat template."
            )
        try:
            return str(
                self.tokenizer.apply_chat_template(
                    messages, tokenize=False, add_generation_prompt=True
                )
            )
        except jinja2.TemplateError as error:
            raise PromptError(f"the chat template rejected these messages: {error}") from error

    def _top_k(self, requested: int | None) -> int:
        # None means the model's default; 0 means no top-k cut, as in vLLM and Gemini.
        return int(self.default_top_k or 0) if requested is None else requested

    def encode(self, prompt: str, *, chat: bool) -> list[int]:
        return list(self.tokenizer.encode(prompt, add_special_tokens=not chat))

    @torch.inference_mode()
    def generate(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> Completion:
        self.check_length(len(prompt_ids), params.max_tokens)
        streamer = _TextStreamer(self.tokenizer, self.stop_ids, params.stop, on_text)
        greedy = params.greedy
        config = GenerationConfig(
            max_new_tokens=params.max_tokens,
            do_sample=not greedy,
            # _FiniteLogits applies the temperature: transformers' own division overflows.
            temperature=None,
            top_p=None if greedy else params.top_p,
            top_k=None if greedy else self._top_k(params.top_k),
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
        )
        if params.seed is not None:
            # Any integer a client sends is a valid seed; torch only takes 64 bits.
            torch.manual_seed(params.seed % 2**64)
        input_ids = torch.tensor([prompt_ids], device=self.device)
        self.model.generate(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            generation_config=config,
            streamer=streamer,
            logits_processor=LogitsProcessorList(
                [_FiniteLogits(None if greedy else params.temperature)]
            ),
            stopping_criteria=StoppingCriteriaList([_StopWhen(streamer, cancel)]),
        )
        finish = "stop" if streamer.hit_stop else "length"
        return Completion(
            text=streamer.text,
            prompt_tokens=len(prompt_ids),
            completion_tokens=streamer.generated,
            finish_reason=finish,
        )
