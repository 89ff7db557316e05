"""Every YAML file a user edits or deploys loads and validates against what reads it: configs/
(the typed configs), the model presets, tune/spaces/ (against their base config), serve/ (Ray
Serve's deploy schema and prodcat's AppArgs) and cluster/ (KubeRay's CRDs, strictly, and Ray's
cluster-launcher schema). A new YAML file in these folders needs a rule here."""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import yaml

from prodcat.core.paths import REPO_ROOT

pytestmark = pytest.mark.unit

FOLDERS = ("configs", "tune/spaces", "serve", "cluster", "prodcat/models/presets")


def _embed(path: Path, request) -> None:
    from prodcat.core.config import load_config
    from prodcat.embed.pipeline import EmbedConfig

    assert load_config(EmbedConfig, path).encoders


def _train(path: Path, request) -> None:
    from prodcat.core.config import load_config
    from prodcat.train.config import TrainConfig

    load_config(TrainConfig, path)


def _evaluate(path: Path, request) -> None:
    from prodcat.core.config import load_config
    from prodcat.evaluate.config import EvaluateConfig
    from prodcat.evaluate.folds import grid_cells

    assert grid_cells(load_config(EvaluateConfig, path))   # every named model's overrides apply


def _recategorize(path: Path, request) -> None:
    from prodcat.core.config import load_config
    from prodcat.recategorize.config import RecategorizeConfig

    load_config(RecategorizeConfig, path)


def _finetune(path: Path, request) -> None:
    from prodcat.core.config import load_config
    from prodcat.train.finetune_config import FinetuneConfig

    load_config(FinetuneConfig, path)


def _preset(path: Path, request) -> None:
    from prodcat.models.preset import load_preset

    load_preset(str(path))


def _space(path: Path, request) -> None:
    from prodcat.tune.sweep import build_spec

    request.getfixturevalue("monkeypatch").chdir(REPO_ROOT)   # base_config is repository-relative
    tmp = request.getfixturevalue("tmp_path")
    spec = build_spec(str(path), path.stem, str(tmp / "tune"))    # every value against the base
    assert spec.space.param_space()


def _serve(path: Path, request) -> None:
    from ray.serve.schema import ServeDeploySchema

    from prodcat.serve.schemas import AppArgs
    from prodcat.serve.settings import app_args

    data = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(data)
    AppArgs.model_validate(app_args(data, []))


def _kuberay(path: Path, request) -> None:
    from tests.fixtures.kuberay import manifest_errors

    request.getfixturevalue("shared")                          # the CRDs are in ../shared
    for doc in [d for d in yaml.safe_load_all(path.read_text()) if d]:
        assert manifest_errors(doc) == [], path.name


def _launcher(path: Path, request) -> None:
    import json

    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load(path.read_text())
    assert [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(config)] == []


RULES = {  # repository-relative glob → validator
    "configs/encoders.*.yaml": _embed,
    "configs/train.*.yaml": _train,
    "configs/evaluate.*.yaml": _evaluate,
    "configs/recategorize.*.yaml": _recategorize,
    "configs/finetune.*.yaml": _finetune,
    "prodcat/models/presets/*.yaml": _preset,
    "tune/spaces/*.yaml": _space,
    "serve/*.yaml": _serve,
    "cluster/ray-*.yaml": _kuberay,
    "cluster/cluster-launcher.*.yaml": _launcher,
}
FILES = sorted(p.relative_to(REPO_ROOT).as_posix() for folder in FOLDERS
               for p in (REPO_ROOT / folder).rglob("*") if p.suffix in (".yaml", ".yml"))


def _rules(name: str) -> list[str]:
    return [pattern for pattern in RULES if fnmatch.fnmatch(name, pattern)]


def test_every_yaml_file_has_exactly_one_validator():
    assert len(FILES) >= 20
    assert {name: _rules(name) for name in FILES if len(_rules(name)) != 1} == {}


@pytest.mark.parametrize("name", FILES)
def test_yaml_file_loads_and_validates(name, request):
    RULES[_rules(name)[0]](REPO_ROOT / name, request)


def test_a_bad_file_fails_with_the_field_named(tmp_path, request):
    from prodcat.core.config import ConfigError

    bad = tmp_path / "train.bad.yaml"
    bad.write_text((REPO_ROOT / "configs/train.default.yaml").read_text()
                   .replace("  lr: ", "  learning_rate: "))
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        _train(bad, request)
    space = tmp_path / "space.yaml"
    space.write_text("params: {model.fusoin: {choice: [late]}}\n")
    with pytest.raises(ConfigError, match="Did you mean 'model.fusion'"):
        _space(space, request)
