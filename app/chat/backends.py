"""Model backends behind one small streaming interface: OpenAI-compatible servers and Gemini."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import aiohttp
import httpx
import orjson

from app.chat.id_tokens import IdTokenSource, audience_for
from app.chat.settings import BackendConfig

Role = Literal["user", "assistant"]


@dataclass(frozen=True)
class Turn:
    """One message of the conversation as the backends see it."""

    role: Role
    content: str


@dataclass(frozen=True)
class Sampling:
    """The sliders of the UI."""

    temperature: float = 0.9
    top_p: float = 0.95
    max_tokens: int = 1024

    def as_dict(self) -> dict[str, float | int]:
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens}


class BackendError(Exception):
    """A failure to show the user as a chat message; `partial` says text had already streamed."""

    def __init__(self, message: str, *, partial: bool = False, transient: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.partial = partial
        # A transient failure (not ready, busy, unreachable) is worth pointing at another model.
        self.transient = transient


class ChatBackend(Protocol):
    """What the UI needs from a model: stream a reply to a conversation, piece by piece."""

    config: BackendConfig

    def stream(
        self, turns: Sequence[Turn], system_prompt: str, sampling: Sampling
    ) -> AsyncIterator[str]: ...

    async def aclose(self) -> None: ...


def prepare_turns(turns: Sequence[Turn]) -> list[Turn]:
    """Make the history acceptable to strict chat templates: roles alternate, user first.

    A failed reply leaves two user turns in a row; Gemma's template raises on that, so
    consecutive turns of one role are merged.
    """
    merged: list[Turn] = []
    for turn in turns:
        if not turn.content:
            continue
        if merged and merged[-1].role == turn.role:
            merged[-1] = Turn(turn.role, f"{merged[-1].content}\n\n{turn.content}")
        else:
            merged.append(turn)
    while merged and merged[0].role != "user":
        merged.pop(0)
    return merged


TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def _status_message(config: BackendConfig, status: int, detail: str) -> str:
    name = config.label
    if status == 429:
        return f"{name} is busy right now (HTTP 429, too many requests); try again in a moment."
    if status in (502, 503, 504):
        return (
            f"{name} is not ready yet (GPU still provisioning or the model is loading; "
            f"HTTP {status})."
        )
    if status in (401, 403):
        return (
            f"{name} refused the chat app's credentials (HTTP {status}). The app's service "
            "account needs permission to call it (roles/run.invoker on Cloud Run, "
            "roles/aiplatform.user for Vertex AI)."
        )
    if status == 404:
        return f"{name} has no model {config.model!r} (HTTP 404); check CHAT_BACKENDS."
    brief = detail.strip().splitlines()[0][:300] if detail.strip() else "no details"
    if 400 <= status < 500:
        return f"{name} rejected the request (HTTP {status}): {brief}"
    return f"{name} failed (HTTP {status}): {brief}"


def _api_key(config: BackendConfig) -> str:
    """The key in the variable `api_key_env` names, or a BackendError if auth needs it."""
    if config.auth != "api-key":
        return ""
    key = os.environ.get(config.api_key_env or "", "")
    if not key:
        raise BackendError(
            f"{config.label} needs an API key in ${config.api_key_env}, which is empty. "
            "Set it for the chat app; other models keep working."
        )
    return key


def _causes(err: BaseException) -> list[BaseException]:
    """``err`` and what it was raised from or while handling, to the original failure."""
    chain: list[BaseException] = []
    pending: list[BaseException | None] = [err]
    while pending and len(chain) < 20:
        e = pending.pop()
        if e is not None and e not in chain:
            chain.append(e)
            pending += [e.__cause__, e.__context__]
    return chain


def _timed_out(err: BaseException) -> bool:
    chain = _causes(err)
    # A refused or unresolvable connection is not a timeout, whatever the layers above call
    # it (the aiohttp transport reports every failed connect as a connect timeout).
    if any(isinstance(e, OSError) and not isinstance(e, TimeoutError) for e in chain):
        return False
    return any("Timeout" in type(e).__name__ or "timed out" in str(e).lower() for e in chain)


def _transport_message(config: BackendConfig, err: BaseException) -> str:
    if _timed_out(err):
        return f"{config.label} did not answer within {config.timeout_s:g} s; try again shortly."
    return (
        f"{config.label} cannot be reached ({type(err).__name__}); it may still be starting "
        "or waiting for a GPU."
    )


class OpenAIBackend:
    """vLLM, Ollama or our inference app: the OpenAI chat completions API, streamed.

    A reply streams one server-sent event per token, so reading them is most of the app's
    per-token cost. Requests go over aiohttp (its C HTTP parser) and each event line is read
    as JSON: about 0.08 ms of CPU per token, against 0.10 ms through the openai SDK on the
    same transport and 0.43 ms through the SDK's default httpx transport and typed chunks.
    """

    def __init__(self, config: BackendConfig) -> None:
        assert config.base_url is not None  # noqa: S101 - checked by BackendConfig
        self.config = config
        self._url = config.base_url.rstrip("/") + "/chat/completions"
        self._id_tokens = (
            IdTokenSource(audience_for(config.base_url))
            if config.auth == "google-id-token"
            else None
        )
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the event loop that serves the app. Connections are not
        # capped here: the app's own concurrency limit bounds them. The timeout bounds the
        # connect and every wait for data, not the length of a reply.
        if self._session is None:
            timeout_s = self.config.timeout_s
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=timeout_s, sock_read=timeout_s
                ),
                connector=aiohttp.TCPConnector(limit=0),
                json_serialize=lambda value: orjson.dumps(value).decode(),
            )
        return self._session

    def _messages(self, turns: Sequence[Turn], system_prompt: str) -> list[dict[str, str]]:
        history = prepare_turns(turns)
        system = system_prompt.strip()
        if system and self.config.folds_system_prompt and history:
            history[0] = Turn(history[0].role, f"{system}\n\n{history[0].content}")
        messages = []
        if system and not self.config.folds_system_prompt:
            messages.append({"role": "system", "content": system})
        messages.extend({"role": t.role, "content": t.content} for t in history)
        return messages

    async def stream(
        self, turns: Sequence[Turn], system_prompt: str, sampling: Sampling
    ) -> AsyncIterator[str]:
        started = False
        try:
            headers = await self._id_tokens.headers() if self._id_tokens else {}
            api_key = _api_key(self.config)
            if api_key:
                headers["Authorization"] = f"Bearer {api_key}"
            body = {
                "model": self.config.model,
                "messages": self._messages(turns, system_prompt),
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "max_tokens": sampling.max_tokens,
                "stream": True,
            }
            async with self._http().post(self._url, json=body, headers=headers) as response:
                await self._check_status(response)
                async for line in event_lines(response.content):
                    text = self._event_text(line, started)
                    if text:
                        started = True
                        yield text
        except BackendError:
            raise
        except (aiohttp.ClientError, OSError) as err:
            raise BackendError(self._broken(err, started), partial=started, transient=True) from err
        except Exception as err:  # google-auth failures and anything unforeseen
            raise BackendError(
                f"{self.config.label} failed: {type(err).__name__}: {err}", partial=started
            ) from err

    async def _check_status(self, response: aiohttp.ClientResponse) -> None:
        if response.status >= 400:
            detail = error_detail(await response.content.read(MAX_ERROR_BODY))
            raise BackendError(
                _status_message(self.config, response.status, detail),
                transient=response.status in TRANSIENT_STATUSES,
            )

    def _event_text(self, line: bytes, started: bool) -> str:
        """The text of one line of the server-sent event stream ("" for anything else); an
        in-band error event (sent after the 200) is a BackendError."""
        if not line.startswith(b"data:"):
            return ""
        data = line[5:].strip()
        if not data.startswith(b"{"):
            return ""  # "[DONE]"
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError as err:
            shown = data[:200].decode(errors="replace")
            raise BackendError(
                f"{self.config.label} sent a stream event that is not JSON: {shown}",
                partial=started,
            ) from err
        if not isinstance(event, dict):
            return ""
        if (error := event.get("error")) is not None:
            detail = error.get("message") if isinstance(error, dict) else error
            raise BackendError(f"{self.config.label} failed mid-reply: {detail}", partial=started)
        choices = event.get("choices")
        if not choices or not isinstance(choices[0], dict):
            return ""
        delta = choices[0].get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
        return text if isinstance(text, str) else ""

    def _broken(self, err: BaseException, started: bool) -> str:
        if started:
            return f"{self.config.label} stopped mid-reply (connection lost); the reply is cut off."
        return _transport_message(self.config, err)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


# An error body longer than this is cut: the user sees its first line.
MAX_ERROR_BODY = 64 * 1024


async def event_lines(content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
    """The lines of a response body as they arrive, however long (aiohttp's own line
    iterator refuses lines over 64 KiB)."""
    rest = b""
    async for chunk in content.iter_any():
        *lines, rest = (rest + chunk).split(b"\n")
        for line in lines:
            yield line
    if rest:
        yield rest


def error_detail(body: bytes) -> str:
    """What an error response says: an OpenAI-shaped error's message, a FastAPI detail, or
    the text."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.decode(errors="replace")
    if isinstance(parsed, dict):
        error = parsed.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        for key in ("error", "detail", "message"):
            if parsed.get(key):
                return str(parsed[key])
    return body.decode(errors="replace")


class GeminiBackend:
    """Gemini on Vertex AI, or any server speaking the Gemini API, through google-genai."""

    def __init__(self, config: BackendConfig, project: str | None) -> None:
        self.config = config
        self._project = project
        self._client: Any = None
        self._id_tokens = (
            IdTokenSource(audience_for(config.base_url))
            if config.auth == "google-id-token" and config.base_url
            else None
        )

    def _get_client(self) -> Any:
        if self._client is not None:
            return self._client
        import google.auth  # noqa: PLC0415
        import google.auth.exceptions  # noqa: PLC0415
        from google import genai  # noqa: PLC0415
        from google.genai import types  # noqa: PLC0415

        timeout_ms = int(self.config.timeout_s * 1000)
        # Without explicit retry options the SDK sleeps 1-10 s and retries a refused
        # connection; a backend that is down should be reported at once.
        no_retry = types.HttpRetryOptions(attempts=1)
        if self.config.vertex:
            try:
                credentials, found_project = google.auth.default(
                    scopes=["https://www.googleapis.com/auth/cloud-platform"]
                )
            except google.auth.exceptions.DefaultCredentialsError as err:
                raise BackendError(
                    f"{self.config.label} runs on Vertex AI and needs Google credentials, but "
                    "none were found. On GCP the app uses its Workload Identity; locally run "
                    "`gcloud auth application-default login` or set "
                    "GOOGLE_APPLICATION_CREDENTIALS. Other models keep working."
                ) from err
            project = self._project or found_project
            if not project:
                raise BackendError(
                    f"{self.config.label} runs on Vertex AI and needs a project: set "
                    "GOOGLE_CLOUD_PROJECT."
                )
            self._client = genai.Client(
                vertexai=True,
                project=project,
                location=self.config.location or "global",
                credentials=credentials,
                http_options=types.HttpOptions(timeout=timeout_ms, retry_options=no_retry),
            )
        else:
            self._client = genai.Client(
                api_key=_api_key(self.config) or "unused",
                # Servers that speak the Gemini API (Google's Cloud Run Gemma image, our
                # inference app) serve it under v1beta, which newer SDKs no longer default to.
                http_options=types.HttpOptions(
                    base_url=self.config.base_url,
                    api_version="v1beta",
                    timeout=timeout_ms,
                    retry_options=no_retry,
                ),
            )
        return self._client

    async def stream(
        self, turns: Sequence[Turn], system_prompt: str, sampling: Sampling
    ) -> AsyncIterator[str]:
        from google.genai import errors, types  # noqa: PLC0415

        broken_stream: tuple[type[Exception], ...] = (httpx.HTTPError, OSError, aiohttp.ClientError)
        started = False
        try:
            client = self._get_client()
            contents = [
                types.Content(
                    role="model" if t.role == "assistant" else "user",
                    parts=[types.Part(text=t.content)],
                )
                for t in prepare_turns(turns)
            ]
            headers = await self._id_tokens.headers() if self._id_tokens else None
            config = types.GenerateContentConfig(
                system_instruction=system_prompt.strip() or None,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                max_output_tokens=sampling.max_tokens,
                http_options=types.HttpOptions(headers=headers) if headers else None,
                # The SDK would silently reconnect and replay a dropped or refused stream;
                # the user should hear about it at once instead.
                automatic_continuation=False,
            )
            stream = await client.aio.models.generate_content_stream(
                model=self.config.model, contents=contents, config=config
            )
            async for chunk in stream:
                text = _chunk_text(chunk)
                if text:
                    started = True
                    yield text
        except BackendError:
            raise
        except errors.APIError as err:
            raise BackendError(
                _status_message(self.config, int(err.code or 0), str(err.message or "")),
                partial=started,
                transient=int(err.code or 0) in TRANSIENT_STATUSES,
            ) from err
        except broken_stream as err:
            message = (
                f"{self.config.label} stopped mid-reply (connection lost); the reply is cut off."
                if started
                else _transport_message(self.config, err)
            )
            raise BackendError(message, partial=started, transient=True) from err
        except Exception as err:  # google-auth refresh failures, aiohttp errors, and the like
            raise BackendError(
                f"{self.config.label} failed: {type(err).__name__}: {err}", partial=started
            ) from err

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aio.aclose()


def _chunk_text(chunk: Any) -> str:
    # `chunk.text` warns and concatenates non-text parts; read text parts directly.
    parts: list[str] = []
    for candidate in chunk.candidates or []:
        content = candidate.content
        for part in (content.parts or []) if content else []:
            if part.text and not part.thought:
                parts.append(part.text)
        break
    return "".join(parts)


def make_backend(config: BackendConfig, project: str | None = None) -> ChatBackend:
    if config.kind == "openai":
        return OpenAIBackend(config)
    return GeminiBackend(config, project)
