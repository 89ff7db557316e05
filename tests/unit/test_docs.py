"""The front door stays short and every link in the README and docs/ leads somewhere."""

from __future__ import annotations

import re

import pytest

from prodcat.core.paths import REPO_ROOT

pytestmark = pytest.mark.unit

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def test_the_readme_is_read_in_five_minutes():
    assert len((REPO_ROOT / "README.md").read_text().splitlines()) <= 150


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if not re.match(r"[a-z]+:", t)]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert missing == [], f"{page.name} links to missing {missing}"


def test_every_docs_page_is_linked_from_the_readme_or_another_page():
    linked = {m for page in PAGES for m in re.findall(r"\(((?:docs/)?[a-z-]+\.md)\)", page.read_text())}
    linked = {m.removeprefix("docs/") for m in linked}
    assert {p.name for p in PAGES[1:]} - linked == set()
