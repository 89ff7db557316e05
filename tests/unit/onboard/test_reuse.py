"""Which evaluation checkpoint `prodcat onboard measure` reuses for a fold. No Ray."""

from __future__ import annotations

import json

import pytest

from prodcat.onboard.config import MeasureConfig
from prodcat.onboard.measure import _reusable

pytestmark = pytest.mark.unit


def _checkpoint(root, fingerprints):
    model = root / "runs" / "lopo_hm" / "default-seed0" / "model"
    model.mkdir(parents=True)
    (model / "config.json").write_text(json.dumps(
        {"features": {f: {"fingerprint": {"key": k}} for f, k in fingerprints.items()}}))
    return str(model)


def test_a_checkpoint_whose_encoders_are_not_the_stores_is_not_reused(tmp_path):
    """An evaluation with per-fold fine-tuning saves checkpoints that read the fold's own
    ``ft_text``; the run's store holds the run encoder's, fine-tuned on every platform: such a
    checkpoint is passed over (a fold model is trained instead), saying why; one whose recorded
    encoders are the store's is reused."""
    config = MeasureConfig(products="p.parquet", embeddings="e", output="o", evaluation=str(tmp_path))
    store = {"features": {"text": {"fingerprint": {"key": "t"}}, "ft_text": {"fingerprint": {"key": "run"}}}}
    uri = _checkpoint(tmp_path, {"text": "t", "ft_text": "fold-hm"})
    said = []
    assert _reusable(config, "hm", store, said.append) is None
    assert said and "ft_text (encoder fold-hm) is not the store's" in said[0]
    store["features"]["ft_text"]["fingerprint"]["key"] = "fold-hm"
    assert _reusable(config, "hm", store, said.append) == uri and len(said) == 1
    assert _reusable(config, "myntra", store) is None                  # no checkpoint for that fold
