"""The checks that guard every commit cannot quietly shrink.

`make typecheck` must keep covering every folder of Python, strictly and with the pydantic
plugin, and the pre-commit config must keep running ruff, that type check and a secret
scanner. These tests read what make and pre-commit would run, not a copy of it.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.pulumi_harness import REPO_ROOT

# Issue 12: every folder of Python the repository ships, and the program's entry point.
TYPECHECKED = {"components", "stacks", "__main__.py", "app", "devtools", "bench", "policy"}
PRE_COMMIT = REPO_ROOT / ".pre-commit-config.yaml"


@dataclass(frozen=True)
class MypyRun:
    """One mypy command of `make typecheck`: where it runs, its config and what it checks."""

    cwd: Path
    config: dict[str, Any]
    paths: tuple[Path, ...]


def _typecheck_runs() -> list[MypyRun]:
    # -n prints the recipe as make would run it; -o venv leaves the install step out.
    recipe = subprocess.run(
        ["make", "--no-print-directory", "-n", "-o", "venv", "typecheck"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    runs = []
    for line in recipe.splitlines():
        cwd, command = REPO_ROOT, line
        if match := re.fullmatch(r"cd (\S+) && (.*)", line):
            cwd, command = (REPO_ROOT / match[1]).resolve(), match[2]
        args = shlex.split(command)
        if not args or Path(args[0]).name != "mypy":
            continue
        assert "--config-file" in args, f"mypy without --config-file: {line}"
        at = args.index("--config-file")
        config = tomllib.loads((cwd / args[at + 1]).read_text())["tool"]["mypy"]
        named = [a for a in args[1:at] + args[at + 2 :] if not a.startswith("-")]
        # Paths named on the command line replace the config's `files`.
        paths = named or config["files"]
        runs.append(MypyRun(cwd, config, tuple((cwd / p).resolve() for p in paths)))
    return runs


def _top_level(path: Path) -> str:
    return path.relative_to(REPO_ROOT).parts[0] if path != REPO_ROOT else "."


def test_make_typecheck_covers_every_folder() -> None:
    runs = _typecheck_runs()
    covered = {_top_level(p) for run in runs for p in run.paths}
    assert covered >= TYPECHECKED, f"make typecheck skips {sorted(TYPECHECKED - covered)}"


def test_make_typecheck_is_strict_with_the_pydantic_plugin_and_excludes_nothing() -> None:
    for run in _typecheck_runs():
        assert run.config.get("strict") is True
        assert run.config.get("warn_unused_ignores") is True
        assert "pydantic.mypy" in run.config.get("plugins", [])
        # An exclude would drop files from a folder that is still listed.
        assert "exclude" not in run.config
        for override in run.config.get("overrides", []):
            assert not override.get("ignore_errors"), f"errors ignored in {override['module']}"


def test_make_test_runs_the_typecheck() -> None:
    makefile = (REPO_ROOT / "Makefile").read_text()
    prerequisites = re.search(r"^test:(.*)$", makefile, re.MULTILINE)
    assert prerequisites is not None
    assert "typecheck" in prerequisites[1].split()


def _hooks() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load(PRE_COMMIT.read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def test_pre_commit_runs_ruff_the_typecheck_and_a_secret_scanner() -> None:
    hooks = _hooks()
    assert {"ruff-check", "ruff-format", "mypy", "detect-secrets"} <= hooks.keys()
    assert hooks["ruff-check"]["entry"].split()[:2] == [".venv/bin/ruff", "check"]
    assert hooks["ruff-format"]["entry"].split()[:2] == [".venv/bin/ruff", "format"]
    # The whole type check, not mypy on the staged files alone.
    assert hooks["mypy"]["entry"] == "make typecheck"
    assert hooks["mypy"]["pass_filenames"] is False
    assert "--baseline .secrets.baseline" in hooks["detect-secrets"]["entry"]
    assert (REPO_ROOT / ".secrets.baseline").is_file()


@pytest.mark.parametrize("hook", ["ruff-check", "ruff-format", "detect-secrets"])
def test_each_hook_tool_is_in_the_dev_virtualenv(hook: str) -> None:
    # make venv installs them from requirements-dev.txt; a hook naming a missing tool fails.
    tool = _hooks()[hook]["entry"].split()[0]
    assert (REPO_ROOT / tool).is_file(), f"{tool} is missing: is it in requirements-dev.in?"


def test_pre_commit_accepts_the_config() -> None:
    proc = subprocess.run(
        [str(REPO_ROOT / ".venv" / "bin" / "pre-commit"), "validate-config", str(PRE_COMMIT)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
