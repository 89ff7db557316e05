"""benchmarks/paired_rows.py: every row of an evaluation against the default, from the
predictions Parquet files alone (a model right on every product beats one wrong on half)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures.predictions import benchmark, prediction_rows
from tests.fixtures.synthetic import toy_taxonomy


def _module():
    return benchmark("paired_rows")


def _rows(taxonomy, model: str, predicted: list[int], true: list[int]) -> pa.Table:
    return prediction_rows(taxonomy, model, predicted, true)


def _labels(seed: int):
    """The toy taxonomy, 120 true leaves and a prediction wrong on every other product."""
    taxonomy = toy_taxonomy()
    leaves = [int(taxonomy.ids[n]) for n in taxonomy.leaves]
    true = [int(c) for c in np.random.default_rng(seed).choice(leaves, 120)]
    wrong = [c if i % 2 else next(x for x in leaves if x != c) for i, c in enumerate(true)]
    return taxonomy, true, wrong


def test_a_row_right_everywhere_beats_the_default_wrong_on_half(tmp_path):
    taxonomy, true, wrong = _labels(seed=0)
    (tmp_path / "eval" / "predictions").mkdir(parents=True)
    pq.write_table(pa.concat_tables([_rows(taxonomy, "default", wrong, true),
                                     _rows(taxonomy, "oracle", true, true)]),
                   tmp_path / "eval" / "predictions" / "lopo_beta-seed0.parquet")
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    out = tmp_path / "paired.json"
    assert _module().main(["--evaluation", str(tmp_path / "eval"), "--taxonomy", str(tmp_path / "taxonomy.json"),
                           "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    (row,) = result["rows"]
    assert row["model"] == "oracle" and row["hF"] == 1.0
    assert row["real"] and row["low"] > 0 and row["verdict"] == "oracle beats"
    (mean,) = result["fold_means"]                     # no error against the default's: ratio 0
    assert mean["mean_reference_hF"] == row["reference_hF"] < 1 and mean["error_ratio"] == 0.0
    flipped = _module().fold_means([{**row, "hF": row["reference_hF"], "reference_hF": 1.0}])
    assert flipped[0]["error_ratio"] is None           # a reference without errors: no ratio


def test_two_evaluations_are_read_as_one_and_shared_rows_must_agree(tmp_path):
    taxonomy, true, wrong = _labels(seed=1)
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    for name, table in {"first": pa.concat_tables([_rows(taxonomy, "default", wrong, true),
                                                   _rows(taxonomy, "oracle", true, true)]),
                        "second": pa.concat_tables([_rows(taxonomy, "default", wrong, true),
                                                    _rows(taxonomy, "new", true, true)]),
                        "differs": _rows(taxonomy, "default", true, true)}.items():
        (tmp_path / name / "predictions").mkdir(parents=True)
        pq.write_table(table, tmp_path / name / "predictions" / "lopo_beta-seed0.parquet")
    out = tmp_path / "paired.json"
    args = ["--taxonomy", str(tmp_path / "taxonomy.json"), "--out", str(out), "--evaluation"]
    assert _module().main(args + [str(tmp_path / "first"), str(tmp_path / "second")]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert sorted(r["model"] for r in rows) == ["new", "oracle"]       # default once, as the reference
    assert all(r["verdict"] == f"{r['model']} beats" for r in rows)
    with pytest.raises(SystemExit, match="predicts differently"):
        _module().main(args + [str(tmp_path / "first"), str(tmp_path / "differs")])
    with pytest.raises(SystemExit, match="no fold has a model named 'nobody'"):
        _module().main(args + [str(tmp_path / "first"), str(tmp_path / "second"), "--against", "nobody"])


def test_two_runs_of_the_same_models_each_against_its_twin(tmp_path):
    """--suffix tells two runs' models apart; --against '{model}@b' pairs each with its twin."""
    taxonomy, true, wrong = _labels(seed=2)
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    runs = {"a": pa.concat_tables([_rows(taxonomy, "default", true, true), _rows(taxonomy, "tfidf", wrong, true)]),
            "b": pa.concat_tables([_rows(taxonomy, "default", wrong, true), _rows(taxonomy, "tfidf", wrong, true)])}
    for name, table in runs.items():
        (tmp_path / name / "predictions").mkdir(parents=True)
        pq.write_table(table, tmp_path / name / "predictions" / "lopo_beta-seed0.parquet")
    out = tmp_path / "paired.json"
    assert _module().main(["--evaluation", str(tmp_path / "a"), str(tmp_path / "b"), "--suffix", "", "@b",
                           "--against", "{model}@b", "--taxonomy", str(tmp_path / "taxonomy.json"),
                           "--out", str(out)]) == 0
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"default", "tfidf"}                    # the @b rows are only references
    assert rows["default"]["against"] == "default@b" and rows["default"]["verdict"] == "default beats"
    assert rows["tfidf"]["difference"] == 0 and not rows["tfidf"]["real"]
    sums = json.loads(out.read_text())["absolute_sums"]                 # |difference| per model
    assert sums == {"default": {"sum": abs(rows["default"]["difference"]), "folds": 1},
                    "tfidf": {"sum": 0.0, "folds": 1}} and rows["default"]["difference"] > 0
    assert _module().absolute_sums(list(rows.values()), min_products=121) == {}   # 120 products a fold
    with pytest.raises(SystemExit, match="one entry per --evaluation folder"):
        _module().main(["--evaluation", str(tmp_path / "a"), str(tmp_path / "b"), "--suffix", "@x",
                        "--taxonomy", str(tmp_path / "taxonomy.json")])
