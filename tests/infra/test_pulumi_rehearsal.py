"""Rehearse `pulumi up` offline: its virtualenv, typechecker and program, as Pulumi runs them.

Pulumi's Python language host (toolchain `pip`, see Pulumi.yaml) creates the virtualenv with
`python -m venv`, upgrades pip, setuptools and wheel, installs requirements.txt and nothing
else, then runs `python -m mypy --exclude <virtualenv> <project dir>` from the project
directory before it starts `__main__.py`. Each step below does the same, so a missing
package, a type error anywhere mypy looks, or an import of a dev-only package fails here
rather than on a user's first `pulumi up`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.pulumi_harness import REPO_ROOT, ProgramRun, run_program

REQUIREMENTS = REPO_ROOT / "requirements.txt"
# A cold build downloads the providers (pulumi-gcp alone is large) on a shared 2-core machine.
BUILD_TIMEOUT_S = 3600
pytestmark = [pytest.mark.slow, pytest.mark.timeout(BUILD_TIMEOUT_S)]


def _activated(venv: Path) -> dict[str, str]:
    # What the language host's ActivateVirtualEnv does, minus anything the test run added.
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}}
    env["VIRTUAL_ENV"] = str(venv)
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def _run(
    args: list[str], venv: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args,
        cwd=REPO_ROOT,
        env=env or _activated(venv),
        capture_output=True,
        text=True,
        check=False,
        timeout=BUILD_TIMEOUT_S,
    )


def _build_runtime_venv(venv: Path) -> None:
    # One build per requirements.txt; those of earlier versions only fill the disk.
    for old in venv.parent.glob("pulumi-venv-*"):
        shutil.rmtree(old, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [*pip, "--upgrade", "pip", "setuptools", "wheel"],
        [*pip, "-r", "requirements.txt"],
    ]
    for step in steps:
        proc = _run(step, venv)
        if proc.returncode != 0:
            pytest.fail(
                f"{' '.join(step)} failed as it would in `pulumi up`:\n{proc.stdout}\n{proc.stderr}"
            )


@pytest.fixture(scope="module")
def runtime_venv() -> Path:
    """The virtualenv `pulumi up` builds, kept until requirements.txt changes."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:16]
    venv = REPO_ROOT / ".cache" / f"pulumi-venv-{digest}"
    # Written last, so a build cut short is rebuilt rather than trusted.
    complete = venv / ".complete"
    if not complete.exists():
        _build_runtime_venv(venv)
        complete.touch()
    return venv


def test_the_typechecker_passes_as_the_language_host_runs_it(runtime_venv: Path) -> None:
    options = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]
    assert options["typechecker"] == "mypy"
    exclude = os.path.relpath(runtime_venv, REPO_ROOT)
    python = str(runtime_venv / "bin" / "python")
    # Its own cache, so this run and `make typecheck` (other packages) never share one.
    env = {**_activated(runtime_venv), "MYPY_CACHE_DIR": str(runtime_venv / ".mypy_cache")}
    proc = _run([python, "-m", "mypy", "--exclude", exclude, str(REPO_ROOT)], runtime_venv, env)
    assert proc.returncode == 0, f"`pulumi up` would stop here:\n{proc.stdout}\n{proc.stderr}"


def test_the_runtime_venv_holds_no_dev_or_app_packages(runtime_venv: Path) -> None:
    # The control for the program run below: it only proves anything if these are absent.
    python = str(runtime_venv / "bin" / "python")
    for module in ("pytest", "torch", "gradio", "fastapi", "transformers", "hypothesis"):
        proc = _run([python, "-c", f"import {module}"], runtime_venv)
        assert proc.returncode != 0, f"{module} is importable in the runtime virtualenv"
        assert "ModuleNotFoundError" in proc.stderr


@pytest.fixture(scope="module")
def rehearsed(runtime_venv: Path) -> ProgramRun:
    return run_program(python=runtime_venv / "bin" / "python")


def test_the_program_runs_with_only_what_pulumi_installs(rehearsed: ProgramRun) -> None:
    top_level = {r.type for r in rehearsed.resources if r.parent_type == "pulumi:pulumi:Stack"}
    assert {
        "gemma-stack:project:ProjectServices",
        "gemma-stack:registry:ArtifactRegistry",
        "gemma-stack:cluster:AutopilotCluster",
        "gemma-stack:firestore:ChatHistoryDatabase",
        "gemma-stack:gke:GemmaOnGke",
        "gemma-stack:cloudrun:CloudRunGpuService",
        "gemma-stack:chat:ChatApp",
    } <= top_level
    assert {"projectId", "registryUrl", "clusterName", "chatUrl", "cloudRunUrls"} <= set(
        rehearsed.outputs
    )
