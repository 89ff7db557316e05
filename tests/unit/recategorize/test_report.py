"""The recategorization report and review file from a proposals summary, and the main job's
report section built from them (no clustering run: the summary is written by hand)."""

import json

import pytest
import yaml

from prodcat.pipeline.report import write_report as write_main_report
from prodcat.recategorize.extension import AcceptFile, write_accept_template
from prodcat.recategorize.report import write_report

pytestmark = pytest.mark.unit


def _scores(purity, clusters):
    one = {"products": 10, "assigned": 9, "noise_share": 0.1, "clusters": clusters, "labels": 3,
           "purity": purity, "nmi": 0.5, "ari": 0.4, "accuracy": 0.6}
    return {"hm": one, "myntra": one, "all": {**one, "products": 20, "labels_total": 6}}


def _summary():
    cluster = {"cluster": 0, "size": 9, "platforms": {"hm": 5, "myntra": 4}, "name": "Sneaker Low",
               "terms": ["sneaker", "low"], "first_level_cluster": 0, "grid": "187/cluster_0.png",
               "label_mix": {"hm:Sneakers": 5, "myntra:Casual Shoes": 4},
               "examples": [{"product_id": "hm:1", "platform": "hm", "title": "Laura sneaker",
                             "finer_label": "Shoes > Sneakers"}]}
    entry = {"category_id": 187, "path": "Apparel & Accessories > Shoes", "products": 20,
             "platforms": {"hm": 10, "myntra": 10}, "not_embedded": 1, "capped": 0,
             "variant": "simclr+cascade", "min_cluster_size": 5,
             "scores": {"simclr+cascade": _scores(0.81, 4), "raw+cascade": _scores(0.7, 6)},
             "clusters": [cluster], "noise_share": 0.1, "rescued": 2,
             "splits": {"0": {"reason": "too large: 60% of the category > 50%", "into": 2, "unassigned": 1}},
             "simclr": {"epochs": 3, "first_loss": 4.0, "last_loss": 2.0, "pair_accuracy": 0.9, "seconds": 1.0},
             "seconds": {"total": 3.0}, "scatter": "187/scatter.png",
             "assignments": "187/assignments.parquet", "fingerprint": "abcdef0123456789"}
    config = {"products": "p.parquet", "embeddings": "emb", "features": ["text", "image"],
              "simclr": {"temperature": 0.1, "epochs": 3, "feature_dropout": 0.2, "noise_std": 0.5,
                         "modality_dropout": 0.3},
              "umap": {"n_neighbors": 15, "n_components": 5, "min_dist": 0.0, "metric": "cosine"},
              "clustering": {"min_cluster_size": 15, "max_share": 0.5, "max_spread": 1.5,
                             "soft_threshold": 0.1}}
    return {"config": config, "taxonomy_version": "google-2021-09-21", "categories": [entry],
            "skipped": [], "wall_seconds": 4.0}


def test_report_lists_scores_with_cluster_counts_and_every_proposal(tmp_path):
    summary = _summary()
    text = open(write_report(str(tmp_path), summary)).read()
    assert "1 category in 4 s" in text
    assert "| Shoes | SimCLR + cascade (the method) | 20 | 4 | 3 | 10.0 % | 0.810 |" in text
    assert "3 (max) / 6 (sum)" in text and "1 not in the embedding store" in text
    assert "**0. Sneaker Low** (9 products): Laura sneaker (hm)" in text
    assert "![cluster 0](187/cluster_0.png)" in text and "(187/scatter.png)" in text
    assert "level-1 cluster 0 (too large: 60% of the category > 50%) → 2 clusters, 1 left unassigned" in text


def test_review_file_is_valid_and_keeps_an_earlier_review(tmp_path):
    summary = _summary()
    path = write_accept_template(str(tmp_path), summary)
    review = AcceptFile.model_validate(yaml.safe_load(open(path).read()))
    cluster = review.categories[0].clusters[0]
    assert not cluster.accept and cluster.name == "Sneaker Low"
    assert review.categories[0].proposals == "abcdef0123456789"
    write_accept_template(str(tmp_path), summary)
    assert (tmp_path / "accept.previous.yaml").read_text() == open(path).read()


def test_main_job_report_has_a_recategorization_headline_and_section(tmp_path):
    folder = tmp_path / "recategorize"
    folder.mkdir()
    summary = _summary()
    (folder / "recategorize.json").write_text(json.dumps(summary))
    write_report(str(folder), summary)
    md = write_main_report(tmp_path, {"recategorize": 5.0}, {"full": True}).read_text()
    assert ("**Recategorization of Shoes** (20 products): 4 proposed subcategories against up to 3 "
            "finer labels per platform; purity 0.810") in md
    assert "(without SimCLR: purity 0.700 with 6 clusters)" in md
    assert "## Recategorization: finer subcategories found in the data" in md
    assert "](recategorize/187/scatter.png)" in md                  # links re-rooted
