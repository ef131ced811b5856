"""The Gradio 6 chat UI: stream replies, stop them, compare two models, reopen conversations."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from html import escape
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
# Each screen update costs the one event loop about 0.8 ms (Gradio's postprocessing, diff and
# SSE message), so with more than this many replies streaming each one updates less often,
# keeping the loop's update work near a constant share of a core ...
STREAMS_AT_FULL_RATE = 4
# ... but never less than twice a second.
SLOWEST_UPDATE_S = 0.5
QUEUE_STATUS_EVERY_S = 2.0
# How many page loads, restores, renames and the like run at once.
SHORT_EVENTS = 16
BROWSER_ID_KEY = "gemma-stack-chat-browser-id"
NOT_YOURS = "That conversation does not exist or is not yours."
COMPARE_OFF = "Off"
DETAILS_START = '\n\n<span class="reply-details">'
# The sliders' ranges; the handler checks them again, as an API caller can send anything.
TEMPERATURE = (0.1, 1.0)
TOP_P = (0.1, 1.0)
MAX_TOKENS = (1, 4096)
DEFAULT_SAMPLING = Sampling()
CSS = """
#chat-title h1 { margin: 0; font-size: 1.15rem; }
#chat-title p { margin: 0; color: var(--body-text-color-subdued); font-size: 0.85rem; }
.reply-details { display: block; margin-top: 0.35rem; font-size: 0.75rem;
  color: var(--body-text-color-subdued); }
#compare-row .compare-pane { min-height: 8rem; max-height: 50vh; overflow-y: auto;
  padding: 0.5rem; border: 1px solid var(--border-color-primary); border-radius: 0.5rem; }
@media (max-width: 640px) {
  #chat-title p { display: none; }
  #compare-row { flex-direction: column; }
}
"""
# On a phone the sidebar starts closed, so it does not cover the chat.
CLOSE_SIDEBAR_ON_PHONES = """
() => {
  if (window.innerWidth < 700) document.querySelector('.sidebar.open .toggle-button')?.click();
}
"""
# Keeps the address bar on the open conversation, so reload and copy reopen it.
SYNC_ADDRESS = """
(id) => {
  const url = new URL(window.location.href);
  if (id) { url.searchParams.set('c', id); } else { url.searchParams.delete('c'); }
  window.history.replaceState(null, '', url);
}
"""


@dataclass
class Conversation:
    """The open conversation of one browser tab (kept server-side in gr.State)."""

    owner: str
    session_id: str = field(default_factory=new_session_id)
    messages: list[StoredMessage] = field(default_factory=list)


@dataclass
class Reply:
    """One reply as it streams: its text so far and the timings its details are made of."""

    backend: BackendConfig
    started: float = field(default_factory=time.perf_counter)
    pieces: list[str] = field(default_factory=list)
    first_at: float | None = None
    ended_at: float | None = None
    finish: str = "interrupted"
    error: str | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def add(self, piece: str) -> None:
        if self.first_at is None:
            self.first_at = time.perf_counter()
        self.pieces.append(piece)

    def end(self, finish: str, error: str | None = None) -> None:
        if self.ended_at is None:
            self.ended_at = time.perf_counter()
            self.finish = finish
            self.error = error

    def details(self) -> dict[str, Any]:
        """What is stored with the reply. Tokens are streamed pieces: one token each on
        OpenAI-compatible servers, a few on Gemini's API."""
        ended = self.ended_at or time.perf_counter()
        ttft = (self.first_at - self.started) if self.first_at is not None else None
        stream_s = ended - self.first_at if self.first_at is not None else 0.0
        count = len(self.pieces)
        rate = (count - 1) / stream_s if count > 1 and stream_s > 0 else None
        return {
            "backend": self.backend.label,
            "backend_id": self.backend.id,
            "model": self.backend.model,
            "ttft_s": round(ttft, 3) if ttft is not None else None,
            "tokens": count,
            "token_unit": "token" if self.backend.kind == "openai" else "chunk",
            "tokens_per_s": round(rate, 1) if rate is not None else None,
            "duration_s": round(ended - self.started, 3),
            "finish": self.finish,
        }


def details_text(details: Mapping[str, Any] | None, created: Any = None) -> str:
    """One quiet line under a reply: backend, model, TTFT, rate, count, how it ended."""
    if not details:
        return ""
    unit = str(details.get("token_unit") or "token")
    parts = [str(details.get("backend", "")), str(details.get("model", ""))]
    if details.get("ttft_s") is not None:
        parts.append(f"first token {float(details['ttft_s']):.2f} s")
    if details.get("tokens_per_s") is not None:
        parts.append(f"{float(details['tokens_per_s']):.0f} {unit}s/s")
    parts.append(f"{int(details.get('tokens') or 0)} {unit}s")
    finish = str(details.get("finish") or "")
    parts.append("⏹ stopped" if finish == "stopped" else finish)
    if created is not None and hasattr(created, "strftime"):
        parts.append(created.strftime("%Y-%m-%d %H:%M UTC"))
    return " · ".join(escape(p) for p in parts if p)


def without_details(text: str) -> str:
    """A bubble's text without its details line (what a copy of the reply should hold)."""
    return text.split(DETAILS_START, 1)[0]


def display_text(message: StoredMessage, not_saved: str | None = None) -> str:
    problems = [p for p in (message.error, not_saved) if p]
    text = message.content
    if problems:
        warning = "\n\n".join(f"⚠️ {p}" for p in problems)
        text = f"{text}\n\n{warning}" if text else warning
    line = details_text(message.details, message.created_at)
    if line:
        text = f"{text}{DETAILS_START}{line}</span>"
    return text


def _warning(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": f"⚠️ {text}"}


def to_chatbot(
    messages: list[StoredMessage], failed: Mapping[str, str] | None = None
) -> list[dict[str, Any]]:
    """Chat bubbles; `failed` (doc_id -> reason) marks messages the history refused. An
    alternative reply (compare mode, regenerate) is shown folded under the one kept."""
    failed = failed or {}
    bubbles: list[dict[str, Any]] = []
    for m in messages:
        bubble: dict[str, Any] = {"role": m.role, "content": display_text(m, failed.get(m.doc_id))}
        if m.alternative and m.role == "user":
            bubble["content"] = f"✏️ *Edited; the earlier version:*\n\n{bubble['content']}"
        elif m.alternative:
            label = (m.details or {}).get("backend") or "another model"
            bubble["metadata"] = {"title": f"Other answer, from {label}: not continued"}
        bubbles.append(bubble)
    return bubbles


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
    """What the model sees: the messages the conversation continued with (not edited-away
    questions or answers not picked), replies only if they completed without error (a
    stopped reply counts, as far as it got)."""
    return [
        Turn("user" if m.role == "user" else "assistant", m.content)
        for m in messages
        if not m.alternative and (m.role == "user" or not m.error)
    ]


def update_interval_s(interval_s: float, streaming: int, shown_messages: int) -> float:
    """How long tokens of one reply are gathered into one screen update.

    Tokens that arrive faster than the screen needs share an update. Every update costs the
    one event loop CPU, so with many replies streaming each updates less often (up to
    SLOWEST_UPDATE_S) and first tokens of new replies are not stuck behind them; a very long
    history makes every update O(history), so it is sent less often too.
    """
    if streaming > STREAMS_AT_FULL_RATE:
        busy = interval_s * streaming / STREAMS_AT_FULL_RATE
        interval_s = max(interval_s, min(busy, SLOWEST_UPDATE_S))
    return max(interval_s, 0.15) if shown_messages >= LONG_HISTORY else interval_s


def compare_mode(configs: Sequence[BackendConfig]) -> bool:
    return len(configs) > 1


def conversation_choices(sessions: list[SessionSummary]) -> list[tuple[str, str]]:
    return [(s.title, s.session_id) for s in sessions]


def compare_pane(reply: Reply) -> str:
    """A compare pane: the model's name, its text so far, and its live numbers."""
    details = reply.details()
    state = "" if reply.ended_at is not None else " · streaming…"
    text = reply.text or ("…" if reply.ended_at is None else "")
    if reply.error:
        text = f"{text}\n\n⚠️ {reply.error}" if text else f"⚠️ {reply.error}"
    line = details_text(details) if reply.ended_at is not None or reply.pieces else ""
    return (
        f"**{escape(reply.backend.label)}**{state}\n\n{text}\n\n"
        f'<span class="reply-details">{line}</span>'
    )


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
        # Per page session: set by Stop, watched by the reply streaming in that page.
        self._stops: dict[str, asyncio.Event] = {}

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

    async def open_linked(self, browser_id: str | None, request: gr.Request) -> tuple[Any, ...]:
        """After load: reopen the conversation named in the address (`?c=ID`), if it is the
        user's. Another user's link, or a deleted conversation, opens nothing."""
        session_id = (request.query_params.get("c") or "").strip() if request else ""
        if not session_id:
            return tuple(gr.skip() for _ in range(9))
        opened = await self.restore(session_id, browser_id, request)
        if not isinstance(opened[1], Conversation):
            # Nothing of it is shown, and the address stops naming it.
            return (*opened, gr.skip(), "")
        return (*opened, gr.update(value=session_id), session_id)

    @staticmethod
    def take_message(message: str) -> tuple[Any, str]:
        """Empty the input at once and show Stop; the text goes on to `chat_turn`."""
        return gr.update(value="", submit_btn=False, stop_btn=True), message

    @staticmethod
    def input_busy() -> Any:
        return gr.update(submit_btn=False, stop_btn=True)

    @staticmethod
    def input_ready() -> Any:
        return gr.update(submit_btn=True, stop_btn=False)

    async def stop(self, request: gr.Request) -> None:
        """Stop the reply (or both compare replies) streaming in this page."""
        if request is not None and (event := self._stops.get(request.session_hash or "")):
            event.set()

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
        """Save the user's message, stream the reply, then save the reply with its details.

        Outputs are (chatbot, conversation state, conversation list state).
        """
        async for update in self.chat_turn(
            message,
            conversation,
            choices,
            backend_label,
            COMPARE_OFF,
            temperature,
            top_p,
            max_tokens,
            system_prompt,
            browser_id,
            request,
        ):
            yield update[:3]

    async def chat_turn(  # noqa: PLR0917 - Gradio passes event inputs positionally
        self,
        message: str,
        conversation: Conversation | None,
        choices: list[tuple[str, str]] | None,
        backend_label: str,
        compare_label: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        system_prompt: str,
        browser_id: str | None,
        request: gr.Request,
        supersede_from: int | None = None,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """One turn: the question saved first, then one reply (or two side by side, in
        compare mode) streamed and saved.

        Outputs are (chatbot, conversation, conversation list, conversation id, compare row,
        left pane, right pane). Updates are coalesced by time, never sent per token.
        """
        skip = gr.skip()
        rest = (skip, skip, skip, skip)
        text = message.strip() if isinstance(message, str) else ""
        try:
            owner = await self._owner(request, browser_id) if text else ""
        except IdentityError as err:
            yield [{"role": "user", "content": text}, _warning(str(err))], skip, skip, *rest
            return
        if not text:
            yield skip, skip, skip, *rest
            return
        compare = compare_label not in (None, "", COMPARE_OFF)
        models = [backend_label, compare_label] if compare else [backend_label]
        text, problem = self._checked(text, models, temperature, top_p, max_tokens)
        if problem:
            yield self._rejected(conversation, text, problem), skip, skip, *rest
            return
        configs = [self._backend_for(backend_label)]
        if compare:
            other = self._backend_for(compare_label)
            if other.id != configs[0].id:
                configs.append(other)
        sampling = Sampling(float(temperature), float(top_p), int(max_tokens))
        if conversation is None or conversation.owner != owner:
            conversation = Conversation(owner=owner)
        elif supersede_from is not None:
            # An edit: what it replaces stays saved, marked as no longer continued.
            self._set_aside(conversation, supersede_from)
        is_new = not conversation.messages
        system = system_prompt if isinstance(system_prompt, str) else ""
        # Saved before the model is asked, so a failing backend never loses what the user wrote.
        question = self._keep_question(conversation, text, configs[0], sampling, system)
        listed = self._listed(choices, conversation) if is_new else skip
        async for update in self._turn_updates(
            conversation, question, configs, sampling, system, request, listed
        ):
            yield update

    async def _turn_updates(  # noqa: PLR0917
        self,
        conversation: Conversation,
        question: StoredMessage,
        configs: Sequence[BackendConfig],
        sampling: Sampling,
        system: str,
        request: gr.Request | None,
        listed: Any,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """The screen updates of replies streaming to `question` (outputs as `chat_turn`)."""
        skip = gr.skip()
        shown = self._chat(conversation)
        compare = compare_mode(configs)
        panes: list[Any] = [skip, skip]
        # The first update carries the state, the list, the id and the compare row (shown in
        # compare mode, hidden otherwise); later ones only what changed: Gradio copies every
        # State it is sent, and each output costs the one event loop CPU.
        opened: tuple[Any, ...] = (
            conversation,
            listed,
            conversation.session_id,
            gr.update(visible=compare),
        )
        unchanged = (skip, skip, skip, skip)
        stream = self._stream_replies(conversation, question, configs, sampling, system, request)
        async with aclosing(stream):
            async for replies, done in stream:
                if compare:
                    panes = [compare_pane(r) for r in replies]
                if done:
                    break
                if compare:
                    yield (shown if opened is not unchanged else skip), *opened, *panes
                else:
                    live = {"role": "assistant", "content": replies[0].text}
                    yield [*shown, live], *opened, skip, skip
                opened = unchanged
        final = self._chat(conversation)
        row = gr.update(visible=True) if compare else skip
        yield final, conversation, skip, conversation.session_id, row, *panes

    async def _stream_replies(  # noqa: PLR0917
        self,
        conversation: Conversation,
        question: StoredMessage,
        configs: Sequence[BackendConfig],
        sampling: Sampling,
        system: str,
        request: gr.Request | None,
    ) -> AsyncGenerator[tuple[list[Reply], bool]]:
        """Stream one reply per backend at once; yields (replies, done) at most once per
        update interval, and keeps every reply (stopped, failed or complete) at the end."""
        key = request.session_hash if request is not None else None
        stop = asyncio.Event()
        if key:
            self._stops[key] = stop
        changed = asyncio.Event()
        replies = [Reply(c) for c in configs]
        tasks = [
            asyncio.ensure_future(self._pump(r, conversation, system, sampling, changed))
            for r in replies
        ]
        stopping = asyncio.ensure_future(stop.wait())
        self.streaming += len(replies)
        try:
            yield replies, False
            last_update = 0.0
            while not all(t.done() for t in tasks) and not stop.is_set():
                changed.clear()
                waiting = asyncio.ensure_future(changed.wait())
                await asyncio.wait([*tasks, stopping, waiting], return_when=asyncio.FIRST_COMPLETED)
                waiting.cancel()
                # Tokens that arrive within the interval share the next update.
                hold = self._update_interval_s(len(conversation.messages)) - (
                    time.monotonic() - last_update
                )
                if hold > 0 and not stop.is_set():
                    await asyncio.wait(
                        [stopping, *tasks], timeout=hold, return_when=asyncio.FIRST_COMPLETED
                    )
                if stop.is_set():
                    break
                last_update = time.monotonic()
                yield replies, False
            for reply in replies:
                reply.end("stopped")
        finally:
            self.streaming -= len(replies)
            stopping.cancel()
            for task in tasks:
                task.cancel()
            if key and self._stops.get(key) is stop:
                del self._stops[key]
            # Runs on a browser disconnect too (the generator is closed): replies are kept.
            self._keep_replies(conversation, question, replies, sampling)
        yield replies, True

    async def _pump(
        self,
        reply: Reply,
        conversation: Conversation,
        system: str,
        sampling: Sampling,
        changed: asyncio.Event,
    ) -> None:
        """Read one backend's stream into `reply`; the per-token path does nothing else."""
        config = reply.backend
        turns = self._window(conversation, system, config)
        # Timed and counted for /metrics on the way.
        pieces = watch_reply(config.id, self.backends[config.id].stream(turns, system, sampling))
        try:
            async for piece in pieces:
                reply.add(piece)
                changed.set()
        except BackendError as err:
            reply.end("error", self._failure_text(config.id, err))
        except asyncio.CancelledError:
            reply.end("stopped")
            raise
        except Exception as err:  # the app keeps serving whatever a backend does
            log.exception("backend %s failed unexpectedly", config.id)
            reply.end("error", f"{config.label} failed unexpectedly ({type(err).__name__}).")
        else:
            reply.end("length" if len(reply.pieces) >= sampling.max_tokens else "complete")
        finally:
            changed.set()

    def _chat(self, conversation: Conversation) -> list[dict[str, Any]]:
        return to_chatbot(conversation.messages, self.history.failed_in(conversation.session_id))

    def _rejected(
        self, conversation: Conversation | None, text: str, problem: str
    ) -> list[dict[str, Any]]:
        """The chat with a refused message and why; nothing is saved. The text is shown
        (made displayable) so the user can copy and fix it."""
        earlier = self._chat(conversation) if conversation is not None else []
        shown = fit_text(text, self.settings.max_message_bytes)[0]
        return [*earlier, {"role": "user", "content": shown}, _warning(problem)]

    def _keep_question(
        self,
        conversation: Conversation,
        text: str,
        backend: BackendConfig,
        sampling: Sampling,
        system_prompt: str,
    ) -> StoredMessage:
        # Numbered by the history, so another tab on this conversation cannot interleave.
        seq = self.history.reserve_turn(conversation.session_id, len(conversation.messages))
        return self._keep(
            conversation,
            StoredMessage(
                seq=seq,
                role="user",
                content=text,
                backend_id=backend.id,
                sampling=sampling.as_dict(),
                system_prompt=system_prompt,
            ),
        )

    def _keep_replies(
        self,
        conversation: Conversation,
        question: StoredMessage,
        replies: Sequence[Reply],
        sampling: Sampling,
    ) -> None:
        """Keep each reply right after its question: cut to the size limit, never refused.
        In compare mode the first reply without an error is the one continued with."""
        keep = next((i for i, r in enumerate(replies) if not r.error), 0)
        for index, reply in enumerate(replies):
            reply.end("interrupted", "the reply was interrupted (the browser disconnected)")
            text, cut = fit_text(reply.text, self.settings.max_message_bytes)
            error = reply.error
            if cut:
                limit = self.settings.max_message_bytes
                note = f"the reply was cut at {limit:,} bytes, the most a message may hold"
                error = f"{error}; {note}" if error else note.capitalize() + "."
            self._keep(
                conversation,
                StoredMessage(
                    seq=question.seq + 1,
                    role="assistant",
                    content=text,
                    backend_id=reply.backend.id,
                    sampling=sampling.as_dict(),
                    error=error,
                    reply_to=question.doc_id,
                    details={**reply.details(), "pane": index},
                    alternative=index != keep,
                ),
            )
        # The answer kept comes right after its question; alternatives follow it.
        start = conversation.messages.index(question) + 1
        conversation.messages[start:] = sorted(
            conversation.messages[start:], key=lambda m: m.alternative
        )

    def _checked(
        self,
        text: str,
        models: Sequence[str],
        temperature: float,
        top_p: float,
        max_tokens: float,
    ) -> tuple[str, str | None]:
        """The message normalized for storage, and why it cannot be sent (or None)."""
        problem = self._model_problem(*models) or sampling_problem(temperature, top_p, max_tokens)
        try:
            text = check_text(text, self.settings.max_message_bytes)
        except MessageRejectedError as err:
            problem = str(err)
        return text, problem

    def _model_problem(self, *labels: str) -> str | None:
        """Why a model name cannot be used, or None. The events skip Gradio's own input
        checks (each costs the event loop a round trip to a worker thread), and an API
        caller can name any model."""
        for label in labels:
            if label not in self.labels:
                known = ", ".join(self.labels)
                return f"There is no model {label!r} here; pick one of: {known}."
        return None

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
        return update_interval_s(
            self.settings.stream_update_interval_ms / 1000, self.streaming, shown_messages
        )

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

    def _keep(self, conversation: Conversation, stored: StoredMessage) -> StoredMessage:
        conversation.messages.append(stored)
        self.history.append(conversation.session_id, conversation.owner, stored)
        return stored

    def pick(self, side: int, conversation: Conversation | None) -> tuple[Any, Any, Any]:
        """Compare mode: continue with the answer of pane `side` (0 left, 1 right); both
        stay saved, the other one as an alternative."""
        pair = conversation.messages[-2:] if conversation is not None else []
        chosen = next((m for m in pair if (m.details or {}).get("pane") == side), None)
        if (
            conversation is None
            or chosen is None
            or len(pair) != 2
            or any(m.role != "assistant" or m.seq != chosen.seq for m in pair)
        ):
            return self._unchanged("There is no pair of answers to pick from.")[:3]
        other = next(m for m in pair if m is not chosen)
        updated = [replace(chosen, alternative=False), replace(other, alternative=True)]
        conversation.messages[-2:] = updated
        for message in updated:
            # The same document again: Firestore keeps the latest write of it.
            self.history.append(conversation.session_id, conversation.owner, message)
        label = (chosen.details or {}).get("backend", "that model")
        gr.Info(f"Continuing with {label}'s answer; both answers are saved.")
        return self._chat(conversation), conversation, gr.update(visible=False)

    async def regenerate(  # noqa: PLR0917 - Gradio passes event inputs positionally
        self,
        conversation: Conversation | None,
        backend_label: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        system_prompt: str,
        browser_id: str | None,
        request: gr.Request,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Answer the last question again; earlier answers stay saved, as alternatives."""
        skip = gr.skip()
        unchanged = tuple(skip for _ in range(7))
        try:
            owner = await self._owner(request, browser_id)
        except IdentityError as err:
            gr.Warning(str(err))
            yield unchanged
            return
        question = None
        if conversation is not None and conversation.owner == owner:
            question = next((m for m in reversed(conversation.messages) if m.role == "user"), None)
        problem = self._model_problem(backend_label) or sampling_problem(
            temperature, top_p, max_tokens
        )
        if conversation is None or question is None or problem:
            gr.Warning(problem or "There is no question to answer again yet.")
            yield unchanged
            return
        self._set_aside(conversation, conversation.messages.index(question) + 1)
        sampling = Sampling(float(temperature), float(top_p), int(max_tokens))
        config = self._backend_for(backend_label)
        system = system_prompt if isinstance(system_prompt, str) else ""
        async for update in self._turn_updates(
            conversation, question, [config], sampling, system, request, skip
        ):
            yield update

    async def edit_and_resend(  # noqa: PLR0917 - Gradio passes event inputs positionally
        self,
        conversation: Conversation | None,
        backend_label: str,
        temperature: float,
        top_p: float,
        max_tokens: float,
        system_prompt: str,
        browser_id: str | None,
        request: gr.Request,
        edit: gr.EditData,
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Send an edited question as a new turn. The original and everything after it stay
        saved, shown as the earlier version, and are no longer sent to a model."""
        skip = gr.skip()
        index = edit.index if isinstance(edit.index, int) else -1
        edited = (
            conversation.messages[index]
            if conversation and 0 <= index < len(conversation.messages)
            else None
        )
        if conversation is None or edited is None or edited.role != "user":
            gr.Warning("Only your own messages of the open conversation can be edited.")
            yield (self._chat(conversation) if conversation else skip), *(skip,) * 6
            return
        async for update in self.chat_turn(
            str(edit.value or ""),
            conversation,
            None,
            backend_label,
            COMPARE_OFF,
            temperature,
            top_p,
            max_tokens,
            system_prompt,
            browser_id,
            request,
            supersede_from=conversation.messages.index(edited),
        ):
            yield update

    def _set_aside(self, conversation: Conversation, start: int) -> None:
        """Mark the messages from ``start`` on as earlier versions no model sees again, and
        save them; they stay in the conversation."""
        earlier = [replace(m, alternative=True) for m in conversation.messages[start:]]
        conversation.messages[start:] = earlier
        for message in earlier:
            self.history.append(conversation.session_id, conversation.owner, message)

    def pick_left(self, conversation: Conversation | None) -> tuple[Any, Any, Any]:
        return self.pick(0, conversation)

    def pick_right(self, conversation: Conversation | None) -> tuple[Any, Any, Any]:
        return self.pick(1, conversation)

    @staticmethod
    def opened_id(conversation: Conversation | None) -> Any:
        return conversation.session_id if isinstance(conversation, Conversation) else gr.skip()

    @staticmethod
    def show_choices(choices: list[tuple[str, str]], conversation: Conversation | None) -> Any:
        selected = conversation.session_id if conversation is not None else None
        return gr.update(choices=choices, value=selected)

    def _settings_of(self, messages: list[StoredMessage]) -> tuple[Any, ...]:
        """Model, sliders and persona as the conversation last used them."""
        skip = gr.skip()
        asked = next((m for m in reversed(messages) if m.role == "user"), None)
        if asked is None:
            return skip, skip, skip, skip, skip
        backend = self.settings.backend_by_id(asked.backend_id or "")
        sampling = asked.sampling or {}

        def value(name: str) -> Any:
            return gr.update(value=sampling[name]) if name in sampling else skip

        persona = skip if asked.system_prompt is None else gr.update(value=asked.system_prompt)
        return (
            gr.update(value=backend.label) if backend else skip,
            value("temperature"),
            value("top_p"),
            value("max_tokens"),
            persona,
        )

    async def restore(
        self, session_id: str | None, browser_id: str | None, request: gr.Request
    ) -> tuple[Any, ...]:
        """Open one of the user's earlier conversations, in full, with its settings.

        Outputs are (chatbot, conversation, model, temperature, top-p, max tokens, persona).
        """
        skip = gr.skip()
        if not session_id:
            return tuple(skip for _ in range(7))
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
        failed = self.history.failed_in(session_id)
        return to_chatbot(messages, failed), conversation, *self._settings_of(messages)

    @staticmethod
    def _unchanged(warning: str) -> tuple[Any, ...]:
        """Warn the user and leave the outputs as they are."""
        gr.Warning(warning)
        return tuple(gr.skip() for _ in range(7))

    async def rename(
        self,
        title: str,
        conversation: Conversation | None,
        choices: list[tuple[str, str]] | None,
        browser_id: str | None,
        request: gr.Request,
    ) -> tuple[Any, Any]:
        """Give the open conversation a new title. Outputs: (list state, title box)."""
        skip = gr.skip()
        title = " ".join((title or "").split())
        if conversation is None or not conversation.messages:
            gr.Warning("Open a conversation first; there is nothing to rename.")
            return skip, skip
        if not title:
            gr.Warning("Type the new name first, then press Rename.")
            return skip, skip
        try:
            owner = await self._owner(request, browser_id)
            renamed = owner == conversation.owner and await self.history.rename(
                owner, conversation.session_id, title
            )
        except IdentityError as err:
            gr.Warning(str(err))
            return skip, skip
        except HistoryUnavailableError:
            gr.Warning("History is unreachable right now; the name is unchanged. Try again soon.")
            return skip, skip
        if not renamed:
            gr.Warning(NOT_YOURS)
            return skip, skip
        listed = [
            (title_for(title) if sid == conversation.session_id else name, sid)
            for name, sid in choices or []
        ]
        return listed, ""

    async def delete(
        self,
        conversation: Conversation | None,
        choices: list[tuple[str, str]] | None,
        browser_id: str | None,
        request: gr.Request,
    ) -> tuple[Any, ...]:
        """Delete the open conversation and every message of it, from Firestore too."""
        if conversation is None or not conversation.messages:
            return self._unchanged("Open a conversation first; there is nothing to delete.")[:4]
        try:
            owner = await self._owner(request, browser_id)
            deleted = owner == conversation.owner and await self.history.delete(
                owner, conversation.session_id
            )
        except IdentityError as err:
            return self._unchanged(str(err))[:4]
        except HistoryUnavailableError:
            return self._unchanged(
                "History is unreachable right now; nothing was deleted. Try again soon."
            )[:4]
        if not deleted:
            return self._unchanged(NOT_YOURS)[:4]
        gr.Info("The conversation and all its messages are deleted.")
        remaining = [c for c in choices or [] if c[1] != conversation.session_id]
        return [], None, remaining, ""

    @staticmethod
    def new_chat() -> tuple[list[Any], None, Any, str, Any]:
        return [], None, gr.update(value=None), "", gr.update(visible=False)

    # -- layout ----------------------------------------------------------------------------

    def build(self) -> gr.Blocks:  # noqa: PLR0915 - one place lays out the whole page
        settings = self.settings
        # Not `with gr.Blocks() as demo`: Blocks.__enter__ (which returns self) is untyped.
        demo = gr.Blocks(title="Gemma Stack Chat", fill_height=True)
        with demo:
            browser_id = gr.BrowserState(
                None, storage_key=BROWSER_ID_KEY, secret=settings.browser_state_key
            )
            conversation = gr.State(None)
            choices_state = gr.State([])
            pending = gr.State("")
            conversation_id = gr.Textbox(visible=False, elem_id="conversation-id")
            with gr.Sidebar(label="Conversations", width=280, elem_id="sidebar"):
                new_chat = gr.Button("New chat", variant="primary")
                conversation_list = gr.Radio(
                    choices=[],
                    label="Your conversations",
                    elem_id="conversation-list",
                )
                with gr.Accordion("Rename or delete this chat", open=False):
                    new_title = gr.Textbox(placeholder="New name", show_label=False)
                    rename_chat = gr.Button("Rename", size="sm")
                    delete_chat = gr.Button("Delete this chat", variant="stop", size="sm")
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
            with gr.Accordion("Settings", open=False, elem_id="chat-settings"):
                with gr.Row():
                    backend = gr.Dropdown(
                        choices=self.labels, value=self.labels[0], label="Model", elem_id="model"
                    )
                    compare_with = gr.Dropdown(
                        choices=[COMPARE_OFF, *self.labels],
                        value=COMPARE_OFF,
                        label="Compare with",
                        elem_id="compare-with",
                        info="Ask a second model at once; pick the answer to continue with.",
                    )
                with gr.Row():
                    temperature = gr.Slider(
                        *TEMPERATURE,
                        value=DEFAULT_SAMPLING.temperature,
                        step=0.05,
                        label="Temperature",
                        elem_id="temperature",
                    )
                    top_p = gr.Slider(
                        *TOP_P, value=DEFAULT_SAMPLING.top_p, step=0.05, label="Top-p"
                    )
                    max_tokens = gr.Slider(
                        *MAX_TOKENS, value=DEFAULT_SAMPLING.max_tokens, step=1, label="Max tokens"
                    )
                system_prompt = gr.Textbox(
                    value=settings.system_prompt,
                    lines=2,
                    label="System prompt (persona)",
                    elem_id="persona",
                )
            chatbot = gr.Chatbot(
                editable="user", label="Chat", scale=1, height="60vh", buttons=["copy", "copy_all"]
            )
            with gr.Row(visible=False, elem_id="compare-row") as compare_row:
                with gr.Column(min_width=160):
                    pane_a = gr.Markdown(elem_classes=["compare-pane"], elem_id="pane-a")
                    pick_a = gr.Button("Continue with this answer", size="sm")
                with gr.Column(min_width=160):
                    pane_b = gr.Markdown(elem_classes=["compare-pane"], elem_id="pane-b")
                    pick_b = gr.Button("Continue with this answer", size="sm")
            message = gr.Textbox(
                placeholder="Ask anything…",
                show_label=False,
                submit_btn=True,
                stop_btn=False,
                autofocus=True,
                elem_id="message",
            )

            restored = [chatbot, conversation, backend, temperature, top_p, max_tokens]
            restored.append(system_prompt)
            demo.load(None, js=CLOSE_SIDEBAR_ON_PHONES)
            demo.load(
                self.on_load,
                inputs=[browser_id],
                outputs=[browser_id, conversation_list, choices_state, who],
                api_name="conversations",
            ).then(
                self.open_linked,
                inputs=[browser_id],
                outputs=[*restored, conversation_list, conversation_id],
                api_visibility="private",
            )
            turn_outputs = [chatbot, conversation, choices_state, conversation_id, compare_row]
            turn_outputs += [pane_a, pane_b]
            # What every streaming event reads after its own inputs, and how it is queued.
            asked_with = [temperature, top_p, max_tokens, system_prompt, browser_id]
            streaming: dict[str, Any] = {
                "concurrency_limit": settings.max_concurrent_chats,
                "concurrency_id": "chat",
                "show_progress": "hidden",
                # Gradio would preprocess each of eight inputs in a worker thread, one after
                # the other: 2 ms of CPU per message, and eight waits for a busy event loop
                # before the model is asked. The values are used raw; the handlers check them.
                "preprocess": False,
            }
            turn = message.submit(
                self.take_message,
                inputs=[message],
                outputs=[message, pending],
                api_visibility="private",
                queue=False,
            ).then(
                self.chat_turn,
                inputs=[pending, conversation, choices_state, backend, compare_with, *asked_with],
                outputs=turn_outputs,
                api_visibility="private",
                **streaming,
            )
            turn.then(self.input_ready, outputs=[message], queue=False, api_visibility="private")
            # The chat's retry icon answers the last question again, keeping the old answer.
            chatbot.retry(
                self.input_busy,
                outputs=[message],
                queue=False,
                api_visibility="private",
            ).then(
                self.regenerate,
                inputs=[conversation, backend, *asked_with],
                outputs=turn_outputs,
                api_name="regenerate",
                **streaming,
            ).then(self.input_ready, outputs=[message], queue=False, api_visibility="private")
            # The edit itself starts the turn: only the event it triggers gets its EditData.
            chatbot.edit(
                self.edit_and_resend,
                inputs=[conversation, backend, *asked_with],
                outputs=turn_outputs,
                api_visibility="private",
                **streaming,
            ).then(self.input_ready, outputs=[message], queue=False, api_visibility="private")
            message.stop(self.stop, queue=False, api_visibility="private")
            # The same turn for API clients, whose message comes with the call.
            api_send = gr.Button(visible=False)
            api_send.click(
                self.send,
                inputs=[message, conversation, choices_state, backend, *asked_with],
                outputs=[chatbot, conversation, choices_state],
                api_name="send",
                **streaming,
            )
            conversation_id.change(None, js=SYNC_ADDRESS, inputs=[conversation_id])
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
                outputs=restored,
                api_name="restore",
            ).then(
                self.opened_id,
                inputs=[conversation],
                outputs=[conversation_id],
                api_visibility="private",
                queue=False,
            )
            for button, choose in ((pick_a, self.pick_left), (pick_b, self.pick_right)):
                button.click(
                    choose,
                    inputs=[conversation],
                    outputs=[chatbot, conversation, compare_row],
                    api_name=choose.__name__,
                )
            fresh = [chatbot, conversation, conversation_list, conversation_id, compare_row]
            new_chat.click(self.new_chat, outputs=fresh, api_name="new_chat")
            # The chat's own trash icon starts afresh too; the conversation stays saved.
            chatbot.clear(self.new_chat, outputs=fresh, api_visibility="private")
            rename_chat.click(
                self.rename,
                inputs=[new_title, conversation, choices_state, browser_id],
                outputs=[choices_state, new_title],
                api_name="rename",
            )
            delete_chat.click(
                self.delete,
                inputs=[conversation, choices_state, browser_id],
                outputs=[chatbot, conversation, choices_state, conversation_id],
                api_name="delete",
            )
        # Gradio runs at most `max_threads` events at once, 40 unless launch() sets it (a
        # mounted app never calls it): the 41st chat got its first token only when another
        # reply ended. Every chat may stream, beside the short events (loads, renames).
        demo.max_threads = settings.max_concurrent_chats + SHORT_EVENTS
        # By default Gradio sends every waiting event a queue estimate each time an event
        # starts: a burst of 50 messages got 17 estimates each, more SSE messages than its
        # screen updates. The chat hides queue status; a waiting event gets its estimate on
        # joining and then every few seconds.
        demo.queue(
            default_concurrency_limit=SHORT_EVENTS,
            max_size=settings.queue_size,
            status_update_rate=QUEUE_STATUS_EVERY_S,
        )
        return demo
