"""Turns a tuning dataset into token ids for training, after `app.tuning` has found no errors.

Every format `app.tuning validate` knows is read with its own parser, folded into Gemma's
user/model turns, and rendered with the base model's chat template, exactly the text the
inference app renders at serving time. Only the model's turns are trained on: the labels of
the template's markup and of user turns are -100.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.finetune.errors import FineTuneError
from app.tuning import rules
from app.tuning.convert import fold_context
from app.tuning.report import render_text
from app.tuning.validate import UnreadableDatasetError, open_dataset, validate_file

IGNORE = -100
ROLE_NAMES = {"user": "user", "model": "assistant"}


@dataclass(frozen=True)
class Conversation:
    """One example as chat messages (roles user/assistant), the last one the model's."""

    messages: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class TokenizedExample:
    input_ids: list[int]
    labels: list[int]


def load_conversations(path: Path, fmt: str = "auto") -> list[Conversation]:
    """Validate ``path`` as `app.tuning validate` does, then read it; errors stop here."""
    try:
        report = validate_file(path, fmt)
    except UnreadableDatasetError as error:
        raise FineTuneError(str(error)) from error
    if report.errors:
        raise FineTuneError(
            f"{path}: the dataset has errors, so no training started. Fix them and check again "
            f"with `python -m app.tuning validate {path.name}`:\n{render_text(report)}"
        )
    parse = rules.PARSERS[report.format] if report.format else None
    conversations: list[Conversation] = []
    with open_dataset(path) as stream:
        for line, raw in enumerate(stream, 1):
            obj, _problem = rules.load_example(
                raw.removeprefix(codecs.BOM_UTF8) if line == 1 else raw
            )
            if obj is None:
                continue
            if parse is None:
                parse = rules.PARSERS[rules.detect_format(obj) or "text"]
            turns = fold_context(parse(obj, line).texts)
            while turns and turns[-1][0] != "model":
                turns.pop()  # a trailing user turn has no answer to learn
            if turns:
                conversations.append(
                    Conversation(
                        tuple({"role": ROLE_NAMES[kind], "content": text} for kind, text in turns)
                    )
                )
    if not conversations:
        raise FineTuneError(f"{path}: no example ends with a model answer; nothing to train on.")
    return conversations


def tokenize(
    conversation: Conversation, tokenizer: Any, max_length: int
) -> TokenizedExample | None:
    """Token ids of the whole conversation, labels only on the model's turns; None if too long."""
    messages = list(conversation.messages)
    ids: list[int] = []
    labels: list[int] = []
    rendered = ""
    for index, message in enumerate(messages):
        if message["role"] == "assistant":
            prompt = _render(tokenizer, messages[:index], generation_prompt=True)
            _extend(ids, labels, tokenizer, _suffix(prompt, rendered), train=False)
            rendered = prompt
        text = _render(tokenizer, messages[: index + 1], generation_prompt=False)
        _extend(
            ids, labels, tokenizer, _suffix(text, rendered), train=message["role"] == "assistant"
        )
        rendered = text
    if len(ids) > max_length:
        return None
    return TokenizedExample(input_ids=ids, labels=labels)


def _render(tokenizer: Any, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    if not messages:
        return ""
    return str(
        tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
    )


def _suffix(text: str, rendered: str) -> str:
    if not text.startswith(rendered):
        raise FineTuneError(
            "the base model's chat template renders a conversation differently from its "
            "first turns, so the model's turns cannot be told apart; use a Gemma 3 "
            "instruction-tuned (-it) base model, whose template does not"
        )
    return text[len(rendered) :]


def _extend(ids: list[int], labels: list[int], tokenizer: Any, text: str, *, train: bool) -> None:
    if not text:
        return
    new = list(tokenizer(text, add_special_tokens=False)["input_ids"])
    ids.extend(new)
    if not train:
        labels.extend([IGNORE] * len(new))
        return
    # Learn the answer and the end of its turn; the newline after <end_of_turn> is markup.
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    trained = list(new)
    if end in trained:
        cut = trained.index(end) + 1
        trained = trained[:cut] + [IGNORE] * (len(trained) - cut)
    labels.extend(trained)


def tokenize_all(
    conversations: list[Conversation], tokenizer: Any, max_length: int
) -> list[TokenizedExample]:
    examples = [tokenize(c, tokenizer, max_length) for c in conversations]
    kept = [e for e in examples if e is not None]
    if not kept:
        raise FineTuneError(
            f"every example is longer than --max-seq-length {max_length} tokens; raise it."
        )
    return kept
