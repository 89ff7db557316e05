"""The pieces of fine-tuning that need no Ray: the config's rules, which rows train, the
learning-rate schedule and each worker's share of an epoch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from prodcat.core import storage
from prodcat.core.config import ConfigError, load_config
from prodcat.core.paths import REPO_ROOT as REPO
from prodcat.train.finetune import run_identity, training_rows
from prodcat.train.finetune_config import FinetuneConfig
from prodcat.train.finetune_loop import epoch_batches, epoch_rows, lr_factor, steps_per_epoch
from tests.fixtures.synthetic import synthetic_products

pytestmark = pytest.mark.unit


def test_config_rules_are_explained():
    with pytest.raises(ConfigError, match="separate"):
        load_config(FinetuneConfig, None, ["encoder.text_fields=separate"])
    with pytest.raises(ConfigError, match="collide"):
        load_config(FinetuneConfig, None, ["feature_prefix=''"])
    config = load_config(FinetuneConfig, "configs/finetune.default.yaml")
    assert config.encoder.max_tokens == 64 and config.optim.epochs <= 2
    assert config.data.max_train_products and config.feature_prefix == "ft_"


def test_the_command_resolves_its_config(capsys):
    from prodcat.cli import main

    assert main(["finetune", "--config", "configs/finetune.default.yaml", "--show-config",
                 "--set", "optim.epochs=1", "--products", "x/products.parquet"]) == 0
    out = capsys.readouterr().out
    assert "epochs: 1" in out and "products: x/products.parquet" in out and "feature_prefix: ft_" in out


def test_training_rows_are_the_folds_training_split_subsampled_by_seed(tmp_path):
    products, _ = synthetic_products(300, platforms=("alpha", "beta", "gamma"))
    uri = str(tmp_path / "products.parquet")
    storage.write_table(products, uri)

    def rows(*extra):
        return training_rows(load_config(FinetuneConfig, None, [f"data.products={uri}", *extra]))

    fold = rows("data.platforms=[alpha,gamma]")
    chosen = set(fold["product_id"].to_pylist())
    table = products.to_pylist()
    assert chosen == {r["product_id"] for r in table
                      if r["platform"] in ("alpha", "gamma") and r["split"] == "train"}
    small = rows("data.platforms=[alpha,gamma]", "data.max_train_products=50")
    again = rows("data.platforms=[alpha,gamma]", "data.max_train_products=50")
    other = rows("data.platforms=[alpha,gamma]", "data.max_train_products=50", "data.sample_seed=1")
    assert small.num_rows == 50 and set(small["product_id"].to_pylist()) <= chosen
    assert small["product_id"].to_pylist() == again["product_id"].to_pylist()
    assert small["product_id"].to_pylist() != other["product_id"].to_pylist()
    counts = {}
    for c in small["category_id"].to_pylist():
        counts[c] = counts.get(c, 0) + 1
    big = rows("data.platforms=[alpha,gamma]", "data.max_train_products=50",
               f"data.min_products_per_label={sorted(counts.values())[len(counts) // 2]}")
    assert 0 < big.num_rows < 50
    with pytest.raises(ValueError, match="no training rows"):
        rows("data.platforms=[delta]")


def test_only_products_trains_on_another_fine_tunings_rows_less_a_platform(tmp_path):
    """The main job's nested encoders: the deployed encoder's training products (its
    encoder/trained_on.parquet) of the platforms left, and no new subsample."""
    products, _ = synthetic_products(300, platforms=("alpha", "beta", "gamma"))
    uri = str(tmp_path / "products.parquet")
    storage.write_table(products, uri)
    deployed = training_rows(load_config(FinetuneConfig, None, [
        f"data.products={uri}", "data.max_train_products=60"]))
    listed = str(tmp_path / "trained_on.parquet")
    storage.write_table(deployed.select(["product_id"]), listed)
    platform = {r["product_id"]: r["platform"] for r in products.to_pylist()}
    nested = training_rows(load_config(FinetuneConfig, None, [
        f"data.products={uri}", "data.max_train_products=60", "data.platforms=[alpha,gamma]",
        f"data.only_products={listed}"]))
    expected = [p for p in deployed["product_id"].to_pylist() if platform[p] != "beta"]
    assert 0 < len(expected) < 60 and nested["product_id"].to_pylist() == expected
    # the rows, not where their list lies, make the encoder (a moved list finds the same run)
    a = load_config(FinetuneConfig, None, [f"data.only_products={listed}"])
    b = load_config(FinetuneConfig, None, ["data.only_products=elsewhere/trained_on.parquet"])
    assert run_identity(a) == run_identity(b)
    storage.write_table(pa.table({"id": ["x"]}), str(tmp_path / "bad.parquet"))
    with pytest.raises(ValueError, match="no product_id column"):
        training_rows(load_config(FinetuneConfig, None, [
            f"data.products={uri}", f"data.only_products={tmp_path / 'bad.parquet'}"]))
    storage.write_table(pa.table({"product_id": ["nobody"]}), str(tmp_path / "none.parquet"))
    with pytest.raises(ValueError, match="among"):
        training_rows(load_config(FinetuneConfig, None, [
            f"data.products={uri}", f"data.only_products={tmp_path / 'none.parquet'}"]))


def test_learning_rate_warms_up_then_decays_to_zero():
    factors = [lr_factor(s, 100, 0.1) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(factors[9:], factors[10:])) and factors[-1] == pytest.approx(1 / 90)
    assert lr_factor(0, 10, 0.0) == 1.0


def test_each_worker_takes_an_equal_disjoint_share_of_one_seeded_permutation():
    shares = [epoch_rows(103, seed=4, epoch=2, rank=r, world=3) for r in range(3)]
    assert [len(s) for s in shares] == [34, 34, 34]
    merged = np.concatenate(shares)
    assert len(set(merged.tolist())) == 102 and merged.max() < 103
    assert np.array_equal(shares[1], epoch_rows(103, seed=4, epoch=2, rank=1, world=3))
    assert not np.array_equal(shares[0], epoch_rows(103, seed=4, epoch=3, rank=0, world=3))
    assert steps_per_epoch(103, 3, 8) == 5


def test_batches_of_similar_length_cover_the_share_once_and_pad_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 65, 500)
    plain = epoch_batches(lengths, 1, 0, 0, 2, 16, window=1)
    bucketed = epoch_batches(lengths, 1, 0, 0, 2, 16, window=8)
    share = epoch_rows(500, 1, 0, 0, 2)
    assert len(plain) == len(bucketed) == steps_per_epoch(500, 2, 16)
    assert sorted(np.concatenate(bucketed).tolist()) == sorted(share.tolist())
    assert np.array_equal(np.concatenate(plain), share)

    def padded(batches):
        return sum(lengths[b].max() * len(b) for b in batches)

    assert padded(bucketed) < 0.85 * padded(plain)
    again = epoch_batches(lengths, 1, 0, 0, 2, 16, window=8)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again))


def test_a_finished_fine_tuning_is_found_by_its_settings_wherever_its_folder_is(tmp_path, monkeypatch):
    """``finished``: a result is reused only for the same settings (not ``output``/``name``) on the
    same training rows, wherever the product table lies or however its path is written, and a
    copied folder points at its own encoder; ``encoder_key`` names one folder per distinct encoder."""
    import dataclasses
    import shutil

    from prodcat.evaluate.finetuning import encoder_key
    from prodcat.train.finetune import FinetuneResult, finished, training_digest, write_metadata

    products, _ = synthetic_products(120, platforms=("alpha", "beta", "gamma"))
    storage.write_table(products, str(tmp_path / "products.parquet"))
    monkeypatch.chdir(tmp_path)

    def config(output, *extra, products="products.parquet"):
        return load_config(FinetuneConfig, str(REPO / "configs/finetune.default.yaml"),
                           [f"output={output}", "data.platforms=[alpha, beta]", f"data.products={products}",
                            *extra])

    made = config(tmp_path / "a", "name=first")
    assert finished(made) is None                                   # nothing there yet
    encoder = str(tmp_path / "a" / "encoder")
    result = FinetuneResult(encoder=encoder, fingerprint="f" * 16,
                            encoder_config={**made.encoder.model_dump(mode="json"), "weights": encoder},
                            feature="ft_text", snippet=str(tmp_path / "a" / "encoder.yaml"), history=[],
                            products_per_s=30.0, seconds=300.0, train_products=6000, labels=12)
    write_metadata(made, result, {"key": "f" * 16}, {"labels": list(range(12))},
                   training_digest(training_rows(made)))
    found = finished(config(tmp_path / "a", "name=second"))         # another name: the same encoder
    assert found is not None and found.fingerprint == "f" * 16 and found.seconds == 300.0
    assert finished(config(tmp_path / "a", "optim.epochs=3")) is None          # other settings
    assert finished(config(tmp_path / "a", "data.platforms=[alpha]")) is None
    assert finished(config(tmp_path / "a", "data.sample_seed=1", "data.max_train_products=50")) is None
    absolute = config(tmp_path / "a", products=str(tmp_path / "products.parquet"))
    assert finished(absolute) is not None                           # the same table by another path
    shutil.copy(tmp_path / "products.parquet", tmp_path / "elsewhere.parquet")
    assert finished(config(tmp_path / "a", products="elsewhere.parquet")) is not None   # moved
    changed = products.set_column(products.schema.get_field_index("title"), "title",
                                  pa.array([f"{t} edited" for t in products["title"].to_pylist()]))
    storage.write_table(changed, str(tmp_path / "changed.parquet"))
    assert finished(config(tmp_path / "a", products="changed.parquet")) is None   # other rows
    shutil.copytree(tmp_path / "a", tmp_path / "moved")
    moved = finished(config(tmp_path / "moved"))
    assert moved.encoder == str(tmp_path / "moved" / "encoder")
    assert moved.encoder_config["weights"] == moved.encoder
    assert moved.snippet == str(tmp_path / "moved" / "encoder.yaml")

    old = config(tmp_path / "old")                                  # written before the digest:
    write_metadata(old, dataclasses.replace(result, encoder=str(tmp_path / "old" / "encoder"),
                                            snippet=str(tmp_path / "old" / "encoder.yaml")),
                   {"key": "f" * 16}, {"labels": list(range(12))})  # found by its path
    assert finished(config(tmp_path / "old")) is not None
    assert finished(config(tmp_path / "old", products="elsewhere.parquet")) is None

    key = encoder_key(made)
    assert key.startswith("alpha+beta-seed0-") and key == encoder_key(config(tmp_path / "b", "name=x"))
    assert key == encoder_key(absolute) == encoder_key(config(tmp_path / "b", products="elsewhere.parquet"))
    assert key != encoder_key(config(tmp_path / "a", products="changed.parquet"))
    assert key != encoder_key(config(tmp_path / "a", "data.sample_seed=1"))
    assert key != encoder_key(config(tmp_path / "a", "optim.epochs=3"))


def test_a_checkpoint_resumes_from_a_moved_table_and_not_from_an_edited_one(tmp_path, monkeypatch):
    """``resume_problem`` compares the training rows' digest, not the table's path: the checkpoint
    of a run resumes when the table is moved or named by another path, is refused when the rows
    changed or another setting did, and one written with ``data.products`` in its settings (before
    the digest) resumes only from that path."""
    import shutil

    from prodcat.train.finetune import training_digest
    from prodcat.train.finetune_loop import resume_problem, run_settings

    products, _ = synthetic_products(120, platforms=("alpha", "beta"))
    storage.write_table(products, str(tmp_path / "products.parquet"))
    shutil.copy(tmp_path / "products.parquet", tmp_path / "moved.parquet")
    changed = products.set_column(products.schema.get_field_index("title"), "title",
                                  pa.array([f"{t} edited" for t in products["title"].to_pylist()]))
    storage.write_table(changed, str(tmp_path / "changed.parquet"))
    monkeypatch.chdir(tmp_path)

    def head(table, *extra):
        config = load_config(FinetuneConfig, str(REPO / "configs/finetune.default.yaml"),
                             [f"output={tmp_path}/out", f"data.products={table}", *extra])
        settings = run_settings(config, training_digest(training_rows(config)))
        assert "data.products" not in settings and len(settings["data.training_rows"]) == 16
        return {"labels": [1, 2, 3], "settings": settings, "products": config.data.products}

    checkpoint = head("products.parquet")
    assert resume_problem(checkpoint, head("products.parquet")) is None
    assert resume_problem(checkpoint, head(str(tmp_path / "moved.parquet"))) is None     # moved
    assert resume_problem(checkpoint, head("products.parquet", "optim.epochs=5")) is None
    assert "data.training_rows" in resume_problem(checkpoint, head("changed.parquet"))   # edited
    assert "optim.lr" in resume_problem(checkpoint, head("products.parquet", "optim.lr=0.1"))
    assert "labels" in resume_problem(checkpoint, {**head("products.parquet"), "labels": [1, 2]})

    old = {"labels": [1, 2, 3], "settings": {                       # written before the digest
        **{k: v for k, v in checkpoint["settings"].items() if k != "data.training_rows"},
        "data.products": "products.parquet"}}
    assert resume_problem(old, head("products.parquet")) is None
    problem = resume_problem(old, head("moved.parquet"))
    assert "data.training_rows: 'the rows of products.parquet' then" in problem


def test_an_encoder_cached_under_an_earlier_key_is_reused(tmp_path, monkeypatch):
    """``earlier_encoder``: a cache folder named by an earlier ``encoder_key`` (same platforms and
    seed, another hash) holding a finished run of the same settings and rows is found; one of
    other rows, or of other platforms, is not."""
    from prodcat.evaluate.finetuning import earlier_encoder, encoder_key
    from prodcat.train.finetune import FinetuneResult, write_metadata

    products, _ = synthetic_products(120, platforms=("alpha", "beta", "gamma"))
    storage.write_table(products, str(tmp_path / "products.parquet"))
    monkeypatch.chdir(tmp_path)

    def config(*extra):
        return load_config(FinetuneConfig, str(REPO / "configs/finetune.default.yaml"),
                           ["data.platforms=[alpha, beta]", "data.products=products.parquet", *extra])

    def made_before_the_digest(folder, made):       # metadata as stop 33 wrote it: no digest
        made = made.model_copy(update={"output": str(folder)})
        encoder = str(folder / "encoder")
        result = FinetuneResult(encoder=encoder, fingerprint="e" * 16,
                                encoder_config={**made.encoder.model_dump(mode="json"), "weights": encoder},
                                feature="ft_text", snippet=str(folder / "encoder.yaml"), history=[],
                                products_per_s=30.0, seconds=300.0, train_products=60, labels=12)
        write_metadata(made, result, {"key": "e" * 16}, {"labels": list(range(12))})

    wanted = config()
    rows = training_rows(wanted)
    key = encoder_key(wanted, rows)
    root = tmp_path / "cache"
    assert earlier_encoder(str(root), key, wanted, rows) is None                 # no cache yet
    made_before_the_digest(root / "alpha+beta-seed0-0123abcd", wanted)
    made_before_the_digest(root / "alpha+beta-seed0-4567cdef", config("optim.epochs=3"))
    made_before_the_digest(root / "alpha-seed0-89abcdef", config("data.platforms=[alpha]"))
    found = earlier_encoder(str(root), key, wanted, rows)
    assert found is not None and found[0] == str(root / "alpha+beta-seed0-0123abcd")
    assert found[1].fingerprint == "e" * 16 and found[1].encoder == str(root / "alpha+beta-seed0-0123abcd/encoder")
    other = config("data.sample_seed=1", "data.max_train_products=50")            # other seed
    assert earlier_encoder(str(root), encoder_key(other), other, training_rows(other)) is None
    changed = products.set_column(products.schema.get_field_index("title"), "title",
                                  pa.array([f"{t} edited" for t in products["title"].to_pylist()]))
    storage.write_table(changed, str(tmp_path / "changed.parquet"))
    edited = config("data.products=changed.parquet")             # another path: old metadata
    assert earlier_encoder(str(root), encoder_key(edited), edited, training_rows(edited)) is None

    # metadata with the training rows' digest under a key of another format: found by its rows,
    # wherever the table lies, and not for edited rows at the same path
    from prodcat.train.finetune import training_digest

    digested = tmp_path / "digested"
    made = wanted.model_copy(update={"output": str(digested / "alpha+beta-seed0-feedbeef")})
    encoder = f"{made.output}/encoder"
    write_metadata(made, FinetuneResult(
        encoder=encoder, fingerprint="d" * 16, encoder_config={**made.encoder.model_dump(mode="json"),
                                                               "weights": encoder},
        feature="ft_text", snippet=f"{made.output}/encoder.yaml", history=[], products_per_s=30.0,
        seconds=300.0, train_products=60, labels=12), {"key": "d" * 16}, {"labels": list(range(12))},
        training_digest(rows))
    moved = config(f"data.products={tmp_path / 'products.parquet'}")
    found = earlier_encoder(str(digested), encoder_key(moved), moved, training_rows(moved))
    assert found is not None and found[1].fingerprint == "d" * 16
    storage.write_table(changed, str(tmp_path / "products.parquet"))               # edited in place
    assert earlier_encoder(str(digested), key, wanted, training_rows(wanted)) is None


def test_a_checkpoint_of_other_settings_stops_the_command_with_what_changed(tmp_path, capsys):
    """A rerun into an output whose checkpoint was made with other settings (here float32, before
    stop 56's bf16 config) stops before Ray Train starts: exit 2, the changed field, the
    checkpoint and the two ways on, no traceback."""
    import json

    from prodcat.cli import main
    from prodcat.core.errors import DataError
    from prodcat.train.finetune import (
        HEAD_META,
        CheckpointMismatch,
        run_settings,
        training_digest,
        with_absolute_paths,
    )

    assert issubclass(CheckpointMismatch, DataError) and issubclass(CheckpointMismatch, ValueError)
    products, _ = synthetic_products(120, platforms=("alpha", "beta"))
    storage.write_table(products, str(tmp_path / "products.parquet"))
    args = [f"output={tmp_path / 'out'}", f"data.products={tmp_path / 'products.parquet'}"]
    old = with_absolute_paths(load_config(FinetuneConfig, str(REPO / "configs/finetune.default.yaml"),
                                          args + ["optim.precision=fp32"]))
    checkpoint = tmp_path / "out" / "ray" / old.name / "checkpoint_2026-12-01_00-00-00.000000"
    checkpoint.mkdir(parents=True)
    (checkpoint / HEAD_META).write_text(json.dumps(
        {"labels": [1, 2], "settings": run_settings(old, training_digest(training_rows(old)))}))
    assert main(["finetune", "--config", str(REPO / "configs/finetune.default.yaml"),
                 "--products", str(tmp_path / "products.parquet"), "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "prodcat finetune: error: the checkpoint of this output + name was made with other settings" in err
    assert "optim.precision: 'fp32' then, 'bf16' now" in err and str(checkpoint) in err
    assert f"or remove {tmp_path / 'out'} to fine-tune there anew" in err and "Traceback" not in err
