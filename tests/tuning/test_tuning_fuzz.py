"""Any JSON on any line gives findings, never a crash, in every format, and convert agrees."""

import json
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.tuning.convert import convert_file
from app.tuning.validate import validate_file

KEYS = [
    "input_text",
    "output_text",
    "context",
    "messages",
    "author",
    "role",
    "content",
    "contents",
    "parts",
    "text",
    "systemInstruction",
    "schema",
    "question",
    "sql",
]
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    # "\ud800": JSON may escape a lone surrogate, which is not Unicode text.
    | st.sampled_from(["", " ", "user", "assistant", "model", "question: q", "x", "\ud800"]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=12,
)
LINES = st.lists(VALUES.map(json.dumps) | st.sampled_from(["", "{", "[]", "\ufeff{}"]), max_size=12)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=LINES, fmt=st.sampled_from(["auto", "text", "chat", "gemma", "gemini-tuning"]))
def test_never_crashes(lines: list[str], fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset = Path(tmp) / "d.jsonl"
        dataset.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        report = validate_file(dataset, fmt)
        assert report.exit_code in {0, 1, 2}
        assert all(0 <= f.line <= len(lines) for f in report.findings)
        for to in ("gemma", "gemini-tuning"):
            result = convert_file(dataset, to, Path(tmp) / "out.jsonl", fmt=fmt)
            # A file that validate finds line errors in never converts.
            line_errors = any(f.severity == "error" and f.line for f in report.findings)
            if line_errors:
                assert result.errors
                assert not (Path(tmp) / "out.jsonl").exists()
            if result.written:
                assert validate_file(Path(tmp) / "out.jsonl", to).errors <= report.errors
