"""The Gradio 6 chat UI: pick a model, stream replies, and restore earlier conversations."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import gradio as gr

from app.chat.backends import BackendError, ChatBackend, Sampling, Turn
from app.chat.context import fit_context
from app.chat.history import (
    ChatHistory,
    HistoryUnavailableError,
    MessageRejectedError,
    SessionSummary,
    StoredMessage,
    check_text,
    fit_text,
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
NOT_YOURS = "That conversation does not exist or is not yours."
# The sliders' ranges; the handler checks them again, as an API caller can send anything.
TEMPERATURE = (0.1, 1.0)
TOP_P = (0.1, 1.0)
MAX_TOKENS = (1, 4096)
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


def display_text(message: StoredMessage, not_saved: str | None = None) -> str:
    problems = [p for p in (message.error, not_saved) if p]
    if not problems:
        return message.content
    warning = "\n\n".join(f"⚠️ {p}" for p in problems)
    return f"{message.content}\n\n{warning}" if message.content else warning


def _warning(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": f"⚠️ {text}"}


def to_chatbot(
    messages: list[StoredMessage], failed: Mapping[str, str] | None = None
) -> list[dict[str, str]]:
    """Chat bubbles; `failed` (doc_id -> reason) marks messages the history refused."""
    failed = failed or {}
    return [{"role": m.role, "content": display_text(m, failed.get(m.doc_id))} for m in messages]


def sampling_problem(temperature: float, top_p: float, max_tokens: float) -> str | None:
    """Why slider values cannot be used (NaN and infinity pass a range check), or None."""
    for name, value, (low, high) in (
        ("Temperature", temperature, TEMPERATURE),
        ("Top-p", top_p, TOP_P),
        ("Max tokens", max_tokens, MAX_TOKENS),
    ):
        number = float(value) if isinstance(value, int | float) else math.nan
        if not math.isfinite(number) or not low <= number <= high:
            return f"{name} must be a number from {low:g} to {high:g}; got {value!r}."
    return None


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
        username = getattr(request, "username", None) if request is not None else None
        if self.settings.auth_mode == "none" and not browser_id and request is not None:
            # A message sent before the page finished loading has no browser id yet; the
            # conversation then belongs to this page view (it cannot be restored after reload).
            return f"page:{request.session_hash}"
        return self.owners.owner(username, browser_id)

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
        text, problem = self._checked(text, temperature, top_p, max_tokens)
        if problem:
            yield self._rejected(conversation, text, problem), skip, skip
            return
        backend_config = self._backend_for(backend_label)
        sampling = Sampling(float(temperature), float(top_p), int(max_tokens))
        if conversation is None or conversation.owner != owner:
            conversation = Conversation(owner=owner)
        is_new = not conversation.messages
        # Saved before the model is asked, so a failing backend never loses what the user wrote.
        question = self._keep_question(conversation, text, backend_config, sampling)

        shown = [*self._chat(conversation), {"role": "assistant", "content": ""}]
        # Ask the model before echoing the user's message, so both overlap.
        turns = self._window(conversation, system_prompt or "", backend_config)
        pieces = self._reply_stream(backend_config, turns, system_prompt or "", sampling)
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
            self._keep_reply(conversation, question, reply, error, sampling)

        listed = self._listed(choices, conversation) if is_new else skip
        yield self._chat(conversation), conversation, listed

    def _reply_stream(
        self, backend: BackendConfig, turns: list[Turn], system_prompt: str, sampling: Sampling
    ) -> AsyncIterator[str]:
        """The backend's reply, piece by piece, timed for the metrics."""
        stream = self.backends[backend.id].stream(turns, system_prompt, sampling)
        return aiter(watch_reply(backend.id, stream))

    def _chat(self, conversation: Conversation) -> list[dict[str, str]]:
        return to_chatbot(conversation.messages, self.history.failed_in(conversation.session_id))

    def _rejected(
        self, conversation: Conversation | None, text: str, problem: str
    ) -> list[dict[str, str]]:
        """The chat with a refused message and why; nothing is saved. The text is shown
        (made displayable) so the user can copy and fix it."""
        earlier = self._chat(conversation) if conversation is not None else []
        shown = fit_text(text, self.settings.max_message_bytes)[0]
        return [*earlier, {"role": "user", "content": shown}, _warning(problem)]

    def _keep_question(
        self, conversation: Conversation, text: str, backend: BackendConfig, sampling: Sampling
    ) -> StoredMessage:
        # Numbered by the history, so another tab on this conversation cannot interleave.
        seq = self.history.reserve_turn(conversation.session_id, len(conversation.messages))
        return self._keep(
            conversation, "user", text, seq=seq, backend_id=backend.id, sampling=sampling
        )

    def _keep_reply(
        self,
        conversation: Conversation,
        question: StoredMessage,
        reply: str,
        error: str | None,
        sampling: Sampling,
    ) -> None:
        """Keep a reply right after its question: cut to the size limit, never refused."""
        reply, cut = fit_text(reply, self.settings.max_message_bytes)
        if cut:
            limit = self.settings.max_message_bytes
            note = f"the reply was cut at {limit:,} bytes, the most a message may hold"
            error = f"{error}; {note}" if error else note.capitalize() + "."
        self._keep(
            conversation,
            "assistant",
            reply,
            seq=question.seq + 1,
            backend_id=question.backend_id or "",
            sampling=sampling,
            error=error,
            reply_to=question.doc_id,
        )

    def _checked(
        self, text: str, temperature: float, top_p: float, max_tokens: float
    ) -> tuple[str, str | None]:
        """The message normalized for storage, and why it cannot be sent (or None)."""
        problem = sampling_problem(temperature, top_p, max_tokens)
        try:
            text = check_text(text, self.settings.max_message_bytes)
        except MessageRejectedError as err:
            problem = str(err)
        return text, problem

    @staticmethod
    def _window(conversation: Conversation, system: str, backend: BackendConfig) -> list[Turn]:
        """What this model is sent: the turns that fit its context, with a notice if cut."""
        turns, left_out = fit_context(
            to_turns(conversation.messages), system, backend.context_chars
        )
        if left_out:
            gr.Info(
                f"{backend.label} sees the last {len(turns)} messages of this conversation; "
                f"{left_out} older ones are left out to fit its context. Start a new chat "
                "to begin afresh."
            )
        return turns

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
        seq: int,
        backend_id: str,
        sampling: Sampling,
        error: str | None = None,
        reply_to: str | None = None,
    ) -> StoredMessage:
        stored = StoredMessage(
            seq=seq,
            role=role,
            content=content,
            backend_id=backend_id,
            sampling=sampling.as_dict(),
            error=error,
            reply_to=reply_to,
        )
        conversation.messages.append(stored)
        self.history.append(conversation.session_id, conversation.owner, stored)
        return stored

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
            return self._unchanged(str(err))
        except HistoryUnavailableError:
            return self._unchanged("History is unreachable right now; try again in a moment.")
        if messages is None:
            return self._unchanged(NOT_YOURS)
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
        failed = self.history.failed_in(session_id)
        return to_chatbot(messages, failed), conversation, backend_update

    @staticmethod
    def _unchanged(warning: str) -> tuple[Any, Any, Any]:
        """Warn the user and leave the three outputs as they are."""
        gr.Warning(warning)
        skip = gr.skip()
        return skip, skip, skip

    async def delete(
        self,
        conversation: Conversation | None,
        choices: list[tuple[str, str]] | None,
        browser_id: str | None,
        request: gr.Request,
    ) -> tuple[Any, Any, Any]:
        """Delete the open conversation and every message of it, from Firestore too."""
        if conversation is None or not conversation.messages:
            return self._unchanged("Open a conversation first; there is nothing to delete.")
        try:
            owner = await self._owner(request, browser_id)
            deleted = owner == conversation.owner and await self.history.delete(
                owner, conversation.session_id
            )
        except IdentityError as err:
            return self._unchanged(str(err))
        except HistoryUnavailableError:
            return self._unchanged(
                "History is unreachable right now; nothing was deleted. Try again soon."
            )
        if not deleted:
            return self._unchanged(NOT_YOURS)
        gr.Info("The conversation and all its messages are deleted.")
        remaining = [c for c in choices or [] if c[1] != conversation.session_id]
        return [], None, remaining

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
                delete_chat = gr.Button("Delete this chat", variant="stop", size="sm")
                conversation_list = gr.Radio(
                    choices=[],
                    label="Your conversations",
                    elem_id="conversation-list",
                )
                who = gr.Markdown()
                if settings.auth_mode == "login":
                    gr.Button("Sign out", link="logout", size="sm", variant="secondary")
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
                temperature = gr.Slider(*TEMPERATURE, value=0.9, step=0.05, label="Temperature")
                top_p = gr.Slider(*TOP_P, value=0.95, step=0.05, label="Top-p")
                max_tokens = gr.Slider(*MAX_TOKENS, value=1024, step=1, label="Max tokens")
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
            delete_chat.click(
                self.delete,
                inputs=[conversation, choices_state, browser_id],
                outputs=[chatbot, conversation, choices_state],
                api_name="delete",
            )
        demo.queue(default_concurrency_limit=16, max_size=settings.queue_size)
        return demo
