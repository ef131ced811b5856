"""The rendered fine-tuning Job passes checkov (but for the stack-wide skips) and the pack."""

from __future__ import annotations

from pathlib import Path

import pytest

from policy.rules import RuleContext, evaluate
from policy.rules.core import MANDATORY
from tests.infra.test_fine_tune_job import JOB, SERVICE
from tests.policy.manifests import CHECKOV, load_skips, run_checkov, write_manifests
from tests.policy.stack import stack_resources
from tests.pulumi_harness import ProgramRun, manifests_from_resources, run_program


@pytest.fixture(scope="module")
def fine_tune_stack() -> ProgramRun:
    return run_program(
        overrides={"gemma-stack:fineTuneJobs": [JOB], "gemma-stack:cloudRunServices": [SERVICE]}
    )


@pytest.mark.skipif(not CHECKOV.exists(), reason="checkov's tool environment is missing")
def test_the_job_passes_checkov_but_for_stack_wide_skips(
    fine_tune_stack: ProgramRun, tmp_path: Path
) -> None:
    manifests = [
        m
        for m in manifests_from_resources(fine_tune_stack.resources)
        if m["kind"] in {"Job", "NetworkPolicy"} and "finetune" in m["metadata"]["name"]
    ]
    assert sorted(m["kind"] for m in manifests) == ["Job", "NetworkPolicy"]
    write_manifests(manifests, tmp_path)
    result = run_checkov(tmp_path)
    # Only a skip meant for every object may excuse a finding on the Job.
    stack_wide = [s for s in load_skips() if "*" in s.resources]
    unexcused = [f for f in result.failed if not any(s.covers(f[0], f[1]) for s in stack_wide)]
    assert unexcused == [], "\n".join(map(str, unexcused))
    assert result.passed > 50


def test_the_fine_tune_stack_passes_every_mandatory_rule(fine_tune_stack: ProgramRun) -> None:
    # Pulumi.dev.yaml's config, so the rules a dev stack may relax are relaxed.
    found = evaluate(stack_resources(fine_tune_stack.resources), RuleContext(stack="dev"))
    mandatory = [str(v) for v in found if v.enforcement is MANDATORY]
    assert mandatory == [], "\n".join(mandatory)
    assert any(r.type == "kubernetes:batch/v1:Job" for r in fine_tune_stack.resources)
