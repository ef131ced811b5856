"""Benchmark the inference app: HTTP streaming overhead and cold start from a GCS emulator.

Uses a random-weight model shaped like Gemma 3 270M (built locally; its tokenizer is trained
on a few sentences and its vocabulary padded to 262,144 ids), so the numbers measure the
server, not the model's quality.

    python -m bench.inference_bench [--tokens 16] [--rounds 4] [--skip-cold-start]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from app.inference.engine import SamplingParams
from app.inference.model_source import resolve_model_dir
from app.inference.transformers_engine import TransformersEngine
from devtools.gcs_emulator import CLIENT_ENV, GcsEmulator
from devtools.ports import free_port
from devtools.processes import ServerProcess, start_server
from devtools.tiny_model import build_tiny_gemma3

REPO = Path(__file__).resolve().parents[1]
MODEL_CACHE = REPO / ".cache" / "bench-gemma3-270m-shape"
PROMPTS = [
    "Write a haiku about the sea.",
    "Given the <USER_QUERY> and the <SCHEMA>, generate the SQL for: names of all users.",
    "Explain in one paragraph why Cloud Run needs a startup probe for large models.",
]


@dataclass
class Run:
    ttft_s: float
    total_s: float
    tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.total_s


def build_model() -> Path:
    if not (MODEL_CACHE / "config.json").is_file():
        print(f"building the Gemma 3 270M-shaped random model in {MODEL_CACHE} ...", flush=True)
        partial = MODEL_CACHE.with_name(MODEL_CACHE.name + ".partial")
        build_tiny_gemma3(partial, shape="270m")
        partial.rename(MODEL_CACHE)
    return MODEL_CACHE


def start_inference(env: dict[str, str]) -> ServerProcess:
    """The inference app on a free port; wait_ready().ready_after_s is its start to /health 200."""
    port = free_port()
    return start_server(
        "inference app",
        [sys.executable, "-m", "app.inference"],
        port=port,
        env={**CLIENT_ENV, "HOST": "127.0.0.1", "PORT": str(port), "LOG_LEVEL": "warning", **env},
    )


def http_stream(client: httpx.Client, url: str, model: str, prompt: str, max_tokens: int) -> Run:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first = None
    tokens = 0
    with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            elif event["choices"] and event["choices"][0]["delta"].get("content") and not first:
                first = time.perf_counter()
    end = time.perf_counter()
    return Run(ttft_s=(first or end) - started, total_s=end - started, tokens=tokens)


def direct(engine: TransformersEngine, prompt: str, max_tokens: int) -> Run:
    started = time.perf_counter()
    first: list[float] = []

    def on_text(piece: str) -> None:
        if piece and not first:
            first.append(time.perf_counter())

    ids = engine.encode(engine.render_chat([{"role": "user", "content": prompt}]), chat=True)
    result = engine.generate(ids, SamplingParams(max_tokens=max_tokens, temperature=0), on_text)
    end = time.perf_counter()
    return Run(
        ttft_s=(first or [end])[0] - started, total_s=end - started, tokens=result.completion_tokens
    )


def timed_download(uri: str, endpoint: str, parallel: bool) -> float:
    with tempfile.TemporaryDirectory() as cache:
        started = time.perf_counter()
        resolve_model_dir(uri, Path(cache), endpoint_url=endpoint, parallel=parallel)
        return time.perf_counter() - started


def table(rows: list[tuple[str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, " | ".join("-" * w for w in widths))
    return "\n".join("| " + line + " |" for line in lines)


def cold_start(
    gcs: GcsEmulator, uri: str, size_mb: float, rows: list[tuple[str, str, str]]
) -> dict[str, object]:
    """Download times (single stream vs parallel ranges) and process start to /health 200."""
    single = timed_download(uri, gcs.endpoint, parallel=False)
    parallel = timed_download(uri, gcs.endpoint, parallel=True)
    rows.append(("download, single stream", f"{single:.1f} s", f"{size_mb:.0f} MB"))
    rows.append(("download, parallel ranges", f"{parallel:.1f} s", "16 workers, 32 MB ranges"))
    cold: dict[str, float] = {}
    for label, workers in (("parallel", "16"), ("one connection", "1")):
        with tempfile.TemporaryDirectory() as cache:
            env = {"MODEL_URI": uri, "MODEL_CACHE_DIR": cache, "DOWNLOAD_WORKERS": workers}
            with start_inference({**env, **gcs.env()}) as server:
                seconds = server.wait_ready().ready_after_s
        assert seconds is not None
        cold[label] = seconds
        rows.append(
            (f"cold start to /health 200, {label}", f"{seconds:.1f} s", "Cloud Run probe <= 240 s")
        )
    return {"download_single_s": single, "download_parallel_s": parallel, "cold_start_s": cold}


def measure_overhead(
    model_dir: Path, label: str, rounds: int, tokens: int, rows: list[tuple[str, str, str]]
) -> dict[str, float]:
    """Same prompts and settings in-process and through HTTP streaming, in alternating pairs."""
    # One client with a kept-alive connection, as the openai and google-genai clients do; a
    # client per request would add its own TLS-context setup (~20 ms) to every TTFT.
    with (
        start_inference({"MODEL_URI": str(model_dir), "MAX_CONCURRENCY": "1"}) as server,
        httpx.Client(timeout=600) as client,
    ):
        url = server.wait_ready().url
        engine = TransformersEngine(model_dir, "bench")
        direct(engine, "warm up", 2)
        http_stream(client, url, model_dir.name, "warm up", 2)
        http_runs: list[Run] = []
        direct_runs: list[Run] = []
        for round_index in range(rounds):
            for prompt in PROMPTS:
                # Alternate the order so drift on a shared machine hits both sides.
                if round_index % 2 == 0:
                    direct_runs.append(direct(engine, prompt, tokens))
                    http_runs.append(http_stream(client, url, model_dir.name, prompt, tokens))
                else:
                    http_runs.append(http_stream(client, url, model_dir.name, prompt, tokens))
                    direct_runs.append(direct(engine, prompt, tokens))
    pairs = list(zip(http_runs, direct_runs, strict=True))
    # Medians of paired runs: on a shared machine a few slow runs would swamp sums.
    ratios = [h.tokens_per_s / d.tokens_per_s for h, d in pairs]
    ttft_deltas = [(h.ttft_s - d.ttft_s) * 1000 for h, d in pairs]
    direct_tps = statistics.median(r.tokens_per_s for r in direct_runs)
    http_tps = statistics.median(r.tokens_per_s for r in http_runs)
    ratio = statistics.median(ratios)
    ttft_overhead_ms = statistics.median(ttft_deltas)
    note = f"{len(pairs)} pairs x {tokens} tokens"
    rows += [
        (
            f"{label}: output tokens/s direct / HTTP (medians)",
            f"{direct_tps:.1f} / {http_tps:.1f}",
            note,
        ),
        (
            f"{label}: HTTP / direct throughput (median of pairs)",
            f"{ratio:.3f}x",
            f">= 0.95x; pairs {min(ratios):.2f}-{max(ratios):.2f}x",
        ),
        (
            f"{label}: TTFT overhead (median of pairs)",
            f"{ttft_overhead_ms:+.1f} ms",
            f"<= 10 ms; pairs {min(ttft_deltas):+.0f} to {max(ttft_deltas):+.0f} ms",
        ),
        (
            f"{label}: TTFT direct / HTTP (medians)",
            f"{statistics.median(r.ttft_s for r in direct_runs) * 1000:.1f} / "
            f"{statistics.median(r.ttft_s for r in http_runs) * 1000:.1f} ms",
            "",
        ),
    ]
    return {
        "direct_tokens_per_s": direct_tps,
        "http_tokens_per_s": http_tps,
        "throughput_ratio": ratio,
        "ttft_overhead_ms": ttft_overhead_ms,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16, help="output tokens per request")
    parser.add_argument("--rounds", type=int, default=4, help="passes over the prompts")
    parser.add_argument(
        "--tiny-rounds",
        type=int,
        default=12,
        help="passes with the tiny shape, where per-token server overhead shows most (0: skip)",
    )
    parser.add_argument("--skip-cold-start", action="store_true")
    args = parser.parse_args(argv)
    os.environ.update(CLIENT_ENV)

    model_dir = build_model()
    size_mb = sum(p.stat().st_size for p in model_dir.iterdir()) / 1e6
    rows: list[tuple[str, str, str]] = [("measure", "result", "target / note")]
    results: dict[str, object] = {"model_mb": size_mb, "cpus": os.cpu_count()}

    with GcsEmulator.start() as gcs:
        print(f"uploading {size_mb:.0f} MB to the GCS emulator ...", flush=True)
        uri = gcs.upload_folder(model_dir, "gs://bench-models/gemma3-270m-shape")
        if not args.skip_cold_start:
            results.update(cold_start(gcs, uri, size_mb, rows))

        print("measuring streaming overhead (270M shape) ...", flush=True)
        results["overhead_270m"] = measure_overhead(
            model_dir, "270M", args.rounds, args.tokens, rows
        )
    if args.tiny_rounds:
        print("measuring streaming overhead (tiny shape) ...", flush=True)
        with tempfile.TemporaryDirectory() as tiny:
            tiny_dir = build_tiny_gemma3(Path(tiny) / "tiny-gemma")
            results["overhead_tiny"] = measure_overhead(
                tiny_dir, "tiny", args.tiny_rounds, 32, rows
            )
    print()
    print(
        f"Gemma 3 270M shape (random weights, {size_mb:.0f} MB bf16 on disk, float32 on CPU) "
        f"and the tiny test shape, greedy; {platform.processor() or 'CPU'}, "
        f"{os.cpu_count()} cores"
    )
    print(table(rows))
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "inference.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    threading.current_thread().name = "bench"
    main()
