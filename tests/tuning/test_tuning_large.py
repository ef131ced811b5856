"""A generated 100,000-line dataset: one pass, every finding on the right line, bounded memory."""

# ruff: noqa: S608 - the SQL strings are training answers, never run

import json
import tracemalloc
from pathlib import Path

from app.tuning.report import render_text
from app.tuning.validate import validate_file

LINES = 100_000


def write_large(path: Path) -> Path:
    with path.open("w") as out:
        for i in range(1, LINES + 1):
            if i == 77_777:
                out.write('{"input_text": "question: cut off\n')
                continue
            n = 5 if i == 99_999 else i  # line 99,999 repeats line 5
            record = {
                "input_text": f"question: what is the total of order {n}?\ncontext: orders",
                "output_text": f"SELECT total FROM orders WHERE id = {n};" + " pad" * (n % 100),
            }
            out.write(json.dumps(record) + "\n")
    return path


def test_large_file_one_pass_bounded_memory(tmp_path: Path) -> None:
    dataset = write_large(tmp_path / "large.jsonl")
    tracemalloc.start()
    try:
        report = validate_file(dataset)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    found = {(f.severity, f.rule, f.line) for f in report.findings}
    assert found == {
        ("error", "json", 77_777),
        ("warning", "duplicate", 99_999),
        ("error", "count", 0),  # 100,000 examples: more than 10,000
    }
    assert (report.lines, report.examples, report.invalid_examples) == (LINES, LINES, 1)
    outputs = report.stats["output_text tokens"].summary()
    assert outputs["count"] == LINES - 1
    assert outputs["max"] == 110  # "...id = 99899;" is 42 chars, + 99 * " pad": ceil(438 / 4)
    # Only 64-bit duplicate hashes grow with the file: about 10 MB for 100,000 lines here,
    # against the ~30 MB the file itself takes.
    print(f"peak {peak / 2**20:.1f} MiB")
    assert peak < 20 * 1024 * 1024, f"peak {peak / 2**20:.1f} MiB"
    assert "line 77777" in render_text(report)
