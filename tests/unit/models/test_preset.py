"""Model presets: every shipped preset loads, the default model is written once and the code
default, the train, evaluate and main-job configs all resolve to it."""

from __future__ import annotations

import pytest

from prodcat.core.config import ConfigError, load_config
from prodcat.core.paths import REPO_ROOT
from prodcat.evaluate.config import EvaluateConfig
from prodcat.models.lexical import LexicalConfig
from prodcat.models.preset import DEFAULT_PRESET, apply_preset, load_preset, preset_names
from prodcat.train.config import TrainConfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_validates(name):
    preset = load_preset(name)
    assert preset.description.strip()
    config = load_config(TrainConfig, None, [f"model.preset={name}"])
    assert config.model == preset.to_model_config()
    assert config.lexical == LexicalConfig(**preset.lexical)


def test_the_code_default_is_the_default_preset():
    default = load_preset(DEFAULT_PRESET).to_model_config()
    assert TrainConfig().model == default
    assert EvaluateConfig().train.model == default


@pytest.mark.parametrize("path, key", [
    ("configs/train.default.yaml", None),
    ("configs/evaluate.default.yaml", "train"),
    ("configs/evaluate.full.yaml", "train"),
    ("configs/evaluate.selection-masking.yaml", "train"),
])
def test_the_shipped_configs_name_the_default_preset(path, key):
    from prodcat.core.config import read_mapping

    data = read_mapping(REPO_ROOT / path)
    assert (data[key] if key else data)["model"] == {"preset": DEFAULT_PRESET}
    config = load_config(EvaluateConfig if key else TrainConfig, REPO_ROOT / path)
    model = config.train.model if key else config.model
    assert model == TrainConfig().model


def test_fields_beside_the_preset_override_it_and_null_means_no_preset():
    over = load_config(TrainConfig, None, ["model.fusion=early", "lexical.min_df=5"])
    default = load_preset(DEFAULT_PRESET)
    assert over.model.fusion == "early"
    assert over.model.modalities == default.model["modalities"]       # the rest: the preset's
    assert over.lexical.min_df == 5
    bare = load_config(TrainConfig, None, ["model.preset=null"])
    assert bare.model.fusion != default.model["fusion"] or bare.model.lexical_prior is False
    assert bare.model.lexical_prior is False                          # ModelConfig's own default


def test_a_dumped_config_reloads_unchanged():
    """Checkpoints and Tune trials store the dumped config (no preset key): it must not change."""
    config = load_config(TrainConfig, None, ["model.fusion=attention", "model.dropout=0.3"])
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


def test_a_preset_from_a_file_and_the_errors(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("description: text only\nmodel: {fusion: early, modalities: [text]}\n"
                    "lexical: {ngram_max: 1}\n")
    config = load_config(TrainConfig, None, [f"model.preset={path}"])
    assert (config.model.fusion, config.model.modalities, config.lexical.ngram_max) == (
        "early", ["text"], 1)
    with pytest.raises(ConfigError, match="unknown model preset 'nope'; presets: default"):
        load_config(TrainConfig, None, ["model.preset=nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("description: a typo\nmodel: {fusoin: early}\n")
    with pytest.raises(ConfigError, match="bad.yaml.*fusoin"):
        load_preset(str(bad))
    assert apply_preset("not a mapping") == "not a mapping"
