"""The chat handler in-process: how streamed tokens become screen updates, and what is saved."""

from __future__ import annotations

from typing import Any

import gradio as gr
import gradio.routes
import pytest

from app.chat.backends import make_backend
from app.chat.history import ChatHistory
from app.chat.identity import OwnerResolver
from app.chat.server import PROGRESS_POLL_S, QUEUE_POLL_S, create_app
from app.chat.settings import ChatSettings
from app.chat.ui import (
    LONG_HISTORY,
    SLOWEST_UPDATE_S,
    ChatUI,
    to_turns,
    update_interval_s,
    without_details,
)
from tests.chat.misbehaving_backend import PACED_WORDS
from tests.chat.stack import DATABASE, REPLY, Stack

UNUSED_URL = "http://127.0.0.1:9/v1"  # never called


def text_of(chat: list[dict[str, Any]]) -> str:
    return without_details(str(chat[-1]["content"]))


async def run_send(
    base_url: str, project: str, interval_ms: int, model: str = "tiny", reply: str = REPLY
) -> list[Any]:
    backend = {
        "id": "gemma",
        "label": "Gemma",
        "kind": "openai",
        "model": model,
        "base_url": f"{base_url}/v1",
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
    assert [m.content for m in stored or []] == ["hi", reply]
    await history.close()
    await backends["gemma"].aclose()
    return updates


def test_updates_space_out_as_more_replies_stream_but_not_past_the_slowest_rate() -> None:
    assert update_interval_s(0.04, 1, 2) == 0.04
    assert update_interval_s(0.04, 4, 2) == 0.04
    # Ten replies at once: each updates every 100 ms, so the loop sends as many updates a
    # second as it would for four.
    assert update_interval_s(0.04, 10, 2) == pytest.approx(0.1)
    assert update_interval_s(0.04, 200, 2) == SLOWEST_UPDATE_S
    # A configured interval above the slowest rate is kept; zero stays per token.
    assert update_interval_s(0.8, 200, 2) == 0.8
    assert update_interval_s(0.0, 200, 2) == 0.0
    assert update_interval_s(0.04, 1, LONG_HISTORY) == 0.15


async def test_every_token_is_an_update_when_the_interval_is_zero(
    stack: Stack, firestore: Any
) -> None:
    # 40 words 30 ms apart: nothing holds them, so each is its own update (words that reach a
    # busy machine together still share one, hence the margin).
    reply = "".join(PACED_WORDS)
    updates = await run_send(stack.misbehaving.base_url, firestore.project, 0, "paced", reply)
    texts = [text_of(u[0]) for u in updates]
    assert texts[0] == ""  # the echo, sent while the model starts
    assert len(texts) > 20
    assert texts[-1] == reply


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


async def test_compare_saves_both_answers_and_the_pick_decides_what_the_model_sees(
    inference_url: str, firestore: Any
) -> None:
    config = {"kind": "openai", "model": "tiny", "base_url": f"{inference_url}/v1"}
    settings = ChatSettings(
        chat_backends=[
            {"id": "left", "label": "Left", **config},  # type: ignore[list-item]
            {"id": "right", "label": "Right", **config},  # type: ignore[list-item]
        ],
        stream_update_interval_ms=40,
        auth_mode="none",
    )
    history = ChatHistory(firestore.project, DATABASE)
    backends = {b.id: make_backend(b) for b in settings.chat_backends}
    ui = ChatUI(settings, history, backends, OwnerResolver(settings))
    request = gr.Request(username=None, session_hash="in-process-compare")
    updates = [
        update
        async for update in ui.chat_turn(
            "hi", None, [], "Left", "Right", 0.9, 0.95, 64, "", "browser-compare", request
        )
    ]
    conversation = updates[-1][1]
    panes = [u[5] for u in updates if isinstance(u[5], str)]
    assert panes
    assert REPLY in panes[-1]
    assert "Left" in panes[-1]
    assert [(m.role, m.backend_id, m.alternative) for m in conversation.messages] == [
        ("user", "left", False),
        ("assistant", "left", False),
        ("assistant", "right", True),
    ]
    assert [t.role for t in to_turns(conversation.messages)] == ["user", "assistant"]

    ui.pick_right(conversation)
    assert [(m.backend_id, m.alternative) for m in conversation.messages[1:]] == [
        ("right", False),
        ("left", True),
    ]
    assert await history.flush(20)
    stored = await history.load("browser:browser-compare", conversation.session_id) or []
    assert [(m.backend_id, m.alternative) for m in stored] == [
        ("left", False),
        ("right", False),
        ("left", True),
    ]
    # Regenerate: the last question answered again; the answers before stay as alternatives.
    updates = [
        u
        async for u in ui.regenerate(
            conversation, "Left", 0.9, 0.95, 64, "", "browser-compare", request
        )
    ]
    assert without_details(str(updates[-1][0][1]["content"])) == REPLY
    assert [(m.backend_id, m.alternative) for m in conversation.messages[1:]] == [
        ("left", False),
        ("right", True),
        ("left", True),
    ]
    assert [t.role for t in to_turns(conversation.messages)] == ["user", "assistant"]
    assert await history.flush(20)
    stored = await history.load("browser:browser-compare", conversation.session_id) or []
    assert [(m.backend_id, m.alternative) for m in stored][1] == ("left", False)
    assert len(stored) == 4
    details = stored[1].details or {}
    assert details["finish"] == "complete"
    assert details["tokens"] > 1
    assert details["ttft_s"] is not None
    await history.close()
    for backend in backends.values():
        await backend.aclose()


async def test_an_edited_question_is_a_new_turn_and_the_original_stays_saved(
    inference_url: str, firestore: Any
) -> None:
    backend = {"id": "gemma", "label": "Gemma", "kind": "openai", "model": "tiny"}
    settings = ChatSettings(
        chat_backends=[{**backend, "base_url": f"{inference_url}/v1"}],  # type: ignore[list-item]
        auth_mode="none",
    )
    history = ChatHistory(firestore.project, DATABASE)
    backends = {"gemma": make_backend(settings.chat_backends[0])}
    ui = ChatUI(settings, history, backends, OwnerResolver(settings))
    request = gr.Request(username=None, session_hash="in-process-edit")
    args = ("Gemma", 0.9, 0.95, 64, "", "browser-edit", request)
    updates = [u async for u in ui.chat_turn("hi", None, [], "Gemma", "Off", *args[1:])]
    conversation = updates[-1][1]
    edit = gr.EditData(None, {"index": 0, "value": "hello again", "previous_value": "hi"})
    updates = [u async for u in ui.edit_and_resend(conversation, *args, edit)]
    assert [(m.role, m.content, m.alternative) for m in conversation.messages] == [
        ("user", "hi", True),
        ("assistant", REPLY, True),
        ("user", "hello again", False),
        ("assistant", REPLY, False),
    ]
    assert [t.content for t in to_turns(conversation.messages)] == ["hello again", REPLY]
    assert "earlier version" in str(updates[-1][0][0]["content"])
    assert await history.flush(20)
    stored = await history.load("browser:browser-edit", conversation.session_id) or []
    assert [(m.content, m.alternative) for m in stored] == [
        ("hi", True),
        (REPLY, True),
        ("hello again", False),
        (REPLY, False),
    ]
    await history.close()
    await backends["gemma"].aclose()


def test_gradios_queue_polls_calmly_and_summarizes_its_analytics_rarely(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Gradio's default rebuilds a pandas DataFrame of its last 10,000 events after every
    # event (4-12 ms of CPU per message). Unset, as on a fresh server:
    for name in ("GRADIO_ANALYTICS_CACHE_FREQUENCY", "GRADIO_ANALYTICS_MAX_EVENTS"):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    backend = {"id": "g", "label": "G", "kind": "openai", "model": "m", "base_url": UNUSED_URL}
    settings = ChatSettings(chat_backends=[backend], auth_mode="none")  # type: ignore[list-item]
    app = create_app(settings, ChatHistory("demo-analytics", DATABASE))
    mounted = [getattr(route, "app", None) for route in app.routes]
    (blocks,) = [a.get_blocks() for a in mounted if isinstance(a, gradio.routes.App)]
    assert blocks._queue.ANAYLTICS_CACHE_FREQUENCY >= 1000
    assert blocks._queue.ANALYTICS_MAX_EVENTS <= 1000
    # Gradio's own queue polls every millisecond (26 ms of CPU a second when idle).
    default = gr.Blocks()._queue
    assert (default.sleep_when_free, default.progress_update_sleep_when_free) == (0.001, 0.01)
    assert blocks._queue.sleep_when_free == QUEUE_POLL_S >= 0.005
    assert blocks._queue.progress_update_sleep_when_free == PROGRESS_POLL_S
