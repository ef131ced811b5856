"""Token counting with a model's tokenizer (local or gs:// folder), or a documented estimate."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tokenizers import Tokenizer


class TokenizerError(Exception):
    """The tokenizer could not be loaded; the message says what to fix."""


class TokenCounter(Protocol):
    """Counts the tokens of one piece of text."""

    exact: bool
    description: str

    def count(self, text: str) -> int: ...

    def count_batch(self, texts: list[str]) -> list[int]: ...


class EstimatedTokens:
    """ceil(ASCII characters / 4) plus one token per non-ASCII character.

    Gemma's SentencePiece vocabulary averages about four characters per token on English
    and code, and CJK or emoji text takes about one token per character, so this errs on
    the side of reporting too many tokens rather than too few.
    """

    exact = False
    description = (
        "estimated: ceil(ASCII chars / 4) + 1 per non-ASCII char (use --tokenizer for exact counts)"
    )

    def count(self, text: str) -> int:
        if text.isascii():
            return math.ceil(len(text) / 4)
        wide = sum(1 for ch in text if ord(ch) > 127)
        return math.ceil((len(text) - wide) / 4) + wide

    def count_batch(self, texts: list[str]) -> list[int]:
        return [self.count(text) for text in texts]


class ModelTokens:
    """Counts with the tokenizer shipped in a model folder, without special tokens."""

    exact = True

    def __init__(self, model_uri: str, cache_dir: Path | None = None) -> None:
        # Imported here so validating without --tokenizer needs neither the inference app nor GCS.
        from app.inference.model_source import (  # noqa: PLC0415
            ModelSourceError,
            resolve_model_dir,
        )

        try:
            folder = resolve_model_dir(model_uri, cache_dir=cache_dir)
        except ModelSourceError as err:
            raise TokenizerError(str(err)) from err
        self.description = f"exact: tokenizer from {model_uri}"
        self._encode = _load(folder, model_uri)

    def count(self, text: str) -> int:
        return self._encode([text])[0]

    def count_batch(self, texts: list[str]) -> list[int]:
        return self._encode(texts) if texts else []


def _load(folder: Path, model_uri: str) -> Callable[[list[str]], list[int]]:
    tokenizer_json = folder / "tokenizer.json"
    if tokenizer_json.is_file():
        try:
            fast = Tokenizer.from_file(str(tokenizer_json))
        except Exception as err:
            raise TokenizerError(f"{model_uri}: tokenizer.json could not be read: {err}") from err
        return lambda texts: [
            len(e.ids) for e in fast.encode_batch(texts, add_special_tokens=False)
        ]
    if (folder / "tokenizer_config.json").is_file() or (folder / "tokenizer.model").is_file():
        # transformers takes seconds to import; only slow-tokenizer folders need it.
        from transformers import AutoTokenizer  # noqa: PLC0415

        try:
            slow = AutoTokenizer.from_pretrained(str(folder))
        except Exception as err:
            raise TokenizerError(f"{model_uri}: the tokenizer could not be loaded: {err}") from err
        return lambda texts: [
            len(ids) for ids in slow(texts, add_special_tokens=False)["input_ids"]
        ]
    raise TokenizerError(
        f"{model_uri} has no tokenizer.json or tokenizer_config.json; point --tokenizer at the "
        "model folder that holds the tokenizer files (the merged model folder), or leave "
        "--tokenizer out to use the estimate"
    )
