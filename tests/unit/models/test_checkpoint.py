"""Checkpoints (safetensors + JSON, local and S3) and temperature fitting. No Ray."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prodcat.core.config import load_config
from prodcat.models import HierarchicalClassifier
from prodcat.models.checkpoint import (
    CALIBRATION,
    CONFIG,
    METRICS,
    TAXONOMY,
    WEIGHTS,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
    weights_version,
    write_calibration,
)
from prodcat.train.config import TrainConfig
from tests.fixtures.synthetic import toy_taxonomy

pytestmark = pytest.mark.unit

DIMS = {"text": 12, "image": 6}


def _model(fusion: str = "late", masking: str = "hard", seed: int = 0):
    torch.manual_seed(seed)
    config = load_config(TrainConfig, None, ["model.preset=null", f"model.fusion={fusion}",
                                             f"model.masking={masking}", "model.hidden_dim=16",
                                             "model.num_attention_heads=2"])
    model = HierarchicalClassifier(config.model, toy_taxonomy(), DIMS).eval()
    return model, config


def _batch(n: int = 9, seed: int = 1):
    rng = np.random.default_rng(seed)
    feats = {f: rng.normal(size=(n, d)).astype(np.float32) for f, d in DIMS.items()}
    present = {"text": np.ones(n, bool), "image": np.arange(n) % 3 != 0}
    return feats, present


def _save(uri: str, model, config, **kwargs) -> str:
    return save_checkpoint(uri, model=model, model_config=config.model,
                           train_config=config.model_dump(mode="json"), taxonomy=toy_taxonomy(), input_dims=DIMS,
                           encoders={"text": {"fingerprint": {"key": "abc"}}}, **kwargs)


@pytest.mark.parametrize("fusion", ["early", "late", "attention"])
def test_round_trip_predicts_the_same(tmp_path, fusion):
    model, config = _model(fusion)
    uri = _save(str(tmp_path / "ckpt"), model, config, metrics={"val_hF": 0.5})
    loaded = load_checkpoint(uri)
    feats, present = _batch()
    out = loaded.predict(feats, present, temperature=1.0)
    t = {f: torch.as_tensor(v) for f, v in feats.items()}
    p = {f: torch.as_tensor(v) for f, v in present.items()}
    expected = model.predict(t, p)
    np.testing.assert_array_equal(out["classes"], expected.classes.numpy())
    np.testing.assert_array_equal(out["node"], expected.node.numpy())
    np.testing.assert_allclose(out["level_confidence"], expected.confidence.numpy(), rtol=1e-5)
    taxonomy = toy_taxonomy()
    assert out["category_id"].tolist() == [int(taxonomy.ids[n]) for n in out["node"]]
    assert out["category_path"].tolist() == [taxonomy.path(int(n)) for n in out["node"]]
    assert loaded.version == weights_version((tmp_path / "ckpt" / WEIGHTS).read_bytes())
    assert loaded.metrics == {"val_hF": 0.5}
    assert loaded.model_config.fusion == fusion
    assert loaded.encoders["text"]["fingerprint"]["key"] == "abc"
    assert loaded.taxonomy.to_json() == taxonomy.to_json()


def test_folder_holds_only_json_and_safetensors(tmp_path):
    model, config = _model()
    uri = _save(str(tmp_path / "ckpt"), model, config, optimizer=torch.optim.AdamW(model.parameters()),
                train_state={"epoch": 0})
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert {CONFIG, TAXONOMY, WEIGHTS, METRICS, CALIBRATION} <= set(names)
    assert all(n.endswith((".json", ".safetensors")) for n in names)
    cfg = json.loads((tmp_path / "ckpt" / CONFIG).read_text())
    assert cfg["input_dims"] == DIMS and cfg["model"]["fusion"] == "late"
    assert cfg["features"]["text"] == {"dim": 12, "fingerprint": {"key": "abc"}}
    assert load_checkpoint(uri).calibration == {"temperature": 1.0, "threshold": 0.5}


def test_version_changes_with_the_weights(tmp_path):
    a = load_checkpoint(_save(str(tmp_path / "a"), *_model(seed=0)))
    b = load_checkpoint(_save(str(tmp_path / "b"), *_model(seed=1)))
    c = load_checkpoint(_save(str(tmp_path / "c"), *_model(seed=0)))
    assert a.version != b.version and a.version == c.version and len(a.version) == 12


def test_temperature_changes_confidence_not_classes(tmp_path):
    uri = _save(str(tmp_path / "ckpt"), *_model())
    loaded = load_checkpoint(uri)
    feats, present = _batch()
    cold, hot = loaded.predict(feats, present, temperature=0.5), loaded.predict(feats, present, temperature=4.0)
    np.testing.assert_array_equal(cold["classes"], hot["classes"])
    top = cold["classes"][:, 0] >= 0
    assert (cold["level_confidence"][top, 0] >= hot["level_confidence"][top, 0]).all()
    write_calibration(uri, 4.0, 0.7)
    again = load_checkpoint(uri)
    assert again.calibration == {"temperature": 4.0, "threshold": 0.7}
    np.testing.assert_allclose(again.predict(feats, present)["level_confidence"], hot["level_confidence"])
    with pytest.raises(ValueError, match="temperature"):
        write_calibration(uri, 0.0, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        write_calibration(uri, 1.0, 1.5)


def test_absent_modality_rows_are_ignored(tmp_path):
    loaded = load_checkpoint(_save(str(tmp_path / "ckpt"), *_model()))
    feats, present = _batch()
    noisy = {**feats, "image": np.where(present["image"][:, None], feats["image"], 1e6).astype(np.float32)}
    np.testing.assert_array_equal(loaded.predict(noisy, present)["classes"],
                                  loaded.predict(feats, present)["classes"])


def test_predict_rejects_bad_inputs(tmp_path):
    loaded = load_checkpoint(_save(str(tmp_path / "ckpt"), *_model()))
    feats, present = _batch()
    with pytest.raises(KeyError, match="image"):
        loaded.predict({"text": feats["text"]}, present)
    with pytest.raises(ValueError, match=r"\[9, 6\]"):
        loaded.predict({**feats, "image": feats["image"][:, :3]}, present)


def test_load_rejects_foreign_or_mismatched_folders(tmp_path):
    uri = _save(str(tmp_path / "ckpt"), *_model())
    cfg = json.loads((tmp_path / "ckpt" / CONFIG).read_text())
    (tmp_path / "ckpt" / CONFIG).write_text(json.dumps({**cfg, "format": "other"}))
    with pytest.raises(ValueError, match="not a prodcat-checkpoint"):
        load_checkpoint(uri)
    (tmp_path / "ckpt" / CONFIG).write_text(json.dumps({**cfg, "input_dims": {"text": 12, "image": 7}}))
    with pytest.raises(ValueError, match="do not fit"):
        load_checkpoint(uri)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(str(tmp_path / "missing"))


def test_optimizer_state_round_trip(tmp_path):
    model, config = _model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    feats, present = _batch()
    x = {f: torch.as_tensor(v) for f, v in feats.items()}
    p = {f: torch.as_tensor(v) for f, v in present.items()}
    model.train()
    sum(z.clamp(min=-1e4).sum() for z in model(x, p)).backward()
    optimizer.step()
    uri = _save(str(tmp_path / "ckpt"), model, config, optimizer=optimizer)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.5)
    load_optimizer_state(fresh, uri)
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] == 0.01
    for index, state in a["state"].items():
        for name, value in state.items():
            torch.testing.assert_close(b["state"][index][name], value)


def test_s3_round_trip(s3_bucket):
    model, config = _model()
    uri = _save(f"{s3_bucket}/models/m1", model, config, metrics={"val_hF": 0.25})
    loaded = load_checkpoint(uri)
    feats, present = _batch()
    assert loaded.metrics["val_hF"] == 0.25 and loaded.uri == uri
    assert loaded.predict(feats, present)["node"].shape == (9,)
