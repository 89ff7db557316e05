"""Every row against the default (prodcat.evaluate.report.ahead_of_default and its report
section; the main job's headline): a row is ahead only when every seed's paired interval is above 0."""

from __future__ import annotations

from prodcat.evaluate.report import against_default_markdown, ahead_of_default
from prodcat.pipeline.report import _evaluation_headline


def _c(fold: str, model: str, seed: int, low: float, high: float) -> dict:
    d = (low + high) / 2
    return {"fold": fold, "model": model, "reference": "default", "seed": seed, "difference": d,
            "low": low, "high": high, "real": low > 0 or high < 0, "verdict": ""}


COMPARISONS = [
    _c("lopo_a", "logreg-image", 0, 0.05, 0.15), _c("lopo_a", "logreg-image", 1, 0.02, 0.10),   # ahead on both
    _c("lopo_a", "tfidf", 0, 0.01, 0.03), _c("lopo_a", "tfidf", 1, -0.01, 0.02),               # one seed only
    _c("lopo_b", "logreg-image", 0, -0.20, -0.10), _c("lopo_b", "logreg-image", 1, -0.2, -0.1),  # behind
    _c("lopo_b", "tfidf", 0, -0.01, 0.01), _c("lopo_b", "tfidf", 1, -0.02, 0.01),              # level
]


def test_a_row_is_ahead_only_when_every_seed_says_so():
    ahead = ahead_of_default(COMPARISONS)
    assert [(fold, model, len(cs)) for fold, model, cs in ahead] == [("lopo_a", "logreg-image", 2)]
    assert ahead_of_default([c for c in COMPARISONS if c["model"] != "logreg-image"]) == []
    assert ahead_of_default([]) == []


def test_the_report_section_names_the_rows_ahead_or_says_none_is():
    md = "\n".join(against_default_markdown(COMPARISONS, [0, 1]))
    assert "## Every row against the default (paired bootstrap over groups)" in md
    assert "Ahead of the default by a real difference on every seed: logreg-image in lopo_a (+8.00 points)." in md
    assert "default beats" in md and "mixed (1 better, 0 worse of 2)" in md
    level = "\n".join(against_default_markdown([c for c in COMPARISONS if c["fold"] == "lopo_b"], [0, 1]))
    assert "No row is ahead of the default by a real difference on any fold." in level
    assert against_default_markdown([], [0]) == []


def test_the_main_job_headline_names_the_rows_ahead_of_the_default():
    rows = [{"fold": f, "model": m, "kind": "grid" if m == "default" else "reference", "seed": s, "hF": hf,
             "n": 100} for f in ("lopo_a", "lopo_b") for s in (0, 1)
            for m, hf in (("default", 0.8), ("tfidf", 0.79), ("logreg-image", 0.85 if f == "lopo_a" else 0.6))]
    lines = _evaluation_headline({"results": rows, "comparisons": [], "against_default": COMPARISONS,
                                  "config": {"reference": "tfidf"}})
    assert len(lines) == 2
    assert lines[0].endswith("; ahead of the default by a real difference: logreg-image (+8.00 points).")
    assert lines[1].endswith("; no row ahead of the default by a real difference.")
    # an evaluation written before the comparison existed says nothing about it
    old = _evaluation_headline({"results": rows, "comparisons": [], "config": {"reference": "tfidf"}})
    assert not any("ahead of the default" in line for line in old)
