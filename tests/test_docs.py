"""The README and docs/ cite only files that exist, the README stays a short guide, and every guide is linked.

Pure file reads: a moved script, a results table sent to the archive or a renamed module fails here, not in a
newcomer's hands.
"""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
MAX_README_LINES = 210

# Backticked text that names a file of this repository: under one of its top-level folders, or a bare results table.
TOP_LEVEL = ("copick_soup/", "benchmarks/", "configs/", "docs/", "tests/", "ray_jobs/")
RESULTS = (ROOT / "benchmarks" / "results", ROOT / "benchmarks" / "results" / "archive")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
PATHLIKE = re.compile(r"[\w./*-]+")


def prose(path: Path) -> str:
    """The file without its fenced code blocks (commands and outputs there name files that do not exist yet)."""
    return FENCE.sub("", path.read_text())


def cited_paths(path: Path) -> list[str]:
    """Repository paths a guide cites in backticks (`copick_soup/pick.py`, `accuracy.md`) or links."""
    text = prose(path)
    cited = [c for c in CODE.findall(text) if PATHLIKE.fullmatch(c)
             and (c.startswith(TOP_LEVEL) or ("/" not in c and c.endswith(".md")))]
    links = [link.split("#")[0] for link in LINK.findall(text) if not re.match(r"[a-z]+:", link)]
    return cited + [link for link in links if link]


def exists(cited: str, where: Path) -> bool:
    """A cited path resolves from the repository root or the citing file's folder; a bare `X.md` also in the results
    folders; a glob must match something."""
    bases = [ROOT, where.parent]
    if "/" not in cited:
        bases += list(RESULTS)
    return any(list(base.glob(cited)) if "*" in cited else (base / cited).exists() for base in bases)


@pytest.mark.parametrize("guide", [README, *DOCS], ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_cited_path_exists(guide):
    missing = sorted({c for c in cited_paths(guide) if not exists(c, guide)})
    assert not missing, f"{guide.name} cites paths that do not exist: {missing}"


def test_the_readme_is_a_short_guide():
    lines = README.read_text().splitlines()
    assert len(lines) <= MAX_README_LINES, f"README.md has {len(lines)} lines; depth goes to docs/"


def test_every_guide_is_linked_from_the_readme():
    assert DOCS, "docs/ holds no guide"
    linked = set(LINK.findall(README.read_text()))
    unlinked = [d.name for d in DOCS if f"docs/{d.name}" not in linked]
    assert not unlinked, f"docs/ files the README does not link: {unlinked}"


def test_the_checks_catch_a_missing_path(tmp_path):
    """The extraction sees backticked paths, bare results names and links, and skips commands and code blocks."""
    guide = tmp_path / "guide.md"
    guide.write_text("See `copick_soup/nowhere.py`, `no-such-table.md`, [x](docs/none.md) and `copick-soup pick`.\n"
                     "```\ncopick_soup/in_a_code_block.py\n```\n")
    assert sorted(cited_paths(guide)) == ["copick_soup/nowhere.py", "docs/none.md", "no-such-table.md"]
    assert not any(exists(c, guide) for c in cited_paths(guide))
    assert exists("accuracy.md", guide) and exists("tiling-diagnosis.md", guide)  # in results/, in results/archive/
