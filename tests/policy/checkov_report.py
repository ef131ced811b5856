"""Print checkov's count for Google's reference vLLM Deployment next to gemma-stack's objects.

Run: .venv/bin/python -m tests.policy.checkov_report
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.policy.manifests import (
    CHECKOV,
    REFERENCE_MANIFEST,
    ScanResult,
    Skip,
    load_skips,
    run_checkov,
    write_manifests,
)
from tests.pulumi_harness import manifests_from_resources


@dataclass(frozen=True)
class Comparison:
    """checkov on the reference manifest and on ours, with our findings split by the skip list."""

    reference: ScanResult
    ours: ScanResult
    objects: int
    unjustified: list[tuple[str, str, str]]
    justified: list[tuple[str, str, str]]
    stale: list[Skip]

    def line(self) -> str:
        return (
            f"reference: {len(self.reference.failed)} failed "
            f"({len(self.reference.failed_for('Deployment.'))} on its Deployment), "
            f"ours: {len(self.unjustified)} failed ({len(self.justified)} justified skips) "
            f"across {self.objects} Kubernetes objects"
        )


def compare(resources: list[Any], workdir: Path) -> Comparison:
    manifests = manifests_from_resources(resources)
    write_manifests(manifests, workdir)
    ours = run_checkov(workdir)
    unjustified, justified, stale = ours.split(load_skips())
    return Comparison(
        reference=run_checkov(REFERENCE_MANIFEST),
        ours=ours,
        objects=len(manifests),
        unjustified=unjustified,
        justified=justified,
        stale=stale,
    )


def main() -> int:
    from tests.pulumi_harness import run_program  # noqa: PLC0415 - only the CLI runs the stack

    if not CHECKOV.exists():
        print(f"checkov is not installed at {CHECKOV}; run `make test` once.", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        result = compare(run_program().resources, Path(tmp))
    print(result.line())
    for check_id, resource, title in result.unjustified:
        print(f"  FAILED  {check_id} {resource}: {title}")
    for check_id, resource, title in result.justified:
        print(f"  skipped {check_id} {resource}: {title}")
    return 1 if result.unjustified or result.stale else 0


if __name__ == "__main__":
    sys.exit(main())
