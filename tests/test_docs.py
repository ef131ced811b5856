"""The README and docs/: short, linked, current, free of machine paths, and their commands run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"

FENCE = re.compile(
    r"^(?P<fence>```+|~~~+)(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=fence)[ \t]*$", re.M | re.S
)
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\((?P<target>[^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(?P<text>.+?)[ \t#]*$", re.M)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# Hosts of package registries, and folders that exist only on one machine.
FORBIDDEN = re.compile(
    r"pypi\.org|pythonhosted\.org|npmjs\.(?:org|com)|crates\.io|proxy\.golang\.org"
    r"|download\.pytorch\.org|pkg\.dev|docker\.io|ghcr\.io|quay\.io|anaconda\.(?:org|com)"
    r"|(?<![\w.$])/(?:work|home|Users|root|mnt)/",
    re.I,
)
OFFLINE_BLOCK_TIMEOUT_S = 45


def _prose(text: str) -> str:
    """Markdown without its fenced blocks, so code samples are not read as links or headings."""
    return FENCE.sub("", text)


def _blocks(text: str, info: str) -> list[str]:
    return [m["body"] for m in FENCE.finditer(text) if m["info"].strip() == info]


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: rendered text, lower case, punctuation gone, - for spaces."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    text = unicodedata.normalize("NFC", text).strip().lower()
    return "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found = set()
    for match in HEADING.finditer(_prose(page.read_text())):
        slug = github_anchor(match["text"])
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    return found


def test_github_anchor_matches_githubs_slugs() -> None:
    assert github_anchor("Inference app (`app/inference`)") == "inference-app-appinference"
    assert github_anchor("The `pulumi up` rehearsal") == "the-pulumi-up-rehearsal"
    assert (
        github_anchor("Tuning datasets: validate and convert before a tuning run")
        == "tuning-datasets-validate-and-convert-before-a-tuning-run"
    )
    assert github_anchor("Gemma 3 sizing on L4") == "gemma-3-sizing-on-l4"


def test_readme_is_a_page_a_newcomer_reads_in_five_minutes() -> None:
    lines = README.read_text().splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines; move reference to docs/"
    for command in ("make demo", "make test", "pulumi up", "```mermaid"):
        assert command in README.read_text(), command
    assert "docs/chat-screenshot.png" in README.read_text()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_at_a_file_and_heading(page: Path) -> None:
    broken = []
    for match in LINK.finditer(INLINE_CODE.sub("", _prose(page.read_text()))):
        target = match["target"]
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
            continue  # https:, mailto: and the like
        path_part, _, anchor = target.partition("#")
        linked = (page.parent / path_part).resolve() if path_part else page
        if not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: {linked.name} has no heading with that anchor")
    assert broken == [], f"{page.name}: " + "; ".join(broken)


def test_every_page_is_linked_from_the_readme() -> None:
    readme = README.read_text()
    unlinked = [p.name for p in DOCS.glob("*.md") if f"(docs/{p.name}" not in readme]
    assert unlinked == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_name_no_machine_paths_or_registry_hosts(page: Path) -> None:
    hits = [m.group(0) for m in FORBIDDEN.finditer(page.read_text())]
    assert hits == [], f"{page.name} names {hits}"


def test_the_rule_finds_what_it_forbids() -> None:
    assert FORBIDDEN.search("pip install from https://pypi.org/simple")
    assert FORBIDDEN.search("cd /work/main && make")
    assert not FORBIDDEN.search("make demo MODEL_URI=$HOME/models/gemma-3-1b-sql")


def test_configuration_page_is_what_make_docs_writes() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_docs.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    page = (DOCS / "configuration.md").read_text()
    for key in ("hfToken", "chatLoginPassword", "cloudRunServices", "gcp:project"):
        assert f"`{key}`" in page, key


def test_code_layout_names_the_whole_tree_and_only_what_exists() -> None:
    text = (DOCS / "development.md").read_text()
    section = text[text.index("## Code layout") :]
    layout = next(m["body"] for m in FENCE.finditer(section) if not m["info"].strip())
    named: list[str] = []
    folder = ""
    for line in layout.splitlines():
        if not line.strip() or line.startswith(" " * 6):
            continue  # a wrapped description
        name = line.split()[0]
        if not line.startswith(" "):
            folder = name if name.endswith("/") else ""
            named.append(name)
        elif folder:
            named.append(folder + name)
    missing = [n for n in named if not (ROOT / n).exists()]
    assert missing == [], f"the code layout names paths that do not exist: {missing}"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    top = {p.split("/")[0] + ("/" if "/" in p else "") for p in tracked}
    top_named = {n.split("/")[0] + ("/" if "/" in n else "") for n in named}
    # A lock sits beside the .in file the layout names.
    unnamed = sorted(t for t in top - top_named if t.removesuffix(".txt") + ".in" not in top_named)
    assert unnamed == [], f"the code layout leaves out {unnamed}"


def _offline_blocks() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for index, body in enumerate(_blocks(page.read_text(), "bash offline")):
            found.append((f"{page.relative_to(ROOT)}[{index}]", body))
    return found


OFFLINE_BLOCKS = _offline_blocks()


def test_the_docs_mark_offline_commands() -> None:
    pages = {name.split("[")[0] for name, _ in OFFLINE_BLOCKS}
    assert {"docs/tuning.md", "docs/inference-app.md", "docs/demo.md"} <= pages


@pytest.fixture
def fresh_clone(tmp_path: Path) -> Path:
    """A scratch folder that looks like the repository after `make test`: its files and .venv."""
    if not VENV_PYTHON.exists():
        pytest.skip(".venv is missing; `make test` creates it")
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    for entry in {p.split("/")[0] for p in tracked} | {".venv"}:
        (tmp_path / entry).symlink_to(ROOT / entry)
    return tmp_path


@pytest.mark.parametrize(("name", "body"), OFFLINE_BLOCKS, ids=[n for n, _ in OFFLINE_BLOCKS])
def test_offline_block_runs_as_written(name: str, body: str, fresh_clone: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", body],
        cwd=fresh_clone,
        env=env | {"PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=OFFLINE_BLOCK_TIMEOUT_S,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{body}\n{result.stdout}\n{result.stderr}"


# The project speaks for itself: no pointer into the team's tracker or internal briefs.
INTERNAL_REFERENCE = re.compile(r"\bissue \d+\b|\bBRIEF\b|\bSTYLE\.md\b")


def test_no_tracked_text_cites_internal_issues_or_briefs() -> None:
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    hits = []
    for name in tracked:
        path = ROOT / name
        if path.suffix not in {".py", ".md", ".yaml", ".toml", ".txt", ".in", ".sh", ""}:
            continue
        if name == "tests/test_docs.py" or not path.is_file():
            continue
        text = path.read_text(errors="replace")
        hits += [f"{name}: {m.group(0)}" for m in INTERNAL_REFERENCE.finditer(text)]
    assert hits == []
