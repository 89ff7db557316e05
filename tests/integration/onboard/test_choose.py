"""`prodcat onboard choose`: candidate settings trained on the other platform, adapted to the new
one (inputs only), compared on its labelled products; the first is kept unless another beats it
there by a real difference (a model starved of training rows loses to the full one; a twin of the
reference never wins), the chosen checkpoint loads and predicts, and too few labelled products
is a clear error."""

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
    assert main(_args(catalogue, out, {"default": [], "again": []}, "--max-labelled", "12")) == 0
    choice = json.loads((out / "choice.json").read_text())
    assert choice["chosen"] == "default" and choice["labelled"] <= 12
    assert choice["against_reference"]["again"]["difference"] == 0.0
    assert main(_args(catalogue, tmp_path / "none", {"default": []}, "--labelled-splits", "nowhere")) == 2
    assert "0 labelled product(s) in splits ['nowhere']" in capsys.readouterr().err
