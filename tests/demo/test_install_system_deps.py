"""scripts/install-system-deps.sh installs exactly what is missing, against fake apt and tools."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-system-deps.sh"
# What the script itself runs besides the tools under test; taken from the real system.
COREUTILS = ["sed", "head", "dirname", "readlink", "grep", "cat", "env", "id"]

FAKE_JAVA = "#!/bin/sh\necho 'openjdk version \"17.0.15\" 2025-04-15' >&2\n"
FAKE_CHROMIUM = "#!/bin/sh\nexit 0\n"


def _write_tool(path: Path, body: str) -> None:
    path.write_text(body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


class FakeMachine:
    """A PATH holding only coreutils plus the fake tools a test chooses to have installed."""

    def __init__(self, root: Path, *, emulator_in_apt: bool = True) -> None:
        self.bin = root / "bin"
        self.bin.mkdir()
        self.sdk = root / "google-cloud-sdk"
        self.emulator_dir = self.sdk / "platform" / "cloud-firestore-emulator"
        self.apt_log = root / "apt.log"
        for tool in COREUTILS:
            real = shutil.which(tool)
            assert real, f"{tool} is needed to run the script"
            (self.bin / tool).symlink_to(real)
        cp, mkdir = shutil.which("cp"), shutil.which("mkdir")
        self.packages = root / "packages"
        self.packages.mkdir()
        _write_tool(self.packages / "java", FAKE_JAVA)
        _write_tool(self.packages / "chromium", FAKE_CHROMIUM)
        # apt-get "installs" a package by creating the tool it provides, so the script's
        # checks after installing see the result, as on a real machine.
        _write_tool(
            self.bin / "apt-get",
            f"""#!/bin/sh
echo "apt-get $*" >> "{self.apt_log}"
for pkg in "$@"; do
  case "$pkg" in
    default-jre-headless) {cp} -p "{self.packages}/java" "{self.bin}/java" ;;
    chromium) {cp} -p "{self.packages}/chromium" "{self.bin}/chromium" ;;
    google-cloud-cli-firestore-emulator) {mkdir} -p "{self.emulator_dir}" ;;
  esac
done
""",
        )
        candidate = "1.0-0" if emulator_in_apt else "(none)"
        _write_tool(
            self.bin / "apt-cache",
            f"#!/bin/sh\necho \"$2:\"\necho '  Candidate: {candidate}'\n",
        )

    def install_java(self) -> None:
        _write_tool(self.bin / "java", FAKE_JAVA)

    def install_chromium(self) -> None:
        _write_tool(self.bin / "chromium", FAKE_CHROMIUM)

    def install_gcloud(self, *, with_emulator: bool) -> None:
        (self.sdk / "bin").mkdir(parents=True)
        _write_tool(self.sdk / "bin" / "gcloud", "#!/bin/sh\nexit 1\n")
        (self.bin / "gcloud").symlink_to(self.sdk / "bin" / "gcloud")
        if with_emulator:
            self.emulator_dir.mkdir(parents=True)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["/bin/bash", str(SCRIPT), *args],
            env={"PATH": str(self.bin), "HOME": os.environ.get("HOME", "/")},
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )

    @property
    def apt_calls(self) -> list[str]:
        return self.apt_log.read_text().splitlines() if self.apt_log.exists() else []


@pytest.fixture
def machine(tmp_path: Path) -> FakeMachine:
    return FakeMachine(tmp_path)


def test_nothing_missing_changes_nothing(machine: FakeMachine) -> None:
    machine.install_java()
    machine.install_chromium()
    machine.install_gcloud(with_emulator=True)

    result = machine.run()

    assert result.returncode == 0, result.stderr
    assert "are present" in result.stdout
    assert machine.apt_calls == []


def test_installs_only_missing_packages_after_one_update(machine: FakeMachine) -> None:
    machine.install_gcloud(with_emulator=True)

    result = machine.run("test")

    assert result.returncode == 0, result.stdout + result.stderr
    assert machine.apt_calls == [
        "apt-get update -qq",
        "apt-get install -y --no-install-recommends default-jre-headless chromium",
    ]
    # A second run finds everything and touches nothing.
    assert machine.run("test").returncode == 0
    assert len(machine.apt_calls) == 2


def test_demo_does_not_need_chromium(machine: FakeMachine) -> None:
    machine.install_java()
    machine.install_gcloud(with_emulator=True)

    result = machine.run("demo")

    assert result.returncode == 0, result.stderr
    assert machine.apt_calls == []


def test_installs_the_emulator_from_apt(machine: FakeMachine) -> None:
    machine.install_java()
    machine.install_gcloud(with_emulator=False)

    result = machine.run("demo")

    assert result.returncode == 0, result.stdout + result.stderr
    assert machine.apt_calls[-1] == (
        "apt-get install -y --no-install-recommends google-cloud-cli-firestore-emulator"
    )


def test_explains_how_to_get_the_emulator_when_apt_cannot(tmp_path: Path) -> None:
    machine = FakeMachine(tmp_path, emulator_in_apt=False)

    result = machine.run("demo")

    assert result.returncode == 1
    # What apt can install is installed first, so the next run only lacks the emulator.
    assert (
        machine.apt_calls[-1] == "apt-get install -y --no-install-recommends default-jre-headless"
    )
    assert "Install the Google Cloud CLI and its Firestore emulator" in result.stderr
    assert "gcloud components install cloud-firestore-emulator" in result.stderr


def test_rejects_an_unknown_purpose(machine: FakeMachine) -> None:
    result = machine.run("everything")

    assert result.returncode == 2
    assert "usage:" in result.stderr
    assert machine.apt_calls == []
