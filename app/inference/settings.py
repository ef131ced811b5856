"""Server settings from environment variables (MODEL_URI, PORT, ...) or matching CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting is an environment variable (``MODEL_URI``) and a flag (``--model-uri``)."""

    model_config = SettingsConfigDict(
        case_sensitive=False,
        cli_kebab_case=True,
        cli_prog_name="python -m app.inference",
        protected_namespaces=(),
        extra="ignore",
    )

    model_uri: str = Field(
        description="gs://BUCKET/PATH of the merged model folder, a local folder, or a "
        "Hugging Face repo id"
    )
    host: str = Field("0.0.0.0", description="address to listen on")  # noqa: S104
    port: int = Field(8080, ge=1, le=65535, description="port to listen on (Cloud Run's PORT)")
    served_model_name: str | None = Field(
        None, description="model name clients send; default: the model folder's name"
    )
    max_model_len: int | None = Field(
        None, ge=16, description="context length (prompt + output); default: the model's"
    )
    max_concurrency: int = Field(
        16, ge=1, description="requests generating at once (rows of the decode batch)"
    )
    max_queue: int = Field(16, ge=0, description="requests waiting for a slot before 429")
    max_tokens_default: int = Field(
        1024, ge=1, description="max_tokens when a request does not set it"
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="largest request body accepted; larger ones get 413 before being read",
    )
    api_key: SecretStr | None = Field(
        None,
        description="if set, requests need Authorization: Bearer KEY or x-goog-api-key: KEY "
        "(Gemini routes also take ?key=KEY)",
    )
    model_cache_dir: Path | None = Field(
        None, description="where gs:// and Hugging Face models are downloaded"
    )
    download_workers: int = Field(16, ge=1, description="parallel range downloads from gs://")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bfloat16 on GPU, float32 on CPU"
    )
    attention: Literal["auto", "eager", "sdpa"] = Field(
        "auto", description="attention kernel; auto: sdpa (measured on par or faster)"
    )
    shutdown_grace_s: float = Field(
        8.0, ge=0, description="on SIGTERM, how long in-flight requests may finish"
    )
    log_level: str = Field("info", description="debug, info, warning or error")

    @field_validator("api_key", mode="before")
    @classmethod
    def _empty_key_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("served_model_name", mode="before")
    @classmethod
    def _empty_name_means_none(cls, value: object) -> object:
        return None if value == "" else value

    def model_name(self) -> str:
        """The served model name: the setting, else the last part of MODEL_URI."""
        if self.served_model_name:
            return self.served_model_name
        return self.model_uri.rstrip("/").rsplit("/", 1)[-1] or "model"
