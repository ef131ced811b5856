"""The running chat app through gradio_client and its HTTP queue; Firestore checked directly."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from google.cloud.firestore_v1.base_query import FieldFilter
from gradio_client import Client
from gradio_client.exceptions import AppError

from app.chat.history import ChatHistory, StoredMessage
from app.chat.ui import without_details
from bench.chat_bench import ChatAppSession, assistant_text
from devtools.processes import ServerProcess
from tests.chat.stack import (
    DATABASE,
    DOWN,
    ECHO,
    FLAKY,
    GEMINI_API,
    GEMINI_ECHO,
    GEMMA,
    LONG,
    PENDING,
    REPLY,
    USERS,
    VERTEX,
    Stack,
    firestore_client,
)

SYSTEM = "You are a terse assistant."


def connect(app: ServerProcess, user: str | None = None) -> Client:
    auth = (user, USERS[user]) if user else None
    return Client(app.url, auth=auth, verbose=False, download_files=False)


def text_of(message: dict[str, Any]) -> str:
    """A bubble's text, without the reply's details line."""
    content = message["content"]
    if isinstance(content, list):
        return without_details("".join(part.get("text", "") for part in content))
    return without_details(str(content))


def send(
    client: Client, message: str, label: str, browser_id: str = "", max_tokens: int = 64
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """Send one message; returns every streamed chat update and the final chat."""
    job = client.submit(message, label, 0.9, 0.95, max_tokens, SYSTEM, browser_id, api_name="/send")
    final = job.result(timeout=120)
    return list(job.outputs()), final


def wait_for(check: Callable[[], Any], timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.2)


def sessions_of(owner: str) -> list[Any]:
    db = firestore_client()
    return list(
        db.collection("chat_sessions").where(filter=FieldFilter("owner", "==", owner)).get()
    )


def messages_of(session_id: str) -> list[dict[str, Any]]:
    db = firestore_client()
    ref = db.collection("chat_sessions").document(session_id).collection("messages")
    return [doc.to_dict() for doc in ref.order_by("seq").get()]


def test_health_route_answers_for_probes(chat_app: ServerProcess) -> None:
    assert chat_app.health()[1]["status"] == "ok"


def test_a_message_streams_lands_in_firestore_and_restores(chat_app: ServerProcess) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    updates, final = send(client, "What is Gemma?", GEMMA, browser)

    assert [m["role"] for m in final] == ["user", "assistant"]
    assert text_of(final[1]) == REPLY
    streamed = [text_of(u[-1]) for u in updates if u and u[-1]["role"] == "assistant"]
    growing = [t for t in streamed if t and t != REPLY]
    assert len(growing) >= 3, f"expected partial replies while streaming, got {streamed}"
    assert all(REPLY.startswith(t) for t in growing)

    sessions = wait_for(lambda: sessions_of(f"browser:{browser}"))
    assert len(sessions) == 1
    session = sessions[0]
    assert session.get("title") == "What is Gemma?"
    assert session.get("last_backend") == "gemma"
    stored = wait_for(lambda: (m := messages_of(session.id)) and len(m) == 2 and m)
    assert [(m["role"], m["content"], m["backend_id"]) for m in stored] == [
        ("user", "What is Gemma?", "gemma"),
        ("assistant", REPLY, "gemma"),
    ]
    assert stored[0]["sampling"] == {"temperature": 0.9, "top_p": 0.95, "max_tokens": 64}
    assert stored[1]["created_at"] >= stored[0]["created_at"]

    # A reload is a new Gradio session; the browser id (kept in the browser) finds the chat.
    reloaded = connect(chat_app)
    _, listing, _ = reloaded.predict(browser, api_name="/conversations")
    assert listing["choices"] == [["What is Gemma?", session.id]]
    chat, model, *_ = reloaded.predict(session.id, browser, api_name="/restore")
    assert [text_of(m) for m in chat] == ["What is Gemma?", REPLY]
    assert model["value"] == GEMMA


def test_switching_model_mid_conversation_keeps_the_history(chat_app: ServerProcess) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    send(client, "hi", GEMMA, browser)
    _, final = send(client, "and now?", ECHO, browser)
    seen = json.loads(text_of(final[-1]))
    assert seen["roles"] == ["user", "assistant", "user"]
    assert seen["texts"] == [f"{SYSTEM}\n\nhi", REPLY, "and now?"]

    _, final = send(client, "and Gemini?", GEMINI_ECHO, browser)
    seen = json.loads(text_of(final[-1]))
    assert seen["roles"] == ["user", "model", "user", "model", "user"]
    assert seen["system"] == SYSTEM
    assert seen["texts"][-1] == "and Gemini?"
    _, final = send(client, "back to Gemma", GEMINI_API, browser)
    assert text_of(final[-1]) == REPLY
    assert len(final) == 8


def test_failures_show_in_the_chat_and_every_message_is_kept(chat_app: ServerProcess) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    expectations = [
        (FLAKY, "Partial reply before the cut", "stopped mid-reply"),
        (PENDING, "", "not ready yet (GPU still provisioning"),
        (DOWN, "", "cannot be reached"),
        (VERTEX, "", "needs Google credentials"),
    ]
    for label, partial, message in expectations:
        _, final = send(client, f"hello {label}", label, browser)
        shown = text_of(final[-1])
        assert shown.startswith(partial)
        assert message in shown
        if label in (PENDING, DOWN):
            assert "meanwhile" in shown
    _, final = send(client, "still there?", GEMMA, browser)
    assert text_of(final[-1]) == REPLY

    session = wait_for(lambda: sessions_of(f"browser:{browser}"))[0]
    stored = wait_for(lambda: (m := messages_of(session.id)) and len(m) == 10 and m)
    users = [m["content"] for m in stored if m["role"] == "user"]
    assert users == [f"hello {label}" for label, _, _ in expectations] + ["still there?"]
    assert stored[1]["content"] == "Partial reply before the cut"
    assert "stopped mid-reply" in stored[1]["error"]
    assert [bool(m.get("error")) for m in stored if m["role"] == "assistant"] == [
        True,
        True,
        True,
        True,
        False,
    ]


def test_two_users_never_see_each_others_conversations(login_chat_app: ServerProcess) -> None:
    alice, bob = connect(login_chat_app, "alice"), connect(login_chat_app, "bob")
    alice.predict("", api_name="/conversations")
    send(alice, "alice's secret plan", GEMMA)
    session = wait_for(lambda: sessions_of("user:alice"))[0]

    _, listing, who = bob.predict("", api_name="/conversations")
    assert listing["choices"] == []
    assert "bob" in who
    try:
        chat, *_ = bob.predict(session.id, "", api_name="/restore")
    except AppError:
        chat = None  # Gradio already refuses a value that is not in bob's list
    assert not isinstance(chat, list)
    _, listing, _ = alice.predict("", api_name="/conversations")
    assert [c[1] for c in listing["choices"]] == [session.id]


async def test_history_queries_enforce_the_owner(firestore: Any) -> None:
    history = ChatHistory(firestore.project, DATABASE)
    history.append("s-alice", "user:alice", StoredMessage(0, "user", "mine"))
    assert await history.flush(20)
    assert await history.load("user:bob", "s-alice") is None
    assert await history.list_sessions("user:bob") == []
    assert [m.content for m in await history.load("user:alice", "s-alice") or []] == ["mine"]
    await history.close()


def test_sign_in_is_required_in_login_mode(login_chat_app: ServerProcess) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(login_chat_app.url + "/config", timeout=10)
    assert refused.value.code == 401
    with pytest.raises(ValueError, match=r"(?i)login|credentials|auth"):
        Client(login_chat_app.url, auth=("alice", "wrong"), verbose=False)


async def test_a_5000_turn_conversation_persists_and_restores_in_full(
    login_chat_app: ServerProcess, firestore: Any
) -> None:
    history = ChatHistory(firestore.project, DATABASE)
    turns = 5000
    history.append_many(
        "long-chat",
        "user:alice",
        [
            StoredMessage(i, "user" if i % 2 == 0 else "assistant", f"turn {i // 2} part {i % 2}")
            for i in range(2 * turns)
        ],
    )
    assert await history.flush(120)
    assert history.failed_commits == 0
    await history.close()

    def restore() -> list[dict[str, Any]]:
        alice = connect(login_chat_app, "alice")
        _, listing, _ = alice.predict("", api_name="/conversations")
        assert ["turn 0 part 0", "long-chat"] in listing["choices"]
        chat, *_ = alice.predict("long-chat", "", api_name="/restore")
        # The conversation goes on where it was: the next message gets the next number.
        send(alice, "one more", DOWN)
        return list(chat)

    chat = await asyncio.to_thread(restore)
    assert len(chat) == 2 * turns
    assert text_of(chat[0]) == "turn 0 part 0"
    assert text_of(chat[-1]) == f"turn {turns - 1} part 1"
    db = firestore_client()
    messages = db.collection("chat_sessions").document("long-chat").collection("messages")
    count = await asyncio.to_thread(
        lambda: wait_for(
            lambda: (n := messages.count().get()[0][0].value) == 2 * turns + 2 and n, 30
        )
    )
    assert count == 2 * turns + 2
    last = messages.where(filter=FieldFilter("seq", "==", 2 * turns)).get()
    assert [d.get("content") for d in last] == ["one more"]


def test_a_firestore_outage_loses_nothing(stack: Stack, chat_app: ServerProcess) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    group = stack.firestore.process_group
    assert group is not None
    stack.firestore.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)  # gcloud and its JVM are both gone
    try:
        _, final = send(client, "written while Firestore is down", GEMMA, browser)
        assert text_of(final[-1]) == REPLY  # the chat keeps working
        assert wait_for(lambda: chat_app.health()[1]["pending_writes"] == 2, 5)
    finally:
        stack.firestore.start()  # same port: the app's client reconnects on its own
    assert wait_for(lambda: chat_app.health()[1]["pending_writes"] == 0, 60)
    session = sessions_of(f"browser:{browser}")[0]
    assert [m["content"] for m in messages_of(session.id)] == [
        "written while Firestore is down",
        REPLY,
    ]


@asynccontextmanager
async def crowd(
    app: ServerProcess, sessions: int, name: str
) -> AsyncIterator[list[ChatAppSession]]:
    """That many browser-like sessions of the app, sharing one HTTP client."""
    limits = httpx.Limits(max_connections=2 * sessions + 10)
    async with httpx.AsyncClient(base_url=app.url, limits=limits, timeout=120) as http:
        config = await ChatAppSession.fetch_config(http)
        yield [
            ChatAppSession(http, config, f"{name}-{i}-{secrets.token_hex(3)}")
            for i in range(sessions)
        ]


async def test_50_concurrent_sessions_all_stream_and_persist(chat_app: ServerProcess) -> None:
    sessions = 50
    async with crowd(chat_app, sessions, "crowd") as clients:
        results = await asyncio.gather(*(c.send("hello", GEMMA, 32) for c in clients))
    assert [r.text for r in results] == [REPLY] * sessions
    # The app reads each model stream as fast as it comes and sends what arrived since its
    # last update: on an overloaded machine a short reply may land in one update, but
    # replies still stream.
    assert any(r.pieces >= 2 for r in results)

    def stored() -> int:
        return sum(
            1
            for c in clients
            for s in sessions_of(f"browser:{c.browser_id}")
            if len(messages_of(s.id)) == 2
        )

    assert await asyncio.to_thread(lambda: wait_for(lambda: stored() == sessions, 30))


async def test_more_chats_than_gradios_40_workers_stream_at_once(chat_app: ServerProcess) -> None:
    # Gradio runs 40 events at once unless told otherwise; the 41st chat would get its first
    # token only when some other 20 s reply had ended.
    sessions = 48
    everyone_started = asyncio.Event()
    started = 0
    waiting: list[int] = []  # chats still without a token when one gave up waiting

    async def first_token(client: ChatAppSession) -> None:
        nonlocal started
        stream = client.stream("send", "hello", LONG, 0.9, 0.95, 64, "", client.browser_id)
        try:
            async for _, outputs in stream:
                if assistant_text(outputs[0]):
                    break
            started += 1
            if started == sessions:
                everyone_started.set()
            # Its reply stays open until all have started, as a reader's would.
            try:
                await asyncio.wait_for(everyone_started.wait(), timeout=15)
            except TimeoutError:
                waiting.append(sessions - started)
        finally:
            await stream.aclose()

    async with crowd(chat_app, sessions, "wide") as clients:
        results = await asyncio.gather(*(first_token(c) for c in clients), return_exceptions=True)
    assert not waiting, f"{waiting[0]} chats waited 15 s for another reply to end"
    assert results == [None] * sessions
