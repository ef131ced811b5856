"""The whole gemma-stack deployment: the platform, then the serving backends on top of it."""

from __future__ import annotations

from typing import Any

from stacks.config import StackConfig
from stacks.observability import deploy_observability
from stacks.platform import build_platform, platform_outputs
from stacks.preflight import check_quotas
from stacks.serving import deploy_serving


def build_stack(config: StackConfig) -> dict[str, Any]:
    """Create every resource for `config` and return the stack outputs by name."""
    # Before any resource: a stack that lacks GPU quota stops here with nothing to clean up.
    check_quotas(config)
    platform = build_platform(config)
    outputs = platform_outputs(platform)
    outputs.update(deploy_serving(platform))
    outputs.update(deploy_observability(platform))
    return outputs
