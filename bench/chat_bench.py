"""Time to first token, full-reply time and CPU cost of the chat app against a direct call.

Starts the Firestore emulator, the inference app with a tiny Gemma 3 and the chat app (unless
URLs are given), then runs 1, 10 and 50 concurrent sessions: each session opens the page's
conversation list (as a browser does on load, before the clock starts) and sends one message
through the chat app's Gradio queue, and, separately, the same request goes straight to the
backend's OpenAI API. The local model's reply is always --max-tokens tokens long.

Prints p50/p95 time to first token (TTFT) and the added TTFT, the p50 full-reply time of
both and how much later the chat app's reply is complete (the median over rounds of each
round's chat app p50 against the same round's direct p50), tokens/s over the whole reply (the
same token count for both: the reply is deterministic), the chat app's CPU time per
streamed token and per message (local stack only: it reads the app's /proc entry; run two
--max-tokens values to split per-message from per-token cost), and whether every reply
reached Firestore (the app's /healthz shows no write pending or failed).

    python -m bench.chat_bench [--sessions 1,10,50] [--max-tokens 200]
        [--chat-url URL --backend-url URL/v1 --model NAME --backend-label LABEL]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from gradio_client.utils import apply_diff

ROOT = Path(__file__).resolve().parents[1]
BENCH_REPLY = (
    "Hello! Gemma is a family of lightweight open models from Google: GKE Autopilot runs "
    "pods on NVIDIA L4 GPUs."
)


@dataclass(frozen=True)
class StreamTiming:
    """One streamed reply: when its first text arrived, when it ended, what it said."""

    ttft_s: float
    total_s: float
    pieces: int
    text: str


class ChatAppSession:
    """One browser-like session of the chat app, driven over Gradio's HTTP queue protocol."""

    def __init__(self, http: httpx.AsyncClient, config: dict[str, Any], browser_id: str) -> None:
        self.http = http
        self.browser_id = browser_id
        self.session_hash = secrets.token_hex(8)
        prefix = config.get("api_prefix", "/gradio_api")
        self.join_url = f"{prefix}/queue/join"
        self.data_url = f"{prefix}/queue/data"
        components = {c["id"]: c for c in config["components"]}
        self.endpoints = {d["api_name"]: d for d in config["dependencies"] if d.get("api_name")}
        self.input_types = {
            name: [components[i]["type"] for i in dep["inputs"]]
            for name, dep in self.endpoints.items()
        }

    @classmethod
    async def fetch_config(cls, http: httpx.AsyncClient) -> dict[str, Any]:
        response = await http.get("/config")
        response.raise_for_status()
        return dict(response.json())

    async def call(self, api_name: str, *values: Any) -> list[list[Any]]:
        """Run one event; returns every output update (streamed ones reconstructed from diffs)."""
        return [outputs async for _, outputs in self.stream(api_name, *values)]

    async def stream(self, api_name: str, *values: Any) -> Any:
        dependency = self.endpoints[api_name]
        queue = iter(values)
        # gr.State inputs live on the server; the protocol still wants a slot for each.
        data = [None if t == "state" else next(queue) for t in self.input_types[api_name]]
        join = await self.http.post(
            self.join_url,
            json={
                "data": data,
                "fn_index": dependency["id"],
                "trigger_id": None,
                "event_data": None,
                "session_hash": self.session_hash,
            },
        )
        join.raise_for_status()
        event_id = join.json()["event_id"]
        outputs: list[Any] | None = None
        async with self.http.stream(
            "GET", self.data_url, params={"session_hash": self.session_hash}
        ) as response:
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                message = json.loads(line[5:])
                if message.get("event_id") not in (None, event_id):
                    continue
                kind = message.get("msg")
                if kind == "process_generating":
                    data_out = message["output"]["data"]
                    if outputs is None:
                        outputs = list(data_out)
                    else:
                        outputs = [
                            apply_diff(o, d) for o, d in zip(outputs, data_out, strict=False)
                        ]
                    yield "generating", outputs
                elif kind == "process_completed":
                    if not message.get("success", True):
                        raise RuntimeError(f"{api_name} failed: {message.get('output')}")
                    final = message["output"].get("data")
                    if final is not None and outputs is None:
                        yield "completed", final
                    return

    async def open(self) -> None:
        """Load the page's conversation list, as a browser does before anyone types."""
        await self.call("conversations", self.browser_id)

    async def send(
        self, message: str, backend_label: str, max_tokens: int = 64, system_prompt: str = ""
    ) -> StreamTiming:
        start = time.perf_counter()
        first: float | None = None
        pieces = 0
        text = ""
        async for _, outputs in self.stream(
            "send", message, backend_label, 0.9, 0.95, max_tokens, system_prompt, self.browser_id
        ):
            shown = assistant_text(outputs[0])
            if shown != text and shown:
                pieces += 1
                text = shown
                if first is None:
                    first = time.perf_counter()
        end = time.perf_counter()
        return StreamTiming((first or end) - start, end - start, pieces, text)


def assistant_text(chat: Any) -> str:
    if not isinstance(chat, list) or not chat:
        return ""
    last = chat[-1]
    if last.get("role") != "assistant":
        return ""
    content = last.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    # A finished reply ends with its details line (backend, TTFT, ...), not model text.
    return str(content or "").split('\n\n<span class="reply-details">', 1)[0]


async def direct_stream(
    http: httpx.AsyncClient, backend_url: str, model: str, message: str, max_tokens: int
) -> StreamTiming:
    """The same request the chat app makes, sent straight to the OpenAI-compatible backend."""
    start = time.perf_counter()
    first: float | None = None
    pieces = 0
    text = ""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": message}],
        "temperature": 0.9,
        "top_p": 0.95,
        "max_tokens": max_tokens,
        "stream": True,
    }
    async with http.stream("POST", f"{backend_url}/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:") or line.strip() == "data: [DONE]":
                continue
            chunk = json.loads(line[5:])
            if not chunk.get("choices"):
                continue
            piece = chunk["choices"][0].get("delta", {}).get("content") or ""
            if piece:
                pieces += 1
                text += piece
                if first is None:
                    first = time.perf_counter()
    end = time.perf_counter()
    return StreamTiming((first or end) - start, end - start, pieces, text)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1]


@dataclass(frozen=True)
class Row:
    sessions: int
    direct: list[StreamTiming]
    chat: list[StreamTiming]
    errors: int = 0
    cpu_ms_per_token: float | None = None
    saved: str = "not checked"
    cpu_ms_per_message: float | None = None
    # Per round, the chat app's p50 full reply over the direct one's in the same round.
    round_ratios: tuple[float, ...] = ()

    @property
    def added_full_reply(self) -> float:
        """How much later the chat app's reply is complete: the median of the rounds' ratios
        (each round's direct and chat app runs are back to back, so they share the machine's
        state)."""
        return statistics.median(self.round_ratios) - 1

    def cells(self) -> list[str]:
        tokens = round(statistics.median(t.pieces for t in self.direct))
        direct_full = statistics.median(t.total_s for t in self.direct)
        chat_full = statistics.median(t.total_s for t in self.chat)
        cpu = f"{self.cpu_ms_per_token:.3f}" if self.cpu_ms_per_token is not None else "n/a"
        per_message = self.cpu_ms_per_message
        cpu_message = f"{per_message:.0f}" if per_message is not None else "n/a"
        d50, d95 = (
            percentile([t.ttft_s for t in self.direct], 50),
            percentile([t.ttft_s for t in self.direct], 95),
        )
        c50, c95 = (
            percentile([t.ttft_s for t in self.chat], 50),
            percentile([t.ttft_s for t in self.chat], 95),
        )
        return [
            str(self.sessions),
            f"{d50 * 1000:.0f}",
            f"{d95 * 1000:.0f}",
            f"{c50 * 1000:.0f}",
            f"{c95 * 1000:.0f}",
            f"{(c50 - d50) * 1000:+.0f}",
            f"{(c95 - d95) * 1000:+.0f}",
            f"{direct_full * 1000:.0f}",
            f"{chat_full * 1000:.0f}",
            f"{self.added_full_reply * 100:+.1f}%",
            # Same prompt, same deterministic reply: the direct stream's token count applies to
            # both, over the whole reply (a per-update count would flatter the batching app).
            f"{tokens / direct_full:.0f}",
            f"{tokens / chat_full:.0f}",
            cpu,
            cpu_message,
            self.saved,
            str(self.errors),
        ]


HEADER = [
    "sessions",
    "direct TTFT p50 ms",
    "direct p95 ms",
    "chat app TTFT p50 ms",
    "chat app p95 ms",
    "added p50 ms",
    "added p95 ms",
    "direct full reply p50 ms",
    "chat app full reply p50 ms",
    "added full reply",
    "direct tok/s",
    "chat app tok/s",
    "app CPU ms/token",
    "app CPU ms/message",
    "saved to Firestore",
    "failed",
]


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of one process, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def confirm_saved(http: httpx.AsyncClient, failed_before: int, wait_s: float = 60.0) -> str:
    """Wait for the app's history queue to drain; 'yes' when nothing is pending or failed."""
    deadline = time.monotonic() + wait_s
    while True:
        health = (await http.get("/healthz")).json()
        failed = int(health.get("failed_writes", 0)) - failed_before
        if failed:
            return f"{failed} failed"
        if not health.get("pending_writes"):
            return "yes"
        if time.monotonic() > deadline:
            return f"{health['pending_writes']} pending"
        await asyncio.sleep(0.2)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---:|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)


def _count_failures(path: str, results: list[Any]) -> int:
    failures = [r for r in results if not isinstance(r, StreamTiming)]
    for failure in failures:
        print(f"{path} request failed: {failure!r}", file=sys.stderr)
    return len(failures)


async def measure(
    *,
    chat_url: str,
    backend_url: str,
    model: str,
    backend_label: str,
    levels: list[int],
    max_tokens: int,
    rounds: int,
    chat_pid: int | None = None,
) -> list[Row]:
    limits = httpx.Limits(max_connections=400, max_keepalive_connections=400)
    timeout = httpx.Timeout(120.0)
    rows = []
    async with (
        httpx.AsyncClient(base_url=chat_url, limits=limits, timeout=timeout) as chat_http,
        httpx.AsyncClient(limits=limits, timeout=timeout) as direct_http,
    ):
        config = await ChatAppSession.fetch_config(chat_http)
        message = "What is Gemma, and where does this stack run it?"
        # Warm both paths once so imports and first-connection costs are not measured.
        await direct_stream(direct_http, backend_url, model, message, max_tokens)
        warm_up = ChatAppSession(chat_http, config, "bench-warmup")
        await warm_up.open()
        await warm_up.send(message, backend_label, max_tokens)
        for level in levels:
            direct: list[StreamTiming] = []
            chat: list[StreamTiming] = []
            errors = 0
            cpu_s = 0.0
            failed_before = int((await chat_http.get("/healthz")).json().get("failed_writes", 0))
            ratios = []
            for _ in range(rounds):
                # Direct and through-the-app runs alternate so both see the same machine load.
                results = await asyncio.gather(
                    *(
                        direct_stream(direct_http, backend_url, model, message, max_tokens)
                        for _ in range(level)
                    ),
                    return_exceptions=True,
                )
                direct_round = [r for r in results if isinstance(r, StreamTiming)]
                direct += direct_round
                errors += _count_failures("direct", results)
                sessions = [
                    ChatAppSession(chat_http, config, f"bench-{level}-{i}") for i in range(level)
                ]
                # Opened first, like pages: what is measured is sending a message.
                await asyncio.gather(*(s.open() for s in sessions))
                cpu_before = cpu_seconds(chat_pid) if chat_pid else 0.0
                results = await asyncio.gather(
                    *(s.send(message, backend_label, max_tokens) for s in sessions),
                    return_exceptions=True,
                )
                cpu_s += (cpu_seconds(chat_pid) - cpu_before) if chat_pid else 0.0
                chat_round = [r for r in results if isinstance(r, StreamTiming)]
                chat += chat_round
                errors += _count_failures("chat app", results)
                if direct_round and chat_round:
                    ratios.append(
                        statistics.median(t.total_s for t in chat_round)
                        / statistics.median(t.total_s for t in direct_round)
                    )
            saved = await confirm_saved(chat_http, failed_before)
            tokens = round(statistics.median(t.pieces for t in direct)) * len(chat)
            cpu_ms = cpu_s * 1000 / tokens if chat_pid and tokens else None
            per_message = cpu_s * 1000 / len(chat) if chat_pid and chat else None
            rows.append(Row(level, direct, chat, errors, cpu_ms, saved, per_message, tuple(ratios)))
            print(markdown_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    return rows


@contextmanager
def local_stack(
    inference_concurrency: int, pin: bool = False
) -> Iterator[tuple[str, str, str, str, int]]:
    """Emulator + inference app (tiny Gemma 3) + chat app on free ports; yields their URLs."""
    sys.path.insert(0, str(ROOT))
    from devtools.firestore_emulator import FirestoreEmulator  # noqa: PLC0415
    from devtools.ports import free_port  # noqa: PLC0415
    from devtools.processes import start_server  # noqa: PLC0415
    from devtools.tiny_model import build_tiny_gemma3  # noqa: PLC0415

    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="chat-bench-")))
        emulator = stack.enter_context(FirestoreEmulator())
        # Says BENCH_REPLY over and over: every reply is exactly --max-tokens long.
        model_dir = build_tiny_gemma3(work / "tiny", reply=BENCH_REPLY, endless_reply=True)
        inference_port, chat_port = free_port(), free_port()
        inference_url = f"http://127.0.0.1:{inference_port}"
        env = {"PYTHONPATH": str(ROOT), "HOST": "127.0.0.1"}
        inference_env = {
            **env,
            "MODEL_URI": str(model_dir),
            "PORT": str(inference_port),
            "MAX_CONCURRENCY": str(inference_concurrency),
            "MAX_QUEUE": "512",
            # Pinned to one core, one torch thread: two would fight over it.
            **({"OMP_NUM_THREADS": "1"} if pin else {}),
        }
        inference = start_server(
            "inference app",
            [sys.executable, "-m", "app.inference"],
            port=inference_port,
            env=inference_env,
            log_path=work / "inference.log",
        )
        stack.enter_context(inference)
        if pin:
            # At once, before the server starts the threads that inherit its affinity.
            os.sched_setaffinity(inference.pid, {0})
        backends = [
            {
                "id": "gemma",
                "label": "Gemma 3 (local)",
                "kind": "openai",
                "model": "tiny",
                "base_url": f"{inference_url}/v1",
            }
        ]
        chat_env = {
            **env,
            **emulator.env(),
            "PORT": str(chat_port),
            "CHAT_BACKENDS": json.dumps(backends),
            "SYSTEM_PROMPT": "",
        }
        chat = start_server(
            "chat app",
            [sys.executable, "-m", "app.chat"],
            port=chat_port,
            health_path="/healthz",
            env=chat_env,
            log_path=work / "chat.log",
        )
        stack.enter_context(chat)
        if pin:
            os.sched_setaffinity(chat.pid, {1})
        inference.wait_ready()
        chat.wait_ready()
        yield (
            f"http://127.0.0.1:{chat_port}",
            f"{inference_url}/v1",
            "tiny",
            "Gemma 3 (local)",
            chat.pid,
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", default="1,10,50", help="concurrency levels, comma-separated")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=200,
        help="tokens in every reply (the local model repeats its reply until this many)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="repeats per level")
    parser.add_argument("--inference-concurrency", type=int, default=16)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin the inference app to CPU 0 and the chat app to CPU 1 (local stack only)",
    )
    parser.add_argument("--chat-url", help="a running chat app (default: start one locally)")
    parser.add_argument("--backend-url", help="the backend's OpenAI base URL, ending in /v1")
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--backend-label", default="Gemma 3 (local)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.sessions.split(",")]

    def run(
        chat_url: str, backend_url: str, model: str, label: str, pid: int | None = None
    ) -> list[Row]:
        return asyncio.run(
            measure(
                chat_url=chat_url,
                backend_url=backend_url,
                model=model,
                backend_label=label,
                levels=levels,
                max_tokens=args.max_tokens,
                rounds=args.rounds,
                chat_pid=pid,
            )
        )

    if args.chat_url and args.backend_url:
        rows = run(args.chat_url, args.backend_url, args.model, args.backend_label)
    else:
        with local_stack(args.inference_concurrency, args.pin) as urls:
            rows = run(*urls)
    pinned = ", inference app on CPU 0, chat app on CPU 1" if args.pin else ""
    print(
        f"chat app vs direct backend, {args.max_tokens} max tokens, {os.cpu_count()} CPUs{pinned}"
    )
    print(markdown_table(rows))
    worst = max(
        percentile([t.ttft_s for t in r.chat], 95) - percentile([t.ttft_s for t in r.direct], 95)
        for r in rows
    )
    print(f"worst added p95 TTFT: {worst * 1000:.0f} ms (target <= 50 ms at 50 sessions)")
    added = max(r.added_full_reply for r in rows)
    print(f"worst added full-reply time: {added * 100:+.1f}% (target <= 5%)")
    costs = [r.cpu_ms_per_token for r in rows if r.cpu_ms_per_token is not None]
    if costs:
        print(f"most app CPU per token: {max(costs):.3f} ms (target <= 0.3 ms)")


if __name__ == "__main__":
    main()
