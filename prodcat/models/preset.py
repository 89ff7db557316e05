"""Named model presets: the default model (and any other) written once, loaded by name.

A preset is a YAML file in ``prodcat/models/presets/`` (``<name>.yaml``; shipped with the
package) or anywhere else (a path ending in ``.yaml``)::

    description: one line saying what the model is
    model: {fusion: linear, modalities: [text, image, lexical], ...}   # ModelConfig fields
    lexical: {min_df: 2, ...}          # optional: LexicalConfig fields (the lexical feature)

A training config names one in its ``model`` section, other fields beside it override the
preset's (``model: {preset: default, modalities: [text, lexical]}``); a ``model`` section without
``preset`` (``--set model.fusion=early`` alone, or a dotted override of a dumped config) starts
from ``default`` too, and ``TrainConfig()`` is the default model. ``preset: null`` starts from
:class:`ModelConfig`'s own field defaults instead (a grid that sets every field it varies).
:func:`apply_preset` does this for :class:`prodcat.train.config.TrainConfig`;
``tests/unit/models/test_preset.py`` loads every preset.
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from prodcat.core.config import ConfigError, StrictModel, read_mapping
from prodcat.models.config import ModelConfig
from prodcat.models.lexical import LexicalConfig

PRESET_DIR = Path(__file__).parent / "presets"
DEFAULT_PRESET = "default"


class ModelPreset(StrictModel):
    """A named set of :class:`ModelConfig` fields, plus the lexical feature's settings if needed."""

    description: str = Field(description="what the model is, one line")
    model: dict[str, Any] = Field(description="ModelConfig fields (the rest keep their defaults)")
    lexical: dict[str, Any] = Field({}, description="LexicalConfig fields; {}: its defaults")

    def to_model_config(self) -> ModelConfig:
        """The preset's :class:`ModelConfig` (validated)."""
        return ModelConfig(**self.model)


def preset_names() -> list[str]:
    """Names of the presets shipped in ``prodcat/models/presets/``."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str) -> ModelPreset:
    """The preset ``name`` (shipped) or at a path ending in ``.yaml``, validated.

    Raises:
        ConfigError: an unknown name (the message lists the shipped ones), or a preset whose
            fields ModelConfig or LexicalConfig reject (the message names the preset).
    """
    return _load(str(name)).model_copy(deep=True)


@lru_cache(maxsize=None)
def _load(name: str) -> ModelPreset:
    path = Path(name) if name.endswith((".yaml", ".yml")) else PRESET_DIR / f"{name}.yaml"
    if not path.exists():
        raise ConfigError(f"unknown model preset {name!r}; presets: {', '.join(preset_names())} "
                          "(or a path to a preset .yaml)")
    try:
        preset = ModelPreset.model_validate(read_mapping(path))
        preset.to_model_config()
        LexicalConfig(**preset.lexical)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '<root>'}: {e['msg']}"
                             for e in err.errors())
        raise ConfigError(f"model preset {str(path)!r} is invalid ({err.title}: {problems})") from None
    return preset


def apply_preset(data: Any) -> Any:
    """A training config's fields (``dict``) with the preset of its ``model`` section applied.

    ``model`` missing or a dict: the preset it names (``preset`` key; ``default`` when absent)
    under the fields given, and the preset's ``lexical`` settings under ``data["lexical"]``.
    ``preset: null`` or a :class:`ModelConfig` instance: left as given. Anything else is
    returned unchanged (pydantic then says what is wrong).

    Raises:
        ConfigError: an unknown or invalid preset.
    """
    if not isinstance(data, dict):
        return data
    model = data.get("model", {})
    if not isinstance(model, dict):
        return data
    model = dict(model)
    name = model.pop("preset", DEFAULT_PRESET)
    if name is None:
        return {**data, "model": model}
    preset = load_preset(name)
    out = {**data, "model": {**copy.deepcopy(preset.model), **model}}
    lexical = data.get("lexical", {})
    if isinstance(lexical, dict):
        out["lexical"] = {**copy.deepcopy(preset.lexical), **lexical}
    return out
