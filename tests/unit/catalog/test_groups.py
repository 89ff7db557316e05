"""Near-duplicate groups (transitive over keys, never across platforms), cross-split pair counts,
and bootstrap intervals over groups (scipy.stats.bootstrap underneath)."""

from __future__ import annotations

import numpy as np
import pytest

from prodcat.catalog.groups import assign_groups, cross_split_pairs, normalized_text
from prodcat.core.uncertainty import group_counts, hf_interval, paired_difference, verdict

pytestmark = pytest.mark.unit


def _row(pid, platform="p", title="t", description=None, variant=None, image=None):
    return {"product_id": pid, "platform": platform, "title": title, "description": description,
            "variant_key": variant, "image_hash": image}


def test_normalized_text_folds_case_punctuation_and_space():
    assert normalized_text("Red  Shirt!", "<b>Cotton</b>") == normalized_text("red shirt", "b cotton b")
    assert normalized_text("a", None) != normalized_text("a", "b")


def test_groups_join_transitively_and_never_across_platforms():
    rows = [_row("p:1", title="alpha", variant="v1"),
            _row("p:2", title="beta", variant="v1", image="h1"),      # variant with 1
            _row("p:3", title="gamma", image="h1"),                   # image with 2 → with 1
            _row("p:4", title="alpha"),                               # text with 1
            _row("q:5", platform="q", title="alpha", image="h1"),     # other platform: alone
            _row("p:6", title="delta")]
    groups = assign_groups(rows)
    assert groups[:4] == ["p:1"] * 4 and groups[4] == "q:5" and groups[5] == "p:6"
    assert cross_split_pairs(rows, ["train", "train", "test", "val", "test", "test"]) == {
        "p": {"text": 1, "variant": 0, "image": 1}, "q": {"text": 0, "variant": 0, "image": 0}}
    assert all(v == 0 for c in cross_split_pairs(rows, ["train"] * 6).values() for v in c.values())


def test_interval_brackets_the_estimate_and_widens_when_duplicates_are_grouped():
    """20 groups of 30 copies each (a copy is right exactly when its group is): resampling
    products as if independent understates the uncertainty; resampling groups does not."""
    rng = np.random.default_rng(0)
    per_group = rng.integers(0, 4, 20)
    counts = np.stack([np.repeat(per_group, 30), np.full(600, 3), np.full(600, 3)], axis=1)
    many, few = np.arange(600), np.arange(600) // 30          # as if independent vs by group
    a, b = hf_interval(counts, many), hf_interval(counts, few)
    assert a.low <= a.estimate <= a.high and b.low <= b.estimate <= b.high
    assert a.estimate == pytest.approx(b.estimate)
    assert (b.high - b.low) > (a.high - a.low)
    assert group_counts(counts, few).shape == (20, 3)


def test_paired_difference_decides_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(1)
    base = np.stack([rng.integers(0, 4, 400), np.full(400, 3), np.full(400, 3)], axis=1)
    better = base.copy()
    better[:, 0] = np.minimum(3, base[:, 0] + 1)
    groups = np.arange(400)
    d = paired_difference(better, base, groups)
    assert d.low > 0 and verdict(d, "A", "B").startswith("A beats B")
    same = paired_difference(base, base, groups)
    assert same.estimate == 0 and verdict(same, "A", "B").startswith("no real difference")
    with pytest.raises(ValueError, match="same products"):
        paired_difference(base, base[:10], groups)


def test_split_fractions_are_refused_before_the_build_reads_anything():
    from pydantic import ValidationError

    from prodcat.catalog.build import BuildConfig

    with pytest.raises(ValidationError, match="summing to 1"):
        BuildConfig(split_fractions=(0.5, 0.1, 0.1, 0.1))
    with pytest.raises(ValidationError, match=">= 0"):
        BuildConfig(split_fractions=(1.1, -0.1, 0.0, 0.0))
    assert sum(BuildConfig().split_fractions) == pytest.approx(1.0)


def test_image_hashes_in_worker_processes_equal_the_plain_loop_in_order(tmp_path):
    """The process pool returns each image's own hash in input order, None where there is no
    image or the file is not an image, exactly as hashing one by one does."""
    from PIL import Image

    from prodcat.catalog.groups import image_hash, image_hashes

    rng = np.random.default_rng(0)
    uris: list[str | None] = []
    for i in range(12):
        path = tmp_path / f"{i}.png"
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(path)
        uris.append(str(path))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    uris[3:3] = [None, str(tmp_path / "broken.jpg"), str(tmp_path / "missing.png")]
    plain = [image_hash(u) for u in uris]
    assert plain[3:6] == [None, None, None] and len(set(plain) - {None}) == 12
    assert image_hashes(uris, workers=2, min_parallel=1) == plain
    assert image_hashes(uris[::-1], workers=2, min_parallel=1) == plain[::-1]
