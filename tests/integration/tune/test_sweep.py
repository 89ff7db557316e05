"""Ray Tune sweeps (``tune/``): the space is checked before anything runs; a tiny sweep on a
synthetic store, on S3, is interrupted (SIGINT, like Ctrl+C), resumed with ``Tuner.restore``, and
writes the trial table, the plot and a best config that ``prodcat train`` reads unchanged."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml
from ray import tune as ray_tune

from prodcat.core import storage
from prodcat.core.config import ConfigError, load_config
from prodcat.core.paths import REPO_ROOT
from prodcat.train.config import TrainConfig, apply_overrides
from prodcat.tune.cli import main
from prodcat.tune.results import FILES
from prodcat.tune.space import SearchSpace
from prodcat.tune.sweep import SweepExists, build_spec, load_spec, run_sweep
from tests.fixtures.store import write_synthetic_store
from tests.fixtures.synthetic import synthetic_products

REPO = REPO_ROOT
SMOKE = str(REPO / "tune" / "spaces" / "smoke.yaml")
FUSION = str(REPO / "tune" / "spaces" / "fusion.yaml")


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    """A product table (toy taxonomy, 3 levels) and a tiny synthetic store; returns overrides."""
    root = tmp_path_factory.mktemp("tune_synth")
    products, taxonomy = synthetic_products(240, platforms=("alpha", "beta"))
    storage.write_table(products, str(root / "cat" / "products.parquet"))
    storage.write_text(str(root / "cat" / "taxonomy.json"), taxonomy.to_json())
    write_synthetic_store(products, taxonomy, str(root / "emb"), dims={"text": 16, "image": 8})
    return [f"data.products={root}/cat/products.parquet", f"data.embeddings={root}/emb"]


def _space(tmp_path: Path, params: dict, **extra) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({"params": params, **extra}))
    return str(path)


@pytest.mark.unit
def test_help_names_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--space", "--base-config", "--storage", "--name", "--resume", "--num-samples",
                 "--max-concurrent", "--cpus-per-trial", "--gpus-per-trial", "ray job submit"):
        assert flag in out


@pytest.mark.unit
@pytest.mark.parametrize("params, message", [
    ({"model.fusoin": {"choice": ["late"]}}, "Did you mean 'model.fusion'"),
    ({"optim.learning_rate": {"loguniform": [1e-4, 1e-2]}}, "optim.lr"),
    ({"model.fusion": {"choice": ["late", "latte"]}}, "'latte' is not accepted"),
    ({"model.dropout": {"uniform": [0.0, 1.5]}}, "value 1.5 is not accepted"),
    ({"model.fusion": {"grid": ["attention"]}, "model.hidden_dim": {"choice": [16, 18]}},
     "not divisible by num_attention_heads"),
    ({"scaling.num_workers": {"choice": [1, 2]}}, "set by the sweep"),
    ({"optim.lr": {"loguniform": [0, 1e-2]}}, "0 < low < high"),
    ({"optim.lr": 0.001}, "fixed values go under 'base:'"),
])
def test_a_bad_space_fails_before_the_sweep_starts(tmp_path, params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        build_spec(_space(tmp_path, params), "bad", str(tmp_path / "tune"),
                   base_overrides=["model.num_attention_heads=4"])
    assert not (tmp_path / "tune").exists()


@pytest.mark.unit
def test_shipped_spaces_validate_and_convert_to_tune_domains(tmp_path):
    spec = build_spec(FUSION, "fusion", str(tmp_path))
    space = spec.space.param_space()
    assert isinstance(space["model.fusion"], ray_tune.search.sample.Categorical)
    assert isinstance(space["optim.lr"], ray_tune.search.sample.Float)
    assert spec.settings.num_samples >= 24 and spec.settings.max_concurrent_trials <= 2
    smoke = SearchSpace.model_validate(yaml.safe_load(Path(SMOKE).read_text()))
    assert smoke.param_space()["model.fusion"] == {"grid_search": ["late", "attention"]}
    assert smoke.num_grid_points() == 2


@pytest.mark.unit
def test_dry_run_prints_the_resolved_sweep(tmp_path, capsys):
    assert main(["--space", SMOKE, "--storage", str(tmp_path), "--name", "s", "--num-samples", "3",
                 "--cpus-per-trial", "0.25", "--dry-run"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["trials"] == 6 and out["settings"]["cpus_per_trial"] == 0.25
    assert main(["--space", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2


def _read_csv(uri: str):
    import io

    import pandas as pd

    return pd.read_csv(io.StringIO(storage.read_text(uri)))


class InterruptOnce(ray_tune.Callback):
    """Sends this process SIGINT (Ctrl+C) at the first trial result, once (a marker file
    survives the pickled callback coming back with ``Tuner.restore``)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not os.path.exists(self.marker):
            Path(self.marker).write_text("interrupted\n")
            os.kill(os.getpid(), signal.SIGINT)


def _orphan_of_another_job(ray):
    """A placement group whose creator actor is dead: what another job's crashed trial leaves."""
    from ray.util.placement_group import placement_group

    @ray.remote(num_cpus=0)
    class Creator:
        def make(self):
            group = placement_group([{"CPU": 0.01}])
            ray.get(group.ready())
            return group.id.hex()

    creator = Creator.remote()
    group = ray.get(creator.make.remote())
    ray.kill(creator)
    return group


def _live_groups(ray) -> set[str]:
    from ray.util.placement_group import placement_group_table

    return {k for k, v in placement_group_table().items() if v["state"] != "REMOVED"}


@pytest.mark.integration
def test_sweep_on_s3_is_interrupted_resumed_and_reported(ray_session, synthetic_data, s3_bucket,
                                                         tmp_path):
    foreign = _orphan_of_another_job(ray_session)
    live_before = _live_groups(ray_session)
    assert foreign in live_before
    spec = build_spec(SMOKE, "smoke", f"{s3_bucket}/tune", base_overrides=synthetic_data)
    first = run_sweep(spec, callbacks=[InterruptOnce(str(tmp_path / "interrupted"))], verbose=0)
    assert (tmp_path / "interrupted").exists()
    assert first["interrupted"] and first["trials"] == 2
    started = _read_csv(first["files"]["trials.csv"])
    started = list(started["trial_id"][started["epochs"] >= 1])
    assert started  # the interrupt came after a trial's first epoch (and its checkpoint)
    with pytest.raises(SweepExists):
        run_sweep(spec, verbose=0)

    summary = run_sweep(spec, resume=True, verbose=0)
    assert summary["trials"] == 2 and not summary["interrupted"]
    # the sweep freed its own trials' placement groups and nothing else (the other job's stays)
    assert _live_groups(ray_session) == live_before
    assert [f["resumed"] for f in summary["fits"]] == [False, True]
    assert summary["wall_seconds"] == pytest.approx(sum(f["seconds"] for f in summary["fits"]))
    assert set(summary["stops"]) <= {"completed", "asha", "patience"}
    assert load_spec(spec.uri).space == spec.space
    for name in FILES:
        assert storage.exists(summary["files"][name]), name

    for trial_id in started:  # resumed from its epoch checkpoint, not restarted from scratch
        attempts = json.loads(storage.read_text(f"{spec.uri}/trials/{trial_id}/attempts.json"))
        assert [a["resume_from_epoch"] is not None for a in attempts] == [False, True]

    table = _read_csv(summary["files"]["trials.csv"])
    assert len(table) == 2 and list(table["rank"]) == [1, 2]
    assert table["best_val_hF"].is_monotonic_decreasing
    assert set(table["model.fusion"]) == {"late", "attention"}
    assert "| rank | trial_id | stop | best_val_hF" in storage.read_text(summary["files"]["trials.md"])
    assert storage.read_bytes(summary["files"]["trials.png"])[:4] == b"\x89PNG"

    best = summary["best"]
    assert best["trial_id"] == table["trial_id"][0] and best["best_val_hF"] == table["best_val_hF"][0]
    config = load_config(TrainConfig, summary["files"]["best_config.yaml"])  # as prodcat train does
    expected = apply_overrides(TrainConfig.model_validate(spec.base), {  # in a fresh run folder
        **best["params"], "output": f"{spec.uri}/best", "name": "train"})
    assert config == expected and config.model.fusion == best["params"]["model.fusion"]
    evaluate = yaml.safe_load(storage.read_text(summary["files"]["evaluate_best.yaml"]))
    assert evaluate["grid"]["fusions"] == [config.model.fusion]

    # the report can be rebuilt from storage alone (no Ray), keeping the wall-time record
    assert main(["--storage", f"{s3_bucket}/tune", "--name", "smoke", "--report"]) == 0
    again = json.loads(storage.read_text(summary["files"]["summary.json"]))
    assert again["fits"] == summary["fits"] and again["best"] == summary["best"]


def test_nested_cross_platform_objective(ray_session, synthetic_data, tmp_path, capsys):
    """objective: nested_lopo: each trial trains on one platform and scores the other's validation
    split, both ways; the sweep ranks trials by the mean (nested_hF), never by a test fold. The
    terminal gets prodcat's lines (a line per ended trial, progress, the best); Ray Tune's status
    tables go to the sweep's logs/tune.log."""
    space = _space(tmp_path, {"model.fusion": {"grid": ["early"]}},
                   base={"optim.epochs": 2, "optim.batch_size": 32, "model.preset": None,
                         "model.hidden_dim": 16,
                         "scaling.torch_threads": 1},
                   sweep={"objective": "nested_lopo", "num_samples": 1, "max_concurrent_trials": 1,
                          "cpus_per_trial": 0.5})
    spec = build_spec(space, "nested", str(tmp_path / "tune"), base_overrides=synthetic_data)
    assert spec.settings.metric == "nested_hF"
    summary = run_sweep(spec, verbose=1)
    table = _read_csv(summary["files"]["trials.csv"])
    best = summary["best"]
    assert len(table) == 1 and best["trial_id"] == table["trial_id"][0]
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith(f"[tune] trial 1/1 {best['trial_id']} early: nested hF ")
               and line.endswith(tuple("0123456789")) and ", done, " in line for line in out), out
    assert any(line.startswith("[tune] 1/1 trials ended (0 running)") and "best so far" in line
               for line in out), out
    assert not any("Trial status" in line for line in out), out
    assert "Trial status" in (tmp_path / "tune" / "nested" / "logs" / "tune.log").read_text()
    assert 0.0 < best["best_val_hF"] <= 1.0                       # the nested score, ranked on
    trial = tmp_path / "tune" / "nested" / "trials" / best["trial_id"]
    for pair in ("val_alpha_to_beta", "val_beta_to_alpha"):       # one model per ordered pair
        # <fold>/<model name>-seed<seed>/model/: the evaluation layout, one model named "model" per pair
        assert (trial / "runs" / pair / "model-seed0" / "model" / "model.safetensors").exists(), pair
