"""Fixtures every test area shares."""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import settings

# `make test` replays the same examples on every run (a seed derived from each test), so it
# passes or fails the same way each time; `make fuzz` sets HYPOTHESIS_PROFILE=explore to search
# afresh with far more examples.
settings.register_profile("deterministic", derandomize=True)
settings.register_profile("explore", max_examples=2000, derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "deterministic"))


@pytest.fixture(autouse=True)
def _current_event_loop() -> None:
    """Give sync tests a current event loop.

    Pulumi's SDK looks one up from synchronous code, and pytest-asyncio unsets it after each
    async test, so an infrastructure test that runs after an app test would find none.
    """
    try:
        asyncio.get_event_loop_policy().get_event_loop()
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())
