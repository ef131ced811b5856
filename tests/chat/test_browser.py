"""End to end in headless Chromium: stream, switch model, reload, restore; saves the README shot."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from devtools.processes import ServerProcess
from tests.chat.stack import GEMINI_API, REPLY, ROOT

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
