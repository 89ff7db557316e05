"""Recategorization end to end on a planted catalogue: `prodcat recategorize propose` on Ray (a
task per category) recovers the planted subtypes and writes its report, PNGs and review file; a
reviewed accept.yaml goes through `apply` (extended taxonomy, relabelled products, stale reviews
refused); `prodcat train` trains on the extended taxonomy and predicts the new nodes; predictions
made under the old version map to the new one; the service reports the new taxonomy version and
answers with the new nodes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import yaml

from prodcat.cli import main
from prodcat.core import storage
from prodcat.core.config import load_config
from prodcat.core.taxonomy import EXTENSION_ID_BASE, Taxonomy
from prodcat.models.checkpoint import load_checkpoint
from prodcat.recategorize.extension import map_predictions
from prodcat.train.config import TrainConfig
from prodcat.train.features import load_feature_table
from prodcat.train.trainer import train
from tests.fixtures.planted import write_planted_catalogue
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.integration

SMALL = ["--set", "simclr.epochs=20", "--set", "simclr.batch_size=64", "--set", "simclr.hidden_dim=64",
         "--set", "simclr.representation_dim=16", "--set", "simclr.projection_dim=16",
         "--set", "clustering.min_cluster_size=10", "--set", "num_cpus=0.5", "--set", "examples=4"]


def _accept_all(review_path: Path) -> dict:
    """Accept every proposed cluster, named by its first c-TF-IDF term (the planted subtype
    word), so the two platforms' clusters of one subtype merge into one node."""
    review = yaml.safe_load(review_path.read_text())
    for cluster in review["categories"][0]["clusters"]:
        cluster["accept"] = True
        cluster["name"] = cluster["terms"][0].capitalize()
    review_path.write_text(yaml.safe_dump(review, sort_keys=False))
    return review


def test_propose_review_apply_train_and_map(ray_session, tmp_path, capsys):
    cat = write_planted_catalogue(tmp_path / "data", category_id=5, per_subtype=30, subtypes=3)
    out = tmp_path / "proposals"
    assert main(["recategorize", "propose", "--products", cat["products"], "--embeddings",
                 cat["embeddings"], "--category", "Apparel > Shirts", "--output", str(out)] + SMALL) == 0
    assert "[recategorize] 1/1 Apparel > Shirts" in capsys.readouterr().out
    summary = json.loads((out / "recategorize.json").read_text())
    entry = summary["categories"][0]
    assert entry["category_id"] == 5 and entry["products"] == 180
    method = entry["scores"]["simclr+cascade"]["all"]
    assert method["labels"] == 3 and method["clusters"] <= 2 * method["labels"]
    assert method["purity"] >= 0.9 and method["nmi"] >= 0.8 and method["noise_share"] <= 0.2
    assert set(entry["scores"]) == {"simclr+cascade", "simclr", "raw+cascade", "raw"}
    report = (out / "report.md").read_text()
    assert "Proposed subcategories" in report and "## Apparel > Shirts (5)" in report
    for png in [entry["scatter"]] + [c["grid"] for c in entry["clusters"]]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assignments = storage.read_table(str(out / entry["assignments"]))
    assert assignments.num_rows == 180 and set(assignments["cluster"].to_pylist()) >= {0, 1, 2}

    # nothing accepted yet: apply refuses and says what to do
    with pytest.raises(ValueError, match="accept: true"):
        main(["recategorize", "apply", "--proposals", str(out), "--output", str(tmp_path / "ext")])
    review = _accept_all(out / "accept.yaml")
    assert main(["recategorize", "apply", "--proposals", str(out), "--output", str(tmp_path / "ext")]) == 0
    old = cat["taxonomy"]
    new = Taxonomy.from_json((tmp_path / "ext" / "taxonomy.json").read_text())
    added = [int(c) for c in new.ids[len(old):] if c >= EXTENSION_ID_BASE]
    names = {c["name"] for c in review["categories"][0]["clusters"]}
    assert len(added) == len(names) and new.version != old.version and old.version in new.lineage
    assert all(new.path_of_id(c).startswith("Apparel > Shirts > ") for c in added)
    assert not set(added) & set(old.ids.tolist())                           # no id collides
    products = storage.read_table(str(tmp_path / "ext" / "products.parquet"))
    before = storage.read_table(cat["products"])
    assert products.num_rows == before.num_rows
    moved = np.isin(products["category_id"].to_numpy(), added)
    assigned = (assignments["cluster"].to_numpy() >= 0).sum()
    assert moved.sum() == assigned
    unchanged = ~np.isin(before["product_id"].to_numpy(zero_copy_only=False),
                         assignments["product_id"].to_numpy(zero_copy_only=False))
    assert products.filter(pa.array(unchanged)).equals(before.filter(pa.array(unchanged)))
    # every new node holds one planted subtype (both platforms' clusters merged into it)
    planted = cat["planted"]
    for cid in added:
        ids = products.filter(pa.compute.equal(products["category_id"], cid))["product_id"].to_pylist()
        subtypes = [planted[p] for p in ids]
        assert max(np.bincount(subtypes)) / len(subtypes) >= 0.9

    # a review written for other proposals is refused
    stale = yaml.safe_load((out / "accept.yaml").read_text())
    stale["categories"][0]["proposals"] = "0" * 16
    (tmp_path / "stale.yaml").write_text(yaml.safe_dump(stale))
    with pytest.raises(ValueError, match="other proposals"):
        main(["recategorize", "apply", "--proposals", str(out), "--accept", str(tmp_path / "stale.yaml"),
              "--output", str(tmp_path / "ext2")])

    # prodcat train on the extended catalogue: the model predicts the new nodes
    config = load_config(TrainConfig, None, [
        f"data.products={tmp_path}/ext/products.parquet", f"data.embeddings={cat['embeddings']}",
        "optim.epochs=4", "optim.batch_size=32", "optim.lr=3e-3",
        "model.preset=null", "model.hidden_dim=32",
        "scaling.num_workers=0", "scaling.torch_threads=1", f"output={tmp_path}/train"])
    model = load_checkpoint(train(config).checkpoint)
    assert model.taxonomy.version == new.version
    table = load_feature_table(str(tmp_path / "ext" / "products.parquet"), cat["embeddings"],
                               model.model_config.modalities)
    rows = table.where(np.isin(table.column("category_id"), added))
    features, present, _ = rows.arrays()
    predicted = model.predict(features, present)["category_id"]
    assert np.mean(predicted == rows.column("category_id")) >= 0.8

    # predictions made under the old version map to the new one (same ids, new paths valid)
    old_preds = pa.table({"product_id": ["a", "b", "c"], "category_id": pa.array([5, 3, None], pa.int64()),
                          "category_path": ["Apparel > Shirts", "Apparel > Shoes > Boots", None]})
    mapped = map_predictions(old_preds, new, old.version)
    assert mapped["category_id"].to_pylist() == [5, 3, None]
    assert mapped["category_path"].to_pylist()[:2] == ["Apparel > Shirts", "Apparel > Shoes > Boots"]
    with pytest.raises(KeyError, match="does not descend"):
        map_predictions(old_preds, new, "some-other-version")


def test_service_reports_the_extended_taxonomy_and_predicts_its_new_nodes(ray_session, tmp_path):
    """Over real HTTP (a Serve instance of its own, shut down at the end): local testing mode
    would leave uvicorn state in this process that later Serve deployments cannot pickle."""
    import requests
    from ray import serve

    from prodcat.core.runtime import free_port
    from prodcat.pipeline.demo import wait_healthy
    from prodcat.serve.app import build_app
    from tests.fixtures.cascade import build_tiny_cascade

    base = toy_taxonomy()
    extended = base.extend([(5, "Polo"), (5, "Flannel")])
    cascade = build_tiny_cascade(tmp_path, n_products=96, taxonomy=extended, steps=120)
    args = {"cascade": cascade["cascade"], "ingress": {"num_cpus": 0.05, "max_replicas": 1},
            "text_stage": {"num_cpus": 0.1, "max_replicas": 1, "device": "cpu"},
            "multimodal_stage": {"num_cpus": 0.1, "max_replicas": 1, "device": "cpu"}}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(args), name="recategorized", route_prefix="/")
        wait_healthy(url, timeout_s=120)
        taxonomy = requests.get(f"{url}/v1/taxonomy", timeout=30).json()
        assert taxonomy["version"] == extended.version
        assert taxonomy["lineage"][base.version]["5"] == 5                # old id → id here
        paths = {c["path"] for c in taxonomy["categories"]}
        assert {"Apparel > Shirts > Polo", "Apparel > Shirts > Flannel"} <= paths
        assert requests.get(f"{url}/v1/model", timeout=30).json()["taxonomy_version"] == extended.version
        new_ids = {int(c) for c in extended.ids if c >= EXTENSION_ID_BASE}
        rows = [r for r in cascade["products"].to_pylist() if r["category_id"] in new_ids]
        response = requests.post(f"{url}/v1/categorize?mode=text", timeout=120, json={"products": [
            {"id": r["product_id"], "title": r["title"], "description": r["description"]} for r in rows]})
        assert response.status_code == 200
        answered = [p["category_id"] for p in response.json()["predictions"]]
        assert np.mean(np.asarray(answered) == np.asarray([r["category_id"] for r in rows])) >= 0.7
    finally:
        serve.shutdown()
