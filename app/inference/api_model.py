"""The base of every request body: text that is not valid Unicode is a 400 naming its field.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``), and Python's decoder turns even raw
invalid UTF-8 into one. No tokenizer can encode such a string and no JSON reply can carry it,
so it is refused here, once for every route, before any route sees the request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError

INVALID_UNICODE = "invalid_unicode"


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
        return data
