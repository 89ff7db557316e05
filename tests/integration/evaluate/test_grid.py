"""``prodcat evaluate`` end to end on a synthetic catalogue + store (tiny dims, Ray Train local
mode): in-platform and leave-one-platform-out folds with a category only one platform has, a small
grid plus the TF-IDF baseline on the same rows, and the JSON / Markdown / PNG outputs."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from prodcat.cli import main
from prodcat.core import storage
from prodcat.core.config import load_config
from prodcat.core.paths import REPO_ROOT
from prodcat.evaluate.folds import grid_cells
from prodcat.evaluate.grid import EvaluateConfig, evaluate
from tests.fixtures.store import write_synthetic_store
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration

MUGS = 8  # toy category id that only platform "gamma" sells


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("evalsynth")
    products, taxonomy = synthetic_products(240, platforms=("alpha", "beta", "gamma"))
    only_gamma = pc.or_(pc.not_equal(products["category_id"], MUGS), pc.equal(products["platform"], "gamma"))
    products = products.filter(only_gamma)
    storage.write_table(products, str(root / "cat" / "products.parquet"))
    storage.write_text(str(root / "cat" / "taxonomy.json"), taxonomy.to_json())
    write_synthetic_store(products, taxonomy, str(root / "emb"), dims={"text": 16, "image": 8})
    scored = products.filter(pc.not_equal(products["split"], "val"))   # LOPO never scores val
    gamma = scored.filter(pc.equal(scored["platform"], "gamma"))["category_id"].to_numpy()
    return root, products, float((gamma != MUGS).mean())


def _overrides(root, output):
    return [f"train.data.products={root}/cat/products.parquet", f"train.data.embeddings={root}/emb",
            f"output={output}", "train.optim.epochs=2", "train.optim.batch_size=32",
            "train.model.preset=null", "train.model.hidden_dim=16", "train.scaling.num_workers=0", "train.scaling.torch_threads=1",
            "grid.fusions=[early]", "grid.maskings=[hard]",
            "grid.modalities={text: [text], text+image: [text, image]}", "tfidf.min_df=1"]


def test_evaluate_grid_and_baseline_in_platform_and_lopo(ray_session, catalogue, tmp_path):
    root, products, gamma_coverage = catalogue
    config = load_config(EvaluateConfig, None, _overrides(root, tmp_path / "eval"))
    results = evaluate(config)
    folds = {f["fold"]: f for f in results["folds"]}
    assert list(folds) == ["in_platform", "lopo_alpha", "lopo_beta", "lopo_gamma"]
    assert folds["in_platform"]["test_splits"] == ["test"] and folds["in_platform"]["coverage"] == 1.0
    assert folds["lopo_gamma"]["train_platforms"] == ["alpha", "beta"]
    assert folds["lopo_gamma"]["coverage"] == pytest.approx(gamma_coverage) and gamma_coverage < 1.0
    assert folds["lopo_gamma"]["covered_categories"] == folds["lopo_gamma"]["test_categories"] - 1
    assert folds["lopo_alpha"]["n_test"] == folds["lopo_alpha"]["n_test_all"] == int(pc.sum(pc.and_(
        pc.equal(products["platform"], "alpha"), pc.not_equal(products["split"], "val"))).as_py())
    assert folds["lopo_alpha"]["test_splits"] == ["train", "calib", "test"]
    rows = results["results"]
    assert len(rows) == 4 * 3
    models = {r["model"] for r in rows}
    assert models == {"early/hard/text", "early/hard/text+image", "tfidf-linear"}
    # the held-out platform's own category is not in a LOPO fold's label space
    assert folds["lopo_gamma"]["label_categories"] == folds["in_platform"]["label_categories"] - 1
    assert folds["lopo_gamma"]["taxonomy_nodes"] < folds["in_platform"]["taxonomy_nodes"]
    comparisons = results["comparisons"]
    assert {(c["fold"], c["model"]) for c in comparisons} == {
        (f, m) for f in folds for m in ("early/hard/text", "early/hard/text+image")}
    for c in comparisons:
        assert c["low"] <= c["difference"] <= c["high"] and c["reference"] == "tfidf-linear"
    for r in rows:
        assert 0.0 <= r["hF"] <= 1.0 and r["n"] == folds[r["fold"]]["n_test"]
        assert r["hF_ci"][0] <= r["hF"] <= r["hF_ci"][1]
        assert r["path_consistency"] == 1.0  # hard masking and the flat baseline: valid paths
        assert "level0_macro_f1" in r and "level2_macro_f1" in r
    grid_row = next(r for r in rows if r["kind"] == "grid")
    assert grid_row["epochs"] == 2 and grid_row["seconds_per_epoch"] > 0
    out = tmp_path / "eval"
    saved = json.loads((out / "results.json").read_text())
    assert len(saved["results"]) == 12
    md = (out / "report.md").read_text()
    assert "## hF [95 % CI] by model and fold" in md and "lopo_gamma" in md and "tfidf-linear" in md
    assert "## Against tfidf-linear (paired bootstrap over groups)" in md
    for name in ("hf_by_model.png", "per_category_f1_in_platform.png", "confusion_level0_lopo_beta.png",
                 "confusion_level1_in_platform.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def test_cli_evaluate_in_platform_only(ray_session, catalogue, tmp_path, capsys):
    root, _, _ = catalogue
    args = ["evaluate", "--output", str(tmp_path / "cli"), "--set", "protocols=[in_platform]",
            "--set", "grid.modalities={image: [image]}", "--set", "baselines=[]"]
    assert main(args + [a for o in _overrides(root, tmp_path / "x") if not o.startswith(
        ("output=", "grid.modalities")) for a in ("--set", o)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("[evaluate] highest hF in in_platform: early/hard/image ")
    results = json.loads((tmp_path / "cli" / "results.json").read_text())["results"]
    assert len(results) == 1 and results[0]["model"] == "early/hard/image"
    assert (tmp_path / "cli" / "report.md").exists()
    # merging two evaluation folders (e.g. in-platform and LOPO run apart) into one report
    assert main(["evaluate", "--merge", str(tmp_path / "cli"), str(tmp_path / "cli"),
                 "--output", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert len(merged["results"]) == 1 and (tmp_path / "merged" / "hf_by_model.png").exists()


def test_grid_cells_cover_every_combination():
    config = load_config(EvaluateConfig, str(REPO_ROOT / "configs" / "evaluate.grid.yaml"))
    cells = grid_cells(config)
    assert len(cells) == 18 and len({c["name"] for c in cells}) == 18
    assert {tuple(c["modalities"]) for c in cells} == {("text",), ("image",), ("text", "image")}
