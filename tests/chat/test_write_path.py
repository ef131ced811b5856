"""Nothing lost: one bad message cannot block others, stuck writes show in /healthz, SIGTERM
flushes the queue, and conversations keep their order, limits and owners. Firestore is the
emulator; apps run as real processes or on real HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import signal
import sys
from typing import Any

import httpx
import pytest

from app.chat.backends import Turn
from app.chat.context import fit_context
from app.chat.history import (
    ChatHistory,
    MessageRejectedError,
    StoredMessage,
    check_text,
    fit_text,
    restore_order,
)
from app.chat.server import create_app
from app.chat.settings import ChatSettings
from app.chat.ui import sampling_problem
from bench.chat_bench import ChatAppSession
from devtools.firestore_emulator import FirestoreEmulator
from devtools.ports import free_port
from devtools.processes import ServerProcess
from tests.chat.stack import DATABASE, ECHO, GEMMA, REPLY, Stack, firestore_client, start_app
from tests.chat.test_access import serve
from tests.chat.test_app import SYSTEM, connect, messages_of, sessions_of, text_of, wait_for

POISONS = {
    "a lone surrogate": "half a pair: \ud800 and more",
    "more than Firestore's 1 MiB field cap": "x" * 1_100_000,
}


def message_docs(session_id: str) -> list[tuple[str, dict[str, Any]]]:
    ref = firestore_client().collection("chat_sessions").document(session_id)
    return [(doc.id, doc.to_dict()) for doc in ref.collection("messages").get()]


@pytest.mark.parametrize("poison", sorted(POISONS))
async def test_a_poisoned_message_does_not_block_another_users_message(
    firestore: FirestoreEmulator, poison: str
) -> None:
    history = ChatHistory(firestore.project, DATABASE)
    bad = StoredMessage(0, "user", POISONS[poison])
    history.append("s-mallory", "user:mallory", bad)
    history.append("s-mallory", "user:mallory", StoredMessage(1, "assistant", "fine reply"))
    history.append("s-bob", "user:bob", StoredMessage(0, "user", "bob's question"))
    try:
        assert await history.flush(30), "the queue never drained"
        assert [m.content for m in await history.load("user:bob", "s-bob") or []] == [
            "bob's question"
        ]
        # The refused message is marked for its owner; the rest of its conversation is kept.
        failed = history.failed_in("s-mallory")
        assert list(failed) == [bad.doc_id]
        assert "not saved" in failed[bad.doc_id]
        stored = await asyncio.to_thread(messages_of, "s-mallory")
        assert [m["content"] for m in stored] == ["fine reply"]
        assert history.health().failed == 1
    finally:
        await history.close()


def test_slider_values_must_be_finite_and_in_range() -> None:
    assert sampling_problem(0.9, 0.95, 64) is None
    for values in ((math.nan, 0.9, 64), (0.9, math.inf, 64), (0.9, 0.9, -math.inf), (2.0, 0.9, 64)):
        assert "must be a number from" in (sampling_problem(*values) or "")


def test_the_history_window_keeps_the_newest_turns_that_fit() -> None:
    turns = [Turn("user" if i % 2 == 0 else "assistant", f"message {i:04d}") for i in range(6000)]
    kept, left_out = fit_context(turns, "be brief", 1000)
    assert kept[-1] == turns[-1]
    assert kept[0].role == "user"
    assert sum(len(t.content) for t in kept) + len("be brief") <= 1000
    assert left_out == len(turns) - len(kept) > 5000
    assert fit_context(turns[:4], "", 1000) == (turns[:4], 0)
    # A single question longer than the budget is still sent; the model will say so.
    huge = [Turn("user", "x" * 5000)]
    assert fit_context(huge, "", 1000) == (huge, 0)


def test_text_is_checked_before_it_is_queued() -> None:
    with pytest.raises(MessageRejectedError, match="unpaired surrogate at position 3"):
        check_text("ab\udc00", 1000)
    with pytest.raises(MessageRejectedError, match="1,001 bytes; the limit is 1,000"):
        check_text("é" * 500 + "x", 1000)
    assert check_text("cafe\u0301", 1000) == "café"  # NFC: one code point, as typed elsewhere
    text, cut = fit_text("ok \ud800 " + "y" * 100, 20)
    assert cut
    assert len(text.encode()) <= 20
    assert "\ud800" not in text


async def test_healthz_reports_degraded_while_writes_are_stuck(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Firestore that refuses every connection: the writer keeps the message and retries.
    monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    history = ChatHistory("demo-gemma-stack", DATABASE, stuck_after_s=1.0, max_backoff_s=0.5)
    settings = ChatSettings(
        chat_backends=[
            {
                "id": "e",
                "label": "E",
                "kind": "openai",
                "model": "m",
                "base_url": "http://127.0.0.1:9/v1",
            }
        ],  # type: ignore[list-item]
        shutdown_flush_s=0.1,
    )
    with serve(create_app(settings, history)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            assert (await http.get("/healthz")).status_code == 200
            history.append("s-1", "user:ann", StoredMessage(0, "user", "kept while stuck"))
            for _ in range(300):
                health = await http.get("/healthz")
                if health.status_code != 200:
                    break
                await asyncio.sleep(0.1)
            assert health.status_code == 503
            assert health.json()["status"] == "degraded"
            assert health.json()["pending_writes"] == 1
            # Liveness stays up: restarting would lose the queue.
            assert (await http.get("/livez")).status_code == 200
            assert history.failed_commits >= 1


def test_sigterm_with_queued_messages_loses_nothing(stack: Stack, firestore: Any) -> None:
    port = free_port()
    env = {
        **firestore.env(),
        "CHAT_BACKENDS": json.dumps(stack.backends()),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "GRADIO_ANALYTICS_ENABLED": "False",
        "SHUTDOWN_GRACE_S": "2",
        "SHUTDOWN_FLUSH_S": "120",
    }
    app = start_app(
        f"chat-sigterm-{port}",
        [sys.executable, "-m", "app.chat"],
        env,
        log_dir=stack.log_dir,
        port=port,
        health="/healthz",
    ).wait_ready()
    browsers = [f"browser-{secrets.token_hex(4)}" for _ in range(3)]
    stack.firestore.stop()
    try:
        for browser in browsers:
            client = connect(app)
            client.predict(browser, api_name="/conversations")
            job = client.submit(
                "saved at shutdown", ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send"
            )
            job.result(timeout=120)
        assert wait_for(lambda: app.health()[1]["pending_writes"] == 6, 10)
        app.signal_group(signal.SIGTERM)
    finally:
        stack.firestore.start()
    try:
        # The app flushes its queue once Firestore is back, then exits by itself.
        # uvicorn exits by re-raising the SIGTERM once shutdown is complete.
        assert app.finish(deadline_s=180) in {0, -signal.SIGTERM}, app.log_tail()
    finally:
        app.stop()
    for browser in browsers:
        sessions = sessions_of(f"browser:{browser}")
        assert len(sessions) == 1, app.log_tail()
        assert [m["role"] for m in messages_of(sessions[0].id)] == ["user", "assistant"]
    assert "not saved before shutdown" not in app.output()
    assert "saved at shutdown" not in app.output(), "message text reached the log"


def test_two_tabs_on_one_conversation_keep_each_reply_after_its_question(
    chat_app: ServerProcess,
) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    first, second = connect(chat_app), connect(chat_app)
    first.predict(browser, api_name="/conversations")
    first.submit("q1", ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send").result(timeout=120)
    session = wait_for(lambda: sessions_of(f"browser:{browser}"))[0]
    second.predict(browser, api_name="/conversations")
    second.predict(session.id, browser, api_name="/restore")
    for tab, question in ((first, "q2 from tab 1"), (second, "q3 from tab 2")):
        tab.submit(question, ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send").result(
            timeout=120
        )
    stored = wait_for(lambda: (m := message_docs(session.id)) and len(m) == 6 and m)
    ordered = restore_order([StoredMessage.from_doc(m, doc_id) for doc_id, m in stored])
    assert [m.content for m in ordered if m.role == "user"][1:] in (
        ["q2 from tab 1", "q3 from tab 2"],
        ["q3 from tab 2", "q2 from tab 1"],
    )
    assert [m.role for m in ordered] == ["user", "assistant"] * 3
    assert len({m["seq"] for _, m in stored}) == 6, "two tabs reused sequence numbers"
    reloaded = connect(chat_app)
    reloaded.predict(browser, api_name="/conversations")
    chat, *_ = reloaded.predict(session.id, browser, api_name="/restore")
    roles = [m["role"] for m in chat]
    assert roles == ["user", "assistant"] * 3
    for question, reply in zip(chat[::2], chat[1::2], strict=True):
        # The echo backend's reply names the last question it was asked.
        asked = json.loads(text_of(reply))["texts"][-1]
        assert asked.removeprefix(f"{SYSTEM}\n\n") == text_of(question)


def send_raw(
    app: ServerProcess, browser: str, text: str, temperature: float, label: str = ECHO
) -> str:
    """Send through Gradio's queue with a hand-made body: JSON clients refuse to send NaN."""
    config = httpx.get(app.url + "/config", timeout=30).json()
    session = ChatAppSession(httpx.AsyncClient(), config, browser)
    values = iter([text, label, temperature, 0.95, 32, SYSTEM, browser])
    data = [None if t == "state" else next(values) for t in session.input_types["send"]]
    body = {
        "data": data,
        "fn_index": session.endpoints["send"]["id"],
        "trigger_id": None,
        "event_data": None,
        "session_hash": session.session_hash,
    }
    joined = httpx.post(
        app.url + session.join_url,
        content=json.dumps(body),
        headers={"content-type": "application/json"},
        timeout=30,
    )
    joined.raise_for_status()
    params = {"session_hash": session.session_hash}
    with httpx.stream("GET", app.url + session.data_url, params=params, timeout=120) as events:
        for line in events.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") in {"process_generating", "process_completed"}:
                return text_of(message["output"]["data"][0][-1])
    raise AssertionError("no reply")


def test_bad_input_is_refused_with_a_message_and_nothing_is_saved(
    chat_app: ServerProcess,
) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    assert "Temperature must be a number from 0.1 to 1" in send_raw(
        chat_app, browser, "hello", math.nan
    )
    for text, message in (
        ("x" * 200_000, "the limit is 100,000 bytes"),
        # A browser can send this; JSON carries it as an escape.
        ("broken \ud800 text", "unpaired surrogate"),
    ):
        assert message in send_raw(chat_app, browser, text, 0.9)
    # The handler checks the model itself: an API caller can name any.
    assert "There is no model 'Claude' here; pick one of:" in send_raw(
        chat_app, browser, "hello", 0.9, "Claude"
    )
    client.submit("fine", ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send").result(
        timeout=120
    )
    session = wait_for(lambda: sessions_of(f"browser:{browser}"))[0]
    stored = wait_for(lambda: (m := messages_of(session.id)) and len(m) == 2 and m)
    assert stored[0]["content"] == "fine"


def test_delete_removes_the_conversation_and_its_messages(chat_app: ServerProcess) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    client = connect(chat_app)
    client.predict(browser, api_name="/conversations")
    client.submit("forget me", ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send").result(
        timeout=120
    )
    client.submit("and me", ECHO, 0.9, 0.95, 32, SYSTEM, browser, api_name="/send").result(
        timeout=120
    )
    session = wait_for(lambda: sessions_of(f"browser:{browser}"))[0]
    assert wait_for(lambda: len(messages_of(session.id)) == 4)
    chat, opened = client.predict(browser, api_name="/delete")
    assert chat == []
    assert opened == ""  # the address no longer names it
    assert sessions_of(f"browser:{browser}") == []
    assert messages_of(session.id) == []
    _, listing, _ = connect(chat_app).predict(browser, api_name="/conversations")
    assert listing["choices"] == []


async def test_rename_checks_the_owner_and_wins_over_a_queued_title(
    firestore: FirestoreEmulator,
) -> None:
    history = ChatHistory(firestore.project, DATABASE)
    history.append("s-alice", "user:alice", StoredMessage(0, "user", "first words"))
    # Still queued: the first message would write its own title; the new name wins.
    assert await history.rename("user:alice", "s-alice", "  Travel   plans ")
    assert not await history.rename("user:bob", "s-alice", "mine now")
    assert await history.flush(20)
    assert not await history.rename("user:bob", "s-alice", "mine now")
    assert [s.title for s in await history.list_sessions("user:alice")] == ["Travel plans"]
    assert await history.rename("user:alice", "s-alice", "Trip to Oslo")
    assert [s.title for s in await history.list_sessions("user:alice")] == ["Trip to Oslo"]
    assert not await history.rename("user:alice", "no-such-session", "x")
    await history.close()


async def test_delete_checks_the_owner(firestore: FirestoreEmulator) -> None:
    history = ChatHistory(firestore.project, DATABASE)
    history.append("s-alice", "user:alice", StoredMessage(0, "user", "mine"))
    assert await history.flush(20)
    assert not await history.delete("user:bob", "s-alice")
    assert not await history.delete("user:bob", "no-such-session")
    assert [m.content for m in await history.load("user:alice", "s-alice") or []] == ["mine"]
    assert await history.delete("user:alice", "s-alice")
    assert await history.load("user:alice", "s-alice") is None
    assert await asyncio.to_thread(messages_of, "s-alice") == []
    await history.close()


async def test_messages_expire_when_a_retention_is_set(firestore: FirestoreEmulator) -> None:
    history = ChatHistory(firestore.project, DATABASE, ttl_days=30)
    message = StoredMessage(0, "user", "short-lived")
    history.append("s-ttl", "user:ann", message)
    assert await history.flush(20)
    await history.close()
    stored = await asyncio.to_thread(messages_of, "s-ttl")
    assert (stored[0]["expire_at"] - stored[0]["created_at"]).days == 30
    session = (await asyncio.to_thread(sessions_of, "user:ann"))[0]
    assert (session.get("expire_at") - session.get("updated_at")).days == 30


async def test_a_3000_turn_conversation_still_gets_answers(
    chat_app: ServerProcess, firestore: FirestoreEmulator
) -> None:
    browser = f"browser-{secrets.token_hex(4)}"
    history = ChatHistory(firestore.project, DATABASE)
    turns = 3000
    history.append_many(
        "very-long-chat",
        f"browser:{browser}",
        [
            StoredMessage(i, "user" if i % 2 == 0 else "assistant", f"turn {i // 2} part {i % 2}")
            for i in range(2 * turns)
        ],
    )
    assert await history.flush(120)
    await history.close()

    def ask() -> list[Any]:
        client = connect(chat_app)
        client.predict(browser, api_name="/conversations")
        client.predict("very-long-chat", browser, api_name="/restore")
        answers = []
        for _ in range(2):
            job = client.submit("and now?", GEMMA, 0.9, 0.95, 64, SYSTEM, browser, api_name="/send")
            answers.append(text_of(job.result(timeout=120)[-1]))
        return answers

    assert await asyncio.to_thread(ask) == [REPLY, REPLY]
