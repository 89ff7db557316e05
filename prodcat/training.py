"""Training: a Ray Train ``TorchTrainer`` over the embedding store, read through Ray Data.

``train(config)`` joins the store to the product table (:mod:`prodcat.features`), hands the train and
validation rows to Ray Data, and runs :func:`train_loop_per_worker` on ``scaling.num_workers``
workers. Each epoch the loop reports ``val_hF`` (and the other metrics below) with a checkpoint in
the contract's format (:mod:`prodcat.checkpoint`, safetensors + JSON) plus the optimizer and loop
state, so a failed worker group restarts from the last epoch (``FailureConfig``) and a new
``train()`` with the same ``output`` and ``name`` resumes the run. Early stopping watches
``val_hF``; the best checkpoint is copied to ``<output>/model`` and its softmax temperature is fit
on the validation split (``calibration.json``).

Reported metrics per epoch: ``epoch``, ``train_loss``, ``train_level<l>_loss``, ``val_loss``,
``val_hF``, ``val_hP``, ``val_hR``, ``val_accuracy``, ``val_level<l>_macro_f1``, ``val_path_consistency``,
``epoch_seconds`` (training pass, s), ``val_seconds`` (s), ``peak_rss_mb`` (worker's max RSS, MiB),
``best_val_hF``, ``best_epoch``.

Ray Tune reuses the loop through :func:`train` (or :func:`build_trainer`) inside a Tune function,
passing ``callbacks=[ray.tune.integration.ray_train.TuneReportCallback()]`` and a per-trial
``output``; a search space overrides config fields by dotted name (:func:`apply_overrides`).

Letters: B batch, D_f dimension of feature f, L levels.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import Field

from prodcat import storage
from prodcat.config import StrictModel, flatten_dotted, load_config
from prodcat.features import NODE, PRESENT_PREFIX, TARGETS, TENSOR_PREFIX, FeatureTable, load_feature_table
from prodcat.models import ModelConfig


class DataSettings(StrictModel):
    """Where the training data comes from and which rows and features are used."""

    products: str = Field("runs/main/catalog/products.parquet", description="product table (Parquet)")
    taxonomy: str | None = Field(None, description="taxonomy.json; default: beside the product table")
    embeddings: str = Field("runs/main/embeddings", description="embedding store folder")
    platforms: list[str] | None = Field(None, description="train/validate on these platforms; None: all")
    train_split: str = Field("train", description="split name of the training rows")
    val_split: str = Field("val", description="split name of the validation rows (early stopping)")
    max_train_products: int | None = Field(None, ge=1,
                                           description="random subsample of training rows (seeded)")


class OptimSettings(StrictModel):
    """Optimisation and stopping."""

    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-4, ge=0, description="AdamW weight decay")
    batch_size: int = Field(256, ge=1, description="per-worker batch size (products)")
    epochs: int = Field(20, ge=1, description="maximum number of epochs")
    patience: int = Field(3, ge=1, description="stop after this many epochs without a better val_hF")
    seed: int = Field(0, description="seeds model init, shuffling and dropout (per epoch)")
    shuffle_buffer: int = Field(20_000, ge=0, description="Ray Data local shuffle buffer (rows); 0: off")


class ScalingSettings(StrictModel):
    """Ray Train workers."""

    num_workers: int = Field(1, ge=0, description="training workers; 0: Ray Train local mode "
                             "(in the driver process, no fault tolerance)")
    use_gpu: bool = Field(False, description="one GPU per worker")
    cpus_per_worker: float = Field(0.5, gt=0, description="CPUs reserved per worker (fractions ok)")
    max_failures: int = Field(2, ge=-1, description="worker-group restarts from the last checkpoint")
    torch_threads: int | None = Field(None, ge=1, description="torch intra-op threads per worker")


class TrainConfig(StrictModel):
    """Everything a training run needs; Tune and ``--set`` override fields by dotted name."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="classifier (prodcat.models)")
    data: DataSettings = Field(default_factory=DataSettings)
    optim: OptimSettings = Field(default_factory=OptimSettings)
    scaling: ScalingSettings = Field(default_factory=ScalingSettings)
    output: str = Field("runs/train", description="run folder, local or s3://")
    name: str = Field("train", description="Ray Train run name; same output + name resumes")
    keep_checkpoints: int = Field(2, ge=1, description="epoch checkpoints kept (best by val_hF)")
    threshold: float = Field(0.5, ge=0, le=1,
                             description="cascade threshold written to calibration.json")
    inject_failure_at_epoch: int | None = Field(
        None, ge=0, description="fault drill: raise once, after checkpointing this epoch")


def apply_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A copy of ``config`` with dotted-name overrides (``{"model.fusion": "late"}``), validated.

    Raises:
        prodcat.config.ConfigError: on an unknown field or a bad value.
    """
    from prodcat.config import set_dotted

    data = config.model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    return load_config(TrainConfig, None, flatten_dotted(data))


@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        checkpoint: ``<output>/model``, the best epoch's checkpoint (calibrated).
        metrics: the best epoch's reported metrics.
        history: reported metrics of every epoch, in order.
        seconds_per_epoch: mean training-pass time per epoch (s, validation excluded).
        peak_memory_mb: the largest worker max-RSS reported (MiB).
        temperature: the fitted softmax temperature.
        wall_seconds: the whole call, data loading and calibration included (s).
        resumed_after: epochs after which the loop restarted from a checkpoint (a worker-group
            restart under ``FailureConfig``, or a rerun with the same output and name).
    """

    checkpoint: str
    metrics: dict
    history: list[dict]
    seconds_per_epoch: float
    peak_memory_mb: float
    temperature: float
    wall_seconds: float
    run_path: str = ""
    resumed_after: list[int] = field(default_factory=list)


# ---------------------------------------------------------------------------------- worker side
def _batch_inputs(batch: dict, features: list[str], device) -> tuple[dict, dict, Any]:
    """A Ray Data torch batch → ``(features {f: [B, D_f]}, present {f: [B]}, targets [B, L])``."""
    x = {f: batch[TENSOR_PREFIX + f].to(device) for f in features}
    present = {f: batch[PRESENT_PREFIX + f].to(device).bool() for f in features}
    return x, present, batch[TARGETS].to(device).long()


def score(taxonomy, true_nodes: np.ndarray, pred_nodes: np.ndarray,
          classes: np.ndarray | None = None) -> dict[str, float]:
    """Hierarchical metrics (``prodcat.metrics.evaluate_predictions``) of predicted nodes [B]
    against true label nodes [B]: ``hF``, ``hP``, ``hR``, ``accuracy``, ``level<l>_macro_f1``, ...,
    and ``path_consistency`` of ``classes`` [B, L] when given."""
    from prodcat.metrics import evaluate_predictions

    out = evaluate_predictions(taxonomy, true_nodes, pred_nodes, classes)
    return {k: float(v) for k, v in out.items()}


def run_epoch(model, optimizer, batches, features, device, level_weights=None) -> dict[str, float]:
    """One pass over ``batches``; returns the mean of each loss term (``train_<term>``)."""
    from prodcat.models import hierarchical_loss

    model.train()
    totals: dict[str, float] = {}
    count = 0
    for batch in batches:
        x, present, targets = _batch_inputs(batch, features, device)
        losses = hierarchical_loss(model(x, present, targets), targets, level_weights)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        optimizer.step()
        n = len(targets)
        count += n
        for key, value in losses.items():
            totals[key] = totals.get(key, 0.0) + float(value.detach()) * n
    return {f"train_{k}": v / max(count, 1) for k, v in totals.items()}


def validate(model, batches, features, device, taxonomy, level_weights=None) -> dict[str, float]:
    """Loss and hierarchical metrics over ``batches`` (``val_`` prefixed)."""
    import torch

    from prodcat.checkpoint import predict_batch
    from prodcat.models import hierarchical_loss

    model.eval()
    loss, count, true_nodes, outs = 0.0, 0, [], []
    with torch.no_grad():
        for batch in batches:
            x, present, targets = _batch_inputs(batch, features, device)
            loss += float(hierarchical_loss(model(x, present, targets), targets, level_weights)["loss"]) * len(targets)
            count += len(targets)
            outs.append(predict_batch(model, x, present))
            true_nodes.append(batch[NODE].cpu().numpy())
    if not count:
        raise ValueError("the validation split is empty; check data.val_split and data.platforms")
    metrics = score(taxonomy, np.concatenate(true_nodes), np.concatenate([o["node"] for o in outs]),
                    np.concatenate([o["classes"] for o in outs]))
    return {"val_loss": loss / count, **{f"val_{k}": v for k, v in metrics.items()}}


def _restore(model, optimizer, checkpoint) -> dict:
    """Load weights, optimizer and loop state from a Ray checkpoint; returns the loop state."""
    from safetensors.torch import load

    from prodcat.checkpoint import TRAIN_STATE, WEIGHTS, load_optimizer_state

    with checkpoint.as_directory() as folder:
        model.load_state_dict(load(storage.read_bytes(os.path.join(folder, WEIGHTS))))
        load_optimizer_state(optimizer, folder)
        return json.loads(storage.read_text(os.path.join(folder, TRAIN_STATE)))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB → MiB


def train_loop_per_worker(loop_config: dict) -> dict:
    """The per-worker training loop (Ray Train ``train_loop_per_worker``).

    Args:
        loop_config: ``{"config": TrainConfig JSON, "taxonomy": taxonomy JSON,
            "input_dims": {f: D_f}, "encoders": {f: manifest entry}, "local_dir": str | None}``
            as built by :func:`loop_config_for`. Datasets ``"train"`` (split across workers) and
            ``"val"`` (whole on every worker) come from ``ray.train.get_dataset_shard``.

    Returns:
        the final loop state (used in Ray Train local mode; workers' return values are ignored).
    """
    import ray.train
    import ray.train.torch
    import torch

    from prodcat.checkpoint import build_model
    from prodcat.taxonomy import Taxonomy

    config = TrainConfig.model_validate(loop_config["config"])
    taxonomy = Taxonomy.from_json(loop_config["taxonomy"])
    features, opt = config.model.modalities, config.optim
    if config.scaling.torch_threads:
        torch.set_num_threads(config.scaling.torch_threads)
    torch.manual_seed(opt.seed)
    model = build_model(config.model, taxonomy, loop_config["input_dims"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    state = {"epoch": -1, "best_val_hF": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [],
             "stopped": False, "resumed_after": []}
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:  # a restarted worker group, or a rerun with the same output + name
        state = _restore(model, optimizer, checkpoint)
        state["resumed_after"] = state.get("resumed_after", []) + [state["epoch"]]
    device = ray.train.torch.get_device()
    if config.scaling.num_workers > 0:  # DDP when > 1 worker; a missing modality leaves weights unused
        model = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True})
    else:
        model = model.to(device)
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(state["epoch"] + 1, opt.epochs):
        if state["stopped"]:
            break
        state = _one_epoch(epoch, model, optimizer, train_shard, val_shard, config, taxonomy,
                           state, loop_config, device)
    return state


def _one_epoch(epoch, model, optimizer, train_shard, val_shard, config, taxonomy, state,
               loop_config, device) -> dict:
    """Train, validate, checkpoint and report one epoch; returns the new loop state."""
    import torch

    opt, features = config.optim, config.model.modalities
    torch.manual_seed(opt.seed * 100_003 + epoch)  # dropout: same stream after a resume
    start = time.perf_counter()
    batches = train_shard.iter_torch_batches(
        batch_size=opt.batch_size, local_shuffle_buffer_size=opt.shuffle_buffer or None,
        local_shuffle_seed=opt.seed * 1_000 + epoch if opt.shuffle_buffer else None)
    metrics = run_epoch(model, optimizer, batches, features, device, config.model.level_weights)
    metrics["epoch_seconds"] = time.perf_counter() - start
    start = time.perf_counter()
    metrics.update(validate(model, val_shard.iter_torch_batches(batch_size=4096), features, device,
                            taxonomy, config.model.level_weights))
    metrics["val_seconds"] = time.perf_counter() - start
    if torch.cuda.is_available():
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    better = metrics["val_hF"] > state["best_val_hF"]
    state = {**state, "epoch": epoch,
             "best_val_hF": max(metrics["val_hF"], state["best_val_hF"]),
             "best_epoch": epoch if better else state["best_epoch"],
             "bad_epochs": 0 if better else state["bad_epochs"] + 1}
    state["stopped"] = state["bad_epochs"] >= opt.patience  # early stop; the epoch cap is the loop's
    metrics.update(epoch=epoch, peak_rss_mb=_peak_rss_mb(), best_val_hF=state["best_val_hF"],
                   best_epoch=state["best_epoch"])
    state["history"] = state["history"] + [metrics]
    _report(metrics, model, optimizer, config, taxonomy, state, loop_config)
    _maybe_fail(config, epoch)
    return state


def _report(metrics, model, optimizer, config, taxonomy, state, loop_config) -> None:
    """Report ``metrics`` with a checkpoint from rank 0 (every worker must call report)."""
    import ray.train

    from prodcat.checkpoint import save_checkpoint

    local_dir = loop_config.get("local_dir")
    kwargs = dict(model=model, config=config, taxonomy=taxonomy, input_dims=loop_config["input_dims"],
                  encoders=loop_config.get("encoders"), metrics=metrics, optimizer=optimizer,
                  train_state=state)
    if local_dir:  # local mode: Ray does not persist checkpoints, so keep them in the run folder
        folder = os.path.join(local_dir, f"epoch_{metrics['epoch']:04d}")
        save_checkpoint(folder, **kwargs)
        _prune_local(local_dir, keep={folder, os.path.join(local_dir, f"epoch_{state['best_epoch']:04d}")})
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        return
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, **kwargs)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _prune_local(local_dir: str, keep: set[str]) -> None:
    import shutil

    for name in os.listdir(local_dir):
        path = os.path.join(local_dir, name)
        if name.startswith("epoch_") and path not in keep:
            shutil.rmtree(path, ignore_errors=True)


def _maybe_fail(config: TrainConfig, epoch: int) -> None:
    """Fault drill: raise once (a marker file in ``output`` remembers it) after ``epoch``."""
    if config.inject_failure_at_epoch != epoch:
        return
    marker = storage.join(config.output, f".injected_failure_{config.name}")
    if storage.exists(marker):
        return
    storage.write_text(marker, f"failed after epoch {epoch}\n")
    raise RuntimeError(f"injected failure after epoch {epoch} (inject_failure_at_epoch)")


# ---------------------------------------------------------------------------------- driver side
def load_training_data(config: TrainConfig, table: FeatureTable | None = None) -> FeatureTable:
    """The joined feature table for ``config`` (``table`` reused when given: only its rows on
    ``data.platforms`` and the features in ``model.modalities`` are kept)."""
    if table is None:
        table = load_feature_table(config.data.products, config.data.embeddings,
                                   config.model.modalities, config.data.taxonomy)
    table = table.with_features(config.model.modalities)
    return table.rows(platforms=config.data.platforms)


def _train_rows(table: FeatureTable, config: TrainConfig) -> FeatureTable:
    rows = table.rows(splits=[config.data.train_split])
    cap = config.data.max_train_products
    if cap and len(rows) > cap:
        keep = np.zeros(len(rows), bool)
        keep[np.random.default_rng(config.optim.seed).permutation(len(rows))[:cap]] = True
        rows = rows.where(keep)
    if not len(rows):
        raise ValueError(f"no training rows (split {config.data.train_split!r}, platforms "
                         f"{config.data.platforms}); check the config")
    return rows


def loop_config_for(config: TrainConfig, table: FeatureTable, local_dir: str | None = None) -> dict:
    """The ``train_loop_config`` dict :func:`train_loop_per_worker` expects."""
    encoders = (table.manifest.get("features") or {}) if isinstance(table.manifest, dict) else {}
    return {"config": config.model_dump(mode="json"), "taxonomy": table.taxonomy.to_json(),
            "input_dims": dict(table.dims), "local_dir": local_dir,
            "encoders": {f: encoders[f] for f in table.features if f in encoders}}


def _storage(config: TrainConfig) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray's RunConfig."""
    if storage.is_remote(config.output):
        return config.output[len("s3://"):].rstrip("/") + "/ray", storage.s3_filesystem()
    return os.path.abspath(os.path.join(config.output, "ray")), None


def build_trainer(config: TrainConfig, table: FeatureTable | None = None, callbacks: list | None = None):
    """The ``TorchTrainer`` for ``config`` (call ``.fit()``); ``callbacks`` go to ``RunConfig``
    (e.g. Tune's ``TuneReportCallback``)."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    table = load_training_data(config, table)
    train_rows, val_rows = _train_rows(table, config), table.rows(splits=[config.data.val_split])
    datasets = {"train": ray.data.from_arrow(train_rows.tensor_table()),
                "val": ray.data.from_arrow(val_rows.tensor_table())}
    local_dir = None
    if config.scaling.num_workers == 0:
        if storage.is_remote(config.output):
            raise ValueError("scaling.num_workers=0 (local mode) needs a local output folder")
        local_dir = os.path.abspath(os.path.join(config.output, "checkpoints"))
        os.makedirs(local_dir, exist_ok=True)
    storage_path, filesystem = _storage(config)
    run_config = ray.train.RunConfig(
        name=config.name, storage_path=storage_path, storage_filesystem=filesystem,
        failure_config=ray.train.FailureConfig(max_failures=config.scaling.max_failures),
        checkpoint_config=ray.train.CheckpointConfig(
            num_to_keep=config.keep_checkpoints, checkpoint_score_attribute="val_hF",
            checkpoint_score_order="max"),
        callbacks=callbacks or None)
    return TorchTrainer(
        train_loop_per_worker, train_loop_config=loop_config_for(config, table, local_dir),
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.num_workers, use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": config.scaling.cpus_per_worker}),
        run_config=run_config, datasets=datasets,
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)))


def _best_checkpoint_uri(result, config: TrainConfig) -> tuple[str, dict]:
    """``(uri, loop state)`` of the best epoch, from a finished Ray Train ``Result``."""
    from prodcat.checkpoint import TRAIN_STATE

    if result.checkpoint is None:
        raise RuntimeError("training reported no checkpoint")
    last = result.checkpoint.path
    if config.scaling.num_workers == 0:
        state = json.loads(storage.read_text(os.path.join(last, TRAIN_STATE)))
        return os.path.join(os.path.dirname(last), f"epoch_{state['best_epoch']:04d}"), state
    base = f"s3://{last}" if storage.is_remote(config.output) else last
    state = json.loads(storage.read_text(storage.join(base, TRAIN_STATE)))
    best = result.get_best_checkpoint(metric="val_hF", mode="max") or result.checkpoint
    path = best.path
    return (f"s3://{path}" if storage.is_remote(config.output) else path), state


def train(config: TrainConfig, table: FeatureTable | None = None, callbacks: list | None = None,
          progress=print) -> TrainResult:
    """Run (or resume) a training run; returns the best checkpoint and the figures.

    Args:
        table: a preloaded feature table with at least ``model.modalities`` (saves re-reading the
            store when many runs share it, e.g. the evaluation grid or a Tune sweep).
        callbacks: Ray Train ``UserCallback`` s (Tune: ``TuneReportCallback()``).

    Raises:
        ray.train.TrainingFailedError: when workers fail more than ``scaling.max_failures`` times.
        ValueError: on empty training or validation rows.
    """
    from prodcat.runtime import ensure_ray

    ensure_ray()
    start = time.perf_counter()
    table = load_training_data(config, table)
    result = build_trainer(config, table, callbacks).fit()
    best_uri, state = _best_checkpoint_uri(result, config)
    export = storage.join(config.output, "model")
    from prodcat.checkpoint import copy_checkpoint

    copy_checkpoint(best_uri, export)
    temperature = calibrate(export, table.rows(splits=[config.data.val_split]), config.threshold)
    history = state["history"]
    best = next(h for h in history if h["epoch"] == state["best_epoch"])
    seconds = float(np.mean([h["epoch_seconds"] for h in history])) if history else float("nan")
    res = TrainResult(checkpoint=export, metrics=best, history=history, seconds_per_epoch=seconds,
                      peak_memory_mb=max((h["peak_rss_mb"] for h in history), default=0.0),
                      temperature=temperature, wall_seconds=time.perf_counter() - start,
                      run_path=str(result.path or ""),
                      resumed_after=list(state.get("resumed_after", [])))
    storage.write_text(storage.join(config.output, "train_result.json"), json.dumps(
        res.__dict__, indent=2, default=float))
    progress(f"[train] best epoch {state['best_epoch']} val_hF={best['val_hF']:.4f} "
             f"({len(history)} epochs, {seconds:.2f} s/epoch, peak {res.peak_memory_mb:.0f} MiB) "
             f"→ {export}")
    return res



def calibrate(checkpoint_uri: str, val: FeatureTable, threshold: float) -> float:
    """Fit the temperature on ``val`` and write ``calibration.json``; returns the temperature."""
    import torch

    from prodcat.cascade import fit_temperature
    from prodcat.checkpoint import load_checkpoint, write_calibration

    loaded = load_checkpoint(checkpoint_uri)
    feats, present, targets = val.arrays()
    with torch.no_grad():
        x = {f: torch.as_tensor(v) * torch.as_tensor(present[f])[:, None] for f, v in feats.items()}
        # teacher-forced masking: the true class is never masked out by a wrong predicted parent
        logits = loaded.model(x, {f: torch.as_tensor(v) for f, v in present.items()},
                              torch.as_tensor(targets), teacher_forcing=True)
    temperature = fit_temperature([z.float().numpy() for z in logits], targets) if len(targets) else 1.0
    write_calibration(checkpoint_uri, temperature, threshold)
    return temperature
