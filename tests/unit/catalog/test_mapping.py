"""Mapping coverage: every source category in the real catalogues is mapped or excluded with a
reason, and every mapped id is in the Google taxonomy with the path the table says."""

from __future__ import annotations

from collections import Counter

import pytest

from prodcat.catalog.adapter import Reject, builtin_platforms, load_adapter, read_products
from prodcat.catalog.mapping import CategoryMapping
from prodcat.core.taxonomy import load_google_taxonomy

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def google(shared):
    return load_google_taxonomy()


@pytest.fixture(scope="module")
def source_categories(shared):
    out = {}
    for platform in builtin_platforms():
        out[platform] = Counter(r["source_category"] for r in read_products(load_adapter(platform))
                                if not isinstance(r, Reject))
    return out


@pytest.mark.parametrize("platform", ["myntra", "hm", "flipkart"])
def test_every_source_category_is_mapped_or_excluded(platform, source_categories):
    mapping = CategoryMapping.for_platform(platform)
    missing = sorted(c for c in source_categories[platform] if mapping.resolve(c).unmapped)
    assert not missing, f"{platform}: neither mapped nor excluded: {missing[:20]}"


@pytest.mark.parametrize("platform", ["myntra", "hm", "flipkart"])
def test_mapped_ids_exist_with_their_written_paths(platform, google):
    mapping = CategoryMapping.for_platform(platform)
    assert mapping.mappings, "empty table"
    assert mapping.problems(google) == []
    assert all(mapping.paths.values()), "every entry names its Google path for readers"


def test_myntra_free_items_are_excluded_with_a_reason():
    resolution = CategoryMapping.for_platform("myntra").resolve("Free Items > Free Gifts > Free Gifts")
    assert resolution.excluded and resolution.category_id is None


def test_longest_prefix_wins(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text('platform: x\nmappings:\n  "A": {category_id: 1}\n  "A > B": {category_id: 2}\n'
                    'excluded:\n  "A > C": {reason: "mixed bag"}\n')
    m = CategoryMapping.load(path)
    assert m.resolve("A > B > Z").category_id == 2
    assert m.resolve("A > Q").category_id == 1
    assert m.resolve("A > C > D").excluded == "mixed bag"
    assert m.resolve("B").unmapped


def test_exclusion_without_reason_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text('platform: x\nexcluded:\n  "A": {}\n')
    with pytest.raises(ValueError, match="reason"):
        CategoryMapping.load(path)
