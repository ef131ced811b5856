"""The base of every request body: every field is honoured or refused, and text is valid.

- A field the model does not declare is a 400 that names it and lists the supported ones,
  never silently dropped. ``unsupported`` gives the fields an API defines that this server
  cannot honour a reason, and the values that mean "off" (``tools: []``, ``n: 1``), which
  are accepted as they change nothing; ``null`` means absent, as in the OpenAI API.
- JSON may carry a lone UTF-16 surrogate (``"\\ud800"``), and Python's decoder turns even
  raw invalid UTF-8 into one. No tokenizer can encode such a string and no JSON reply can
  carry it, so it is refused here, once for every route, before any route sees the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator
from pydantic_core import PydanticCustomError

INVALID_UNICODE = "invalid_unicode"
UNSUPPORTED_FIELD = "unsupported_field"


@dataclass(frozen=True)
class Unsupported:
    """Why a field of the API is refused, and the values that mean it is off."""

    reason: str
    off: tuple[Any, ...] = ()


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in ``text``, if any."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        return error.start
    return None


def _find_lone_surrogate(value: Any, path: str) -> tuple[str, str, int] | None:
    """(where, the surrogate, its index) for the first string in ``value`` that cannot encode."""
    if isinstance(value, str):
        index = _lone_surrogate(value)
        return None if index is None else (path or "the body", value[index], index)
    if isinstance(value, dict):
        for key, item in value.items():
            key_text = str(key)
            index = _lone_surrogate(key_text)
            if index is not None:
                return (f"a key of {path or 'the body'}", key_text[index], index)
            found = _find_lone_surrogate(item, f"{path}.{key_text}" if path else key_text)
            if found is not None:
                return found
    if isinstance(value, list):
        for position, item in enumerate(value):
            found = _find_lone_surrogate(item, f"{path}[{position}]")
            if found is not None:
                return found
    return None


class RequestModel(BaseModel):
    """A request body model; nested models are validated as part of their parent's check."""

    model_config = ConfigDict(extra="forbid")
    # Wire name -> why this server refuses it (and the values that mean "off").
    unsupported: ClassVar[dict[str, Unsupported]] = {}

    @classmethod
    def wire_names(cls) -> list[str]:
        """The field names a client sends (aliases where the model has them)."""
        return [field.alias or name for name, field in cls.model_fields.items()]

    @model_validator(mode="before")
    @classmethod
    def _valid_unicode(cls, data: Any) -> Any:
        found = _find_lone_surrogate(data, "")
        if found is not None:
            where, char, index = found
            raise PydanticCustomError(
                INVALID_UNICODE,
                "{where} holds a lone UTF-16 surrogate (U+{code} at character {index}), which "
                "is not valid Unicode text: send valid UTF-8 (a \\uD800-\\uDBFF escape must be "
                "followed by its low surrogate).",
                {"where": where, "code": f"{ord(char):04X}", "index": index},
            )
        if isinstance(data, dict):
            return cls._known_fields(data)
        return data

    @classmethod
    def _known_fields(cls, data: dict[str, Any]) -> dict[str, Any]:
        known = set(cls.wire_names()) | set(cls.model_fields)
        kept = {}
        for key, value in data.items():
            if key in known:
                kept[key] = value
                continue
            refused = cls.unsupported.get(key)
            if refused is not None and (value is None or value in refused.off):
                continue  # "off" changes nothing: accepted
            supported = ", ".join(cls.wire_names())
            if refused is not None:
                reason = refused.reason
                if refused.off:
                    shown = " or ".join(repr(v) for v in refused.off)
                    reason += f" (only {shown} is accepted here)"
            else:
                reason = "this field is not part of the API this server implements"
            raise PydanticCustomError(
                UNSUPPORTED_FIELD,
                "'{field}' is not supported: {reason}. Supported fields here: {supported}.",
                {"field": key, "reason": reason, "supported": supported},
            )
        return kept
