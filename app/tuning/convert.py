"""Converts text or chat tuning JSONL into Gemma chat-format or Gemini supervised-tuning JSONL."""

from __future__ import annotations

import codecs
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.tuning import rules
from app.tuning.rules import Finding
from app.tuning.validate import KEPT_PER_RULE, UnreadableDatasetError, open_dataset

# The user turn the fine-tuned Gemma 3 1B SQL model was tuned on.
SQL_INSTRUCTION = (
    "Given the <USER_QUERY> and the <SCHEMA>, generate the corresponding SQL command to "
    "retrieve the desired data, considering the query's syntax, semantics, and schema "
    "constraints."
)


def sql_user_turn(schema: str, question: str) -> str:
    """The SQL user turn, each part on its own line, exactly as the SQL model was tuned on."""
    return "\n".join(
        [
            SQL_INSTRUCTION,
            "",
            "<SCHEMA>",
            schema,
            "</SCHEMA>",
            "",
            "<USER_QUERY>",
            question,
            "</USER_QUERY>",
        ]
    )


def parse_sql(obj: dict[str, Any], line: int) -> rules.Example:
    """`{"schema", "question", "sql"}` (or `output_text` as the answer) for `convert --sql`."""
    found: list[Finding] = []
    schema = rules.nonempty_str(obj, "schema", line, "schema", found)
    question = rules.nonempty_str(obj, "question", line, "question", found)
    answer_field = "sql" if "sql" in obj or "output_text" not in obj else "output_text"
    if answer_field not in obj:
        found.append(
            Finding(
                "error", rules.RULE_FIELDS, line, "missing required field `sql` (or `output_text`)"
            )
        )
        answer = None
    else:
        answer = rules.nonempty_str(obj, answer_field, line, answer_field, found)
    # The inference app strips the schema it is sent; training prompts must match byte for byte.
    prompt = sql_user_turn((schema or "").strip(), question or "")
    return rules.Example(
        prompt=prompt,
        texts=[("user", prompt), ("model", answer or "")],
        key=(prompt, answer or ""),
        findings=found,
    )


def fold_context(texts: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Turns (context, user, model, ...) into (user, model, ...) with the context leading the
    first user turn, because Gemma's chat template has no system role."""
    context = "\n\n".join(t for kind, t in texts if kind == "context")
    turns = [(kind, t) for kind, t in texts if kind != "context"]
    if context and turns:
        turns[0] = (turns[0][0], f"{context}\n\n{turns[0][1]}")
    return turns


def to_gemma(texts: list[tuple[str, str]]) -> dict[str, Any]:
    return {"messages": [{"role": kind, "content": text} for kind, text in fold_context(texts)]}


def to_gemini(texts: list[tuple[str, str]]) -> dict[str, Any]:
    record: dict[str, Any] = {}
    context = "\n\n".join(t for kind, t in texts if kind == "context")
    if context:
        record["systemInstruction"] = {"role": "system", "parts": [{"text": context}]}
    record["contents"] = [
        {"role": kind, "parts": [{"text": text}]} for kind, text in texts if kind != "context"
    ]
    return record


WRITERS = {"gemma": to_gemma, "gemini-tuning": to_gemini}


@dataclass
class Conversion:
    """What `convert` did: examples written, or the source errors that stopped it."""

    source_format: str | None
    written: int = 0
    errors: int = 0
    findings: list[Finding] = field(default_factory=list)

    def add(self, finding: Finding) -> None:
        self.errors += 1
        if len(self.findings) < KEPT_PER_RULE:
            self.findings.append(finding)


def convert_file(
    source: Path | str, to: str, out: Path | str, *, sql: bool = False, fmt: str = "auto"
) -> Conversion:
    """Writes OUT only if every source line converts; otherwise leaves OUT untouched."""
    source, out = Path(source), Path(out)
    if to not in WRITERS:
        raise ValueError(f"--to must be one of {', '.join(WRITERS)}, got {to!r}")
    if out.exists() and source.exists() and out.samefile(source):
        raise UnreadableDatasetError(f"{out} is the input file; write the conversion to a new file")
    write = WRITERS[to]
    result = Conversion(source_format="sql" if sql else (None if fmt == "auto" else fmt))
    parse = parse_sql if sql else (None if fmt == "auto" else rules.PARSERS[fmt])
    with open_dataset(source) as stream:
        # A unique name next to OUT: the final rename stays on one filesystem (atomic), and
        # two conversions to the same OUT, or an input named like the temporary file, never
        # share it.
        handle, name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
        partial = Path(name)
        try:
            os.fchmod(handle, 0o666 & ~_umask())  # mkstemp's 0600 would surprise a training job
            with os.fdopen(handle, "w", encoding="utf-8") as sink:
                _convert_lines(stream, sink, parse, write, result)
            if result.errors:
                result.written = 0
            else:
                partial.replace(out)
        finally:
            partial.unlink(missing_ok=True)
    return result


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _convert_lines(
    stream: Any,
    sink: Any,
    parse: rules.Parser | None,
    write: Any,
    result: Conversion,
) -> None:
    for line, raw in enumerate(stream, 1):
        if not raw.strip():
            result.add(Finding("error", rules.RULE_JSON, line, rules.BLANK_LINE))
            continue
        obj, problem = rules.load_example(raw.removeprefix(codecs.BOM_UTF8) if line == 1 else raw)
        if obj is None:
            result.add(Finding("error", rules.RULE_JSON, line, problem))
            continue
        if parse is None:
            detected = rules.detect_format(obj)
            if detected is None:
                result.add(Finding("error", rules.RULE_FORMAT, line, rules.UNKNOWN_FORMAT))
                continue
            result.source_format = detected
            parse = rules.PARSERS[detected]
        example = parse(obj, line)
        errors = [f for f in example.findings if f.severity == "error"]
        for finding in errors:
            result.add(finding)
        if errors or result.errors:
            continue
        sink.write(json.dumps(write(example.texts), ensure_ascii=False) + "\n")
        result.written += 1
