"""Dataset formats, documented limits and the per-example checks for supervised-tuning JSONL."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

Severity = Literal["error", "warning"]

# Vertex AI's documented limits for text and chat model tuning datasets.
MAX_INPUT_TEXT_TOKENS = 8_192
MAX_OUTPUT_TEXT_TOKENS = 1_024
MAX_CHAT_EXAMPLE_TOKENS = 8_192
MAX_ASSISTANT_TOKENS = 1_024
MIN_EXAMPLES = 10
RECOMMENDED_EXAMPLES = (100, 500)
MAX_EXAMPLES = 10_000
EVAL_EXAMPLES = (10, 250)
MAX_CHAT_AUTHOR_FIELDS = 10_000

# Source formats users bring, and the two formats `convert` writes.
SOURCE_FORMATS = ("text", "chat")
OUTPUT_FORMATS = ("gemma", "gemini-tuning")
FORMATS = (*SOURCE_FORMATS, *OUTPUT_FORMATS)

# Rule ids, as they appear in reports and in --json output.
RULE_JSON = "json"
RULE_FIELDS = "fields"
RULE_EMPTY = "empty"
RULE_TURNS = "turns"
RULE_TOKENS = "tokens"
RULE_COUNT = "count"
RULE_AUTHOR_TOTAL = "author-total"
RULE_DUPLICATE = "duplicate"
RULE_MARKERS = "markers"
RULE_FORMAT = "format"

RULES: dict[str, str] = {
    RULE_JSON: "each line is one valid JSON object",
    RULE_FIELDS: "required fields are present and of the right type",
    RULE_EMPTY: "no empty (or whitespace-only) strings",
    RULE_TURNS: "turns alternate user/assistant, start with user and end with assistant",
    RULE_TOKENS: "per-field and per-example token limits",
    RULE_COUNT: "example count: at least 10, 100-500 recommended, at most 10,000 (eval: 10-250)",
    RULE_AUTHOR_TOTAL: "at most 10,000 author fields across a chat dataset",
    RULE_DUPLICATE: "no duplicate examples",
    RULE_MARKERS: "prompt markers (such as `question:`) used in every example or in none",
    RULE_FORMAT: "the file has one recognised format",
}

# A marker opens a line: `question:` style labels, or `<SCHEMA>` style tags like the SQL user turn.
_LABEL = re.compile(r"^[ \t]*([A-Za-z][A-Za-z0-9_ -]{0,24}):(?!//)", re.MULTILINE)
_TAG = re.compile(r"<([A-Z][A-Z0-9_]{1,30})>")


def prompt_markers(prompt: str) -> frozenset[str]:
    """The markers a prompt uses, such as `question:` or `<SCHEMA>`."""
    labels = {f"{m.strip()}:" for m in _LABEL.findall(prompt)}
    tags = {f"<{t}>" for t in _TAG.findall(prompt)}
    return frozenset(labels | tags)


@dataclass(frozen=True)
class Finding:
    """One problem: which rule, how serious, and where (line 0 means the whole file)."""

    severity: Severity
    rule: str
    line: int
    message: str


@dataclass
class Example:
    """What the dataset-wide checks need from one valid line, in a format-neutral shape."""

    prompt: str  # the text markers are looked for in (input_text or first user turn)
    texts: list[tuple[str, str]]  # (kind, text) with kind "context", "user" or "model"
    key: tuple[str, ...]  # the content that makes two examples the same
    author_fields: int = 0
    findings: list[Finding] = field(default_factory=list)


Parser = Callable[[dict[str, Any], int], Example]


def nonempty_str(
    obj: dict[str, Any], name: str, line: int, where: str, out: list[Finding]
) -> str | None:
    if name not in obj:
        out.append(Finding("error", RULE_FIELDS, line, f"missing required field `{where}`"))
        return None
    value = obj[name]
    if not isinstance(value, str):
        out.append(
            Finding(
                "error",
                RULE_FIELDS,
                line,
                f"`{where}` must be a string, got {json_type(value)}",
            )
        )
        return None
    if not value.strip():
        out.append(Finding("error", RULE_EMPTY, line, f"`{where}` is empty"))
        return None
    try:
        value.encode()
    except UnicodeEncodeError as err:
        # JSON allows "\ud800" escapes that no UTF-8 reader or tokenizer accepts.
        out.append(
            Finding(
                "error",
                RULE_FIELDS,
                line,
                f"`{where}` has an unpaired surrogate escape (\\u{ord(value[err.start]):04x}) "
                f"at character {err.start + 1}, which is not Unicode text; fix the text that "
                "wrote it (often a string cut in the middle of an emoji)",
            )
        )
        return None
    return value


def json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def parse_text(obj: dict[str, Any], line: int) -> Example:
    """`{"input_text", "output_text"}`; other fields are ignored, as Vertex AI does."""
    found: list[Finding] = []
    prompt = nonempty_str(obj, "input_text", line, "input_text", found)
    answer = nonempty_str(obj, "output_text", line, "output_text", found)
    return Example(
        prompt=prompt or "",
        texts=[("user", prompt or ""), ("model", answer or "")],
        key=(prompt or "", answer or ""),
        findings=found,
    )


def _turns(
    turns: object,
    line: int,
    *,
    list_name: str,
    role_key: str,
    roles: tuple[str, str],
    read_text: Callable[[dict[str, Any], str, list[Finding]], str | None],
    found: list[Finding],
    system_hint: str,
) -> list[tuple[str, str]]:
    """Checks a list of turns and returns (user|model, text) pairs; `roles` names user, model.

    `system_hint` says where this format keeps a system prompt, for turns that claim that role.
    """
    if not isinstance(turns, list):
        found.append(
            Finding(
                "error",
                RULE_FIELDS,
                line,
                f"`{list_name}` must be an array, got {json_type(turns)}",
            )
        )
        return []
    if not turns:
        found.append(Finding("error", RULE_EMPTY, line, f"`{list_name}` is empty"))
        return []
    out: list[tuple[str, str]] = []
    expected = roles[0]
    for i, turn in enumerate(turns):
        where = f"{list_name}[{i}]"
        if not isinstance(turn, dict):
            found.append(
                Finding(
                    "error",
                    RULE_FIELDS,
                    line,
                    f"`{where}` must be an object, got {json_type(turn)}",
                )
            )
            continue
        role = turn.get(role_key)
        if role not in roles:
            hint = ""
            if role == "system":
                hint = f"; {system_hint}"
            elif role in {"assistant", "model"}:
                hint = f"; this format calls the answering turn {roles[1]!r}"
            found.append(
                Finding(
                    "error",
                    RULE_FIELDS,
                    line,
                    f"`{where}.{role_key}` must be {roles[0]!r} or {roles[1]!r}, got {role!r}"
                    + hint,
                )
            )
            continue
        if role != expected:
            found.append(
                Finding(
                    "error",
                    RULE_TURNS,
                    line,
                    f"`{where}` is a turn by {role!r} where one by {expected!r} was expected "
                    f"({roles[0]} and {roles[1]} must alternate, starting with {roles[0]})",
                )
            )
        expected = roles[1] if role == roles[0] else roles[0]
        text = read_text(turn, where, found)
        out.append(("user" if role == roles[0] else "model", text or ""))
    last = turns[-1]
    if isinstance(last, dict) and last.get(role_key) == roles[0]:
        found.append(
            Finding(
                "error",
                RULE_TURNS,
                line,
                f"the last turn is by {roles[0]!r}; an example must end with a turn by "
                f"{roles[1]!r} (the answer to learn): add it or drop the trailing turn",
            )
        )
    return out


def _content_reader(
    field_name: str, line: int
) -> Callable[[dict[str, Any], str, list[Finding]], str | None]:
    def read(turn: dict[str, Any], where: str, found: list[Finding]) -> str | None:
        return nonempty_str(turn, field_name, line, f"{where}.{field_name}", found)

    return read


def _parts_reader(line: int) -> Callable[[dict[str, Any], str, list[Finding]], str | None]:
    def read(turn: dict[str, Any], where: str, found: list[Finding]) -> str | None:
        parts = turn.get("parts")
        if not isinstance(parts, list) or not parts:
            if parts is None:
                kind = "nothing"
            elif parts == []:
                kind = "an empty array"
            else:
                kind = json_type(parts)
            found.append(
                Finding(
                    "error",
                    RULE_FIELDS,
                    line,
                    f'`{where}.parts` must be a non-empty array of {{"text": ...}}, got {kind}',
                )
            )
            return None
        texts = []
        for j, part in enumerate(parts):
            if not isinstance(part, dict):
                found.append(
                    Finding("error", RULE_FIELDS, line, f"`{where}.parts[{j}]` must be an object")
                )
                continue
            text = nonempty_str(part, "text", line, f"{where}.parts[{j}].text", found)
            if text is not None:
                texts.append(text)
        return "".join(texts) if texts else None

    return read


def parse_chat(obj: dict[str, Any], line: int) -> Example:
    """`{"context"?, "messages": [{"author": "user"|"assistant", "content"}]}`."""
    found: list[Finding] = []
    texts: list[tuple[str, str]] = []
    if "context" in obj:
        context = nonempty_str(obj, "context", line, "context", found)
        texts.append(("context", context or ""))
    messages = obj.get("messages")
    if messages is None:
        found.append(Finding("error", RULE_FIELDS, line, "missing required field `messages`"))
        turns: list[tuple[str, str]] = []
    else:
        read = _content_reader("content", line)
        turns = _turns(
            messages,
            line,
            list_name="messages",
            role_key="author",
            roles=("user", "assistant"),
            read_text=read,
            found=found,
            system_hint="put a system prompt in the example's `context` field instead",
        )
    texts.extend(turns)
    first_user = next((t for k, t in turns if k == "user"), "")
    authors = 0
    if isinstance(messages, list):
        authors = sum(1 for m in messages if isinstance(m, dict) and "author" in m)
    return Example(
        prompt=first_user,
        texts=texts,
        key=tuple(f"{k}\x1f{t}" for k, t in texts),
        author_fields=authors,
        findings=found,
    )


def parse_gemma(obj: dict[str, Any], line: int) -> Example:
    """`{"messages": [{"role": "user"|"model", "content"}]}`, as `convert --to gemma` writes."""
    found: list[Finding] = []
    if "messages" not in obj:
        found.append(Finding("error", RULE_FIELDS, line, "missing required field `messages`"))
        turns: list[tuple[str, str]] = []
    else:
        turns = _turns(
            obj["messages"],
            line,
            list_name="messages",
            role_key="role",
            roles=("user", "model"),
            read_text=_content_reader("content", line),
            found=found,
            system_hint="Gemma has no system role: put it at the start of the first user turn",
        )
    first_user = next((t for k, t in turns if k == "user"), "")
    return Example(
        prompt=first_user,
        texts=turns,
        key=tuple(f"{k}\x1f{t}" for k, t in turns),
        findings=found,
    )


def parse_gemini(obj: dict[str, Any], line: int) -> Example:
    """`{"systemInstruction"?: {"parts"}, "contents": [{"role": "user"|"model", "parts"}]}`."""
    found: list[Finding] = []
    texts: list[tuple[str, str]] = []
    if "systemInstruction" in obj:
        system = obj["systemInstruction"]
        if not isinstance(system, dict):
            found.append(
                Finding(
                    "error",
                    RULE_FIELDS,
                    line,
                    f"`systemInstruction` must be an object, got {json_type(system)}",
                )
            )
        else:
            text = _parts_reader(line)(system, "systemInstruction", found)
            texts.append(("context", text or ""))
    if "contents" not in obj:
        found.append(Finding("error", RULE_FIELDS, line, "missing required field `contents`"))
        turns: list[tuple[str, str]] = []
    else:
        turns = _turns(
            obj["contents"],
            line,
            list_name="contents",
            role_key="role",
            roles=("user", "model"),
            read_text=_parts_reader(line),
            found=found,
            system_hint="put a system prompt in `systemInstruction` instead",
        )
    texts.extend(turns)
    first_user = next((t for k, t in turns if k == "user"), "")
    return Example(
        prompt=first_user,
        texts=texts,
        key=tuple(f"{k}\x1f{t}" for k, t in texts),
        findings=found,
    )


PARSERS: dict[str, Parser] = {
    "text": parse_text,
    "chat": parse_chat,
    "gemma": parse_gemma,
    "gemini-tuning": parse_gemini,
}


BLANK_LINE = "blank line; JSONL needs exactly one example per line"
UNKNOWN_FORMAT = (
    "cannot tell the format: expected `input_text`/`output_text` (text), `messages` with "
    "`author` (chat), `messages` with `role` (gemma) or `contents` (gemini-tuning)"
)


def load_example(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    """Parses one JSONL line into an object, or returns None and what is wrong with it."""
    try:
        # Decoded here: json.loads(bytes) would guess UTF-16 or UTF-32 from the first bytes.
        text = raw.decode()
    except UnicodeDecodeError as err:
        return None, (
            f"not UTF-8 text (byte 0x{raw[err.start]:02x} at byte {err.start + 1}); "
            "save the file as UTF-8"
        )
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        hint = ""
        if text.strip() in {"[", "{"}:
            hint = (
                "; this looks like pretty-printed JSON, but JSONL needs each example as one "
                "JSON object on a single line"
            )
        return None, f"not valid JSON: {err.msg} at column {err.pos + 1}{hint}"
    if isinstance(obj, list):
        return None, (
            "each line must be a JSON object, got array; if the file is one JSON array of "
            "examples, write each element on its own line instead"
        )
    if not isinstance(obj, dict):
        return None, f"each line must be a JSON object, got {json_type(obj)}"
    return obj, ""


def detect_format(obj: dict[str, Any]) -> str | None:
    """Guesses the format from one example's fields; None when no format fits."""
    if "input_text" in obj or "output_text" in obj:
        return "text"
    if "contents" in obj or "systemInstruction" in obj:
        return "gemini-tuning"
    messages = obj.get("messages")
    if isinstance(messages, list):
        first = next((m for m in messages if isinstance(m, dict)), {})
        if "role" in first:
            return "gemma"
        return "chat"
    if "context" in obj:
        return "chat"
    return None
