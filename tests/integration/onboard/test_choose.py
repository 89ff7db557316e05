"""`prodcat onboard choose`: candidate settings trained on the other platform, adapted to the new
one (inputs only), compared on its labelled products; the first is kept unless another beats it
there by a real difference (a model starved of training rows loses to the full one; a twin of the
reference never wins), the chosen checkpoint loads and predicts, and too few labelled products
is a clear error. Labels are drawn where the candidates disagree (twins: none is read), proposed
for labelling before any is read (``--propose``), and read back from the filled file
(``--labels``)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration

TINY = ["model.fusion=decision", "model.modalities=[text, lexical]", "model.label_prior=none",
        "lexical.min_df=1", "model.decision.lexical_grid=[]", "model.decision.parallel=false",
        "model.decision.priors=[none]", "model.decision.self_train={features: [text], threshold: 0.5}"]


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    root = tmp_path_factory.mktemp("choose")
    return build_tiny_cascade(root, n_products=168, kind="neural", steps=1)


def _args(cascade, out, candidates: dict, *extra: str) -> list[str]:
    return ["onboard", "choose", "--products", cascade["products_uri"], "--embeddings", cascade["embeddings"],
            "--platform", "beta", "--labelled-splits", "train", "--output", str(out),
            "--set", f"train_overrides={json.dumps(TINY)}", "--set", f"candidates={json.dumps(candidates)}", *extra]


def test_a_candidate_that_beats_the_reference_on_the_labelled_products_is_chosen(catalogue, tmp_path, capsys):
    from prodcat.cli import main
    from prodcat.models.checkpoint import load_checkpoint

    out = tmp_path / "choose"
    assert main(_args(catalogue, out, {"starved": ["data.max_train_products=4"], "full": [], "twin": [
        "data.max_train_products=4"]})) == 0
    choice = json.loads((out / "choice.json").read_text())
    assert choice["reference"] == "starved" and choice["chosen"] == "full"
    assert choice["against_reference"]["full"]["real"] and choice["against_reference"]["full"]["low"] > 0
    assert not choice["against_reference"]["twin"]["real"]              # the same model: never chosen
    m = choice["candidates"]
    assert m["full"]["hF_labelled"] > m["starved"]["hF_labelled"] == m["twin"]["hF_labelled"]
    assert m["starved"]["model"].startswith("trained on alpha (decision fusion, 4 of their")
    assert m["full"]["adapted"]["self_trained_on"]                        # adapted to beta, inputs only
    assert choice["labelled"] >= 2 and choice["check_products"] > 0      # beta's other splits check it
    assert m["full"]["hF_check"] is not None
    model = load_checkpoint(str(out / "model"))
    assert [c.kind for c in model.components].count("self_trained") == 1
    assert "**Chosen: `full`**" in (out / "report.md").read_text()
    assert "chose full for beta" in capsys.readouterr().out


def test_the_reference_is_kept_without_a_real_difference_and_too_few_labels_are_refused(catalogue, tmp_path, capsys):
    from prodcat.cli import main

    out = tmp_path / "keep"
    assert main(_args(catalogue, out, {"default": [], "again": []}, "--max-labelled", "12",
                      "--sampling", "random")) == 0
    choice = json.loads((out / "choice.json").read_text())
    assert choice["chosen"] == "default" and 2 <= choice["labelled"] <= 12
    assert choice["against_reference"]["again"]["difference"] == 0.0
    # drawn where the candidates disagree (the default), twins give nothing to read: no label is
    # spent, the first is kept, and the report says why
    capsys.readouterr()
    assert main(_args(catalogue, tmp_path / "agree", {"default": [], "again": []}, "--max-labelled", "12")) == 0
    choice = json.loads((tmp_path / "agree" / "choice.json").read_text())
    assert (choice["chosen"], choice["labelled"], choice["disagreeing"], choice["labelled_ids"]) == ("default", 0, 0, [])
    assert choice["check_products"] > 0
    assert "no label can tell them apart" in (tmp_path / "agree" / "report.md").read_text()
    assert "the candidates agree wherever a label could be read" in capsys.readouterr().out
    assert main(_args(catalogue, tmp_path / "none", {"default": []}, "--labelled-splits", "nowhere")) == 2
    assert "0 labelled product(s) in splits ['nowhere']" in capsys.readouterr().err


def _disagreeing_groups(choice: dict, products_uri: str, embeddings: str) -> set[str]:
    """The groups of beta in which the chosen-among checkpoints predict different paths."""
    import numpy as np

    from prodcat.models.checkpoint import load_checkpoint
    from prodcat.train.features import load_feature_table
    from prodcat.train.lexical import model_inputs

    table = load_feature_table(products_uri, embeddings, ["text"]).rows(platforms=["beta"])
    paths = [load_checkpoint(m["checkpoint"]).predict(*model_inputs(load_checkpoint(m["checkpoint"]), table))
             ["category_path"] for m in choice["candidates"].values()]
    groups = np.asarray(table.column("group_id")).astype(str)
    return set(groups[paths[0] != paths[1]].tolist())


def test_labels_are_drawn_where_the_candidates_disagree_and_proposed_before_any_is_read(catalogue, tmp_path, capsys):
    """With a cap, the labelled products are drawn only from groups where the candidates' paths
    differ; ``--propose`` writes those products to label (no label read), and ``--labels`` reads
    the filled file, reusing the candidates the proposal trained."""
    import csv
    import shutil

    import pyarrow.parquet as pq

    from prodcat.cli import main

    candidates = {"starved": ["data.max_train_products=4"], "full": []}
    out = tmp_path / "drawn"
    assert main(_args(catalogue, out, candidates, "--max-labelled", "10")) == 0
    choice = json.loads((out / "choice.json").read_text())
    assert choice["sampling"] == "disagreement" and 2 <= choice["labelled"] <= 10 < choice["disagreeing"]
    assert "where the candidates disagree" in (out / "report.md").read_text()
    # every product read is in a group where the two candidates predict different paths
    groups = _disagreeing_groups(choice, catalogue["products_uri"], catalogue["embeddings"])
    group_of = dict(zip(*(pq.read_table(catalogue["products_uri"], columns=["product_id", "group_id"])
                          .column(c).to_pylist() for c in ("product_id", "group_id"))))
    assert groups and {group_of[p] for p in choice["labelled_ids"]} <= groups
    proposal = tmp_path / "proposal"
    capsys.readouterr()
    assert main(_args(catalogue, proposal, candidates, "--propose", "8")) == 0
    said = capsys.readouterr().out
    assert "to label" in said and "--labels" in said
    assert not (proposal / "choice.json").exists() and not (proposal / "model").exists()
    rows = list(csv.DictReader((proposal / "to_label.csv").open()))
    assert 1 <= len(rows) <= 8 and all(r["category_id"] == "" for r in rows)
    groups = {r["group_id"] for r in rows}
    assert all(any(x["starved_path"] != x["full_path"] for x in rows if x["group_id"] == g) for g in groups)
    truth = dict(zip(*(pq.read_table(catalogue["products_uri"], columns=["product_id", "category_id"])
                       .column(c).to_pylist() for c in ("product_id", "category_id"))))
    for r in rows:
        r["category_id"] = str(truth[r["product_id"]])
    unlabelled = next(p for p, g in group_of.items() if p.startswith("beta") and g not in groups)
    moved = tmp_path / "elsewhere" / "proposal"                    # the folder copied before labelling
    shutil.copytree(proposal, moved)
    shutil.rmtree(proposal)
    filled = tmp_path / "labelled.csv"
    with filled.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows + [{**rows[0], "product_id": unlabelled, "category_id": ""}])   # skipped
    capsys.readouterr()
    assert main(_args(catalogue, moved, candidates, "--labels", str(filled))) == 0
    said = capsys.readouterr().out
    assert said.count("reusing") == 2                  # trained once, by the proposal, in another folder
    choice = json.loads((moved / "choice.json").read_text())
    assert all(m["checkpoint"].startswith(str(moved)) for m in choice["candidates"].values())
    assert sorted(choice["labelled_ids"]) == sorted(r["product_id"] for r in rows)
    assert choice["config"]["labels"] == str(filled) and str(filled) in choice["source"]
    assert choice["check_products"] > 0 and choice["labelled"] == len(rows)
    # a file naming products the platform does not have is refused in one line
    bad = tmp_path / "bad.csv"
    bad.write_text("product_id,category_id\nnowhere:1,5\n")
    assert main(_args(catalogue, moved, candidates, "--labels", str(bad))) == 2
    assert "not of the new platform" in capsys.readouterr().err
