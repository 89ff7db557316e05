"""Fine-tuning a text encoder on Ray Train, end to end with a tiny BERT built in the test (no hub):
the new encoder version (a folder transformers loads, its fingerprint, the config snippet), a
rerun that resumes, its feature added to an existing store beside the frozen one, a checkpoint
trained on that feature scoring raw products by fingerprint (and refusing other weights), and a
cascade exported with the weights. One fine-tuning run (resumed once) serves the module."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from prodcat.cli import main
from prodcat.core import storage
from prodcat.core.config import load_config
from prodcat.embed.encoders import TextEncoderConfig, build_encoder
from prodcat.embed.pipeline import EmbedConfig, run_embedding
from prodcat.embed.store import StoreMismatch, list_parts, read_manifest, read_store, read_vectors
from prodcat.train.finetune import FinetuneResult, finetune
from prodcat.train.finetune_config import FinetuneConfig
from tests.fixtures.models import build_tiny_bert
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tuned(ray_session, tmp_path_factory):
    """A tiny BERT fine-tuned on platforms alpha and beta of a 3-platform synthetic catalogue: one
    epoch, then ``prodcat finetune`` on the same output + name with two epochs (it resumes after
epoch 0)."""
    root = tmp_path_factory.mktemp("ft")
    base = build_tiny_bert(root / "bert")
    products, taxonomy = synthetic_products(240, platforms=("alpha", "beta", "gamma"))
    storage.write_table(products, str(root / "cat/products.parquet"))
    storage.write_text(str(root / "cat/taxonomy.json"), taxonomy.to_json())

    def overrides(epochs: int) -> list[str]:
        return [f"encoder.weights={base}", "encoder.max_tokens=32", "encoder.num_cpus=0.5",
                "encoder.batch_size=16", f"data.products={root}/cat/products.parquet",
                "data.platforms=[alpha,beta]", f"optim.epochs={epochs}", "optim.batch_size=16",
                "optim.lr=1e-3", "optim.head_lr=3e-2", "optim.warmup=0.0",
                "scaling.cpus_per_worker=1", "scaling.torch_threads=1"]

    def config(epochs: int) -> FinetuneConfig:
        return load_config(FinetuneConfig, None, overrides(epochs) + [f"output={root}/out"])

    lines: list[str] = []
    first = finetune(config(1), progress=lines.append)
    with pytest.raises(ValueError, match=r"optim.head_lr: 0.03 then, 0.01 now"):
        finetune(config(2).model_copy(update={"optim": config(2).optim.model_copy(
            update={"head_lr": 0.01})}), progress=None)       # not a resume of the same run
    # the command, with the same output + name: resumes the run for a second epoch
    assert main(["finetune", "--output", f"{root}/out",
                 *[a for o in overrides(2) for a in ("--set", o)]]) == 0
    result = FinetuneResult(**json.loads((root / "out/finetune_result.json").read_text()))
    again: list[str] = []           # finished with these settings: returned, no Ray Train run
    repeat = finetune(config(2), progress=again.append)
    return {"root": root, "base": base, "products": products, "first": first, "result": result,
            "lines": lines, "config": config(2), "repeat": repeat, "repeat_lines": again}


def test_fine_tuning_writes_a_new_encoder_version(tuned):
    from transformers import AutoModel, AutoTokenizer

    result, base, products = tuned["result"], tuned["base"], tuned["products"]
    folder = Path(result.encoder)
    model, tokenizer = AutoModel.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    assert type(model).__name__ == "BertModel" and tokenizer("red boots")["input_ids"]
    assert _sha(folder / "model.safetensors") != _sha(base / "model.safetensors")   # trained
    # the fingerprint prodcat computes when it loads the folder as a text encoder
    snippet = load_config(EmbedConfig, result.snippet)
    (name, encoder_config), = snippet.encoders.items()
    assert name == "text_ft" and encoder_config.feature_prefix == "ft_" and result.feature == "ft_text"
    encoder = build_encoder(encoder_config.model_copy(update={"device": "cpu"}))
    meta = json.loads((folder / "prodcat_encoder.json").read_text())
    assert encoder.fingerprint.key == result.fingerprint == meta["fingerprint"]["key"]
    assert meta["fingerprint"]["weights_sha256"] == _sha(folder / "model.safetensors")
    assert encoder.fingerprint.key != build_encoder(TextEncoderConfig(
        weights=str(base), max_tokens=32, device="cpu")).fingerprint.key
    # a fold sees only its training platforms' training rows
    platform, split = (products[c].to_numpy(zero_copy_only=False) for c in ("platform", "split"))
    assert result.train_products == int(np.sum(np.isin(platform, ["alpha", "beta"]) & (split == "train")))
    # ... and the encoder folder names them (a store that adds its feature keeps the list)
    learnt = pq.read_table(folder / "trained_on.parquet")["product_id"].to_pylist()
    ids = products["product_id"].to_numpy(zero_copy_only=False)
    assert sorted(learnt) == sorted(ids[np.isin(platform, ["alpha", "beta"]) & (split == "train")])
    # resumed: the rerun with the same output + name continued after epoch 0
    assert tuned["first"].resumed_after == [] and result.resumed_after == [0]
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.history[0] == tuned["first"].history[0]
    assert result.history[1]["train_loss"] < result.history[0]["train_loss"]
    assert result.products_per_s > 0
    assert any(line.startswith("[finetune] epoch 1/1: loss ") and "products/s" in line
               for line in tuned["lines"])
    # a third call with the same output and settings finds the finished run and trains nothing
    assert tuned["repeat"].fingerprint == result.fingerprint and tuned["repeat"].history == result.history
    assert len(tuned["repeat_lines"]) == 1 and "already finished" in tuned["repeat_lines"][0]


def test_the_fine_tuned_encoder_embeds_what_it_was_trained_to(tuned):
    """Drop-in: the text encoder's vectors of the folder are the training model's pooled,
    normalised vectors (same text, tokens, pooling, normalisation)."""
    import torch

    from prodcat.embed.encoders.inputs import combined_text
    from prodcat.train.finetune_loop import build_classifier

    result, products = tuned["result"], tuned["products"]
    texts = [combined_text(t, d) for t, d in zip(products["title"].to_pylist()[:12],
                                                 products["description"].to_pylist()[:12])]
    encoder = build_encoder(TextEncoderConfig.model_validate(
        {**result.encoder_config, "device": "cpu"}))
    model = build_classifier(result.encoder, result.labels, "mean", True).eval()
    ids, mask = encoder.inputs.tokenize(texts)
    with torch.no_grad():
        trained = model.embed(torch.from_numpy(ids).long(), torch.from_numpy(mask).long()).numpy()
    np.testing.assert_allclose(encoder.encode_texts(texts), trained, atol=1e-5)


@pytest.fixture(scope="module")
def store(tuned):
    """A store with the frozen base encoder's ``text``, then the fine-tuned ``ft_text`` added
    through the CLI (an interrupted run of 100 products, then the rest)."""
    root, base = tuned["root"], tuned["base"]
    frozen = EmbedConfig(products=f"{root}/cat/products.parquet", output=f"{root}/emb",
                         encoders={"text": TextEncoderConfig(weights=str(base), max_tokens=32,
                                                             batch_size=16, num_cpus=0.5)},
                         block_rows=64, write_rows=64, decode_num_cpus=0.25)
    run_embedding(frozen)
    parts = {p: _sha(Path(p)) for p in list_parts(frozen.output)}
    snippet = tuned["result"].snippet
    args = ["embed", "--config", snippet, "--products", frozen.products, "--output", frozen.output,
            "--set", "block_rows=64", "--set", "write_rows=64"]
    assert main(args + ["--limit", "100"]) == 0                 # "interrupted" after 100
    assert main(args) == 0                                       # the rerun embeds the rest
    return {"uri": frozen.output, "frozen_parts": parts, "frozen": frozen}


def test_embed_adds_the_fine_tuned_feature_to_an_existing_store(tuned, store, capsys):
    result, products = tuned["result"], tuned["products"]
    uri = store["uri"]
    assert {p: _sha(Path(p)) for p in store["frozen_parts"]} == store["frozen_parts"]  # untouched
    manifest = read_manifest(uri)
    assert list(manifest["features"]) == ["text", "ft_text"]
    assert manifest["features"]["ft_text"]["fingerprint"]["key"] == result.fingerprint
    assert manifest["features"]["ft_text"]["encoder"] == "text_ft"
    table, _ = read_store(uri)
    ids = table["product_id"].to_pylist()
    assert sorted(ids) == sorted(products["product_id"].to_pylist())   # each product once
    # the stored vectors are the encoder's, for the same product ids beside the frozen ones
    pids, x, present = read_vectors(uri, "ft_text", products["product_id"].to_pylist()[:10])
    encoder = build_encoder(TextEncoderConfig.model_validate({**result.encoder_config, "device": "cpu"}))
    rows = {k: products[k].to_pylist()[:10] for k in ("product_id", "title", "description")}
    np.testing.assert_allclose(x, encoder.encode(rows)["emb_ft_text"], atol=1e-5)
    assert present.all() and pids.tolist() == rows["product_id"]
    frozen_x = read_vectors(uri, "text", rows["product_id"])[1]
    assert not np.allclose(frozen_x, x, atol=1e-3)
    # nothing left: a rerun of both configs embeds nothing
    assert run_embedding(store["frozen"])["embedded"] == 0
    again = run_embedding(load_config(EmbedConfig, result.snippet, {
        "products": store["frozen"].products, "output": uri}))
    assert again["embedded"] == 0
    # --show names both features and how many products each holds
    capsys.readouterr()
    assert main(["embed", "--show", "--output", uri]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["features"]["ft_text"]["rows"] == shown["features"]["text"]["rows"] == len(ids)
    # the readers see the new feature
    from prodcat.train.features import load_feature_table

    features = load_feature_table(store["frozen"].products, uri, ["text", "ft_text"])
    assert features.features == ["text", "ft_text"] and features.dims["ft_text"] == 32
    assert len(features) == int(pc.sum(pc.is_valid(products["category_id"])).as_py())
    # the products the encoder learnt came with its feature, and --show counts them
    learnt = pq.read_table(Path(result.encoder) / "trained_on.parquet")["product_id"].to_pylist()
    assert list(features.trained_on) == ["ft_text"]
    assert sorted(features.trained_on["ft_text"].tolist()) == sorted(learnt)
    assert shown["features"]["ft_text"]["trained_on"] == len(learnt) == result.train_products
    assert "trained_on" not in shown["features"]["text"]


def test_the_products_the_fine_tuned_encoder_learnt_stay_out_of_choices_and_tests(tuned, store, tmp_path):
    """What the main job deploys: a decision-level model reading ft_text from the store never
    scores it on the products its encoder was trained on when it chooses; an evaluation fold whose
    held-out platform the encoder learnt is refused; both hold for a copy of the store elsewhere."""
    from prodcat.evaluate.folds import Fold, check_unlearnt
    from prodcat.models.config import DecisionSettings
    from prodcat.train.decision import heldout_sets
    from prodcat.train.features import load_feature_table

    moved = tmp_path / "moved"
    shutil.copytree(store["uri"], moved)                         # relocatable
    shutil.rmtree(Path(store["uri"]) / "trained_on")
    try:
        bare = load_feature_table(store["frozen"].products, store["uri"], ["text", "ft_text"])
    finally:
        shutil.copytree(moved / "trained_on", Path(store["uri"]) / "trained_on")
    table = load_feature_table(store["frozen"].products, str(moved), ["text", "ft_text"])
    learnt = set(table.trained_on["ft_text"].tolist())
    assert bare.trained_on == {} and learnt

    settings = DecisionSettings(heldout=["cross_platform", "in_platform"], heldout_per_platform=1000)

    def scored(t, features):
        sets = heldout_sets(t, t.rows(["train"]), settings, "val", 0, features)
        return {s.name: set(s.rows.column("product_id").tolist()) for s in sets}

    before = scored(bare, ["text", "ft_text"])          # the store without the list: they are scored
    assert any(ids & learnt for ids in before.values())
    after = scored(table, ["text", "ft_text"])
    assert not any(ids & learnt for ids in after.values())
    assert sum(map(len, after.values())) == sum(len(ids - learnt) for ids in before.values())
    assert scored(table, ["text"]) == before            # a model not reading ft_text: as before

    # prodcat train on the copied store (what the main job's stages run) says what it left out
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train

    lines: list[str] = []
    train(load_config(TrainConfig, None, [
        f"data.products={store['frozen'].products}", f"data.embeddings={moved}",
        "model.modalities=[text, ft_text]", "model.label_prior=none", "model.decision.lexical_grid=[]",
        f"output={tmp_path}/decision"]), progress=lines.append)
    n_learnt = int(table.seen_by(["ft_text"]).sum())
    assert any(f"never held out: the {n_learnt:,} products the ft_text encoder was fine-tuned on"
               in line for line in lines), lines

    # a fold that holds out a platform the encoder learnt is refused; one it never saw is not
    def fold(held: str, splits=("test",)) -> tuple[Fold, object]:
        others = [p for p in ("alpha", "beta", "gamma") if p != held]
        return Fold(f"lopo_{held}", "lopo", others, [held], None), table.rows(list(splits), [held])

    with pytest.raises(ValueError, match=r"lopo_alpha: the encoder of feature 'ft_text' was fine-tuned on \d+ products of alpha"):
        check_unlearnt(table, *fold("alpha"))                     # scores none of them, learnt alpha
    with pytest.raises(ValueError, match=r"fine-tuned on \d+ of the \d+ products it scores"):
        check_unlearnt(table, *fold("alpha", ("train", "test")))
    check_unlearnt(table, *fold("gamma"))
    check_unlearnt(table.with_features(["text"]), *fold("alpha"))


def test_prodcat_train_chooses_on_a_platform_with_an_encoder_fine_tuned_without_it(tuned, store, tmp_path):
    """data.variants (what the main job's --full passes): the cross-platform held-out set of beta
    reads ft_text from an encoder fine-tuned on alpha only, so it scores products the deployed
    encoder learnt (its own never read beta); a variant whose encoder learnt its platform is
    refused."""
    from prodcat.core import audit
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train

    root = tuned["root"]
    args = [a for o in [f"encoder.weights={tuned['base']}", "encoder.max_tokens=32", "encoder.num_cpus=0.5",
                        "encoder.batch_size=16", f"data.products={root}/cat/products.parquet",
                        "data.platforms=[alpha]", "optim.epochs=1", "optim.batch_size=16",
                        "scaling.cpus_per_worker=1", "scaling.torch_threads=1"] for a in ("--set", o)]
    assert main(["finetune", "--output", str(tmp_path / "without-beta"), *args]) == 0
    for folder, rows in (("emb", ["--splits", "train"]), ("beta-only", ["--platforms", "beta"])):
        assert main(["embed", "--config", str(tmp_path / "without-beta/encoder.yaml"), "--products",
                     f"{root}/cat/products.parquet", "--output", str(tmp_path / "without-beta" / folder),
                     *rows]) == 0                   # emb: what the main job embeds (--full)
    inner = set(pq.read_table(tmp_path / "without-beta/encoder/trained_on.parquet")["product_id"].to_pylist())
    outer = set(pq.read_table(Path(tuned["result"].encoder) / "trained_on.parquet")["product_id"].to_pylist())
    platform = dict(zip(tuned["products"]["product_id"].to_pylist(), tuned["products"]["platform"].to_pylist()))
    assert {platform[p] for p in inner} == {"alpha"}

    def run(variants: str, lines: list[str]):
        config = load_config(TrainConfig, None, [
            f"data.products={root}/cat/products.parquet", f"data.embeddings={store['uri']}",
            "model.modalities=[text, ft_text]", "model.label_prior=none", "model.decision.lexical_grid=[]",
            f"data.variants={variants}", f"output={tmp_path}/decision"])
        with audit.recording() as reads:
            train(config, progress=lines.append)
        return reads

    lines: list[str] = []
    reads = run("{ft_text: {beta: " + str(tmp_path / "without-beta/emb") + "}}", lines)
    predicted = {p for r in reads if r.step == "predict:ft_text@cross_platform:beta" for p in r.product_ids}
    assert {platform[p] for p in predicted} == {"beta"} and predicted & outer and not predicted & inner
    alpha = {p for r in reads if r.step == "predict:ft_text@cross_platform:alpha" for p in r.product_ids}
    assert not alpha & outer           # no variant for alpha: as before (it learnt all of them)
    assert any("the cross-platform sets of beta read ft_text from an encoder fine-tuned without "
               "their platform" in line for line in lines), lines
    with pytest.raises(ValueError, match=r"fine-tuned on \d+ products of alpha"):
        run("{ft_text: {alpha: " + str(tmp_path / "without-beta/emb") + "}}", [])
    # beta's products alone (stop 33's main job): the set's fit on alpha's rows has nothing to read
    with pytest.raises(ValueError, match=r"lacks \d+ of the \d+ training rows \(platforms alpha, gamma; .*--splits train"):
        run("{ft_text: {beta: " + str(tmp_path / "without-beta/beta-only") + "}}", [])


def test_a_checkpoint_on_the_fine_tuned_feature_scores_by_fingerprint(tuned, store, tmp_path):
    """Training records the encoder config + fingerprint of ft_text; the stage runner (Serve
    replicas, bulk scoring) loads those weights, refuses other weights at that path, and a cascade
    exported with --include-weights carries them."""
    from prodcat.cascade.bundle import export_cascade
    from prodcat.cascade.spec import CascadeSpec, read_cascade, write_cascade
    from prodcat.cascade.stage import StageRunner
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train

    result, root = tuned["result"], tuned["root"]
    config = load_config(TrainConfig, None, [
        f"data.products={root}/cat/products.parquet", f"data.embeddings={store['uri']}",
        "model.modalities=[ft_text]", "model.fusion=early", "model.label_prior=none", "model.hidden_dim=16",
        "optim.epochs=2", "optim.batch_size=32", "scaling.torch_threads=1",
        f"output={tmp_path}/train"])
    checkpoint = train(config, progress=None).checkpoint
    recorded = json.loads(Path(checkpoint, "config.json").read_text())["features"]["ft_text"]
    assert recorded["fingerprint"]["key"] == result.fingerprint
    assert recorded["config"]["weights"] == result.encoder

    products = tuned["products"]
    batch = {k: products[k].to_pylist()[:8] for k in ("product_id", "title", "description")}
    runner = StageRunner(checkpoint, "text", device="cpu")
    assert runner.info()["features"]["ft_text"]["fingerprint"] == result.fingerprint
    out = runner.predict_batch(batch, keep_features=["ft_text"])
    stored = read_vectors(store["uri"], "ft_text", batch["product_id"])[1]
    np.testing.assert_allclose(np.stack(out["emb_ft_text"]), stored, atol=1e-5)

    # --include-weights carries the fine-tuned weights; the bundle works without the original
    spec = CascadeSpec(checkpoint, checkpoint, threshold=0.5)
    bundle = tmp_path / "bundle"
    export_cascade(write_cascade(spec, str(tmp_path / "cascade")), str(bundle), include_weights=True,
                   log=lambda line: None)
    copied = bundle / "encoders" / f"text_ft-{result.fingerprint}"
    assert _sha(copied / "model.safetensors") == _sha(Path(result.encoder) / "model.safetensors")
    assert (copied / "tokenizer.json").exists() or (copied / "vocab.txt").exists()
    moved = Path(str(result.encoder) + ".away")
    shutil.move(result.encoder, moved)
    try:
        bundled = StageRunner(read_cascade(str(bundle)).text_model, "text", device="cpu")
        assert bundled.predict_batch(batch)["category_id"] == out["category_id"]
    finally:
        shutil.move(moved, result.encoder)

    # other weights at the encoder's path: refused, with the fingerprints named
    saved = Path(result.encoder) / "model.safetensors"
    original = saved.read_bytes()
    other = build_tiny_bert(tmp_path / "other", seed=7)
    try:
        shutil.copy(other / "model.safetensors", saved)
        with pytest.raises(StoreMismatch, match=f"expected {result.fingerprint}"):
            StageRunner(checkpoint, "text", device="cpu")
    finally:
        saved.write_bytes(original)


def test_fine_tuning_writes_its_encoder_to_s3(ray_session, s3_bucket, tmp_path):
    """Output on s3://: Ray Train's checkpoints, the encoder folder and its snippet all there; the
    encoder loads from the URI with the recorded fingerprint."""
    base = build_tiny_bert(tmp_path / "bert")
    products, _ = synthetic_products(60)
    storage.write_table(products, str(tmp_path / "products.parquet"))
    out = f"{s3_bucket}/ft"
    result = finetune(load_config(FinetuneConfig, None, [
        f"encoder.weights={base}", "encoder.max_tokens=16", f"data.products={tmp_path}/products.parquet",
        "optim.epochs=1", "optim.batch_size=16", "scaling.cpus_per_worker=1",
        "scaling.torch_threads=1", f"output={out}"]), progress=None)
    assert result.encoder == f"{out}/encoder" and result.snippet == f"{out}/encoder.yaml"
    for name in ("encoder/model.safetensors", "encoder/config.json", "encoder/prodcat_encoder.json",
                 "encoder.yaml", "head/head.safetensors", "finetune_result.json"):
        assert storage.exists(f"{out}/{name}"), name
    encoder = build_encoder(load_config(EmbedConfig, result.snippet).encoders["text_ft"].model_copy(
        update={"device": "cpu"}), cache_dir=tmp_path / "cache")
    assert encoder.fingerprint.key == result.fingerprint
