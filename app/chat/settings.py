"""Settings of the chat app, read once from environment variables."""

from __future__ import annotations

import json
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.chat.history import DEFAULT_MAX_MESSAGE_BYTES

DEFAULT_SYSTEM_PROMPT = (
    "You are Gemma, a helpful, friendly assistant for ML and platform engineers. "
    "Answer clearly and concisely; use Markdown for code."
)


BACKENDS_EXAMPLE = (
    'CHAT_BACKENDS=\'[{"id": "gemma", "label": "Gemma", "kind": "openai", '
    '"model": "google/gemma-3-1b-it", "base_url": "http://localhost:8080/v1"}]\''
)


def describe_errors(error: ValidationError) -> str:
    """One line per problem, named by its environment variable; input values are left out
    because they may hold secrets such as LOGIN_CREDENTIALS."""
    lines = []
    for item in error.errors(include_url=False, include_input=False):
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:  # a check across settings names its variables itself
            lines.append(f"  {message}")
            continue
        name, *rest = [str(part) for part in item["loc"]]
        where = name.upper() + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in rest)
        lines.append(f"  {where}: {message}")
    if any(item["loc"][:1] == ("chat_backends",) for item in error.errors()):
        lines.append(f"  A working example: {BACKENDS_EXAMPLE}")
    return "\n".join(lines)


class BackendConfig(BaseModel):
    """One entry of `CHAT_BACKENDS`: a model the user can pick in the dropdown."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    label: str = Field(min_length=1)
    kind: Literal["openai", "gemini"]
    model: str = Field(min_length=1)
    base_url: str | None = None
    auth: Literal["none", "google-id-token", "api-key"] = "none"
    api_key_env: str | None = None
    vertex: bool = False
    location: str | None = None
    # Older Gemma chat templates raise on a `system` turn, so OpenAI-style backends get the
    # system prompt folded into the first user turn unless the server is known to accept it.
    fold_system_prompt: bool | None = None
    timeout_s: float = Field(default=120.0, gt=0)
    # How much history (system prompt included) this model is sent, in characters; older
    # turns are left out, with a notice. ~4 characters a token: 32,000 fits an 8K context.
    context_chars: int = Field(default=32_000, ge=1_000)

    @model_validator(mode="after")
    def _check_combination(self) -> BackendConfig:
        where = f"CHAT_BACKENDS entry {self.id!r}"
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise ValueError(
                f"{where}: base_url {self.base_url!r} must be an http:// or https:// URL"
            )
        if self.kind == "openai" and not self.base_url:
            raise ValueError(f"{where}: kind 'openai' needs a base_url (e.g. http://host:8000/v1)")
        if self.kind == "openai" and self.vertex:
            raise ValueError(f"{where}: 'vertex' applies to kind 'gemini' only")
        if self.vertex and self.base_url:
            raise ValueError(f"{where}: set either vertex: true or base_url, not both")
        if (
            self.kind == "gemini"
            and not self.vertex
            and not self.base_url
            and self.auth != "api-key"
        ):
            raise ValueError(
                f"{where}: a gemini backend needs vertex: true, a base_url, or auth 'api-key'"
            )
        if self.auth == "api-key" and not self.api_key_env:
            raise ValueError(f"{where}: auth 'api-key' needs api_key_env (the variable's name)")
        if self.auth == "google-id-token" and not self.base_url:
            raise ValueError(f"{where}: auth 'google-id-token' needs the service's base_url")
        return self

    @property
    def folds_system_prompt(self) -> bool:
        if self.fold_system_prompt is not None:
            return self.fold_system_prompt
        return self.kind == "openai"


class ChatSettings(BaseSettings):
    """Everything `python -m app.chat` reads from its environment."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    chat_backends: Annotated[list[BackendConfig], NoDecode] = Field(min_length=1)
    google_cloud_project: str | None = None
    firestore_database: str = "chat-app-db"
    host: str = "0.0.0.0"  # noqa: S104 - a container must listen on all interfaces
    port: int = Field(default=7860, ge=1, le=65535)
    # GET /metrics for Prometheus, apart from `port` so no load balancer ever exposes it;
    # 0 serves none (the stack sets 9090 on GKE).
    metrics_port: int = Field(default=0, ge=0, le=65535)
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    # Markdown shown under the title, e.g. that the model is an offline demo with random weights.
    chat_notice: str | None = None
    auth_mode: Literal["none", "iap", "login"] = "none"
    login_credentials: SecretStr | None = None
    iap_audience: str | None = None
    # Keeps a browser's anonymous id readable across app restarts (Gradio encrypts it with this).
    browser_state_key: str = "gemma-stack-chat"
    max_concurrent_chats: int = Field(default=256, ge=1)
    queue_size: int = Field(default=1024, ge=1)
    # Streamed tokens closer together than this share one screen update (first token: never).
    stream_update_interval_ms: int = Field(default=40, ge=0, le=1000)
    shutdown_grace_s: float = Field(default=15.0, ge=0)
    # After open connections close, queued history writes get this long to reach Firestore.
    shutdown_flush_s: float = Field(default=30.0, ge=0)
    conversation_list_size: int = Field(default=50, ge=1, le=500)
    # A message larger than this is refused with a message (Firestore's field cap is 1 MiB).
    max_message_bytes: int = Field(default=DEFAULT_MAX_MESSAGE_BYTES, ge=1_000, le=900_000)
    # /healthz answers 503 once the oldest queued write has waited this long without progress.
    history_stuck_after_s: float = Field(default=60.0, gt=0)
    # Messages and conversations expire this many days after their last write (Firestore TTL).
    history_ttl_days: int | None = Field(default=None, ge=1)
    # Login mode: failed sign-ins allowed per user name and per client address before a
    # lockout, and how long the lockout and the window that counts failures last.
    login_max_failures: int = Field(default=5, ge=1)
    login_client_max_failures: int = Field(default=20, ge=1)
    login_lockout_s: float = Field(default=900.0, gt=0)
    login_session_hours: float = Field(default=12.0, gt=0, le=24 * 30)
    # Signs login session cookies, so sessions survive restarts and work on every replica.
    session_secret: SecretStr | None = None
    # IAP mode: the audience IAP signs for, or what finds it (the project number and the
    # `namespace-service-port` part of the backend service name the GKE Ingress creates).
    iap_project_number: str | None = Field(default=None, pattern=r"^\d+$")
    iap_backend_service: str | None = None

    @field_validator("chat_backends", mode="before")
    @classmethod
    def _parse_backends(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as err:
                raise ValueError(
                    f"CHAT_BACKENDS must be a JSON list of backends: {err.msg} at char {err.pos}"
                ) from err
        return value

    @model_validator(mode="after")
    def _check(self) -> ChatSettings:
        ids = [b.id for b in self.chat_backends]
        labels = [b.label for b in self.chat_backends]
        if len(set(ids)) != len(ids):
            raise ValueError(f"CHAT_BACKENDS ids must be unique, got {ids}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"CHAT_BACKENDS labels must be unique, got {labels}")
        if self.auth_mode == "login":
            self.login_users()  # fails early with a clear message
            secret = self.session_secret.get_secret_value() if self.session_secret else ""
            if len(secret) < 32:
                raise ValueError(
                    "AUTH_MODE=login needs SESSION_SECRET, at least 32 random characters that "
                    "sign session cookies (e.g. `python -c 'import secrets; "
                    "print(secrets.token_urlsafe(48))'`); every replica needs the same one."
                )
        if (
            self.auth_mode == "iap"
            and not self.iap_audience
            and not (self.iap_project_number and self.iap_backend_service)
        ):
            raise ValueError(
                "AUTH_MODE=iap needs IAP_AUDIENCE (/projects/NUMBER/global/backendServices/ID) "
                "or IAP_PROJECT_NUMBER and IAP_BACKEND_SERVICE to look it up; without them "
                "nothing could be verified, so the app would refuse every request."
            )
        return self

    def login_users(self) -> dict[str, str]:
        """Parse `LOGIN_CREDENTIALS` (`user:password,...`) into a name-to-password map."""
        raw = self.login_credentials.get_secret_value() if self.login_credentials else ""
        users: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in raw.split(","))):
            name, sep, password = item.partition(":")
            if not sep or not name or not password:
                raise ValueError(
                    "LOGIN_CREDENTIALS must look like 'user:password,user2:password2'; "
                    f"entry {len(users) + 1} has no 'user:password' form"
                )
            users[name] = password
        if not users:
            raise ValueError("AUTH_MODE=login needs LOGIN_CREDENTIALS='user:password,...'")
        return users

    def backend_by_label(self, label: str) -> BackendConfig:
        for backend in self.chat_backends:
            if backend.label == label:
                return backend
        raise KeyError(label)

    def backend_by_id(self, backend_id: str) -> BackendConfig | None:
        return next((b for b in self.chat_backends if b.id == backend_id), None)
