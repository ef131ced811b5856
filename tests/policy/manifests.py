"""Render the mocked stack's Kubernetes objects to YAML and scan them with checkov.

Shared by the checkov test and by `python -m tests.policy.checkov_report`, which prints
the count against Google's reference vLLM Deployment.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHECKOV = REPO_ROOT / ".tools" / "checkov" / "bin" / "checkov"
SKIPS_FILE = REPO_ROOT / "policy" / "checkov" / "skips.yaml"
REFERENCE_MANIFEST = Path(__file__).resolve().parent / "fixtures" / "reference-vllm-deployment.yaml"


@dataclass(frozen=True)
class Skip:
    """One checkov check we do not meet on purpose, where, and why."""

    check_id: str
    reason: str
    # "Kind/name" of each object it applies to; ("*",) for every object of the stack.
    resources: tuple[str, ...]

    def covers(self, check_id: str, resource: str) -> bool:
        """Whether this skip explains checkov's finding `check_id` on `resource`."""
        return check_id == self.check_id and (
            "*" in self.resources or checkov_object(resource) in self.resources
        )


@dataclass
class ScanResult:
    """checkov's verdict on a set of manifests."""

    passed: int = 0
    failed: list[tuple[str, str, str]] = field(default_factory=list)  # id, resource, title

    def failed_for(self, kind_prefix: str) -> list[tuple[str, str, str]]:
        return [f for f in self.failed if f[1].startswith(kind_prefix)]

    def split(
        self, skips: Sequence[Skip]
    ) -> tuple[list[tuple[str, str, str]], list[tuple[str, str, str]], list[Skip]]:
        """(unjustified failures, justified ones, skips that no failure needs any more)."""
        justified = [f for f in self.failed if any(s.covers(f[0], f[1]) for s in skips)]
        unjustified = [f for f in self.failed if f not in justified]
        stale = [s for s in skips if not any(s.covers(f[0], f[1]) for f in self.failed)]
        return unjustified, justified, stale


def object_id(manifest: Mapping[str, Any]) -> str:
    return f"{manifest.get('kind')}/{(manifest.get('metadata') or {}).get('name')}"


def checkov_object(resource: str) -> str:
    """'Kind/name' from checkov's resource id ('Deployment.ns.name', 'Pod.ns.name.labels...')."""
    parts = resource.split(".")
    return f"{parts[0]}/{parts[2]}" if len(parts) >= 3 else resource.replace(".", "/", 1)


def load_skips(path: Path = SKIPS_FILE) -> list[Skip]:
    data = yaml.safe_load(path.read_text()) or {}
    skips = []
    for entry in data.get("skips") or []:
        resources = entry.get("resources") or ["*"]
        skips.append(Skip(entry["id"], " ".join(entry["reason"].split()), tuple(resources)))
    return skips


def write_manifests(manifests: Sequence[dict[str, Any]], directory: Path) -> list[Path]:
    """One YAML file per object, so checkov names every finding by its object."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, manifest in enumerate(manifests):
        name = object_id(manifest).replace("/", "-").lower()
        path = directory / f"{index:02d}-{name}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        paths.append(path)
    return paths


def run_checkov(target: Path, checkov: Path = CHECKOV) -> ScanResult:
    """checkov's Kubernetes checks on a file or a directory, offline."""
    args = [str(checkov), "--framework", "kubernetes", "--output", "json"]
    args += ["--skip-download", "--compact"]
    args += ["--directory" if target.is_dir() else "--file", str(target)]
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false"}
    proc = subprocess.run(args, capture_output=True, text=True, env=env, check=False, timeout=300)
    # checkov exits 1 when a check fails; anything else, or no JSON, is a crash.
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"checkov failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    reports = _json_reports(proc.stdout)
    result = ScanResult()
    for report in reports:
        results = report.get("results") or {}
        # --quiet leaves passed checks out of the details but not out of the summary.
        result.passed += int((report.get("summary") or {}).get("passed", 0))
        for check in results.get("failed_checks") or []:
            result.failed.append((check["check_id"], check["resource"], check["check_name"]))
    return result


def _json_reports(stdout: str) -> list[dict[str, Any]]:
    text = stdout.strip()
    if not text:
        return []  # nothing to scan
    data = json.loads(text[text.index("[") if text.startswith("[") else text.index("{") :])
    if isinstance(data, dict):
        # An empty scan prints a bare summary without results.
        return [data] if "results" in data else []
    return [r for r in data if isinstance(r, dict)]
