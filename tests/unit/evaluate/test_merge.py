"""Merging evaluation folders (prodcat.evaluate.grid.current_pairs, behind ``prodcat evaluate
--merge``): a paired comparison is kept only while both rows it compares are the ones the merge
keeps, so a default rerun apart on some folds does not leave comparisons made against the old one."""

from __future__ import annotations

from prodcat.evaluate.grid import current_pairs


def _row(fold: str, model: str, seed: int = 1) -> dict:
    return {"fold": fold, "model": model, "seed": seed}


def _pair(fold: str, model: str, reference: str, difference: float, seed: int = 1) -> dict:
    return {"fold": fold, "model": model, "reference": reference, "seed": seed, "difference": difference}


# A run of every fold (default, frozen default, TF-IDF), then the default and TF-IDF rerun on one fold
FIRST = {"results": [_row(f, m) for f in ("lopo_a", "lopo_b") for m in ("default", "frozen", "tfidf")],
         "against_default": [_pair(f, m, "default", d) for f, d in (("lopo_a", 0.02), ("lopo_b", 0.03))
                             for m in ("frozen", "tfidf")]}
RERUN = {"results": [_row("lopo_a", "default"), _row("lopo_a", "tfidf")],
         "against_default": [_pair("lopo_a", "tfidf", "default", -0.01)]}


def test_a_comparison_against_a_replaced_row_is_left_out():
    kept, left = current_pairs([FIRST, RERUN], "against_default")
    assert sorted((c["fold"], c["model"], c["difference"]) for c in kept) == [
        ("lopo_a", "tfidf", -0.01), ("lopo_b", "frozen", 0.03), ("lopo_b", "tfidf", 0.03)]
    # the frozen default's comparison on lopo_a was made against the default the rerun replaced
    assert [(c["fold"], c["model"], c["difference"]) for c in left] == [("lopo_a", "frozen", 0.02)]


def test_merging_without_replaced_rows_keeps_every_comparison():
    other_seed = {"results": [_row("lopo_a", m, seed=2) for m in ("default", "frozen")],
                  "against_default": [_pair("lopo_a", "frozen", "default", 0.04, seed=2)]}
    kept, left = current_pairs([FIRST, other_seed], "against_default")
    assert len(kept) == 5 and left == []
    # the same folder twice: its comparisons are current in the later copy, nothing left out
    kept, left = current_pairs([FIRST, FIRST], "against_default")
    assert len(kept) == 4 and left == []
    # a reference with no row of its own (not scored as a row) does not count against a comparison
    unscored = {"results": [_row("lopo_c", "default")], "comparisons": [_pair("lopo_c", "default", "x", 0.1)]}
    assert current_pairs([FIRST, unscored], "comparisons") == ([unscored["comparisons"][0]], [])
