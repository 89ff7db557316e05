"""Ray Train end to end on a synthetic store (tiny dims): checkpoints every epoch, an injected
failure restarts the worker group from the last checkpoint, a rerun resumes, and the result equals
an uninterrupted run; S3 output; the CLI; a real-data slice when the real store has been built."""

from __future__ import annotations

import json
from pathlib import Path

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

REAL = Path(__file__).resolve().parents[2] / "runs" / "main"


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


def _real_store_rows() -> int:
    if not (REAL / "embeddings" / "manifest.json").exists():
        return 0
    from prodcat.embed.store import read_store

    return read_store(str(REAL / "embeddings"), ["product_id"])[0].num_rows


@pytest.mark.skipif(_real_store_rows() < 2000,
                    reason="the real embedding store (runs/main/embeddings) is not built yet")
def test_short_run_on_a_real_data_slice(ray_session, tmp_path):
    config = load_config(TrainConfig, None, [
        f"data.products={REAL}/catalog/products.parquet", f"data.embeddings={REAL}/embeddings",
        "data.max_train_products=2000", "optim.epochs=2", "scaling.num_workers=0",
        "model.preset=null", "model.hidden_dim=32", f"output={tmp_path}/real"])
    result = train(config)
    assert len(result.history) == 2 and 0.0 <= result.metrics["val_hF"] <= 1.0
    assert result.metrics["val_path_consistency"] > 0.99  # hard masking gives valid paths
