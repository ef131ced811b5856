"""Fixtures every test area shares."""

from __future__ import annotations

import asyncio

import pytest


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
