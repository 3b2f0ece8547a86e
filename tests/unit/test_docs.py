"""The README stays short and every relative link in the docs leads somewhere."""

from __future__ import annotations

import re

from support.repo import REPO

from addon.config import profile_docs

LINK = re.compile(r"\]\(([^)\s]+)\)")
PAGES = [REPO / "README.md", REPO / "bench" / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def test_the_readme_reads_in_five_minutes() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


def test_every_relative_link_resolves() -> None:
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            path = target.split("#", 1)[0]
            if not path or "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert len(PAGES) >= 8 and broken == []


def test_the_profiles_page_is_what_the_profiles_say() -> None:
    page = (REPO / "docs" / "profiles.md").read_text()
    assert page == profile_docs.render(), (
        "docs/profiles.md is stale: "
        ".venv/bin/python -m addon.config.profile_docs > docs/profiles.md"
    )
