"""TrainConfig: dotted-name overrides (what Tune and --set use), validated. No Ray."""

from __future__ import annotations

import pytest

from prodcat.core.config import ConfigError, load_config
from prodcat.train.config import TrainConfig, apply_overrides

pytestmark = pytest.mark.unit


def test_train_config_overrides_by_dotted_name():
    base = TrainConfig()
    changed = apply_overrides(base, {"model.fusion": "attention", "optim.lr": 3e-4,
                                     "model.modalities": ["text", "lexical"], "data.platforms": ["hm"]})
    assert (changed.model.fusion, changed.optim.lr, changed.model.modalities) == (
        "attention", 3e-4, ["text", "lexical"])
    assert changed.data.platforms == ["hm"]
    assert base.model_dump() == TrainConfig().model_dump()  # the original is untouched
    with pytest.raises(ConfigError, match="optim"):
        apply_overrides(base, {"optim.lrr": 1.0})
    with pytest.raises(ConfigError, match="unknown fusion"):
        load_config(TrainConfig, None, ["model.fusion=nope"])
