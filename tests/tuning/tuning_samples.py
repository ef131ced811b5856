"""Tuning-dataset test data: Vertex AI's example shapes and a JSONL writer (unique module name)."""

# ruff: noqa: S608 - the SQL strings are training answers, never run

import json
from collections.abc import Iterable
from pathlib import Path


def text_example(i: int) -> dict[str, str]:
    """Vertex AI's text format, with the `question:`/`context:` markers production prompts use."""
    return {
        "input_text": f"question: how many orders did customer {i} place?\ncontext: table orders",
        "output_text": f"SELECT COUNT(*) FROM orders WHERE customer_id = {i};",
    }


def chat_example(i: int) -> dict[str, object]:
    """Vertex AI's chat format: optional context and alternating user/assistant messages."""
    return {
        "context": "You are a SQL assistant for the sales database.",
        "messages": [
            {"author": "user", "content": f"How many orders did customer {i} place?"},
            {"author": "assistant", "content": f"SELECT COUNT(*) FROM orders WHERE id = {i};"},
            {"author": "user", "content": "And their total spend?"},
            {"author": "assistant", "content": f"SELECT SUM(total) FROM orders WHERE id = {i};"},
        ],
    }


def write_lines(path: Path, lines: Iterable[object]) -> Path:
    """Writes one line per item: dicts and lists as JSON, str and bytes as they are."""
    with path.open("wb") as out:
        for item in lines:
            if isinstance(item, bytes):
                out.write(item)
            elif isinstance(item, str):
                out.write(item.encode())
            else:
                out.write(json.dumps(item).encode())
            out.write(b"\n")
    return path
