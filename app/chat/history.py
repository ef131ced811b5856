"""Conversation history in Firestore, written off the token path by a background writer.

Layout: `chat_sessions/{session_id}` holds metadata (owner, title, created and updated times,
last backend, message count); its subcollection `messages` holds one document per message.
Every read filters by owner, so one user can never list or restore another's conversation.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

SESSIONS = "chat_sessions"
MESSAGES = "messages"
# Firestore allows 500 writes per batch; one slot per session is kept for its metadata.
MAX_BATCH_WRITES = 500
TITLE_LENGTH = 60


@dataclass(frozen=True)
class StoredMessage:
    """One message as it is kept in Firestore."""

    seq: int
    role: str
    content: str
    backend_id: str | None = None
    sampling: dict[str, float | int] | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

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
        return doc

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> StoredMessage:
        return cls(
            seq=int(doc["seq"]),
            role=str(doc["role"]),
            content=str(doc.get("content", "")),
            backend_id=doc.get("backend_id"),
            sampling=doc.get("sampling"),
            error=doc.get("error"),
            created_at=doc.get("created_at") or datetime.now(UTC),
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
    doc_id: str
    message: StoredMessage
    title: str | None


class HistoryUnavailableError(Exception):
    """Firestore could not be read; the caller shows a message and keeps serving."""


def title_for(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= TITLE_LENGTH else line[: TITLE_LENGTH - 1] + "…"


def new_session_id() -> str:
    return secrets.token_urlsafe(12)


class ChatHistory:
    """Reads conversations of one owner and queues writes that survive a Firestore outage."""

    def __init__(
        self,
        project: str | None,
        database: str,
        *,
        max_backoff_s: float = 5.0,
        request_timeout_s: float = 10.0,
    ) -> None:
        self.project = project
        self.database = database
        self.max_backoff_s = max_backoff_s
        self.request_timeout_s = request_timeout_s
        self._client: Any = None
        self._pending: deque[_PendingMessage] = deque()
        self._wakeup: asyncio.Event | None = None
        self._drained: asyncio.Event | None = None
        self._writer: asyncio.Task[None] | None = None
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

    @property
    def pending(self) -> int:
        """Messages accepted but not yet confirmed by Firestore."""
        return len(self._pending)

    @property
    def oldest_pending_s(self) -> float:
        """Seconds the oldest unconfirmed message has waited; 0 when none waits."""
        if not self._pending:
            return 0.0
        return max(0.0, (datetime.now(UTC) - self._pending[0].message.created_at).total_seconds())

    # -- writes ----------------------------------------------------------------------------

    def append(self, session_id: str, owner: str, message: StoredMessage) -> None:
        """Queue one message; returns at once so streaming never waits on Firestore."""
        title = title_for(message.content) if message.seq == 0 else None
        doc_id = f"{message.seq:07d}-{secrets.token_hex(3)}"
        self._pending.append(_PendingMessage(session_id, owner, doc_id, message, title))
        self._ensure_writer()
        assert self._wakeup is not None  # noqa: S101
        self._wakeup.set()

    def append_many(self, session_id: str, owner: str, messages: Sequence[StoredMessage]) -> None:
        for message in messages:
            self.append(session_id, owner, message)

    async def flush(self, wait_s: float | None = None) -> bool:
        """Wait until every queued message is in Firestore; False if the timeout came first."""
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
            batch = self._next_batch()
            try:
                await self._commit(batch)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.failed_commits += 1
                log.warning(
                    "Firestore write failed (%s: %s); %d message(s) kept, retrying in %.1f s",
                    type(err).__name__,
                    str(err).splitlines()[0][:200] if str(err) else "",
                    len(self._pending),
                    backoff,
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.2
            for _ in batch:
                self._pending.popleft()

    def _next_batch(self) -> list[_PendingMessage]:
        batch: list[_PendingMessage] = []
        sessions: set[str] = set()
        for item in self._pending:
            extra = 1 if item.session_id not in sessions else 0
            if len(batch) + len(sessions) + 1 + extra > MAX_BATCH_WRITES:
                break
            batch.append(item)
            sessions.add(item.session_id)
        return batch

    async def _commit(self, batch: list[_PendingMessage]) -> None:
        db = self._db()
        write = db.batch()
        metadata: dict[str, dict[str, Any]] = {}
        for item in batch:
            session_ref = db.collection(SESSIONS).document(item.session_id)
            write.set(session_ref.collection(MESSAGES).document(item.doc_id), item.message.to_doc())
            meta = metadata.setdefault(item.session_id, {"owner": item.owner})
            meta["updated_at"] = item.message.created_at
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

    async def close(self, flush_timeout: float = 10.0) -> None:
        """Flush the queue; each message Firestore still refuses is logged (never its content)."""
        if self._pending and not await self.flush(flush_timeout):
            for item in self._pending:
                log.error(
                    "unsaved chat message: session=%s owner=%s seq=%d role=%s characters=%d",
                    item.session_id,
                    item.owner,
                    item.message.seq,
                    item.message.role,
                    len(item.message.content),
                )
        if self._writer is not None:
            self._writer.cancel()
        if self._client is not None:
            self._client.close()

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
                return [item.message for item in pending]
            if (snapshot.to_dict() or {}).get("owner") != owner:
                return None
            query = session_ref.collection(MESSAGES).order_by("seq")
            docs = await query.get(retry=None, timeout=max(60.0, self.request_timeout_s))
        except exceptions.GoogleAPICallError as err:
            raise HistoryUnavailableError(str(err)) from err
        by_id = {doc.id: StoredMessage.from_doc(doc.to_dict()) for doc in docs}
        for item in pending:
            by_id.setdefault(item.doc_id, item.message)
        return sorted(by_id.values(), key=lambda m: (m.seq, m.created_at))


def _owner_filter(owner: str) -> Any:
    from google.cloud.firestore_v1.base_query import FieldFilter  # noqa: PLC0415

    return FieldFilter("owner", "==", owner)
