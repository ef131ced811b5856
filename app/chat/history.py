"""Conversation history in Firestore, written off the token path by a background writer.

Layout: `chat_sessions/{session_id}` holds metadata (owner, title, created and updated times,
last backend, message count); its subcollection `messages` holds one document per message.
Every read filters by owner, so one user can never list or restore another's conversation.

Text is checked before it is queued (`check_text`), and the writer isolates failures: a
message Firestore refuses for good is marked failed for its owner while every other message
keeps flowing. Message text never goes to the logs.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)

SESSIONS = "chat_sessions"
MESSAGES = "messages"
# Firestore allows 500 writes per batch; one slot per session is kept for its metadata.
MAX_BATCH_WRITES = 500
TITLE_LENGTH = 60
# Firestore refuses a string field over 1,048,487 bytes; messages are held well below that.
DEFAULT_MAX_MESSAGE_BYTES = 100_000
FIRESTORE_FIELD_LIMIT = 1_048_487
# Failed writes and turn counters kept in memory, oldest forgotten first.
REMEMBERED_SESSIONS = 10_000
# The field Firestore's TTL policy deletes documents by (see components/firestore.py).
EXPIRE_FIELD = "expire_at"


class MessageRejectedError(ValueError):
    """Text the history cannot keep; the message tells the user what to change."""


def check_text(text: str, max_bytes: int, what: str = "Your message") -> str:
    """Normalize text (NFC) and refuse what Firestore would refuse, before it is queued."""
    for position, char in enumerate(text):
        if 0xD800 <= ord(char) <= 0xDFFF:
            raise MessageRejectedError(
                f"{what} contains a broken character (an unpaired surrogate at position "
                f"{position + 1}), which cannot be stored. Remove or retype it and send again."
            )
    text = unicodedata.normalize("NFC", text)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise MessageRejectedError(
            f"{what} is {size:,} bytes; the limit is {max_bytes:,} bytes. Shorten it, or "
            "split it into several messages."
        )
    return text


def fit_text(text: str, max_bytes: int) -> tuple[str, bool]:
    """Text that can always be stored: broken characters replaced, cut to `max_bytes`.

    Returns the text and whether it had to be cut (model replies are kept, never refused).
    """
    encoded = text.encode("utf-8", errors="replace")
    cut = len(encoded) > max_bytes
    if cut:
        encoded = encoded[:max_bytes]
    return unicodedata.normalize("NFC", encoded.decode("utf-8", errors="ignore")), cut


@dataclass(frozen=True)
class StoredMessage:
    """One message as it is kept in Firestore.

    `reply_to` links a reply to its question, so a conversation restores in order even when
    two tabs or replicas wrote turns at the same time. A question keeps the persona
    (`system_prompt`) it was asked with; a reply keeps its `details` (backend, model, TTFT,
    tokens/s, finish reason). In compare mode a question has two replies: the one the user
    did not continue with is an `alternative`, kept but never sent to a model again.
    """

    seq: int
    role: str
    content: str
    backend_id: str | None = None
    sampling: dict[str, float | int] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    reply_to: str | None = None
    nonce: str = field(default_factory=lambda: secrets.token_hex(3))
    system_prompt: str | None = None
    details: dict[str, Any] | None = None
    alternative: bool = False

    @property
    def doc_id(self) -> str:
        return f"{self.seq:07d}-{self.nonce}"

    def to_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "backend_id": self.backend_id,
            "sampling": self.sampling,
            "created_at": self.created_at,
        }
        if self.error:
            doc["error"] = self.error
        if self.reply_to:
            doc["reply_to"] = self.reply_to
        if self.system_prompt is not None:
            doc["system_prompt"] = self.system_prompt
        if self.details:
            doc["details"] = self.details
        if self.alternative:
            doc["alternative"] = True
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any], doc_id: str = "") -> StoredMessage:
        return cls(
            seq=int(doc["seq"]),
            role=str(doc["role"]),
            content=str(doc.get("content", "")),
            backend_id=doc.get("backend_id"),
            sampling=doc.get("sampling"),
            error=doc.get("error"),
            created_at=doc.get("created_at") or datetime.now(UTC),
            reply_to=doc.get("reply_to"),
            nonce=doc_id.partition("-")[2] or secrets.token_hex(3),
            system_prompt=doc.get("system_prompt"),
            details=doc.get("details"),
            alternative=bool(doc.get("alternative", False)),
        )


@dataclass(frozen=True)
class SessionSummary:
    """A row of the user's conversation list."""

    session_id: str
    title: str
    updated_at: datetime
    last_backend: str | None


@dataclass(frozen=True)
class _PendingMessage:
    session_id: str
    owner: str
    message: StoredMessage
    title: str | None
    queued_at: float = field(default_factory=time.monotonic)

    @property
    def doc_id(self) -> str:
        return self.message.doc_id


@dataclass(frozen=True)
class WriteHealth:
    """What `/healthz` reports about the writer."""

    pending: int
    failed: int
    stuck_for_s: float
    stuck: bool


class HistoryUnavailableError(Exception):
    """Firestore could not be read; the caller shows a message and keeps serving."""


def title_for(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


def restore_order(messages: Sequence[StoredMessage]) -> list[StoredMessage]:
    """Messages by number, each reply right after the question it answers (the reply the
    conversation continued with first, then any alternative)."""
    ordered = sorted(messages, key=lambda m: (m.seq, m.alternative, m.created_at))
    questions = {m.doc_id for m in ordered if m.role == "user"}
    replies: dict[str, StoredMessage] = {}
    for m in ordered:
        if m.role != "user" and m.reply_to in questions:
            replies.setdefault(m.reply_to or "", m)
    placed = {id(r) for r in replies.values()}
    result: list[StoredMessage] = []
    for m in ordered:
        if id(m) in placed:
            continue
        result.append(m)
        if m.role == "user" and (reply := replies.get(m.doc_id)) is not None:
            result.append(reply)
    return result


def _is_permanent(err: BaseException) -> bool:
    """A refusal that retrying cannot fix: bad data, not an outage."""
    from google.api_core import exceptions  # noqa: PLC0415

    # The client refuses to encode some values (e.g. lone surrogates) before sending.
    return isinstance(err, exceptions.InvalidArgument | ValueError | TypeError)


class ChatHistory:
    """Reads conversations of one owner and queues writes that survive a Firestore outage."""

    def __init__(
        self,
        project: str | None,
        database: str,
        *,
        max_backoff_s: float = 5.0,
        request_timeout_s: float = 10.0,
        stuck_after_s: float = 60.0,
        ttl_days: int | None = None,
    ) -> None:
        self.project = project
        self.database = database
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s
        self.stuck_after_s = stuck_after_s
        self.ttl_days = ttl_days
        self._client: Any = None
        self._pending: deque[_PendingMessage] = deque()
        self._wakeup: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
        self._commit_lock: asyncio.Lock | None = None
        # After a permanent refusal the writer halves its batches until it finds the culprit.
        self._batch_limit = MAX_BATCH_WRITES
        self._progress_at = time.monotonic()
        # doc_id -> why Firestore refused it, per session: shown to the message's owner.
        self._failed: OrderedDict[str, dict[str, str]] = OrderedDict()
        self._next_seq: OrderedDict[str, int] = OrderedDict()
        self.failed_commits = 0

    # -- plumbing --------------------------------------------------------------------------

    def _db(self) -> Any:
        if self._client is None:
            from google.cloud import firestore  # noqa: PLC0415 - slow import, paid on first use

            self._client = firestore.AsyncClient(project=self.project, database=self.database)
        return self._client

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._drained = asyncio.Event()
            self._writer = asyncio.create_task(self._write_forever(), name="chat-history-writer")

    def _lock(self) -> asyncio.Lock:
        if self._commit_lock is None:
            self._commit_lock = asyncio.Lock()
        return self._commit_lock

    @property
    def pending(self) -> int:
        """Messages accepted but not yet confirmed by Firestore."""
        return len(self._pending)

    def health(self) -> WriteHealth:
        """Stuck means the oldest queued message has waited past `stuck_after_s` with no
        write succeeding meanwhile (a busy queue that keeps draining is not stuck)."""
        waited = 0.0
        if self._pending:
            since = max(self._pending[0].queued_at, self._progress_at)
            waited = max(0.0, time.monotonic() - since)
        failed = sum(len(v) for v in self._failed.values())
        return WriteHealth(
            len(self._pending), failed, round(waited, 1), waited > self.stuck_after_s
        )

    def _remember(self, table: OrderedDict[str, Any], key: str, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > REMEMBERED_SESSIONS:
            table.popitem(last=False)

    @property
    def oldest_pending_s(self) -> float:
        """Seconds the oldest unconfirmed message has waited; 0 when none waits."""
        if not self._pending:
            return 0.0
        return max(0.0, time.monotonic() - self._pending[0].queued_at)

    # -- writes ----------------------------------------------------------------------------

    def reserve_turn(self, session_id: str, known_messages: int) -> int:
        """The number for a new question; its reply gets the next one.

        Numbers come from here, not from a browser tab, so two tabs on one conversation
        never interleave: each question and its reply hold two adjacent numbers.
        """
        seq = max(self._next_seq.get(session_id, 0), known_messages)
        self._remember(self._next_seq, session_id, seq + 2)
        return seq

    def _known(self, session_id: str, next_seq: int) -> None:
        if next_seq > self._next_seq.get(session_id, 0):
            self._remember(self._next_seq, session_id, next_seq)

    def append(self, session_id: str, owner: str, message: StoredMessage) -> None:
        """Queue one message; returns at once so streaming never waits on Firestore."""
        title = title_for(message.content) if message.seq == 0 else None
        self._pending.append(_PendingMessage(session_id, owner, message, title))
        self._known(session_id, message.seq + 1)
        self._ensure_writer()
        assert self._wakeup is not None  # noqa: S101
        self._wakeup.set()

    def append_many(self, session_id: str, owner: str, messages: Sequence[StoredMessage]) -> None:
        for message in messages:
            self.append(session_id, owner, message)

    def failed_in(self, session_id: str) -> dict[str, str]:
        """Messages of this conversation that Firestore refused for good: doc_id -> reason."""
        return dict(self._failed.get(session_id, {}))

    async def flush(self, wait_s: float | None = None) -> bool:
        """Wait until every queued message is in Firestore (or marked failed); False if the
        timeout came first."""
        if not self._pending:
            return True
        self._ensure_writer()
        assert self._drained is not None  # noqa: S101
        try:
            async with asyncio.timeout(wait_s):
                while self._pending:
                    self._drained.clear()
                    await self._drained.wait()
        except TimeoutError:
            return False
        return True

    async def _write_forever(self) -> None:
        assert self._wakeup is not None  # noqa: S101
        assert self._drained is not None  # noqa: S101
        backoff = 0.2
        while True:
            if not self._pending:
                self._drained.set()
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            async with self._lock():
                batch = self._next_batch()
                try:
                    if batch:
                        await self._commit(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as err:
                    if _is_permanent(err):
                        self._refused(batch, err)
                        continue
                    self.failed_commits += 1
                    # Only the error's type: a server message could quote what was written.
                    log.warning(
                        "Firestore write failed (%s); %d message(s) kept, retrying in %.1f s",
                        type(err).__name__,
                        len(self._pending),
                        backoff,
                    )
                else:
                    backoff = 0.2
                    self._progress_at = time.monotonic()
                    self._batch_limit = min(MAX_BATCH_WRITES, self._batch_limit * 2)
                    for _ in batch:
                        self._pending.popleft()
                    continue
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)

    def _refused(self, batch: list[_PendingMessage], err: BaseException) -> None:
        """Split a refused batch until the message Firestore refuses stands alone; mark it."""
        self._progress_at = time.monotonic()
        if len(batch) > 1:
            self._batch_limit = max(1, len(batch) // 2)
            return
        item = self._pending.popleft()
        reason = f"not saved: the history store refused this message ({type(err).__name__})"
        failed = self._failed.get(item.session_id, {})
        failed[item.doc_id] = reason
        self._remember(self._failed, item.session_id, failed)
        log.error(
            "chat message refused for good (%s): session=%s seq=%d role=%s, %d bytes",
            type(err).__name__,
            item.session_id,
            item.message.seq,
            item.message.role,
            len(item.message.content.encode("utf-8", errors="replace")),
        )

    def _next_batch(self) -> list[_PendingMessage]:
        batch: list[_PendingMessage] = []
        sessions: set[str] = set()
        for item in self._pending:
            extra = 1 if item.session_id not in sessions else 0
            if len(batch) + len(sessions) + 1 + extra > MAX_BATCH_WRITES:
                break
            if len(batch) >= self._batch_limit:
                break
            batch.append(item)
            sessions.add(item.session_id)
        return batch

    def _expiry(self, at: datetime) -> dict[str, Any]:
        return {EXPIRE_FIELD: at + timedelta(days=self.ttl_days)} if self.ttl_days else {}

    async def _commit(self, batch: list[_PendingMessage]) -> None:
        db = self._db()
        write = db.batch()
        metadata: dict[str, dict[str, Any]] = {}
        for item in batch:
            session_ref = db.collection(SESSIONS).document(item.session_id)
            doc = {**item.message.to_doc(), **self._expiry(item.message.created_at)}
            write.set(session_ref.collection(MESSAGES).document(item.doc_id), doc)
            meta = metadata.setdefault(item.session_id, {"owner": item.owner})
            meta["updated_at"] = item.message.created_at
            meta.update(self._expiry(item.message.created_at))
            meta["message_count"] = max(meta.get("message_count", 0), item.message.seq + 1)
            if item.message.backend_id:
                meta["last_backend"] = item.message.backend_id
            if item.title is not None:
                meta["title"] = item.title
                meta["created_at"] = item.message.created_at
        for session_id, meta in metadata.items():
            write.set(db.collection(SESSIONS).document(session_id), meta, merge=True)
        # Retries are ours (with backoff, never giving up); the client's own would hide outages.
        await write.commit(retry=None, timeout=self.request_timeout_s)

    async def close(self, flush_timeout: float = 30.0) -> None:
        """Flush the queue; what is still unsaved is counted in the log (never its text)."""
        if self._pending and not await self.flush(flush_timeout):
            sessions = sorted({item.session_id for item in self._pending})
            log.error(
                "%d chat message(s) were not saved before shutdown (Firestore unreachable "
                "for %.0f s); conversations: %s",
                len(self._pending),
                flush_timeout,
                ", ".join(sessions[:50]),
            )
        if self._writer is not None:
            self._writer.cancel()
        if self._client is not None:
            self._client.close()

    # -- renames and deletes ---------------------------------------------------------------

    async def rename(self, owner: str, session_id: str, title: str) -> bool:
        """Give one of the owner's conversations a new title; False if the owner has no such
        conversation."""
        from google.api_core import exceptions  # noqa: PLC0415

        title = title_for(title)
        async with self._lock():
            queued = [i for i in self._pending if i.session_id == session_id]
            if any(i.owner != owner for i in queued):
                return False
            # A first message still queued would write its own title later: it takes this one.
            self._pending = deque(
                replace(i, title=title) if i.session_id == session_id and i.title is not None else i
                for i in self._pending
            )
            session_ref = self._db().collection(SESSIONS).document(session_id)
            try:
                snapshot = await session_ref.get(retry=None, timeout=self.request_timeout_s)
                if not snapshot.exists:
                    return bool(queued)
                if (snapshot.to_dict() or {}).get("owner") != owner:
                    return False
                await session_ref.update(
                    {"title": title}, retry=None, timeout=self.request_timeout_s
                )
            except exceptions.GoogleAPICallError as err:
                raise HistoryUnavailableError(str(err)) from err
        return True

    async def delete(self, owner: str, session_id: str) -> bool:
        """Delete one of the owner's conversations and all its messages; False if the owner
        has no such conversation."""
        from google.api_core import exceptions  # noqa: PLC0415

        async with self._lock():
            queued = [i for i in self._pending if i.session_id == session_id]
            if any(i.owner != owner for i in queued):
                return False
            session_ref = self._db().collection(SESSIONS).document(session_id)
            try:
                snapshot = await session_ref.get(retry=None, timeout=self.request_timeout_s)
                if snapshot.exists and (snapshot.to_dict() or {}).get("owner") != owner:
                    return False
                if not snapshot.exists and not queued:
                    return False
                self._pending = deque(i for i in self._pending if i.session_id != session_id)
                self._failed.pop(session_id, None)
                self._next_seq.pop(session_id, None)
                messages = session_ref.collection(MESSAGES)
                while docs := await messages.limit(MAX_BATCH_WRITES).get(
                    retry=None, timeout=self.request_timeout_s
                ):
                    write = self._db().batch()
                    for doc in docs:
                        write.delete(doc.reference)
                    await write.commit(retry=None, timeout=self.request_timeout_s)
                await session_ref.delete(retry=None, timeout=self.request_timeout_s)
            except exceptions.GoogleAPICallError as err:
                raise HistoryUnavailableError(str(err)) from err
        if self._drained is not None and not self._pending:
            self._drained.set()
        return True

    # -- reads -----------------------------------------------------------------------------

    def _pending_for(self, owner: str, session_id: str | None = None) -> list[_PendingMessage]:
        return [
            item
            for item in self._pending
            if item.owner == owner and (session_id is None or item.session_id == session_id)
        ]

    async def list_sessions(self, owner: str, limit: int = 50) -> list[SessionSummary]:
        """The owner's conversations, most recent first, including ones not yet saved."""
        from google.api_core import exceptions  # noqa: PLC0415

        sessions = self._db().collection(SESSIONS)
        by_owner = sessions.where(filter=_owner_filter(owner))
        try:
            try:
                query = by_owner.order_by("updated_at", direction="DESCENDING").limit(limit)
                docs = await query.get(retry=None, timeout=self.request_timeout_s)
            except exceptions.FailedPrecondition:
                # The composite index (owner, updated_at desc) is missing: sort here instead.
                log.warning("Firestore index on chat_sessions(owner, updated_at desc) is missing")
                docs = await by_owner.get(retry=None, timeout=self.request_timeout_s)
        except exceptions.GoogleAPICallError as err:
            raise HistoryUnavailableError(str(err)) from err
        found: dict[str, SessionSummary] = {}
        for doc in docs:
            data = doc.to_dict() or {}
            if data.get("owner") != owner:
                continue
            found[doc.id] = SessionSummary(
                session_id=doc.id,
                title=str(data.get("title") or "(untitled)"),
                updated_at=data.get("updated_at") or datetime.now(UTC),
                last_backend=data.get("last_backend"),
            )
        for summary in self.unsaved_sessions(owner):
            found.setdefault(summary.session_id, summary)
        ordered = sorted(found.values(), key=lambda s: s.updated_at, reverse=True)
        return ordered[:limit]

    def unsaved_sessions(self, owner: str) -> list[SessionSummary]:
        """Conversations started while Firestore was unreachable, still waiting to be written."""
        return [
            SessionSummary(
                item.session_id, item.title, item.message.created_at, item.message.backend_id
            )
            for item in self._pending_for(owner)
            if item.title is not None
        ]

    async def load(self, owner: str, session_id: str) -> list[StoredMessage] | None:
        """All messages of one conversation in order, or None if the owner has no such one."""
        from google.api_core import exceptions  # noqa: PLC0415

        pending = self._pending_for(owner, session_id)
        session_ref = self._db().collection(SESSIONS).document(session_id)
        try:
            snapshot = await session_ref.get(retry=None, timeout=self.request_timeout_s)
            if not snapshot.exists:
                if not pending:
                    return None
                return restore_order([item.message for item in pending])
            if (snapshot.to_dict() or {}).get("owner") != owner:
                return None
            query = session_ref.collection(MESSAGES).order_by("seq")
            docs = await query.get(retry=None, timeout=max(60.0, self.request_timeout_s))
        except exceptions.GoogleAPICallError as err:
            raise HistoryUnavailableError(str(err)) from err
        by_id = {doc.id: StoredMessage.from_doc(doc.to_dict(), doc.id) for doc in docs}
        for item in pending:
            by_id.setdefault(item.doc_id, item.message)
        messages = restore_order(list(by_id.values()))
        if messages:
            self._known(session_id, max(m.seq for m in messages) + 1)
        return messages


def _owner_filter(owner: str) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter  # noqa: PLC0415

    return FieldFilter("owner", "==", owner)
