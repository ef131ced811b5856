"""One mocked run of the default stack shared by the policy tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.pulumi_harness import run_program


@pytest.fixture(scope="session")
def default_stack() -> Any:
    """`__main__.py` under mocks with Pulumi.dev.yaml, as `pulumi preview` would run it."""

    return run_program()
