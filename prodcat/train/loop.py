"""The per-worker training loop (Ray Train ``train_loop_per_worker``): one epoch at a time.

Each epoch: a pass over the worker's shard of the training rows (Ray Data torch batches),
validation on the whole validation split (loss, hF and the other hierarchical metrics, path
consistency), a checkpoint in the contract's format (safetensors + JSON, plus optimizer and loop
state, so a restarted worker group resumes exactly) and ``ray.train.report``. Rank 0 also puts
the epoch's headline figures on the driver's progress queue when there is one.

Letters: B batch, D_f dimension of feature f, L levels.
"""

from __future__ import annotations

import json
import os
import resource
import tempfile
import time
from typing import Any

import numpy as np

from prodcat.core import storage
from prodcat.core.metrics import hierarchical_metrics
from prodcat.core.taxonomy import Taxonomy
from prodcat.models import hierarchical_loss
from prodcat.models.checkpoint import (
    TRAIN_STATE,
    WEIGHTS,
    build_model,
    load_optimizer_state,
    predict_batch,
    save_checkpoint,
)
from prodcat.train.config import TrainConfig
from prodcat.train.features import NODE, PRESENT_PREFIX, TARGETS, TENSOR_PREFIX


# ---------------------------------------------------------------------------------- worker side
def _batch_inputs(batch: dict, features: list[str], device) -> tuple[dict, dict, Any]:
    """A Ray Data torch batch → ``(features {f: [B, D_f]}, present {f: [B]}, targets [B, L])``."""
    x = {f: batch[TENSOR_PREFIX + f].to(device) for f in features}
    present = {f: batch[PRESENT_PREFIX + f].to(device).bool() for f in features}
    return x, present, batch[TARGETS].to(device).long()


def run_epoch(model, optimizer, batches, features, device, level_weights=None) -> dict[str, float]:
    """One pass over ``batches``; returns the mean of each loss term (``train_<term>``)."""

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
    metrics = hierarchical_metrics(taxonomy, np.concatenate(true_nodes),
                                   np.concatenate([o["node"] for o in outs]),
                                   np.concatenate([o["classes"] for o in outs]))
    return {"val_loss": loss / count, **{f"val_{k}": float(v) for k, v in metrics.items()}}


def _restore(model, optimizer, checkpoint) -> dict:
    """Load weights, optimizer and loop state from a Ray checkpoint; returns the loop state."""
    from safetensors.torch import load

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

    config = TrainConfig.model_validate(loop_config["config"])
    taxonomy = Taxonomy.from_json(loop_config["taxonomy"])
    opt = config.optim
    if config.scaling.torch_threads:
        torch.set_num_threads(config.scaling.torch_threads)
    torch.manual_seed(opt.seed)
    model = build_model(config.model, taxonomy, loop_config["input_dims"],
                        loop_config.get("label_embeddings"))
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
    if loop_config.get("placement_group_log") and ray.train.get_context().get_world_rank() == 0:
        log_placement_group(loop_config["placement_group_log"])
    train_shard, val_shard = ray.train.get_dataset_shard("train"), ray.train.get_dataset_shard("val")
    for epoch in range(state["epoch"] + 1, opt.epochs):
        if state["stopped"]:
            break
        state = _one_epoch(epoch, model, optimizer, train_shard, val_shard, config, taxonomy,
                           state, loop_config, device)
    return state


def log_placement_group(uri: str) -> None:
    """Append the id (hex) of the placement group this worker runs in to the JSON list at ``uri``
    (one entry per worker-group start), so a Tune sweep can free exactly its own trials' groups
    (:mod:`prodcat.tune.cleanup`)."""
    from ray.util import get_current_placement_group

    group = get_current_placement_group()
    if group is None:
        return
    seen = json.loads(storage.read_text(uri)) if storage.exists(uri) else []
    storage.write_text(uri, json.dumps(seen + [group.id.hex()]))


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

    local_dir = loop_config.get("local_dir")
    kwargs = dict(model=model, model_config=config.model,
                  train_config=config.model_dump(mode="json"), taxonomy=taxonomy, input_dims=loop_config["input_dims"],
                  encoders=loop_config.get("encoders"), metrics=metrics, optimizer=optimizer,
                  train_state=state)
    if local_dir:  # local mode: Ray does not persist checkpoints, so keep them in the run folder
        folder = os.path.join(local_dir, f"epoch_{metrics['epoch']:04d}")
        save_checkpoint(folder, **kwargs)
        _prune_local(local_dir, keep={folder, os.path.join(local_dir, f"epoch_{state['best_epoch']:04d}")})
        _announce(loop_config, metrics)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))
        return
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    _announce(loop_config, metrics)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(folder, **kwargs)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


#: the per-epoch figures the driver prints (one line per epoch, see prodcat.train.trainer)
EPOCH_LINE_KEYS = ("epoch", "train_loss", "val_loss", "val_hF", "val_path_consistency",
                   "best_val_hF", "best_epoch", "epoch_seconds")


def _announce(loop_config: dict, metrics: dict) -> None:
    """Put this epoch's headline figures on the driver's progress queue, when there is one. A
    queue that is gone (its actor died with its node) costs the line, never the training run."""
    queue = loop_config.get("progress")
    if queue is not None:
        try:
            queue.put_nowait({k: metrics.get(k) for k in EPOCH_LINE_KEYS})
        except Exception:  # noqa: BLE001 - the driver's queue is gone: the epoch still counts
            pass


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
