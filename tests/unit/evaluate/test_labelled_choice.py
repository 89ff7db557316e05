"""benchmarks/labelled_choice.py: a choice among evaluated rows made on k labelled products of the
held-out platform and scored on its other products (a row right everywhere is picked over a
default wrong on half; a row no better than the default never is)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.fixtures.predictions import benchmark, prediction_rows
from tests.fixtures.synthetic import toy_taxonomy


def _module():
    return benchmark("labelled_choice")


def _rows(taxonomy, model: str, predicted: list[int], true: list[int]) -> pa.Table:
    return prediction_rows(taxonomy, model, predicted, true, group_size=2)


def _write(folder: Path, tables: list[pa.Table]) -> str:
    (folder / "predictions").mkdir(parents=True)
    pq.write_table(pa.concat_tables(tables), folder / "predictions" / "lopo_beta-seed0.parquet")
    return str(folder)


def test_a_row_right_everywhere_is_picked_and_a_twin_of_the_default_never_is(tmp_path):
    taxonomy = toy_taxonomy()
    leaves = [int(taxonomy.ids[n]) for n in taxonomy.leaves]
    true = [int(c) for c in np.random.default_rng(0).choice(leaves, 200)]
    wrong = [c if i % 2 else next(x for x in leaves if x != c) for i, c in enumerate(true)]
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    first = _write(tmp_path / "first", [_rows(taxonomy, "default", wrong, true),
                                        _rows(taxonomy, "twin", wrong, true)])
    second = _write(tmp_path / "second", [_rows(taxonomy, "default", true, true),   # another default
                                          _rows(taxonomy, "tfidf", wrong, true),
                                          _rows(taxonomy, "oracle", true, true)])
    out = tmp_path / "choice.json"
    args = ["--taxonomy", str(tmp_path / "taxonomy.json"), "--k", "10", "60", "--draws", "5",
            "--resamples", "200", "--out", str(out), "--evaluation", first]
    with pytest.raises(SystemExit, match="predicts differently"):
        _module().main(args + [second])
    assert _module().main(args + [second + ":tfidf,oracle"]) == 0
    small, large = json.loads(out.read_text())["results"]
    assert (small["k"], large["k"]) == (10, 60) and large["products"] == 200
    assert large["picked"] == {"oracle": 5}                       # a real difference on 60 products
    assert large["pick_minus_default"]["p05"] > 0 and large["pick_minus_tfidf"]["mean"] > 0
    assert "twin" not in small["picked"] and "twin" not in large["picked"]
    assert sum(small["picked"].values()) == 5


def test_drawn_where_the_candidates_disagree_a_few_labels_find_what_many_random_ones_miss(tmp_path):
    """The default and a candidate differ on 20 of 400 products (the candidate right there, the
    default wrong): 14 labels (7 groups) drawn where they disagree pick the candidate every time;
    14 drawn at random rarely hold the 6 disagreeing groups the rule asks for. TF-IDF is scored
    but, with --candidates, never picked."""
    taxonomy = toy_taxonomy()
    leaves = [int(taxonomy.ids[n]) for n in taxonomy.leaves]
    true = [int(c) for c in np.random.default_rng(1).choice(leaves, 400)]
    default = [c if i >= 20 else next(x for x in leaves if x != c) for i, c in enumerate(true)]
    (tmp_path / "taxonomy.json").write_text(taxonomy.to_json())
    folder = _write(tmp_path / "eval", [_rows(taxonomy, "default", default, true),
                                        _rows(taxonomy, "candidate", true, true),
                                        _rows(taxonomy, "tfidf", true, true)])
    picked = {}
    for sampling in ("random", "disagreement"):
        out = tmp_path / f"{sampling}.json"
        assert _module().main(["--taxonomy", str(tmp_path / "taxonomy.json"), "--k", "14", "--draws", "20",
                               "--resamples", "200", "--candidates", "candidate", "--sampling", sampling,
                               "--out", str(out), "--evaluation", folder]) == 0
        data = json.loads(out.read_text())
        (row,) = data["results"]
        assert data["candidates"] == ["default", "candidate"] and "tfidf" not in row["picked"]
        picked[sampling] = row
    assert picked["disagreement"]["disagreeing"] == 20                 # 10 groups of 2
    assert picked["disagreement"]["picked"] == {"candidate": 20}
    whole = picked["disagreement"]["pick_minus_default_whole_fold"]
    full = picked["disagreement"]["hF_whole_fold"]
    assert whole["p05"] > 0 and whole["mean"] == pytest.approx(100 * (full["candidate"] - full["default"]), abs=0.02)
    assert picked["random"]["picked"].get("candidate", 0) <= 5
    assert picked["random"]["pick_minus_default_whole_fold"]["mean"] < whole["mean"]
