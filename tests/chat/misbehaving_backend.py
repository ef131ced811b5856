"""A small HTTP server that fails on purpose (drops mid-stream, 429, 503, hangs) for failure tests.

No real model server fails on demand, so this one speaks just enough of the OpenAI and Gemini
streaming APIs to fail in the ways the chat app must survive. The model name picks the
behaviour: `drop` streams a few words then cuts the connection, `busy` answers 429, `pending`
answers 503 (a Gemma pod still waiting for a GPU), `hang` never answers, `echo` streams back what
it received (Authorization header, roles, system prompt) as one JSON text, `long` streams
LONG_TOKENS numbered words slowly (a reply long enough to stop mid-way), `paced` streams
PACED_WORDS at a steady pace (streaming that shows on screen however busy the machine is),
`fails` streams a few words and then an in-band error event, as a server whose generation
fails after its 200 does (OpenAI shape).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
from typing import Any

DROP_WORDS = ["Partial ", "reply ", "before ", "the ", "cut"]
LONG_TOKENS = 1000
LONG_WORD_S = 0.02
PACED_WORDS = [f"p{i} " for i in range(40)]


class MisbehavingBackend:
    """Runs on its own event loop in a thread; `base_url` is where clients point."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self.requests: list[dict[str, Any]] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> MisbehavingBackend:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            current = asyncio.current_task()
            hanging = [t for t in asyncio.all_tasks() if t is not current]
            for task in hanging:
                task.cancel()
            await asyncio.gather(*hanging, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {
                k.strip().lower(): v.strip()
                for k, _, v in (line.partition(":") for line in lines[1:] if line)
            }
            length = int(headers.get("content-length", "0"))
            body = json.loads(await reader.readexactly(length)) if length else {}
            gemini = re.match(r"^/v1beta/models/([^:/]+):streamGenerateContent", path)
            model = gemini.group(1) if gemini else str(body.get("model", ""))
            self.requests.append(
                {"method": method, "path": path, "headers": headers, "model": model}
            )
            await self._respond(writer, model, gemini is not None, headers, body)
        writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        model: str,
        gemini: bool,
        headers: dict[str, str],
        body: dict[str, Any],
    ) -> None:
        if model == "hang":
            await asyncio.sleep(3600)
            return
        if model in ("busy", "pending"):
            status, reason = (
                (429, "Too Many Requests")
                if model == "busy"
                else (
                    503,
                    "Service Unavailable",
                )
            )
            body = json.dumps(
                {"error": {"code": status, "message": reason, "status": "UNAVAILABLE"}}
            ).encode()
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
        words = [json.dumps(_summary(headers, body, gemini))] if model == "echo" else DROP_WORDS
        if model == "long":
            words = [f"w{i} " for i in range(LONG_TOKENS)]
        if model == "paced":
            words = PACED_WORDS
        for word in words:
            await self._send_event(writer, word, gemini)
            await asyncio.sleep(LONG_WORD_S if model == "long" else 0.03)
        if model == "fails":
            error = {"error": {"message": "Generation failed: RuntimeError: device lost"}}
            await self._send_chunk(writer, f"data: {json.dumps(error)}\n\n".encode())
        if model in ("echo", "long", "paced", "fails"):
            if not gemini:
                await self._send_chunk(writer, b"data: [DONE]\n\n")
            await self._send_chunk(writer, b"")
        # `drop`: close without the terminating chunk, as a crashed or evicted pod does.

    async def _send_event(self, writer: asyncio.StreamWriter, text: str, gemini: bool) -> None:
        if gemini:
            event: dict[str, Any] = {
                "candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]
            }
        else:
            event = {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "test",
                "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
            }
        await self._send_chunk(writer, f"data: {json.dumps(event)}\n\n".encode())

    @staticmethod
    async def _send_chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()


def _summary(headers: dict[str, str], body: dict[str, Any], gemini: bool) -> dict[str, Any]:
    """What an echo reply reports: enough to check auth, history and system prompt handling."""
    if gemini:
        contents = body.get("contents", [])
        system = body.get("systemInstruction") or body.get("system_instruction")
        return {
            "authorization": headers.get("authorization"),
            "api_key": headers.get("x-goog-api-key"),
            "roles": [c.get("role") for c in contents],
            "texts": [c["parts"][0].get("text") for c in contents],
            "system": system["parts"][0]["text"] if system else None,
        }
    messages = body.get("messages", [])
    return {
        "authorization": headers.get("authorization"),
        "roles": [m.get("role") for m in messages],
        "texts": [m.get("content") for m in messages],
        "system": None,
    }
