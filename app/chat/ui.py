"""The Gradio 6 chat UI: pick a model, stream replies, and restore earlier conversations."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.chat.backends import BackendError, ChatBackend, Sampling, Turn
from app.chat.history import (
    ChatHistory,
    HistoryUnavailableError,
    SessionSummary,
    StoredMessage,
    new_session_id,
    title_for,
)
from app.chat.identity import IdentityError, OwnerResolver, new_browser_id
from app.chat.metrics import watch_reply
from app.chat.settings import BackendConfig, ChatSettings

log = logging.getLogger(__name__)

LONG_HISTORY = 400
STREAMS_AT_FULL_RATE = 10
BROWSER_ID_KEY = "gemma-stack-chat-browser-id"
CSS = """
#chat-title h1 { margin: 0; font-size: 1.4rem; }
#chat-title p { margin: 0.2rem 0 0; color: var(--body-text-color-subdued); }
"""


@dataclass
class Conversation:
    """The open conversation of one browser tab (kept server-side in gr.State)."""

    owner: str
    session_id: str = field(default_factory=new_session_id)
    messages: list[StoredMessage] = field(default_factory=list)


def display_text(message: StoredMessage) -> str:
    if not message.error:
        return message.content
    warning = f"⚠️ {message.error}"
    return f"{message.content}\n\n{warning}" if message.content else warning


def _warning(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"⚠️ {text}"}


def to_chatbot(messages: list[StoredMessage]) -> list[dict[str, str]]:
    return [{"role": m.role, "content": display_text(m)} for m in messages]


def to_turns(messages: list[StoredMessage]) -> list[Turn]:
    """What the model sees: every user message, and replies that completed without error."""
    return [
        Turn("user" if m.role == "user" else "assistant", m.content)
        for m in messages
        if m.role == "user" or not m.error
    ]


def conversation_choices(sessions: list[SessionSummary]) -> list[tuple[str, str]]:
    return [(s.title, s.session_id) for s in sessions]


class ChatUI:
    """Builds the Blocks and holds the handlers; one instance serves every user."""

    def __init__(
        self,
        settings: ChatSettings,
        history: ChatHistory,
        backends: Mapping[str, ChatBackend],
        owners: OwnerResolver,
    ) -> None:
        self.settings = settings
        self.history = history
        self.backends = backends
        self.owners = owners
        self.labels = [b.label for b in settings.chat_backends]
        self.streaming = 0  # replies streaming right now, across all users

    # -- helpers ---------------------------------------------------------------------------

    async def _owner(self, request: gr.Request | None, browser_id: str | None) -> str:
        headers: Mapping[str, str] = dict(getattr(request, "headers", None) or {})
        username = getattr(request, "username", None) if request is not None else None
        if self.settings.auth_mode == "none" and not browser_id and request is not None:
            # A message sent before the page finished loading has no browser id yet; the
            # conversation then belongs to this page view (it cannot be restored after reload).
            return f"page:{request.session_hash}"
        return await self.owners.owner(headers, username, browser_id)

    def _alternative(self, failed_id: str) -> str | None:
        failed = self.settings.backend_by_id(failed_id)
        others = [b for b in self.settings.chat_backends if b.id != failed_id]
        if not others or failed is None:
            return None
        other_kind = [b for b in others if b.kind != failed.kind or b.vertex != failed.vertex]
        return (other_kind or others)[0].label

    def _failure_text(self, backend_id: str, err: BackendError) -> str:
        alternative = self._alternative(backend_id) if err.transient else None
        return f"{err.message} Pick {alternative} meanwhile." if alternative else err.message

    # -- handlers --------------------------------------------------------------------------

    async def on_load(
        self, browser_id: str | None, request: gr.Request
    ) -> tuple[str, Any, list[tuple[str, str]], str]:
        """Give a new browser its id, and list the user's conversations."""
        if self.settings.auth_mode == "none" and not browser_id:
            browser_id = new_browser_id()
        try:
            owner = await self._owner(request, browser_id)
        except IdentityError as err:
            return browser_id or "", gr.update(choices=[]), [], f"⚠️ {err}"
        who = owner.partition(":")[2] if self.settings.auth_mode != "none" else None
        badge = f"Signed in as **{who}**" if who else "Conversations are kept for this browser."
        try:
            sessions = await self.history.list_sessions(owner, self.settings.conversation_list_size)
        except HistoryUnavailableError:
            unsaved = conversation_choices(self.history.unsaved_sessions(owner))
            return (
                browser_id or "",
                gr.update(choices=unsaved, value=None),
                unsaved,
                f"{badge} ⚠️ History is unreachable right now; new messages are kept and "
                "saved when it returns.",
            )
        choices = conversation_choices(sessions)
        return browser_id or "", gr.update(choices=choices, value=None), choices, badge

    async def send(  # noqa: PLR0917 - Gradio passes event inputs positionally
        self,
        message: str,
        conversation: Conversation | None,
        choices: list[tuple[str, str]] | None,
        backend_label: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        system_prompt: str,
        browser_id: str | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, Any, Any]]:
        """Save the user's message, stream the reply token by token, then save the reply.

        Outputs are (chatbot, conversation state, conversation list state). Per-token yields
        skip only State outputs: skipping a visible component makes Gradio rebuild it,
        which costs milliseconds per token and dominated latency at 50 sessions.
        """
        skip = gr.skip()
        text = (message or "").strip()
        try:
            owner = await self._owner(request, browser_id) if text else ""
        except IdentityError as err:
            yield [{"role": "user", "content": text}, _warning(str(err))], skip, skip
            return
        if not text:
            yield skip, skip, skip
            return
        backend_config = self._backend_for(backend_label)
        sampling = Sampling(float(temperature), float(top_p), int(max_tokens))
        if conversation is None or conversation.owner != owner:
            conversation = Conversation(owner=owner)
        is_new = not conversation.messages
        # Saved before the model is asked, so a failing backend never loses what the user wrote.
        self._keep(conversation, "user", text, backend_id=backend_config.id, sampling=sampling)

        shown = [*to_chatbot(conversation.messages), {"role": "assistant", "content": ""}]
        # Ask the model before echoing the user's message, so both overlap.
        turns = to_turns(conversation.messages)
        backend = self.backends[backend_config.id]
        pieces = aiter(
            watch_reply(backend_config.id, backend.stream(turns, system_prompt or "", sampling))
        )
        next_piece: asyncio.Future[str | None] = asyncio.ensure_future(anext(pieces, None))
        reply = ""
        error: str | None = "the reply was interrupted (the browser disconnected)"
        self.streaming += 1
        try:
            yield list(shown), conversation, skip
            last_update = 0.0
            while (piece := await next_piece) is not None:
                reply += piece
                next_piece = asyncio.ensure_future(anext(pieces, None))
                now = time.monotonic()
                if now - last_update >= self._update_interval_s(len(shown)):
                    last_update = now
                    shown[-1] = {"role": "assistant", "content": reply}
                    yield list(shown), skip, skip
            error = None
        except BackendError as err:
            error = self._failure_text(backend_config.id, err)
        except Exception as err:  # the app keeps serving whatever a backend does
            log.exception("backend %s failed unexpectedly", backend_config.id)
            error = f"{backend_config.label} failed unexpectedly ({type(err).__name__})."
        finally:
            self.streaming -= 1
            next_piece.cancel()
            # Runs on a browser disconnect too (the generator is closed): the reply is kept.
            self._keep(
                conversation,
                "assistant",
                reply,
                backend_id=backend_config.id,
                sampling=sampling,
                error=error,
            )

        listed = self._listed(choices, conversation) if is_new else skip
        yield to_chatbot(conversation.messages), conversation, listed

    def _update_interval_s(self, shown_messages: int) -> float:
        # Tokens that arrive faster than the screen needs share an update. Every update costs
        # the one event loop CPU, so with many streams each updates less often and first
        # tokens of new replies are not stuck behind them; a very long history makes every
        # update O(history), so it is sent less often too.
        interval_s = self.settings.stream_update_interval_ms / 1000
        interval_s *= max(1.0, self.streaming / STREAMS_AT_FULL_RATE)
        return max(interval_s, 0.15) if shown_messages >= LONG_HISTORY else interval_s

    def _listed(
        self, choices: list[tuple[str, str]] | None, conversation: Conversation
    ) -> list[tuple[str, str]]:
        title = title_for(conversation.messages[0].content)
        listed = [(title, conversation.session_id), *(choices or [])]
        return listed[: self.settings.conversation_list_size]

    def _backend_for(self, label: str) -> BackendConfig:
        try:
            return self.settings.backend_by_label(label)
        except KeyError:
            return self.settings.chat_backends[0]

    def _keep(
        self,
        conversation: Conversation,
        role: str,
        content: str,
        *,
        backend_id: str,
        sampling: Sampling,
        error: str | None = None,
    ) -> None:
        stored = StoredMessage(
            seq=len(conversation.messages),
            role=role,
            content=content,
            backend_id=backend_id,
            sampling=sampling.as_dict(),
            error=error,
        )
        conversation.messages.append(stored)
        self.history.append(conversation.session_id, conversation.owner, stored)

    @staticmethod
    def show_choices(choices: list[tuple[str, str]], conversation: Conversation | None) -> Any:
        selected = conversation.session_id if conversation is not None else None
        return gr.update(choices=choices, value=selected)

    async def restore(
        self, session_id: str | None, browser_id: str | None, request: gr.Request
    ) -> tuple[Any, Any, Any]:
        """Open one of the user's earlier conversations, in full."""
        skip = gr.skip()
        if not session_id:
            return skip, skip, skip
        try:
            owner = await self._owner(request, browser_id)
            messages = await self.history.load(owner, session_id)
        except IdentityError as err:
            gr.Warning(str(err))
            return skip, skip, skip
        except HistoryUnavailableError:
            gr.Warning("History is unreachable right now; try again in a moment.")
            return skip, skip, skip
        if messages is None:
            gr.Warning("That conversation does not exist or is not yours.")
            return skip, skip, skip
        conversation = Conversation(owner=owner, session_id=session_id, messages=messages)
        last_backend = next(
            (
                self.settings.backend_by_id(m.backend_id)
                for m in reversed(messages)
                if m.backend_id and self.settings.backend_by_id(m.backend_id)
            ),
            None,
        )
        backend_update = gr.update(value=last_backend.label) if last_backend else skip
        return to_chatbot(messages), conversation, backend_update

    @staticmethod
    def new_chat() -> tuple[list[Any], None, Any]:
        return [], None, gr.update(value=None)

    # -- layout ----------------------------------------------------------------------------

    def build(self) -> gr.Blocks:
        settings = self.settings
        # Not `with gr.Blocks() as demo`: Blocks.__enter__ (which returns self) is untyped.
        demo = gr.Blocks(title="Gemma Stack Chat", fill_height=True)
        with demo:
            browser_id = gr.BrowserState(
                None, storage_key=BROWSER_ID_KEY, secret=settings.browser_state_key
            )
            conversation = gr.State(None)
            choices_state = gr.State([])
            with gr.Sidebar(label="Conversations", width=300):
                new_chat = gr.Button("New chat", variant="primary")
                conversation_list = gr.Radio(
                    choices=[],
                    label="Your conversations",
                    elem_id="conversation-list",
                )
                who = gr.Markdown()
            gr.Markdown(
                "# Gemma Stack Chat\nSelf-hosted Gemma and Gemini side by side; "
                "every conversation is kept.",
                elem_id="chat-title",
            )
            if settings.chat_notice:
                gr.Markdown(settings.chat_notice, elem_id="chat-notice")
            with gr.Row():
                backend = gr.Dropdown(
                    choices=self.labels, value=self.labels[0], label="Model", scale=2
                )
                temperature = gr.Slider(0.1, 1.0, value=0.9, step=0.05, label="Temperature")
                top_p = gr.Slider(0.1, 1.0, value=0.95, step=0.05, label="Top-p")
                max_tokens = gr.Slider(1, 4096, value=1024, step=1, label="Max tokens")
            with gr.Accordion("System prompt (persona)", open=False):
                system_prompt = gr.Textbox(value=settings.system_prompt, lines=3, show_label=False)
            chatbot = gr.Chatbot(label="Chat", scale=1, height="60vh", buttons=["copy", "copy_all"])
            message = gr.Textbox(
                placeholder="Ask anything…", show_label=False, submit_btn=True, autofocus=True
            )

            demo.load(
                self.on_load,
                inputs=[browser_id],
                outputs=[browser_id, conversation_list, choices_state, who],
                api_name="conversations",
            )
            message.submit(
                self.send,
                inputs=[
                    message,
                    conversation,
                    choices_state,
                    backend,
                    temperature,
                    top_p,
                    max_tokens,
                    system_prompt,
                    browser_id,
                ],
                outputs=[chatbot, conversation, choices_state],
                api_name="send",
                concurrency_limit=settings.max_concurrent_chats,
                concurrency_id="chat",
                show_progress="hidden",
            )
            # Registered after `send`, which has already read the message when this clears it.
            message.submit(None, js="() => ''", outputs=[message], queue=False)
            choices_state.change(
                self.show_choices,
                inputs=[choices_state, conversation],
                outputs=[conversation_list],
                api_visibility="private",
                queue=False,
            )
            conversation_list.input(
                self.restore,
                inputs=[conversation_list, browser_id],
                outputs=[chatbot, conversation, backend],
                api_name="restore",
            )
            new_chat.click(
                self.new_chat,
                outputs=[chatbot, conversation, conversation_list],
                api_name="new_chat",
            )
        demo.queue(default_concurrency_limit=16, max_size=settings.queue_size)
        return demo
