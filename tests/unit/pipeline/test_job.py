"""The main job's orchestration (prodcat.pipeline.job) with a recording command instead of the real
subcommands: what the train stage runs, in order, with and without fine-tuning. No Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
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
            (out / "encoder").mkdir(exist_ok=True)
            pq.write_table(pa.table({"product_id": ["a:1", "b:1"]}), out / "encoder" / "trained_on.parquet")
        return 0

    catalog = tmp_path / "run" / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"product_id": ["a:1", "b:1", "c:1", "a:2"],
                             "platform": ["alpha", "beta", "gamma", "alpha"]}), catalog / "products.parquet")
    config = PipelineConfig(output=str(tmp_path / "run"), **settings)
    Pipeline(config, command, log=lambda _m: None).stage_train()
    return calls


def _modalities(argv: list[str]) -> list[str]:
    return json.loads(next(a.split("=", 1)[1] for a in argv if a.startswith("model.modalities=")))


def test_the_train_stage_fine_tunes_adds_the_feature_and_trains_both_stages_on_it(tmp_path):
    calls = _run_train(tmp_path, nested_finetune=False)
    assert [c[0] for c in calls] == ["finetune", "embed", "train", "train"]
    assert calls[1][calls[1].index("--config") + 1].endswith("finetune/encoder.yaml")
    assert calls[1][calls[1].index("--output") + 1].endswith("run/embeddings")   # the run's store
    assert _modalities(calls[2]) == ["text", "lexical", "ft_text"]
    assert _modalities(calls[3]) == ["text", "image", "lexical", "ft_text"]      # the preset's + ft
    assert "data.max_train_products=6000" not in calls[0]


def _set(argv: list[str], field: str):
    return next((json.loads(a.split("=", 1)[1]) for a in argv if a.startswith(f"{field}=")), None)


def test_full_size_fine_tunes_more_and_no_fine_tuning_trains_on_the_store_as_it_is(tmp_path):
    full = _run_train(tmp_path, full=True)
    assert "data.max_train_products=6000" in full[0] and "optim.epochs=2" in full[0]
    # nested by default, the sample (next test) as --full
    assert [c[0] for c in full] == ["finetune", "embed"] * 4 + ["train", "train"]
    assert all("data.max_train_products=6000" in c for c in full[2::2][:3])
    plain = _run_train(tmp_path / "plain", finetune=None)
    assert [c[0] for c in plain] == ["train", "train"]
    assert _modalities(plain[0]) == ["text", "lexical"]
    assert _modalities(plain[1]) == ["text", "image", "lexical"]


def test_nested_fine_tuning_gives_each_platforms_held_out_set_an_encoder_that_never_saw_it(tmp_path):
    """nested_finetune: one fine-tuning per platform Q on the deployed encoder's training products
    of the other platforms, the training split embedded
    into its own store, passed to both train commands as data.variants {ft_text: {Q: store}}."""
    calls = _run_train(tmp_path)                           # the default, the sample's too
    assert [c[0] for c in calls] == ["finetune", "embed"] * 4 + ["train", "train"]
    inner = {}
    for tune, embed in zip(calls[2:8:2], calls[3:8:2]):
        out = tune[tune.index("--output") + 1]
        q = out.rsplit("finetune-without-", 1)[1]
        inner[q] = _set(tune, "data.platforms")
        # among the deployed encoder's own training products (the same fine-tuning less q's)
        only = next(a.split("=", 1)[1] for a in tune if a.startswith("data.only_products="))
        assert only == str(tmp_path / "run" / "finetune" / "encoder" / "trained_on.parquet")
        assert embed[embed.index("--config") + 1] == f"{out}/encoder.yaml"
        assert embed[embed.index("--output") + 1] == f"{out}/embeddings"
        # the training split of every platform: q's held-out set fits on the others' training
        # rows and predicts q's (q's products alone left the fit without rows: stop 33)
        assert embed[embed.index("--splits") + 1] == "train" and "--platforms" not in embed
    assert inner == {"alpha": ["beta", "gamma"], "beta": ["alpha", "gamma"], "gamma": ["alpha", "beta"]}
    for train in calls[8:]:
        variants = _set(train, "data.variants")
        assert {q: Path(v).parent.name for q, v in variants["ft_text"].items()} == {
            q: f"finetune-without-{q}" for q in inner}
    # a deployed encoder without its list of training products: the nested step says so and stops
    (tmp_path / "run" / "finetune" / "encoder" / "trained_on.parquet").unlink()
    pipeline = Pipeline(PipelineConfig(output=str(tmp_path / "run")), lambda _argv: 0, log=lambda _m: None)
    with pytest.raises(RuntimeError, match="lists no training products"):
        pipeline._nested_finetune(["ft_text"])
    # a stage whose command fails (it printed its error): a DataError the CLI shows without a traceback
    from prodcat.core.errors import DataError

    failing = Pipeline(PipelineConfig(output=str(tmp_path / "run")), lambda _argv: 2, log=lambda _m: None)
    with pytest.raises(DataError, match=r"prodcat finetune exited with 2 \(its error is above\); the run "
                       r"folder's earlier stages are kept in .*run: mend what the error names and rerun, "
                       "or give a new --output"):
        failing._cli(["finetune", "--output", "x"])
    off = _run_train(tmp_path / "off", full=True, nested_finetune=False)
    assert [c[0] for c in off] == ["finetune", "embed", "train", "train"]
    assert _set(off[2], "data.variants") is None
