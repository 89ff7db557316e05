"""The report's largest confusions (prodcat.evaluate.report.top_confusions) and
benchmarks/confusions.py, which recomputes them from the predictions Parquet files."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from prodcat.evaluate.report import top_confusions
from tests.fixtures.synthetic import toy_taxonomy

ROOT = Path(__file__).resolve().parents[3]


def _leaves(taxonomy) -> list[int]:
    return [int(taxonomy.ids[n]) for n in taxonomy.leaves]


def test_top_confusions_counts_wrong_outputs_most_frequent_first():
    taxonomy = toy_taxonomy()
    a, b, c = _leaves(taxonomy)[:3]
    true = [a] * 6 + [b] * 4 + [c] * 2
    pred = [b, b, b, c, a, a] + [a, b, b, b] + [c, 0]
    out = top_confusions(taxonomy, true, pred)
    assert [(r["products"], r["share_of_errors"]) for r in out] == [(3, 0.5), (1, 1 / 6), (1, 1 / 6), (1, 1 / 6)]
    leaf = taxonomy.path_of_id(a).split(" > ")[-1]
    assert out[0]["true"] in (leaf, taxonomy.path_of_id(a))
    assert out[0]["predicted"].endswith(taxonomy.path_of_id(b).split(" > ")[-1])
    assert {r["predicted"] for r in out if r["true"].endswith(taxonomy.path_of_id(c).split(" > ")[-1])} == {"(no output)"}
    assert len(top_confusions(taxonomy, true, pred, limit=2)) == 2
    assert top_confusions(taxonomy, true, true) == []
    with pytest.raises(ValueError, match="shape"):
        top_confusions(taxonomy, true, pred[:-1])


def test_script_writes_the_confusions_of_each_model_from_predictions(tmp_path):
    spec = importlib.util.spec_from_file_location("confusions", ROOT / "benchmarks" / "confusions.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    taxonomy = toy_taxonomy()
    a, b = _leaves(taxonomy)[:2]
    n = 10
    table = pa.table({"fold": ["lopo_beta"] * 2 * n, "seed": np.zeros(2 * n, np.int64),
                      "model": ["default"] * n + ["tfidf"] * n,
                      "true_category_id": [a] * 2 * n,
                      "category_id": [b] * 3 + [a] * 7 + [b] * 10})
    (tmp_path / "eval" / "predictions").mkdir(parents=True)
    pq.write_table(table, tmp_path / "eval" / "predictions" / "lopo_beta-seed0.parquet")
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    out = tmp_path / "confusions.csv"
    assert module.main(["--evaluation", str(tmp_path / "eval"), "--taxonomy", str(tmp_path / "taxonomy.json"),
                        "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["model"], r["products"], r["share_of_errors"]) for r in rows] == [("default", "3", "1.0"),
                                                                                ("tfidf", "10", "1.0")]
    with pytest.raises(SystemExit, match="no predictions"):
        module.main(["--evaluation", str(tmp_path / "missing"), "--taxonomy", str(tmp_path / "taxonomy.json")])
