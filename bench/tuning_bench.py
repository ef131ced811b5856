"""Benchmark `validate` on generated 100,000-line text and chat datasets: speed and peak memory.

    .venv/bin/python bench/tuning_bench.py [--lines N] [--tokenizer]

Each measurement runs in a fresh child process so RSS is the validation's own: `RSS growth` is
the peak resident size minus the size right after imports. tracemalloc's peak is measured in a
separate run because tracing slows Python down about twofold. Timings are the best of
`--repeat` runs, since the machine may be shared.
"""

# ruff: noqa: S608 - the SQL strings are training answers, never run

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.tuning.tokens import EstimatedTokens, ModelTokens, TokenCounter  # noqa: E402
from app.tuning.validate import validate_file  # noqa: E402


def write_text(path: Path, lines: int) -> Path:
    with path.open("w") as out:
        for i in range(lines):
            record = {
                "input_text": f"question: what did customer {i} order last month?\n"
                f"context: orders(id, customer_id, total, created_at) row {i % 97}",
                "output_text": f"SELECT * FROM orders WHERE customer_id = {i} "
                "AND created_at >= date_trunc('month', now()) - interval '1 month';",
            }
            out.write(json.dumps(record) + "\n")
    return path


def write_chat(path: Path, lines: int) -> Path:
    with path.open("w") as out:
        for i in range(lines):
            record = {
                "context": "You are a helpful SQL assistant for the sales database.",
                "messages": [
                    {"author": "user", "content": f"How many orders did customer {i} place?"},
                    {"author": "assistant", "content": f"SELECT COUNT(*) FROM orders WHERE c={i};"},
                    {"author": "user", "content": "And the total they spent?"},
                    {
                        "author": "assistant",
                        "content": f"SELECT SUM(total) FROM orders WHERE c={i};",
                    },
                ],
            }
            out.write(json.dumps(record) + "\n")
    return path


def _rss_kib(field: str) -> int:
    """VmRSS or VmHWM of this process; unlike ru_maxrss, the high-water mark is not inherited
    from the parent across fork and exec."""
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith(field + ":"):
            return int(row.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(dataset: str, tokenizer: str | None, trace: bool) -> None:
    """Validates once and prints seconds, tracemalloc peak and RSS numbers as JSON."""
    counter: TokenCounter = ModelTokens(tokenizer) if tokenizer else EstimatedTokens()
    base_kb = _rss_kib("VmRSS")
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    report = validate_file(dataset, counter=counter)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] if trace else 0
    max_kb = _rss_kib("VmHWM")
    print(
        json.dumps(
            {
                "seconds": seconds,
                "lines": report.lines,
                "trace_peak": peak,
                "rss_peak": max_kb * 1024,
                "rss_growth": (max_kb - base_kb) * 1024,
            }
        )
    )


def measure(dataset: Path, tokenizer: str | None, trace: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", str(dataset)]
    if tokenizer:
        cmd += ["--child-tokenizer", tokenizer]
    if trace:
        cmd.append("--trace")
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--tokenizer", action="store_true", help="add a tiny-model tokenizer row")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row; best is shown")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-tokenizer", help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.child_tokenizer, args.trace)
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows: list[tuple[str, Path, str | None]] = [
            ("text", write_text(folder / "text.jsonl", args.lines), None),
            ("chat", write_chat(folder / "chat.jsonl", args.lines), None),
        ]
        if args.tokenizer:
            from devtools.tiny_model import build_tiny_gemma3  # noqa: PLC0415

            model = build_tiny_gemma3(folder / "tiny-model")
            rows.append(("text, exact tokenizer", rows[0][1], str(model)))
        mib = 1024 * 1024
        print(
            f"| dataset | lines | file MiB | seconds | lines/s | tracemalloc peak MiB "
            f"| RSS peak MiB | RSS growth MiB |\n|{'---|' * 8}"
        )
        for name, dataset, tokenizer in rows:
            timed = min(
                (measure(dataset, tokenizer, trace=False) for _ in range(args.repeat)),
                key=lambda run: run["seconds"],
            )
            traced = measure(dataset, tokenizer, trace=True)
            print(
                f"| {name} | {timed['lines']:,} | {dataset.stat().st_size / mib:.1f} "
                f"| {timed['seconds']:.2f} | {timed['lines'] / timed['seconds']:,.0f} "
                f"| {traced['trace_peak'] / mib:.1f} | {timed['rss_peak'] / mib:.0f} "
                f"| {timed['rss_growth'] / mib:.1f} |"
            )


if __name__ == "__main__":
    main()
