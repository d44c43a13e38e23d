"""Every relative link in the repository's Markdown leads somewhere inside it.

A link to a file outside the checkout (the design notes once lived in a
sibling directory) is dead in every clone, and a renamed heading silently
breaks the anchors that point at it. So each relative link must name a file
in the repository, and each `#anchor` a heading of its target, slugged as
GitHub slugs it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.M)


def markdown_files() -> list[Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*.md"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    return sorted(REPO / name for name in listed if (REPO / name).is_file())


def slug(heading: str) -> str:
    text = re.sub(r"`|\*\*|__", "", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    body = FENCE.sub("", path.read_text())
    return {slug(h) for h in HEADING.findall(body)}


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_there_is_markdown_to_check() -> None:
    names = {p.relative_to(REPO).as_posix() for p in markdown_files()}
    assert {"README.md", "bench/README.md", "docs/operations.md"} <= names


def test_slug_matches_github() -> None:
    assert slug("The proxy: `edge-proxy serve`") == "the-proxy-edge-proxy-serve"
    assert (
        slug("Why not YurtHub, SuperEdge or KubeEdge?") == "why-not-yurthub-superedge-or-kubeedge"
    )


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_relative_links_resolve_inside_the_repository(path: Path) -> None:
    dead = []
    for target in links(path):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.is_relative_to(REPO):
            dead.append(f"{target}: outside the repository")
        elif not dest.exists():
            dead.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            dead.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO)}")
    assert not dead, f"{path.relative_to(REPO)}: " + "; ".join(dead)
