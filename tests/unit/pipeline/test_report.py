"""The main job's report is built from the stages' output files: headline figures, nested stage
reports with re-rooted links, the bulk-scoring table, and plain notes for missing stages."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from prodcat.pipeline.report import write_report


def _write(path: Path, content) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else json.dumps(content))


def _result(fold: str, model: str, kind: str, hf: float, n: int = 10) -> dict:
    return {"fold": fold, "model": model, "kind": kind, "hF": hf, "n": float(n),
            "hF_ci": [hf - 0.02, hf + 0.02]}


def _run_folder(out: Path) -> None:
    _write(out / "catalog" / "build_summary.json", {
        "platforms": {"a": {"read": 7, "accepted": 6}, "b": {"read": 5, "accepted": 4}}, "products": 10, "rejects": 2,
        "seconds": 1.5, "taxonomy": {"nodes": 9, "nodes_per_level": [2, 3, 4]}})
    _write(out / "catalog" / "build_summary.md", "# Catalogue build\n\n## Unified taxonomy\n")
    _write(out / "eval" / "results.json", {"results": [
        _result("in_platform", "default", "model", 0.91),
        _result("in_platform", "tfidf", "reference", 0.95),
        _result("lopo_a", "default", "model", 0.72, n=4),
        _result("lopo_a", "late/hard/image", "model", 0.75, n=4),
        _result("lopo_a", "tfidf", "reference", 0.61, n=4)], "comparisons": [
        {"fold": "in_platform", "model": "default", "difference": -0.04, "low": -0.06, "high": -0.02,
         "real": True},
        {"fold": "lopo_a", "model": "default", "difference": 0.11, "low": 0.05, "high": 0.17,
         "real": True}], "config": {"reference": "tfidf"}})
    _write(out / "eval" / "report.md", "# Evaluation\n\n![hf](hf_by_model.png)\n")
    _write(out / "cascade" / "cascade.json", {"threshold": 0.8, "validation": {
        "test": {"hF": 0.9, "escalation_rate": 0.25},
        "endpoints": {"test": {"text_only_hF": 0.88, "multimodal_only_hF": 0.89}}}})
    _write(out / "predictions" / "_summary.json", {
        "input": "in.parquet", "rows": 3, "errors_this_run": 0, "escalation_rate": 1 / 3,
        "threshold": 0.8, "answered_by": {"text": 2, "multimodal": 1}, "wall_s": 2.0,
        "products_per_s": 1.5, "mode": "cascade"})
    _write(out / "predictions" / "_evaluation.json", {
        "split": "test", "products": 2, "hF": 0.75, "hP": 0.7, "hR": 0.8, "text_products": 1,
        "text_hF": 1.0, "multimodal_products": 1, "multimodal_hF": 0.5})
    _write(out / "finetune" / "finetune_result.json", {"feature": "ft_text", "train_products": 9,
                                                        "history": [{}], "products_per_s": 3.0, "seconds": 3.0})
    for q, n in (("a", 4), ("b", 6)):
        _write(out / f"finetune-without-{q}" / "finetune_result.json", {"train_products": n, "seconds": 2.0 * n})
    # rows and errors are counted from the prediction files, not taken from the run summary
    pq.write_table(pa.table({"product_id": ["x", "y"], "error": [None, "bad_image: truncated"]}),
                   out / "predictions" / "part-1.parquet")
    pq.write_table(pa.table({"product_id": ["z"], "error": pa.array([None], pa.string())}),
                   out / "predictions" / "part-2.parquet")
    _write(out / "serve_demo.json", {"url": "http://127.0.0.1:1", "batch_status": 200, "batch_ms": 9.0,
                                     "rows": [{"title": "t", "has_image": True, "true_path": "A > B",
                                               "predicted_path": "A > B", "stage": "text",
                                               "confidence": 0.9, "single_request_ms": 5.0},
                                              {"title": "u", "has_image": False, "true_path": "A > C",
                                               "predicted_path": "A > B", "stage": "multimodal",
                                               "confidence": None, "single_request_ms": 7.0}]})


def test_report_headline_and_sections_come_from_stage_outputs(tmp_path):
    _run_folder(tmp_path)
    md = write_report(tmp_path, {"catalog": 60.0, "embed": 30.0}, {"full": True}).read_text()
    assert "12 records read from 2 platforms → 10 accepted, 2 rejected" in md
    assert "1.5 min" in md
    # the default model against the baseline, with intervals and the paired verdict
    assert ("**hF, in_platform** (test, n = 10): default 0.910 [0.890, 0.930]; tfidf (tuned lexical "
            "baseline) 0.950 [0.930, 0.970] → tfidf beats (-4.00 points [-6.00, -2.00]); error ratio 1.80."
            in md)
    assert ("**hF, lopo_a** (test, n = 4): default 0.720 [0.700, 0.740]; tfidf (tuned lexical baseline) "
            "0.610 [0.590, 0.630] → default beats (+11.00 points [+5.00, +17.00]); error ratio 0.72; "
            "best late/hard/image 0.750" in md)
    assert "| fine-tuning (ft_text) | 9 products × 1 epoch(s), 3.0 products/s, 3 s |" in md
    assert "without a: 4 products, 8 s; without b: 6 products, 12 s |" in md
    assert "hF 90.00 at 25.0 % escalation (tau 0.800" in md
    assert "3 rows in, 3 rows out, 1 with an error" in md
    assert "| rows in / rows out | 3 / 3 |" in md
    assert "1 of 2 real test products categorized exactly right" in md
    # stage reports nest under the section headings, and their links point into their folders
    assert "\n### Evaluation\n" in md and "\n#### Unified taxonomy\n" in md
    assert "![hf](eval/hf_by_model.png)" in md


def test_report_says_plainly_which_stages_did_not_run(tmp_path):
    _write(tmp_path / "catalog" / "build_summary.json", {
        "platforms": {"a": {"read": 9, "accepted": 8, "sampled": 3}}, "products": 3, "rejects": 0, "seconds": 0.1,
        "taxonomy": {"nodes": 2, "nodes_per_level": [2]}})
    md = write_report(tmp_path, {"catalog": 1.0}, {"full": False, "sample_per_category": 5}).read_text()
    assert "at most 5 products per (platform, Google category)" in md
    assert "9 records read from 1 platform → 8 accepted, 0 rejected" in md
    assert "the stratified sample keeps 3 of the accepted" in md
    assert "eval/report.md is missing" in md
    assert "_(bulk scoring did not run)_" in md
    assert "_(the service stage did not run)_" in md


def test_report_says_the_multimodal_stage_answered_nothing_when_nothing_was_escalated(tmp_path):
    """At full size the cascade's tau is 0: _evaluation.json then has no multimodal keys (it
    stopped the report stage with a KeyError before stop 36)."""
    _run_folder(tmp_path)
    _write(tmp_path / "predictions" / "_evaluation.json", {
        "split": "test", "products": 3, "hF": 0.9, "hP": 0.9, "hR": 0.9, "text_products": 3,
        "text_hF": 0.9})
    md = write_report(tmp_path, {"score": 1.0}, {"full": True}).read_text()
    assert ("the text stage answered 3 of them at hF 0.9000, the multimodal stage none (nothing was "
            "escalated)." in md)
    _run_folder(tmp_path)          # both stages answered: both counts and hF
    md = write_report(tmp_path, {"score": 1.0}, {"full": True}).read_text()
    assert ("the text stage answered 1 of them at hF 1.0000, the multimodal stage the 1 uncertain "
            "ones at hF 0.5000." in md)


def test_report_says_what_each_cascade_stage_chose(tmp_path):
    """A decision-level stage's line names its held-out hF and what its held-out products chose
    (weights, decoding, label-prior correction); a result written before stop 37 has no choice."""
    _run_folder(tmp_path)
    _write(tmp_path / "train" / "text" / "train_result.json", {"wall_seconds": 3.0, "metrics": {
        "heldout_hF": 0.8781, "train_rows": 20, "components": "text,lexical",
        "choice": "equal / greedy / prior once"}})
    _write(tmp_path / "train" / "multimodal" / "train_result.json", {"wall_seconds": 2.0, "metrics": {
        "heldout_hF": 0.88, "train_rows": 20, "components": "text,image"}})
    md = write_report(tmp_path, {"train": 5.0}, {"full": False}).read_text()
    assert ("| train (text) | decision-level fusion of text, lexical fitted in 3 s on 20 rows; held-out "
            "hF 0.8781; chose equal / greedy / prior once (weights / decoding / label prior) |" in md)
    assert "| train (multimodal) | decision-level fusion of text, image fitted in 2 s on 20 rows; held-out hF 0.8800 |" in md
