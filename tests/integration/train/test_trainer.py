"""Ray Train end to end on a synthetic store (tiny dims): checkpoints every epoch, an injected
failure restarts the worker group from the last checkpoint, a rerun resumes, and the result equals
an uninterrupted run; S3 output; the CLI; and the default model on a slice of the real catalogues
embedded with the real encoders (built by the test from ../shared)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from prodcat.cli import main
from prodcat.core import storage
from prodcat.core.config import load_config
from prodcat.models.checkpoint import load_checkpoint
from prodcat.train.config import TrainConfig
from prodcat.train.trainer import train
from tests.fixtures.store import write_synthetic_store
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """A product table (3 platforms) + taxonomy + synthetic embedding store; returns overrides."""
    root = tmp_path_factory.mktemp("synth")
    products, taxonomy = synthetic_products(300, platforms=("alpha", "beta", "gamma"))
    storage.write_table(products, str(root / "cat" / "products.parquet"))
    storage.write_text(str(root / "cat" / "taxonomy.json"), taxonomy.to_json())
    write_synthetic_store(products, taxonomy, str(root / "emb"), dims={"text": 16, "image": 8})
    return [f"data.products={root}/cat/products.parquet", f"data.embeddings={root}/emb",
            "optim.batch_size=32", "optim.patience=10", "model.preset=null", "model.hidden_dim=16",
            "model.num_attention_heads=2", "scaling.torch_threads=1"]


def _config(overrides, output, *extra) -> TrainConfig:
    return load_config(TrainConfig, None, list(overrides) + [f"output={output}", *extra])


def test_checkpoints_fail_resume_on_s3_and_match_an_uninterrupted_run(
        ray_session, synthetic_data, s3_bucket, tmp_path, capsys):
    import pyarrow.fs as pafs

    out = f"{s3_bucket}/runs/t1"
    config = _config(synthetic_data, out, "optim.epochs=2", "scaling.num_workers=1",
                     "scaling.max_failures=1", "inject_failure_at_epoch=0")
    result = train(config)
    assert result.checkpoint == f"{out}/model"
    assert [h["epoch"] for h in result.history] == [0, 1]
    assert result.resumed_after == [0]  # the worker group restarted from epoch 0's checkpoint
    assert storage.exists(f"{out}/.injected_failure_train")
    fs, root = storage.filesystem(f"{out}/ray/train")
    ray_checkpoints = sorted(i.path for i in fs.get_file_info(pafs.FileSelector(root))
                             if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    assert 1 <= len(ray_checkpoints) <= config.keep_checkpoints
    for name in ("config.json", "taxonomy.json", "model.safetensors", "metrics.json",
                 "calibration.json", "optimizer.safetensors", "train_state.json"):
        assert storage.exists(f"s3://{ray_checkpoints[-1]}/{name}")
    assert result.metrics["val_hF"] == max(h["val_hF"] for h in result.history)
    assert result.seconds_per_epoch > 0 and result.peak_memory_mb > 0
    loaded = load_checkpoint(result.checkpoint)
    assert loaded.calibration["temperature"] == pytest.approx(result.temperature)
    rng = np.random.default_rng(0)
    pred = loaded.predict({"text": rng.normal(size=(4, 16)).astype(np.float32),
                           "image": np.zeros((4, 8), np.float32)}, {"image": np.zeros(4, bool)})
    assert pred["classes"].shape == (4, loaded.taxonomy.num_levels)

    # the same seed without the failure, in Ray Train's local mode: the same numbers
    plain = train(_config(synthetic_data, tmp_path / "plain", "optim.epochs=2", "scaling.num_workers=0"))
    for a, b in zip(result.history, plain.history):
        for key in ("train_loss", "val_loss", "val_hF"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key

    # the CLI with the same output and name resumes the finished run for one more epoch
    args = ["train", "--output", out, "--set", "optim.epochs=3", "--set", "scaling.num_workers=1"]
    capsys.readouterr()
    assert main(args + [a for o in synthetic_data for a in ("--set", o)]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert sum("[train] epoch " in line for line in printed) == 1    # one line per new epoch
    assert printed[-1].startswith("[train] best epoch") and printed[-1].endswith(f"{out}/model")
    summary = json.loads(storage.read_text(f"{out}/train_result.json"))
    assert summary["checkpoint"] == f"{out}/model" and len(summary["history"]) == 3
    assert summary["resumed_after"] == [0, 1]  # then the rerun resumed after epoch 1
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]


@pytest.fixture(scope="module")
def real_slice(tmp_path_factory, shared):
    """The first 200 records of each real export → a product table (prodcat.catalog.build) and an
    embedding store made with the real offline encoders (tests.fixtures.catalog)."""
    from tests.fixtures.catalog import real_catalogue, real_store

    root = tmp_path_factory.mktemp("real")
    products = real_catalogue(root, records=200)
    return products, real_store(products, str(root / "embeddings"))


def test_the_default_model_trains_on_a_real_data_slice(ray_session, real_slice, tmp_path):
    """TrainConfig() is the default model (decision-level fusion of the TF-IDF, text, image and
    label-name classifiers): fitted on real embeddings it learns, outputs valid paths, and its
    checkpoint names the real encoders' weights."""
    products, store = real_slice
    config = load_config(TrainConfig, None, [
        f"data.products={products}", f"data.embeddings={store}",
        "scaling.num_workers=0", "scaling.torch_threads=1", f"output={tmp_path}/real"])
    assert config.model == TrainConfig().model and config.model.fusion == "decision"
    result = train(config)
    assert 0.0 <= result.metrics["val_hF"] <= 1.0 and result.metrics["train_rows"] > 0
    assert set(result.metrics["components"].split(",")) <= {"lexical", "text", "image", "label"}
    loaded = load_checkpoint(result.checkpoint)
    candidates = loaded.selection["candidates"]
    chosen = loaded.selection["chosen"]         # candidate, decoding and label-prior correction
    kept = [c for c in candidates if all(c.get(k) == v for k, v in chosen.items())]
    assert len(kept) == 1 and kept[0]["hF"] == pytest.approx(result.metrics["heldout_hF"])
    if chosen["candidate"] == "equal":          # the paired rule: nothing ahead by a real difference
        ahead = [c for c in candidates if c["hF"] > kept[0]["hF"]]
        assert all(c["vs_equal"][1] <= 0 or not c["out_of_sample"] for c in ahead)
    manifest = json.loads(storage.read_text(f"{store}/manifest.json"))
    # every embedding component kept (a zero-weight one is dropped) names the store's encoder
    assert loaded.encoders and set(loaded.encoders) <= {"text", "image"}
    for feature, encoder in loaded.encoders.items():
        assert encoder["fingerprint"]["key"] == manifest["features"][feature]["fingerprint"]["key"]


def test_the_linear_preset_trains_epochs_on_a_real_data_slice(ray_session, real_slice, tmp_path):
    """The previous default (``model.preset=linear``: feature-level linear fusion, per-level heads,
    hard masking) trains epoch by epoch on the same slice: the loss falls and paths are valid."""
    products, store = real_slice
    config = load_config(TrainConfig, None, [
        f"data.products={products}", f"data.embeddings={store}", "model.preset=linear", "optim.epochs=3",
        "scaling.num_workers=0", "scaling.torch_threads=1", f"output={tmp_path}/linear"])
    assert config.model.fusion == "linear"
    result = train(config)
    assert len(result.history) == 3 and 0.0 <= result.metrics["val_hF"] <= 1.0
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.metrics["val_path_consistency"] > 0.99  # hard masking gives valid paths
    manifest = json.loads(storage.read_text(f"{store}/manifest.json"))
    encoders = load_checkpoint(result.checkpoint).encoders
    assert encoders["text"]["fingerprint"]["key"] == manifest["features"]["text"]["fingerprint"]["key"]
