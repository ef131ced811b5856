"""The hash-pinned locks match the .in files they are compiled from, so none is stale.

A lock is stale when its input changed after the last `make lock`. Recompiling to compare
would need the network and would flag every new upstream release, so these checks read
the files instead. They are enough because a pin is exact: the dependencies of a pinned
release never change, so a lock can only drift from its input (checked here: every input
requirement pinned within its bounds, nothing pinned for an input line that is gone) or
from the locks it is constrained by (checked here: the dev lock agrees with the others).
That a lock is complete, pip proves when it installs it with hashes: the rehearsal of
`pulumi up` for requirements.txt, `make venv` (pip check) for the dev lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.pulumi_harness import REPO_ROOT

# Each lock and the input `make lock` compiles it from.
LOCKS = {
    "requirements.txt": "requirements.in",
    "app/chat/requirements.txt": "app/chat/requirements.in",
    "app/inference/requirements.txt": "app/inference/requirements.in",
    "app/finetune/requirements.txt": "app/finetune/requirements.in",
    "requirements-dev.txt": "requirements-dev.in",
}
DEV_LOCK = "requirements-dev.txt"


@dataclass
class Pin:
    """One requirement of a lock, with its hashes and the `# via` lines uv wrote under it."""

    requirement: Requirement
    hashes: list[str] = field(default_factory=list)
    via: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> str:
        (spec,) = self.requirement.specifier
        return spec.version


def _pins(lock: str) -> list[Pin]:
    pins: list[Pin] = []
    for raw in (REPO_ROOT / lock).read_text().splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if not line or (line.startswith("#") and not pins):
            continue
        if not raw.startswith(" "):
            pins.append(Pin(Requirement(line)))
        elif line.startswith("--hash="):
            pins[-1].hashes.append(line.removeprefix("--hash="))
        elif line.startswith("#"):
            source = line.lstrip("#").strip().removeprefix("via").strip()
            if source:
                pins[-1].via.add(source)
    return pins


def _input_requirements(path: str) -> list[Requirement]:
    """The requirements of an input file, following its `-r` lines (not its `-c` lines)."""
    found: list[Requirement] = []
    for raw in (REPO_ROOT / path).read_text().splitlines():
        line = re.sub(r"(^|\s)#.*", "", raw).strip()
        if line.startswith("-r "):
            found += _input_requirements(line.removeprefix("-r ").strip())
        elif line and not line.startswith("-"):
            found.append(Requirement(line))
    return found


def _applies(pin: Pin) -> bool:
    # Universal locks fork by marker; the Python running the tests picks one branch.
    return pin.requirement.marker is None or pin.requirement.marker.evaluate()


@pytest.mark.parametrize("lock", LOCKS)
def test_every_pin_is_exact_and_hashed(lock: str) -> None:
    pins = _pins(lock)
    assert pins
    for pin in pins:
        specs = list(pin.requirement.specifier)
        assert len(specs) == 1, pin.requirement
        assert specs[0].operator == "==", pin.requirement
        assert pin.hashes, f"{lock}: {pin.requirement} has no hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in pin.hashes)


@pytest.mark.parametrize(("lock", "source"), LOCKS.items())
def test_every_input_requirement_is_pinned_within_its_bounds(lock: str, source: str) -> None:
    pins = [p for p in _pins(lock) if _applies(p)]
    for wanted in _input_requirements(source):
        if wanted.marker is not None and not wanted.marker.evaluate():
            continue
        matching = [p for p in pins if p.name == canonicalize_name(wanted.name)]
        assert matching, f"{source} asks for {wanted} but {lock} has no pin: run make lock"
        for pin in matching:
            assert wanted.specifier.contains(pin.version, prereleases=True), (
                f"{lock} pins {pin.requirement} outside {source}'s {wanted}: run make lock"
            )
        extras = set().union(*(p.requirement.extras for p in matching))
        assert wanted.extras <= extras, f"{lock} lacks {wanted}'s extras: run make lock"


@pytest.mark.parametrize("lock", LOCKS)
def test_the_lock_pins_nothing_its_inputs_no_longer_ask_for(lock: str) -> None:
    pins = _pins(lock)
    names = {p.name for p in pins}
    for pin in pins:
        assert pin.via, f"{lock}: {pin.requirement} says nothing of why it is there"
        for source in pin.via:
            if source.startswith("-r "):
                path = source.removeprefix("-r ")
                asked = {canonicalize_name(r.name) for r in _input_requirements(path)}
                assert pin.name in asked, f"{path} no longer asks for {pin.name}: run make lock"
            elif not source.startswith("-c "):
                assert canonicalize_name(source) in names, (
                    f"{lock} pins {pin.name} for {source}, which it no longer pins: run make lock"
                )


def test_the_dev_environment_tests_the_versions_that_are_deployed() -> None:
    dev = {(p.name, str(p.requirement.marker)): p.version for p in _pins(DEV_LOCK)}
    for lock in set(LOCKS) - {DEV_LOCK}:
        for pin in _pins(lock):
            if not _applies(pin):
                continue
            got = dev.get((pin.name, "None"))
            assert got in {None, pin.version}, (
                f"{DEV_LOCK} has {pin.name}=={got}, {lock} {pin.version}: run make lock"
            )


def test_torch_is_in_no_lock() -> None:
    # Each place that needs torch installs its own build first (see requirements-excluded.txt).
    excluded = {canonicalize_name(r.name) for r in _input_requirements("requirements-excluded.txt")}
    assert "torch" in excluded
    for lock in LOCKS:
        assert not excluded & {p.name for p in _pins(lock)}, lock


def test_requirements_txt_installs_the_typechecker_pulumi_runs() -> None:
    options = yaml.safe_load((REPO_ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]
    pins = {p.name: p for p in _pins("requirements.txt")}
    typechecker = pins.get(options["typechecker"])
    assert typechecker is not None, "`pulumi up` would stop: requirements.txt lacks the typechecker"
    assert "-r requirements.in" in typechecker.via


@pytest.mark.parametrize("app", ["chat", "inference", "finetune"])
def test_each_image_installs_its_lock_with_hashes(app: str) -> None:
    dockerfile = (REPO_ROOT / "app" / app / "Dockerfile").read_text().replace("\\\n", " ")
    installs = [
        line for line in dockerfile.splitlines() if line.startswith("RUN") and " -r " in line
    ]
    assert installs
    for line in installs:
        assert "--require-hashes" in line
        assert "pip check" in line
