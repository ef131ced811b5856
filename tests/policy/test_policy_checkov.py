"""checkov's Kubernetes checks on every object of the mocked default stack, and the baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.policy.checkov_report import compare
from tests.policy.manifests import (
    CHECKOV,
    REFERENCE_MANIFEST,
    load_skips,
    run_checkov,
)
from tests.pulumi_harness import manifests_from_resources

pytestmark = pytest.mark.skipif(
    not CHECKOV.exists(),
    reason=(
        "checkov's tool environment .tools/checkov is missing; `make test` creates it "
        "(python3 -m venv .tools/checkov && .tools/checkov/bin/pip install -r "
        "policy/checkov/requirements.txt)"
    ),
)
SECURITY_DOCS = Path(__file__).resolve().parents[2] / "docs" / "security.md"


def test_reference_vllm_deployment_fails_16_checks() -> None:
    # The baseline: Google's own Gemma vLLM Deployment fails 16 checkov checks.
    result = run_checkov(REFERENCE_MANIFEST)
    failed = {check_id for check_id, _, _ in result.failed_for("Deployment.")}
    assert len(result.failed_for("Deployment.")) == 16
    # No probes, root user, writable root filesystem, privilege escalation allowed.
    assert {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_23", "CKV_K8S_22", "CKV_K8S_20"} <= failed


def test_stack_objects_pass_checkov_but_for_justified_skips(
    default_stack: Any, tmp_path: Path
) -> None:
    comparison = compare(default_stack.resources, tmp_path)
    kinds = {m["kind"] for m in manifests_from_resources(default_stack.resources)}
    assert {"Deployment", "Service"} <= kinds, kinds
    print(comparison.line())  # shown with `pytest -s`; docs/security.md quotes it
    assert comparison.unjustified == [], "\n".join(map(str, comparison.unjustified))
    assert comparison.stale == [], f"skips no finding needs any more: {comparison.stale}"
    assert comparison.ours.passed > 0


def test_every_skip_is_justified_and_documented() -> None:
    skips = load_skips()
    docs = SECURITY_DOCS.read_text()
    assert len({s.check_id for s in skips}) == len(skips)
    for skip in skips:
        assert len(skip.reason) >= 80, f"{skip.check_id} needs a real reason"
        assert skip.check_id in docs, f"{skip.check_id} is not in docs/security.md"


def test_secrets_are_redacted_in_rendered_manifests(default_stack: Any) -> None:
    from tests.pulumi_harness import FAKE_HF_TOKEN  # noqa: PLC0415

    rendered = str(manifests_from_resources(default_stack.resources))
    assert FAKE_HF_TOKEN not in rendered
