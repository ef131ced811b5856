"""Benchmark our inference server against `transformers serve --continuous-batching`.

Both serve the same folder (the Gemma 3 270M-shaped random model that bench.inference_bench
builds, float32 on CPU) on this machine. Each round sends N concurrent streaming chat
requests of the same length to each server in turn (the order alternates between rounds, so
drift on a shared machine hits both), for N in 1, 4, 8 and 16. It prints aggregate output
tokens/s (medians of rounds) and time to first token p50/p95 (over every request) for both,
and our/peer ratios.

    python -m bench.peer_bench [--tokens 32] [--rounds 3] [--concurrency 1,4,8,16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.inference_bench import PROMPTS, Run, build_model, http_stream, start_inference
from devtools.gcs_emulator import CLIENT_ENV
from devtools.ports import free_port
from devtools.processes import ServerProcess, start_server

REPO = Path(__file__).resolve().parents[1]


@dataclass
class Round:
    seconds: float
    tokens: int
    ttfts: list[float]

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


@dataclass
class Server:
    name: str
    url: str
    model: str
    rounds: dict[int, list[Round]] = field(default_factory=dict)


def one_round(clients: list[httpx.Client], server: Server, tokens: int) -> Round:
    """len(clients) concurrent requests, released together."""
    results: list[Run] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(clients) + 1)

    def run(index: int) -> None:
        barrier.wait()
        try:
            prompt = PROMPTS[index % len(PROMPTS)]
            results.append(http_stream(clients[index], server.url, server.model, prompt, tokens))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{server.name}: a request failed: {errors[0]!r}") from errors[0]
    return Round(seconds, sum(r.tokens for r in results), [r.ttft_s for r in results])


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


@contextmanager
def our_server(model_dir: Path, concurrency: int) -> Iterator[Server]:
    env = {
        "MODEL_URI": str(model_dir),
        "MAX_CONCURRENCY": str(concurrency),
        "MAX_QUEUE": str(concurrency),
    }
    with start_inference(env) as process:
        process.wait_ready(600)
        yield Server("ours", process.url, model_dir.name)


@contextmanager
def peer_server(model_dir: Path) -> Iterator[Server]:
    command = shutil.which("transformers", path=str(Path(sys.executable).parent))
    if command is None:
        raise SystemExit("`transformers` CLI not found next to this Python; install transformers")
    port = free_port()
    argv = [command, "serve", str(model_dir), "--continuous-batching", "--dtype", "float32"]
    argv += ["--device", "cpu", "--host", "127.0.0.1", "--port", str(port)]
    process: ServerProcess = start_server(
        "transformers serve", argv, port=port, health_path="/health", env=CLIENT_ENV
    )
    with process:
        process.wait_ready(600)
        yield Server("transformers serve", process.url, str(model_dir))


def warm_up(server: Server, tokens: int) -> None:
    with httpx.Client(timeout=600) as client:
        for _ in range(2):
            http_stream(client, server.url, server.model, "warm up", tokens)


def measure(servers: list[Server], levels: list[int], rounds: int, tokens: int) -> None:
    clients = [httpx.Client(timeout=600) for _ in range(max(levels))]
    try:
        for round_index in range(rounds):
            for level in levels:
                order = servers if (round_index + level) % 2 == 0 else servers[::-1]
                for server in order:
                    result = one_round(clients[:level], server, tokens)
                    server.rounds.setdefault(level, []).append(result)
                    print(
                        f"round {round_index + 1} N={level:<2} {server.name}: "
                        f"{result.tokens_per_s:6.1f} tok/s",
                        flush=True,
                    )
    finally:
        for client in clients:
            client.close()


def summary(server: Server, level: int) -> tuple[float, float, float]:
    runs = server.rounds[level]
    ttfts = [t for run in runs for t in run.ttfts]
    return (
        statistics.median(r.tokens_per_s for r in runs),
        percentile(ttfts, 0.5),
        percentile(ttfts, 0.95),
    )


def report(ours: Server, peer: Server, levels: list[int]) -> tuple[str, dict[str, object]]:
    rows: list[tuple[str, ...]] = [
        (
            "N",
            "ours tok/s",
            "peer tok/s",
            "ratio",
            "ours TTFT p50 / p95",
            "peer TTFT p50 / p95",
            "p95 ratio",
        )
    ]
    results: dict[str, object] = {}
    for level in levels:
        mine, theirs = summary(ours, level), summary(peer, level)
        rows.append(
            (
                str(level),
                f"{mine[0]:.1f}",
                f"{theirs[0]:.1f}",
                f"{mine[0] / theirs[0]:.2f}x",
                f"{mine[1] * 1000:.0f} / {mine[2] * 1000:.0f} ms",
                f"{theirs[1] * 1000:.0f} / {theirs[2] * 1000:.0f} ms",
                f"{mine[2] / theirs[2]:.2f}x",
            )
        )
        results[str(level)] = {
            "ours": dict(zip(("tokens_per_s", "ttft_p50_s", "ttft_p95_s"), mine, strict=True)),
            "peer": dict(zip(("tokens_per_s", "ttft_p50_s", "ttft_p95_s"), theirs, strict=True)),
        }
    return grid(rows), results


def grid(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, " | ".join("-" * w for w in widths))
    return "\n".join("| " + line + " |" for line in lines)


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="output tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="rounds at each concurrency")
    parser.add_argument("--concurrency", default="1,4,8,16", help="comma-separated levels")
    args = parser.parse_args(argv)
    levels = [int(n) for n in args.concurrency.split(",")]
    os.environ.update(CLIENT_ENV)
    model_dir = build_model()
    started_load = load()
    print(f"start: {started_load}", flush=True)
    with our_server(model_dir, max(levels)) as ours, peer_server(model_dir) as peer:
        for server in (ours, peer):
            warm_up(server, args.tokens)
        measure([ours, peer], levels, args.rounds, args.tokens)
    text, results = report(ours, peer, levels)
    print()
    print(
        f"ours vs transformers serve --continuous-batching: Gemma 3 270M shape, float32 on "
        f"CPU, {args.tokens} streamed tokens a request, greedy, {args.rounds} interleaved "
        f"rounds (tok/s: median of rounds; TTFT: over all requests)"
    )
    print(text)
    ended_load = load()
    print(f"start: {started_load}; end: {ended_load}")
    results.update({"tokens": args.tokens, "load_start": started_load, "load_end": ended_load})
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "peer.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
