"""The chat handler in-process: how streamed tokens become screen updates, and what is saved."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.chat.backends import make_backend
from app.chat.history import ChatHistory
from app.chat.identity import OwnerResolver
from app.chat.settings import ChatSettings
from app.chat.ui import ChatUI
from tests.chat.stack import DATABASE, REPLY


def text_of(chat: list[dict[str, Any]]) -> str:
    return str(chat[-1]["content"])


async def run_send(inference_url: str, project: str, interval_ms: int) -> list[Any]:
    backend = {
        "id": "gemma",
        "label": "Gemma",
        "kind": "openai",
        "model": "tiny",
        "base_url": f"{inference_url}/v1",
    }
    settings = ChatSettings(
        chat_backends=[backend],  # type: ignore[list-item]
        stream_update_interval_ms=interval_ms,
        auth_mode="none",
    )
    history = ChatHistory(project, DATABASE)
    backends = {"gemma": make_backend(settings.chat_backends[0])}
    ui = ChatUI(settings, history, backends, OwnerResolver(settings))
    request = gr.Request(username=None, session_hash="in-process")
    updates = [
        update
        async for update in ui.send(
            "hi", None, [], "Gemma", 0.9, 0.95, 64, "", "browser-in-process", request
        )
    ]
    assert ui.streaming == 0
    assert await history.flush(20)
    conversation = updates[-1][1]
    stored = await history.load("browser:browser-in-process", conversation.session_id)
    assert [m.content for m in stored or []] == ["hi", REPLY]
    await history.close()
    await backends["gemma"].aclose()
    return updates


async def test_every_token_is_an_update_when_the_interval_is_zero(
    inference_url: str, firestore: Any
) -> None:
    updates = await run_send(inference_url, firestore.project, 0)
    texts = [text_of(u[0]) for u in updates]
    assert texts[0] == ""  # the echo, sent while the model starts
    assert len(texts) > 20
    assert texts[-1] == REPLY


async def test_fast_tokens_share_updates_and_the_reply_still_arrives_whole(
    inference_url: str, firestore: Any
) -> None:
    updates = await run_send(inference_url, firestore.project, 1000)
    texts = [text_of(u[0]) for u in updates]
    # Echo, the first token at once (never held back), then the rest in the final update.
    assert len(texts) <= 4
    assert texts[1]
    assert REPLY.startswith(texts[1])
    assert texts[-1] == REPLY
