"""`prodcat onboard adapt`: a decision-level checkpoint that chose `prior: adapt`, adapted to the
label distribution of one platform's unlabelled products (their categories removed), read from a
real embedding store, and one that self-trains on them; the adapted copies load and predict like
any checkpoint, and what cannot be adapted is refused with a clear error."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from prodcat.core.config import load_config
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train
    from tests.fixtures.cascade import build_tiny_cascade

    root = tmp_path_factory.mktemp("adapt")
    cascade = build_tiny_cascade(root, kind="neural", steps=1)
    platforms = sorted(set(cascade["products"]["platform"].to_pylist()))
    self_train = ["model.decision.priors=[none]", "model.decision.self_train={features: [text], threshold: 0.5}"]
    checkpoints = {}
    for name, extra in (("adapt", ["model.decision.priors=[adapt]"]), ("none", ["model.decision.priors=[none]"]),
                        ("self-train", self_train),       # trained on every platform
                        ("self-train-new", [*self_train, f"data.platforms=[{', '.join(platforms[:-1])}]"]),
                        ("self-train-gate", ["model.decision.priors=[none]", f"data.platforms=[{', '.join(platforms[:-1])}]",
                                             "model.decision.self_train={features: [text], threshold: 0.5, gate: centroid}"])):
        config = load_config(TrainConfig, None, [
            f"data.products={cascade['products_uri']}", f"data.embeddings={cascade['embeddings']}",
            f"output={root}/train-{name}", "model.fusion=decision", "model.modalities=[text, lexical]",
            "model.label_prior=none", "lexical.min_df=1", "model.decision.lexical_grid=[]",
            "model.decision.parallel=false", *extra])
        checkpoints[name] = train(config, progress=None).checkpoint
    return cascade, checkpoints, root


def test_onboard_adapt_writes_an_adapted_checkpoint_from_unlabelled_products(trained, tmp_path, capsys):
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint
    from prodcat.models.decision import em_label_prior

    cascade, checkpoints, _ = trained
    products = cascade["products"]
    platform = products["platform"][0].as_py()
    unlabelled = products.drop_columns(["category_id"]).append_column(
        "category_id", pa.nulls(products.num_rows, pa.int64()))
    pq.write_table(unlabelled, tmp_path / "new.parquet")
    out = tmp_path / "adapted"
    assert main(["onboard", "adapt", "--checkpoint", checkpoints["adapt"], "--products",
                 str(tmp_path / "new.parquet"), "--embeddings", cascade["embeddings"],
                 "--platform", platform, "--output", str(out)]) == 0
    assert "largest estimated category" in capsys.readouterr().out
    n = int(pc.sum(pc.equal(products["platform"], platform)).as_py())
    summary = json.loads((out / "adapt.json").read_text())
    assert summary["products_used"] == n and summary["without_vectors"] == 0
    assert "| category | estimated share | training share |" in (out / "adapt.md").read_text()
    assert "labelled" not in summary                 # the categories were removed: nothing to compare
    adapted, original = load_checkpoint(str(out)), load_checkpoint(checkpoints["adapt"])
    assert adapted.combiner.adapted_on == n and original.combiner.target_log_prior is None
    assert np.exp(adapted.combiner.target_log_prior).sum() == pytest.approx(1.0, abs=1e-4)
    # the same estimate as adapting in memory to those products' features
    rows = products.filter(pc.equal(products["platform"], platform))
    from prodcat.embed.store import feature_matrix, read_store
    from prodcat.models.lexical import product_text

    store, _ = read_store(cascade["embeddings"], ["product_id", "emb_text", "status_text"])
    taken = store.take(pc.index_in(rows["product_id"], value_set=store["product_id"]))
    x, present = feature_matrix(taken, "text")
    feats = {"text": x, "lexical": original.lexical.scores(
        [product_text(a, b) for a, b in zip(rows["title"].to_pylist(), rows["description"].to_pylist())])}
    flat = original.combiner.combine(original.component_log_probs(feats, {"text": present}))
    assert np.allclose(adapted.combiner.target_log_prior, em_label_prior(flat), atol=1e-4)
    pred = adapted.predict(feats, {"text": present})
    assert len(pred["category_id"]) == n
    # with its labels kept, the report also says how far the estimate is from them (read after it)
    labelled = adapt_again(checkpoints["adapt"], cascade, platform, tmp_path / "labelled")
    assert labelled["labelled"] == n and 0.0 <= labelled["tv_estimate"] <= 1.0
    assert labelled["tv_uniform"] > 0 and "total variation" in (tmp_path / "labelled" / "adapt.md").read_text()
    assert np.allclose(load_checkpoint(str(tmp_path / "labelled")).combiner.target_log_prior,
                       adapted.combiner.target_log_prior, atol=1e-5)      # labels do not change it


def test_onboard_adapt_self_trains_a_model_that_asks_for_it(trained, tmp_path, capsys):
    """A checkpoint with ``model.decision.self_train`` (and no prior to estimate) gets a
    ``self_trained`` component fitted on the platform's products; the report says on how many;
    the copy loads with it, and the original checkpoint does not change."""
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint

    cascade, checkpoints, _ = trained
    products = cascade["products"]
    platform = sorted(set(products["platform"].to_pylist()))[-1]     # one the model was not trained on
    out = tmp_path / "self-trained"
    assert main(["onboard", "adapt", "--checkpoint", checkpoints["self-train-new"], "--products",
                 cascade["products_uri"], "--embeddings", cascade["embeddings"], "--platform", platform,
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "self-training on" in printed and "largest estimated category" not in printed
    n = int(pc.sum(pc.equal(products["platform"], platform)).as_py())
    summary = json.loads((out / "adapt.json").read_text())
    st = summary["self_training"]
    assert st["added"] and st["adapted_on"] == n and 0 < st["fitted_on"] <= n and st["features"] == ["text"]
    assert f"self-trained on {st['fitted_on']:,} of {n:,} products (text)" in printed
    assert "top" not in summary and "## Self-training" in (out / "adapt.md").read_text()
    assert st["new_platform_products"] == n and platform not in st["trained_platforms"]
    adapted, original = load_checkpoint(str(out)), load_checkpoint(checkpoints["self-train-new"])
    assert [c.kind for c in adapted.components].count("self_trained") == 1
    assert "self_trained" not in original.combiner.weights
    assert adapted.combiner.target_log_prior is None and adapted.combiner.prior == "none"


def test_onboard_adapt_reports_the_products_the_gate_judged_outside_the_label_space(trained, tmp_path, capsys):
    """``self_train.gate: centroid``: training sets the gate (leaf centroids of the text embedding,
    a threshold on the in-platform held-out products) and keeps it in the checkpoint; adapting to a
    new platform counts the products it judges outside the label space, leaves them out of the
    pseudo-labels, and says how many on the console, in adapt.json and in adapt.md."""
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint

    cascade, checkpoints, _ = trained
    trained_model = load_checkpoint(checkpoints["self-train-gate"])
    gate = trained_model.gate
    assert gate is not None and gate.feature == "text" and gate.reference > 0 and -1.0 <= gate.threshold <= 1.0
    products = cascade["products"]
    platform = sorted(set(products["platform"].to_pylist()))[-1]
    out = tmp_path / "gated"
    assert main(["onboard", "adapt", "--checkpoint", checkpoints["self-train-gate"], "--products",
                 cascade["products_uri"], "--embeddings", cascade["embeddings"], "--platform", platform,
                 "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    st = json.loads((out / "adapt.json").read_text())["self_training"]
    n = int(pc.sum(pc.equal(products["platform"], platform)).as_py())
    outside = st["outside_label_space"]
    assert st["gate"] == "centroid" and 0 <= outside <= n and st["fitted_on"] <= n - outside
    assert f"the gate judged {outside:,} of {n:,} products outside the label space" in printed
    assert f"The gate judged {outside:,} of them outside the label space" in (out / "adapt.md").read_text()
    adapted = load_checkpoint(str(out))
    assert adapted.gate.threshold == pytest.approx(gate.threshold)
    assert adapted.self_trained.settings["outside_label_space"] == outside


def test_onboard_adapt_says_when_self_training_added_nothing(trained):
    """A self-training model to which adapting added no component (too few products kept: the
    model warns) is reported as such in adapt.json and adapt.md, not left out silently."""
    from prodcat.models.checkpoint import load_checkpoint
    from prodcat.onboard.adapt import _self_training, markdown

    _, checkpoints, _ = trained
    model = load_checkpoint(checkpoints["self-train"])      # self-trains; nothing fitted yet
    assert model.self_trained is None
    st = _self_training(model)
    assert st == {"added": False, "features": ["text"], "keep": "confidence", "threshold": 0.5,
                  "scope": "new_platforms", "new_platform_products": None,
                  "trained_platforms": ["alpha", "beta"],
                  "reason": "the products the model is sure of (kept: top probability at least 0.5) "
                            "span fewer than 2 categories"}
    text = markdown({"checkpoint": "c", "products": "p", "platform": None, "products_used": 3,
                     "without_vectors": 0, "self_training": st})
    assert "Nothing added: the products the model is sure of (kept: top probability at least 0.5)" in text
    assert _self_training(load_checkpoint(checkpoints["adapt"])) is None      # does not self-train


def test_adapt_report_shows_the_reweighted_components():
    """``model.decision.reweight``: adapt.md lists each component's estimated accuracy, its weight
    as trained and after reweighting, beside what self-training fitted."""
    from prodcat.onboard.adapt import markdown

    record = {"method": "dawid_skene", "adapted_on": 1200, "accuracy": {"text": 0.81, "label": 0.12},
              "weights_before": {"text": 1.0, "label": 1.0}}
    text = markdown({"checkpoint": "c", "products": "p", "platform": "new", "products_used": 1200,
                     "without_vectors": 0, "self_training": None, "reweight": record,
                     "weights": {"text": 1.4, "label": 0.6}})
    assert "## Component weights" in text and "1,200 products of new platforms" in text
    assert "| text | 0.810 | 1.00 | 1.40 |" in text and "| label | 0.120 | 1.00 | 0.60 |" in text


def test_onboard_adapt_does_not_self_train_on_a_platform_the_model_was_trained_on(trained, tmp_path, capsys):
    """``scope: new_platforms`` (the default): a checkpoint trained on every platform, adapted to
    one of them, adds no component, and the CLI, adapt.json and adapt.md say why; the checkpoint
    records the platforms it was trained on."""
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint

    cascade, checkpoints, _ = trained
    platforms = sorted(set(cascade["products"]["platform"].to_pylist()))
    assert load_checkpoint(checkpoints["self-train"]).trained_platforms == platforms
    assert load_checkpoint(checkpoints["self-train-new"]).trained_platforms == platforms[:-1]
    out = tmp_path / "known"
    assert main(["onboard", "adapt", "--checkpoint", checkpoints["self-train"], "--products",
                 cascade["products_uri"], "--embeddings", cascade["embeddings"], "--platform", platforms[0],
                 "--output", str(out)]) == 0
    assert "every product is of a platform the model was trained on" in capsys.readouterr().out
    st = json.loads((out / "adapt.json").read_text())["self_training"]
    assert not st["added"] and st["new_platform_products"] == 0 and st["trained_platforms"] == platforms
    assert "self-trains on new platforms only" in (out / "adapt.md").read_text()
    assert load_checkpoint(str(out)).self_trained is None


def adapt_again(checkpoint, cascade, platform, out):
    from prodcat.onboard.adapt import adapt_checkpoint

    return adapt_checkpoint(checkpoint, cascade["products_uri"], cascade["embeddings"], str(out), platform)


def test_onboard_adapt_refuses_what_it_cannot_adapt(trained, tmp_path, capsys):
    from prodcat.embed.store import read_manifest
    from prodcat.onboard.adapt import adapt_checkpoint

    cascade, checkpoints, root = trained
    from prodcat.cli import main

    assert main(["onboard", "adapt", "--checkpoint", checkpoints["adapt"], "--products", cascade["products_uri"],
                 "--embeddings", cascade["embeddings"], "--platform", "nowhere", "--output", str(tmp_path / "e")]) == 2
    assert "prodcat onboard adapt: error: no product of platform 'nowhere'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="only a decision-level model whose combination chose prior "
                       "'adapt', that reweights or that self-trains"):
        adapt_checkpoint(checkpoints["none"], cascade["products_uri"], cascade["embeddings"], str(tmp_path / "a"))
    with pytest.raises(ValueError, match=r"no product of platform 'nowhere' .* it has \['alpha', 'beta'\]"):
        adapt_checkpoint(checkpoints["adapt"], cascade["products_uri"], cascade["embeddings"],
                         str(tmp_path / "b"), platform="nowhere")
    products = cascade["products"]
    unseen = products.set_column(products.schema.get_field_index("product_id"), "product_id",
                                 pa.array([f"new:{i}" for i in range(products.num_rows)]))
    pq.write_table(unseen, tmp_path / "unseen.parquet")
    with pytest.raises(ValueError, match="none of the products in .* has a vector in"):
        adapt_checkpoint(checkpoints["adapt"], str(tmp_path / "unseen.parquet"), cascade["embeddings"],
                         str(tmp_path / "d"))
    # a store made by another encoder: refused, naming both fingerprints
    import shutil

    other = tmp_path / "other-store"
    shutil.copytree(cascade["embeddings"], other)
    manifest_file = other / "manifest.json"
    manifest = read_manifest(str(other))
    manifest["features"]["text"]["fingerprint"]["key"] = "another-encoder"
    manifest_file.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="come from encoder another-encoder"):
        adapt_checkpoint(checkpoints["adapt"], cascade["products_uri"], str(other), str(tmp_path / "c"))
