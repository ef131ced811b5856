"""Repo root on sys.path, and one mocked run of the default stack shared by the policy tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


@pytest.fixture(scope="session")
def default_stack() -> Any:
    """`__main__.py` under mocks with Pulumi.dev.yaml, as `pulumi preview` would run it."""
    from tests.pulumi_harness import run_program  # noqa: PLC0415 - needs the root on sys.path

    return run_program()
