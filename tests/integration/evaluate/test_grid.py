"""``prodcat evaluate`` end to end on a synthetic catalogue + store (tiny dims): in-platform and
leave-one-platform-out folds with a category only one platform has, the decision-level default, a
neural model (Ray Train local mode) and the reference rows on the same rows, two seeds, the
predictions Parquet and the JSON / Markdown / PNG outputs; and what every step of a fold reads."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest

from prodcat.cli import main
from prodcat.core import audit, storage
from prodcat.core.config import load_config
from prodcat.evaluate.folds import grid_cells
from prodcat.evaluate.grid import EvaluateConfig, evaluate
from prodcat.evaluate.report import ahead_of_default
from tests.fixtures.predictions import benchmark
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
            "train.model.hidden_dim=16", "train.scaling.num_workers=0", "train.scaling.torch_threads=1",
            "train.model.fusion=decision", "train.model.modalities=[text, image, lexical]",
            "train.model.label_prior=none", "train.model.lexical_prior=false", "train.lexical.min_df=1",
            "grid=null", "models={default: {}, early-text: {model.fusion: early, model.modalities: [text]}}",
            "reference_lexical_grid=[{analyzer: word, C: 0.5}, {analyzer: word+char, C: 0.5}]"]


def test_evaluate_default_neural_and_references_in_platform_and_lopo(ray_session, catalogue, tmp_path):
    root, products, gamma_coverage = catalogue
    config = load_config(EvaluateConfig, None, _overrides(root, tmp_path / "eval") + ["seeds=[0, 1]"])
    results = evaluate(config)
    folds = {f["fold"]: f for f in results["folds"]}
    assert list(folds) == ["in_platform", "lopo_alpha", "lopo_beta", "lopo_gamma"]
    assert folds["in_platform"]["test_splits"] == ["test"] and folds["in_platform"]["coverage"] == 1.0
    assert folds["lopo_gamma"]["train_platforms"] == ["alpha", "beta"]
    assert folds["lopo_gamma"]["coverage"] == pytest.approx(gamma_coverage) and gamma_coverage < 1.0
    assert folds["lopo_gamma"]["covered_categories"] == folds["lopo_gamma"]["test_categories"] - 1
    assert folds["lopo_alpha"]["n_test"] == folds["lopo_alpha"]["n_test_all"] == int(pc.sum(pc.and_(
        pc.equal(products["platform"], "alpha"), pc.not_equal(products["split"], "val"))).as_py())
    rows = results["results"]
    models = ["default", "early-text", "tfidf", "logreg-text", "logreg-image", "tfidf+logreg-text"]
    assert sorted({r["model"] for r in rows}) == sorted(models)
    assert len(rows) == 4 * len(models) * 2 and {r["seed"] for r in rows} == {0, 1}
    # the held-out platform's own category is not in a LOPO fold's label space
    assert folds["lopo_gamma"]["label_categories"] == folds["in_platform"]["label_categories"] - 1
    assert {(c["fold"], c["model"], c["seed"]) for c in results["comparisons"]} == {
        (f, m, s) for f in folds for m in models if m != "tfidf" for s in (0, 1)}
    for c in results["comparisons"]:
        assert c["low"] <= c["difference"] <= c["high"] and c["reference"] == "tfidf"
    # every other row against the default, paired on the same products: its difference is the
    # difference of the two rows' hF, and the report says which rows are ahead of the default
    assert {(c["fold"], c["model"], c["seed"]) for c in results["against_default"]} == {
        (f, m, s) for f in folds for m in models if m != "default" for s in (0, 1)}
    hf = {(r["fold"], r["model"], r["seed"]): r["hF"] for r in rows}
    for c in results["against_default"]:
        assert c["reference"] == "default" and c["low"] <= c["difference"] <= c["high"]
        assert c["difference"] == pytest.approx(hf[c["fold"], c["model"], c["seed"]] - hf[c["fold"], "default", c["seed"]])
    for r in rows:
        assert 0.0 <= r["hF"] <= 1.0 and r["n"] == folds[r["fold"]]["n_test"]
        assert r["hF_ci"][0] <= r["hF"] <= r["hF_ci"][1]
        assert r["path_consistency"] == 1.0  # hard masking and decoding on the tree: valid paths
    default = next(r for r in rows if r["model"] == "default" and r["fold"] == "lopo_gamma")
    # the default self-trains on the held-out platform's test products (scope new_platforms)
    assert set(default["combiner"]["weights"]) == {"text", "image", "lexical", "self_trained"}
    assert default["combiner"]["self_trained"]["adapted_on"] >= folds["lopo_gamma"]["n_test"]
    assert next(r for r in rows if r["model"] == "default" and r["fold"] == "in_platform")["combiner"][
        "self_trained"] is None                                    # never in-platform
    assert [h["name"] for h in default["combiner"]["heldout"]] == [
        "cross_platform:alpha", "cross_platform:beta", "in_platform"]
    # the paired rule: equal weights unless the kept candidate beat them by a real difference
    chosen = next(c for c in default["combiner"]["candidates"]
                  if (c["candidate"], c["decoding"]) == (default["combiner"]["chosen"]["candidate"],
                                                         default["combiner"]["chosen"]["decoding"]))
    assert chosen["candidate"] == "equal" or chosen["vs_equal"][1] > 0
    assert all("vs_equal" in c for c in default["combiner"]["candidates"])
    # each held-out set's own hF is kept (what agreement: every_set reads; stop 62)
    assert all(set(c["per_set"]) == {"cross_platform:alpha", "cross_platform:beta", "in_platform"}
               for c in default["combiner"]["candidates"])
    # cross-fitted: with three held-out sets, the fitted weights were tested out of sample
    assert default["combiner"]["crossfit"] is True
    assert all(c["out_of_sample"] for c in default["combiner"]["candidates"])
    # predictions: one row per (test product, model, seed), recomputable
    pred = ds.dataset(str(tmp_path / "eval" / "predictions")).to_table()
    assert pred.num_rows == sum(f["n_test"] for f in folds.values()) * len(models) * 2
    assert set(pred.column_names) >= {"product_id", "fold", "model", "seed", "category_id",
                                      "level_category_ids", "level_confidence", "true_category_id"}
    mine = pred.filter(pc.and_(pc.equal(pred["fold"], "lopo_gamma"), pc.equal(pred["model"], "default")))
    assert not np.isin(mine["product_id"].to_numpy(zero_copy_only=False), products.filter(
        pc.not_equal(products["platform"], "gamma"))["product_id"].to_numpy(zero_copy_only=False)).any()
    out = tmp_path / "eval"
    md = (out / "report.md").read_text()
    assert "## hF [95 % CI] by model and fold" in md and "lopo_gamma" in md
    assert "## Against tfidf (paired bootstrap over groups)" in md and "every seed agrees" in md
    assert "## Error ratio" in md and "## What the decision-level models chose" in md
    assert "## Every row against the default (paired bootstrap over groups)" in md
    ahead = ahead_of_default(results["against_default"])
    assert ("No row is ahead of the default" in md) == (not ahead)
    for fold, model, cs in ahead:
        assert all(c["low"] > 0 for c in cs) and f"{model} in {fold}" in md
    assert len(list(csv.DictReader((out / "against_default.csv").open()))) == len(results["against_default"])
    # recomputed from the predictions Parquet alone (benchmarks/paired_rows.py): the same figures
    paired = tmp_path / "paired.json"
    assert benchmark("paired_rows").main(["--evaluation", str(out), "--taxonomy", str(root / "cat" / "taxonomy.json"),
                                          "--out", str(paired)]) == 0
    again = {(r["fold"], r["model"], r["seed"]): r for r in json.loads(paired.read_text())["rows"]}
    assert len(again) == len(results["against_default"])
    for c in results["against_default"]:
        r = again[c["fold"], c["model"], c["seed"]]
        assert (r["difference"], r["low"], r["high"], r["real"]) == (
            round(100 * c["difference"], 2), round(100 * c["low"], 2), round(100 * c["high"], 2), c["real"])
    # the largest confusions: every wrong output of the default and the reference, counted
    confusions = list(csv.DictReader((out / "confusions.csv").open()))
    assert {r["model"] for r in confusions} <= {"default", "tfidf"}
    for fold in folds:
        for model in ("default", "tfidf"):
            rows = [r for r in confusions if (r["fold"], r["model"]) == (fold, model)]
            wrong = pred.filter(pc.and_(pc.and_(pc.equal(pred["fold"], fold), pc.equal(pred["model"], model)),
                                        pc.equal(pred["seed"], 0)))
            n_wrong = int(pc.sum(pc.not_equal(wrong["category_id"], wrong["true_category_id"])).as_py() or 0)
            assert sum(int(r["products"]) for r in rows) == n_wrong, (fold, model)
    if confusions:
        assert "## Largest confusions" in md
    for name in ("hf_by_model.png", "per_category_f1_in_platform.png", "confusion_level0_lopo_beta.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG", name


def test_a_lopo_fold_reads_nothing_of_its_platform_before_its_test(ray_session, catalogue, tmp_path):
    """Every step a fold's models take (component fits, held-out predictions, weight choices,
    early stopping, calibration) reads rows of the training platforms only; the in-platform fold
    never reads a test-split row before its test."""
    root, products, _ = catalogue
    platform = dict(zip(products["product_id"].to_pylist(), products["platform"].to_pylist()))
    split = dict(zip(products["product_id"].to_pylist(), products["split"].to_pylist()))
    config = load_config(EvaluateConfig, None, _overrides(root, tmp_path / "eval") + [
        "plots=false", "references=[tfidf, tfidf-adapt]",
        "models={default: {}, early-text: {model.fusion: early, model.modalities: [text]}, "
        "self-train: {model.decision.self_train: {threshold: 0.5}}}"])
    with audit.recording() as reads:
        results = evaluate(config)
    fold, steps, tests, adapted = None, {}, {}, {}
    for r in reads:
        if r.step.startswith("begin:"):
            fold = r.step.split(":", 1)[1]
        elif r.step.startswith("test:"):
            tests[fold] = set(r.product_ids)
        elif r.step.startswith("adapt:"):     # prior adapt, self-training: the test products' inputs
            adapted.setdefault(fold, []).append(set(r.product_ids))
        else:
            steps.setdefault(fold, []).append(r)
    # adapt reads every test product of the fold (never a label), also those whose category the
    # fold's label space lacks: with gamma held out, its mugs
    assert set(adapted) == set(tests)
    for name, reads_ in adapted.items():
        for ids in reads_:
            assert ids >= tests[name]
            if name.startswith("lopo_"):                # LOPO scores every split but val
                assert {platform[p] for p in ids} == {name[5:]} and "val" not in {split[p] for p in ids}
            else:
                assert {split[p] for p in ids} == {"test"}
    assert len(adapted["lopo_gamma"][0]) > len(tests["lopo_gamma"])
    rows = [r for r in results["results"] if r["model"] == "tfidf-adapt"]
    assert rows and all(r["combiner"]["prior"] == "adapt" and r["combiner"]["adapted_on"] >= r["n"] for r in rows)
    # self-training adapts the same way: a self_trained component fitted on those products' inputs
    rows = [r for r in results["results"] if r["model"] == "self-train"]
    trained = [r["combiner"]["self_trained"] for r in rows if r["combiner"]["self_trained"]]
    assert len(rows) == 4 and trained and all(t["adapted_on"] >= t["fitted_on"] > 0 for t in trained)
    # scope new_platforms (the default): in-platform, the test products are of the training platforms
    assert [r["fold"] for r in rows if r["combiner"]["self_trained"] is None] == ["in_platform"]
    assert all(r["combiner"]["weights"].get("self_trained") == 1.0 for r in rows if r["combiner"]["self_trained"])
    assert set(steps) == {"in_platform", "lopo_alpha", "lopo_beta", "lopo_gamma"}
    kinds = {r.step.split("@")[0].split(":")[0] for rs in steps.values() for r in rs}
    assert {"fit", "predict", "heldout", "calibrate", "early_stopping"} <= kinds
    for name, fold_reads in steps.items():
        read = {p for r in fold_reads for p in r.product_ids}
        assert read, name
        if name.startswith("lopo_"):
            assert {platform[p] for p in read} == {"alpha", "beta", "gamma"} - {name[5:]}, name
        else:
            assert "test" not in {split[p] for p in read}


def test_a_validation_pair_adapts_to_its_whole_scored_platform_never_its_test_split(ray_session, catalogue, tmp_path):
    """With ``adapt_pool: platform`` (the default), a model that self-trains on a transfer_val pair
    A → B reads the inputs of every product of B but its test split (as a leave-one-platform-out
    fold reads its whole held-out platform), and is scored on B's val split only; it never reads a
    row of another platform, and the in-platform validation fold adapts to nothing new."""
    root, products, _ = catalogue
    platform = dict(zip(products["product_id"].to_pylist(), products["platform"].to_pylist()))
    split = dict(zip(products["product_id"].to_pylist(), products["split"].to_pylist()))
    config = load_config(EvaluateConfig, None, _overrides(root, tmp_path / "eval") + [
        "plots=false", "references=[]", "protocols=[in_platform_val, transfer_val]", "predictions=false",
        "models={self-train: {model.decision.self_train: {threshold: 0.5}}}"])
    with audit.recording() as reads:
        results = evaluate(config)
    fold, adapted, tests = None, {}, {}
    for r in reads:
        if r.step.startswith("begin:"):
            fold = r.step.split(":", 1)[1]
        elif r.step.startswith("adapt:"):
            adapted[fold] = set(r.product_ids)
        elif r.step.startswith("test:"):
            tests[fold] = set(r.product_ids)
    pairs = [f for f in adapted if f.startswith("val_")]
    assert len(pairs) == 6
    for name in pairs:
        scored = name.split("_to_")[1]
        assert {platform[p] for p in adapted[name]} == {scored}
        assert {split[p] for p in adapted[name]} == {"train", "val", "calib"}
        assert adapted[name] == {p for p, q in platform.items() if q == scored and split[p] != "test"}
        assert {split[p] for p in tests[name]} == {"val"} and tests[name] < adapted[name]
    rows = {r["fold"]: r for r in results["results"]}
    for name in pairs:
        assert rows[name]["combiner"]["self_trained"]["adapted_on"] == len(adapted[name])
    assert rows["in_platform_val"]["combiner"]["self_trained"] is None


def test_cli_evaluate_in_platform_only(ray_session, catalogue, tmp_path, capsys):
    root, _, _ = catalogue
    args = ["evaluate", "--output", str(tmp_path / "cli"), "--set", "protocols=[in_platform]",
            "--set", "references=[]", "--set", "models={image: {model.modalities: [image]}}"]
    assert main(args + [a for o in _overrides(root, tmp_path / "x") if not o.startswith(
        ("output=", "models=")) for a in ("--set", o)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1].startswith("[evaluate] highest hF in in_platform: image ")
    results = json.loads((tmp_path / "cli" / "results.json").read_text())["results"]
    assert len(results) == 1 and results[0]["model"] == "image"
    assert (tmp_path / "cli" / "report.md").exists()
    # merging two evaluation folders (e.g. in-platform and LOPO run apart) into one report
    assert main(["evaluate", "--merge", str(tmp_path / "cli"), str(tmp_path / "cli"),
                 "--output", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "results.json").read_text())
    assert len(merged["results"]) == 1 and (tmp_path / "merged" / "hf_by_model.png").exists()
    # another seed run apart merges beside seed 0: a row per seed, the report names both seeds
    assert main(args[:2] + [str(tmp_path / "cli1")] + args[3:] + ["--set", "seeds=[1]"] + [
        a for o in _overrides(root, tmp_path / "x") if not o.startswith(("output=", "models="))
        for a in ("--set", o)]) == 0
    assert main(["evaluate", "--merge", str(tmp_path / "cli"), str(tmp_path / "cli1"),
                 "--output", str(tmp_path / "seeds")]) == 0
    merged = json.loads((tmp_path / "seeds" / "results.json").read_text())
    assert sorted(r["seed"] for r in merged["results"]) == [0, 1] and merged["seeds"] == [0, 1]
    assert "Seeds 0, 1" in (tmp_path / "seeds" / "report.md").read_text()
    assert len((tmp_path / "seeds" / "results.csv").read_text().strip().splitlines()) == 3


def test_grid_cells_cover_every_combination():
    config = load_config(EvaluateConfig, str(Path(__file__).resolve().parents[3] / "configs" / "evaluate.grid.yaml"))
    cells = grid_cells(config)
    assert len(cells) == 18 and len({c["name"] for c in cells}) == 18
    assert {tuple(c["modalities"]) for c in cells} == {("text",), ("image",), ("text", "image")}


def test_a_lopo_fold_fine_tunes_its_own_text_encoder_without_its_platform(ray_session, catalogue, tmp_path):
    """finetune.config: the fold's models read ``ft_text`` from a tiny BERT fine-tuned on the
    fold's training platforms only; the fine-tuning reads nothing of the held-out platform. With
    finetune.nested, each training platform Q's cross-platform held-out set reads ``ft_text``
    from one more fine-tuning that never read Q either."""
    from tests.fixtures.models import build_tiny_bert

    root, products, _ = catalogue
    bert = build_tiny_bert(tmp_path / "bert")
    platform = dict(zip(products["product_id"].to_pylist(), products["platform"].to_pylist()))
    repo = Path(__file__).resolve().parents[3]
    extra = [
        "protocols=[lopo]", "lopo_platforms=[gamma]", "references=[tfidf]", "plots=false",
        "models={default-ft: {model.modalities: [ft_text, lexical]}}",
        f"finetune.config={repo}/configs/finetune.default.yaml",
        "finetune.overrides={encoder.weights: " + str(bert) + ", encoder.max_tokens: 32, "
        "encoder.num_cpus: 0.5, encoder.batch_size: 16, encoder.pool_size: 1, optim.epochs: 1, "
        "optim.batch_size: 16, data.max_train_products: 60, scaling.cpus_per_worker: 1, "
        "scaling.torch_threads: 1}", "finetune.nested=true", "save_models=[default-ft]"]
    config = load_config(EvaluateConfig, None, _overrides(root, tmp_path / "eval") + extra)
    with audit.recording() as reads:
        results = evaluate(config)
    fold = results["folds"][0]
    assert fold["fold"] == "lopo_gamma" and fold["finetune"]["train_products"] == 60
    tuned = [r for r in reads if r.step == "finetune@lopo_gamma"]
    assert len(tuned) == 1 and {platform[p] for p in tuned[0].product_ids} == {"alpha", "beta"}
    # nested: one fine-tuning per training platform, without it; its held-out set reads that one
    from prodcat.embed.store import read_store

    assert [i["without"] for i in fold["finetune"]["inner"]] == ["alpha", "beta"]
    for q, other in (("alpha", "beta"), ("beta", "alpha")):
        inner = [r for r in reads if r.step == f"finetune@lopo_gamma-without-{q}"]
        assert len(inner) == 1 and {platform[p] for p in inner[0].product_ids} == {other}
        folder = next(i["folder"] for i in fold["finetune"]["inner"] if i["without"] == q)
        assert folder.startswith(f"{other}-seed0-")
        stored, _ = read_store(str(tmp_path / f"eval/finetune/{folder}/embeddings"), ["product_id"])
        set_reads = {p for r in reads if r.step.endswith(f"@cross_platform:{q}") for p in r.product_ids}
        assert set_reads and set_reads <= set(stored["product_id"].to_pylist())
        predicted = {p for r in reads if r.step == f"predict:ft_text@cross_platform:{q}" for p in r.product_ids}
        assert {platform[p] for p in predicted} == {q}
        # scored on products the fold's encoder learnt (its own never read them), none its own learnt
        assert predicted & set(tuned[0].product_ids) and not predicted & set(inner[0].product_ids)
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## Fine-tuned text encoders" in report and "held-out set of beta" in report
    # embedded with the fold's encoder: exactly the rows its models read (training subsamples,
    # validation and calibration splits, test rows), not every row of the fold
    from prodcat.embed.store import read_store

    own = fold["finetune"]["folder"]
    assert own.startswith("alpha+beta-seed0-") and not fold["finetune"]["reused"]
    # relocatable: the record names the encoder inside the fine-tuning root, no path of this machine
    assert fold["finetune"]["encoder"] == f"{own}/encoder"
    assert str(tmp_path) not in json.dumps(json.loads((tmp_path / "eval" / "results.json").read_text())["folds"])
    stored, _ = read_store(str(tmp_path / f"eval/finetune/{own}/embeddings"), ["product_id"])
    embedded = set(stored["product_id"].to_pylist())
    read = {p for r in reads if not r.step.startswith(("finetune@", "begin:")) for p in r.product_ids}
    assert embedded == read and fold["finetune"]["embedded"] == len(read)
    assert len(read) < fold["finetune"]["fold_rows"]
    # the in-platform choice never scores the fine-tuned component on products its encoder learnt
    # (the tfidf reference, which does not read ft_text, may choose on them)
    scored = {p for r in reads if r.step.startswith("predict:ft_text@in_platform") for p in r.product_ids}
    assert scored and not scored & set(tuned[0].product_ids)
    row = next(r for r in results["results"] if r["model"] == "default-ft")
    # the default's self-training reads the fine-tuned text where the model reads no text or image
    assert set(row["combiner"]["weights"]) == {"ft_text", "lexical", "self_trained"} and 0.0 <= row["hF"] <= 1.0
    # it adapts to the fold's whole scored pool, covered by the label space or not, as a frozen
    # model does: those products get the fine-tuned feature too (before stop 60 only the covered
    # test products had it, so a fine-tuned model self-trained on fewer products than a frozen one)
    adapted = {p for r in reads if r.step == "adapt:lopo_gamma" for p in r.product_ids}
    assert len(adapted) > fold["n_test"] and adapted <= embedded
    assert row["combiner"]["self_trained"]["adapted_on"] == len(adapted)
    # its saved checkpoint names the fold's encoder as the one of its ft_text, so a later reader
    # holding another encoder's vectors (the run's store: `prodcat onboard measure`) can tell
    from prodcat.score.features import checkpoint_fingerprints

    saved = checkpoint_fingerprints(str(tmp_path / "eval" / "runs" / "lopo_gamma" / "default-ft-seed0" / "model"))
    assert saved["ft_text"] == fold["finetune"]["fingerprint"]
    assert (tmp_path / "eval" / "finetune" / own / "encoder" / "model.safetensors").exists()
    # a second evaluation given the first's encoders (finetune.cache) fine-tunes nothing: each
    # encoder (same platforms, seed, settings) is reused, its vectors read, the scores the same
    again = evaluate(load_config(EvaluateConfig, None, _overrides(root, tmp_path / "again") + extra + [
        f"finetune.cache={tmp_path / 'eval' / 'finetune'}"]))
    tuned2 = again["folds"][0]["finetune"]
    assert tuned2["reused"] and all(i["reused"] for i in tuned2["inner"])
    assert [tuned2["fingerprint"]] + [i["fingerprint"] for i in tuned2["inner"]] == \
        [fold["finetune"]["fingerprint"]] + [i["fingerprint"] for i in fold["finetune"]["inner"]]
    assert tuned2["embedded"] == fold["finetune"]["embedded"]
    assert not (tmp_path / "again" / "finetune").exists()
    assert [r["hF"] for r in again["results"]] == [r["hF"] for r in results["results"]]
    assert "(reused)" in (tmp_path / "again" / "report.md").read_text()
    # finetune.per_seed (the default): each seed fine-tunes its own encoder on its own training
    # subsample; seed 0's is the cached one, seed 1's is new
    with audit.recording() as seeded_reads:
        seeded = evaluate(load_config(EvaluateConfig, None, _overrides(root, tmp_path / "seeds") + extra + [
            f"finetune.cache={tmp_path / 'eval' / 'finetune'}", "finetune.nested=false", "seeds=[0, 1]"]))
    per_seed = seeded["folds"][0]["finetune_seeds"]
    assert [t["seed"] for t in per_seed] == [0, 1] and per_seed[0]["reused"] and not per_seed[1]["reused"]
    assert per_seed[0]["fingerprint"] == fold["finetune"]["fingerprint"] != per_seed[1]["fingerprint"]
    assert per_seed[1]["folder"].startswith("alpha+beta-seed1-")
    subsamples = [set(r.product_ids) for r in seeded_reads if r.step == "finetune@lopo_gamma"]
    assert len(subsamples) == 2 and subsamples[0] != subsamples[1]
    assert {platform[p] for s in subsamples for p in s} == {"alpha", "beta"}
    assert sorted(r["seed"] for r in seeded["results"] if r["model"] == "default-ft") == [0, 1]
    assert "| lopo_gamma | lopo_gamma | 1 |" in (tmp_path / "seeds" / "report.md").read_text()

