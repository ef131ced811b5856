"""The history window: as many recent turns as fit a model's context, newest kept first."""

from __future__ import annotations

from collections.abc import Sequence

from app.chat.backends import Turn


def fit_context(
    turns: Sequence[Turn], system_prompt: str, budget_chars: int
) -> tuple[list[Turn], int]:
    """The newest turns whose text, with the system prompt, fits `budget_chars`.

    The latest turn (the question being asked) is always sent. The window starts at a user
    turn, so no reply is shown to the model without its question. Returns the kept turns and
    how many older ones were left out.
    """
    used = len(system_prompt)
    start = len(turns)
    for index in range(len(turns) - 1, -1, -1):
        used += len(turns[index].content)
        if used > budget_chars and index < len(turns) - 1:
            break
        start = index
    while start < len(turns) - 1 and turns[start].role != "user":
        start += 1
    return list(turns[start:]), start
