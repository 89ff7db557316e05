"""The main job's orchestration (prodcat.pipeline.job) with a recording command instead of the real
subcommands: what the train stage runs, in order, with and without fine-tuning. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from prodcat.pipeline.job import Pipeline, PipelineConfig

pytestmark = pytest.mark.unit


def _run_train(tmp_path: Path, **settings) -> list[list[str]]:
    calls: list[list[str]] = []

    def command(argv: list[str]) -> int:
        calls.append(argv)
        if argv[0] == "finetune":            # what `prodcat finetune` leaves behind
            out = Path(argv[argv.index("--output") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "finetune_result.json").write_text(json.dumps({"feature": "ft_text"}))
        return 0

    config = PipelineConfig(output=str(tmp_path / "run"), **settings)
    Pipeline(config, command, log=lambda _m: None).stage_train()
    return calls


def _modalities(argv: list[str]) -> list[str]:
    return json.loads(next(a.split("=", 1)[1] for a in argv if a.startswith("model.modalities=")))


def test_the_train_stage_fine_tunes_adds_the_feature_and_trains_both_stages_on_it(tmp_path):
    calls = _run_train(tmp_path)
    assert [c[0] for c in calls] == ["finetune", "embed", "train", "train"]
    assert calls[1][calls[1].index("--config") + 1].endswith("finetune/encoder.yaml")
    assert calls[1][calls[1].index("--output") + 1].endswith("run/embeddings")   # the run's store
    assert _modalities(calls[2]) == ["text", "lexical", "ft_text"]
    assert _modalities(calls[3]) == ["text", "image", "lexical", "ft_text"]      # the preset's + ft
    assert "data.max_train_products=6000" not in calls[0]


def test_full_size_fine_tunes_more_and_no_fine_tuning_trains_on_the_store_as_it_is(tmp_path):
    full = _run_train(tmp_path, full=True)
    assert "data.max_train_products=6000" in full[0] and "optim.epochs=2" in full[0]
    plain = _run_train(tmp_path / "plain", finetune=None)
    assert [c[0] for c in plain] == ["train", "train"]
    assert _modalities(plain[0]) == ["text", "lexical"]
    assert _modalities(plain[1]) == ["text", "image", "lexical"]
