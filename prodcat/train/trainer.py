"""Training: a Ray Train ``TorchTrainer`` over the embedding store, read through Ray Data.

``train(config)`` joins the store to the product table (:mod:`prodcat.train.features`), hands the train and
validation rows to Ray Data, and runs :func:`train_loop_per_worker` on ``scaling.num_workers``
workers. Each epoch the loop reports ``val_hF`` (and the other metrics below) with a checkpoint in
the contract's format (:mod:`prodcat.models.checkpoint`, safetensors + JSON) plus the optimizer and loop
state, so a failed worker group restarts from the last epoch (``FailureConfig``) and a new
``train()`` with the same ``output`` and ``name`` resumes the run. Early stopping watches
``val_hF``; the best checkpoint is copied to ``<output>/model`` and its softmax temperature is fit
on the calibration split, on the logits the service computes (``calibration.json``,
:mod:`prodcat.train.calibration`).

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
import threading
import time
from typing import Any, Callable

import numpy as np

from prodcat.core import audit, storage
from prodcat.core.console import say
from prodcat.core.runtime import ensure_ray
from prodcat.models.checkpoint import TRAIN_STATE, copy_checkpoint, load_checkpoint, write_calibration
from prodcat.models.config import DECISION
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import LexicalScorer
from prodcat.train.calibration import Calibration, calibrate
from prodcat.train.config import (
    TrainConfig,
    run_prefix,  # noqa: F401  (re-exported)
)
from prodcat.train.features import (  # noqa: F401  (select_train_rows re-exported)
    FeatureTable,
    attach_variants,
    describe_counts,
    load_feature_table,
    select_train_rows,
)
from prodcat.train.labels import label_embeddings
from prodcat.train.lexical import fit_lexical
from prodcat.train.loop import train_loop_per_worker
from prodcat.train.result import TrainResult


# ---------------------------------------------------------------------------------- driver side
def load_training_data(config: TrainConfig, table: FeatureTable | None = None,
                       progress: Callable[[str], None] | None = None
                       ) -> tuple[FeatureTable, LexicalScorer | None]:
    """``(feature table, lexical model)`` for ``config``: ``table`` reused when given (only its
    rows on ``data.platforms`` and the features in ``model.modalities`` are kept); when the model
    reads the ``lexical`` feature and the table does not carry it yet, the TF-IDF + linear model
    is fitted on the training rows (out-of-fold scores for them, :mod:`prodcat.train.lexical`)
    and returned, else None."""
    if table is None:
        table = load_feature_table(config.data.products, config.data.embeddings,
                                   config.model.modalities, config.data.taxonomy,
                                   config.data.skip_unreadable)
    if LEXICAL in config.model.modalities and LEXICAL in table.features:
        return table.with_features(config.model.modalities).rows(platforms=config.data.platforms), None
    stored = [m for m in config.model.modalities if m != LEXICAL]
    table = table.with_features(stored).rows(platforms=config.data.platforms)
    if LEXICAL not in config.model.modalities:
        return table, None
    fitted_on = np.isin(table.column("product_id"), select_train_rows(table, config).column("product_id"))
    start = time.perf_counter()
    if progress:
        progress(f"{run_prefix(config)} lexical model: TF-IDF + linear, {config.lexical.folds}-fold "
                 f"out-of-fold scores for {int(fitted_on.sum()):,} training rows, then all rows ...")
    scorer, table = fit_lexical(table, fitted_on, config.lexical)
    if progress:
        progress(f"{run_prefix(config)} lexical model fitted ({scorer.dim} leaves, "
                 f"{time.perf_counter() - start:.0f} s)")
    return table, scorer


def loop_config_for(config: TrainConfig, table: FeatureTable, local_dir: str | None = None) -> dict:
    """The ``train_loop_config`` dict :func:`train_loop_per_worker` expects."""
    manifest = table.manifest if isinstance(table.manifest, dict) else {}
    encoders = manifest.get("features") or {}
    labels = label_embeddings(table.taxonomy, config.model, manifest)
    return {"config": config.model_dump(mode="json"), "taxonomy": table.taxonomy.to_json(),
            "input_dims": dict(table.dims), "local_dir": local_dir,
            "encoders": {f: encoders[f] for f in table.features if f in encoders},
            "label_embeddings": None if labels is None else labels.tolist()}


def _storage(config: TrainConfig) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray's RunConfig."""
    if storage.is_remote(config.output):
        return config.output[len("s3://"):].rstrip("/") + "/ray", storage.s3_filesystem()
    return os.path.abspath(os.path.join(config.output, "ray")), None


def build_trainer(config: TrainConfig, table: FeatureTable | None = None, callbacks: list | None = None,
                  progress_queue=None, placement_group_log: str | None = None):
    """The ``TorchTrainer`` for ``config`` (call ``.fit()``); ``callbacks`` go to ``RunConfig``
    (e.g. Tune's ``TuneReportCallback``); each epoch's headline figures are put on
    ``progress_queue`` (a ``ray.util.queue.Queue``) when given. With ``placement_group_log`` (a
    file URI) the rank-0 worker appends the id of its placement group there when it starts, so a
    Tune sweep can free exactly its own trials' groups (:mod:`prodcat.tune.cleanup`)."""
    import ray
    import ray.train
    from ray.data import ExecutionOptions
    from ray.train.torch import TorchTrainer

    table, _ = load_training_data(config, table)
    train_rows, val_rows = select_train_rows(table, config), table.rows(splits=[config.data.val_split])
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
        train_loop_per_worker, train_loop_config={**loop_config_for(config, table, local_dir),
                           "progress": progress_queue,
                           "placement_group_log": placement_group_log},
        scaling_config=ray.train.ScalingConfig(
            num_workers=config.scaling.num_workers, use_gpu=config.scaling.use_gpu,
            resources_per_worker={"CPU": config.scaling.cpus_per_worker}),
        run_config=run_config, datasets=datasets,
        dataset_config=ray.train.DataConfig(
            datasets_to_split=["train"], execution_options=ExecutionOptions(preserve_order=True)))


def _best_checkpoint_uri(result, config: TrainConfig) -> tuple[str, dict]:
    """``(uri, loop state)`` of the best epoch, from a finished Ray Train ``Result``."""

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
          progress: Callable[[str], None] | None = say, save_model: bool = True) -> TrainResult:
    """Run (or resume) a training run; returns the best checkpoint and the figures.

    Args:
        table: a preloaded feature table with at least ``model.modalities`` (saves re-reading the
            store when many runs share it, e.g. the evaluation grid or a Tune sweep).
        callbacks: Ray Train ``UserCallback`` s (Tune: ``TuneReportCallback()``).
        progress: where one line per epoch and the closing line go (None: silent).
        save_model: False: a decision-level fusion model is kept in memory only
            (``TrainResult.model``; the evaluation's runs); neural runs always write checkpoints.

    Raises:
        ray.train.TrainingFailedError: when workers fail more than ``scaling.max_failures`` times.
        ValueError: on empty training or validation rows.
    """

    if config.model.fusion == DECISION:
        return _train_decision(config, table, progress, save_model)
    if config.data.variants and progress:
        progress(f"{run_prefix(config)} data.variants ({', '.join(config.data.variants)}) left unused: "
                 f"only decision-level fusion chooses on held-out sets (model.fusion is "
                 f"{config.model.fusion!r})")
    start = time.perf_counter()
    table, scorer = load_training_data(config, table, progress)  # unreadable data stops before Ray starts
    ensure_ray()
    data = {**table.counts, "labelled_used": len(table),
            "train_rows": len(select_train_rows(table, config)),
            "val_rows": len(table.rows(splits=[config.data.val_split]))}
    if progress:
        progress(f"{run_prefix(config)} {describe_counts(table.counts, len(table))}; train "
                 f"{data['train_rows']:,}, val {data['val_rows']:,}")
    _audit_reads(config, table)
    with EpochLines(config, progress) as queue:
        result = build_trainer(config, table, callbacks, progress_queue=queue).fit()
    best_uri, state = _best_checkpoint_uri(result, config)
    export = storage.join(config.output, "model")

    copy_checkpoint(best_uri, export)
    if scorer is not None:
        scorer.save(export)  # the lexical model travels with the checkpoint
    temperature = calibrate_checkpoint(export, table.rows(splits=[config.data.calib_split]),
                                       config.threshold).temperature
    history = state["history"]
    best = next(h for h in history if h["epoch"] == state["best_epoch"])
    seconds = float(np.mean([h["epoch_seconds"] for h in history])) if history else float("nan")
    res = TrainResult(checkpoint=export, metrics=best, history=history, seconds_per_epoch=seconds,
                      peak_memory_mb=max((h["peak_rss_mb"] for h in history), default=0.0),
                      temperature=temperature, wall_seconds=time.perf_counter() - start,
                      run_path=str(result.path or ""),
                      resumed_after=list(state.get("resumed_after", [])), data=data)
    storage.write_text(storage.join(config.output, "train_result.json"), res.to_json())
    if progress:
        progress(f"{run_prefix(config)} best epoch {state['best_epoch'] + 1}: val hF "
                 f"{best['val_hF']:.4f} ({len(history)} epochs, {seconds:.2f} s/epoch, peak "
                 f"{res.peak_memory_mb:.0f} MiB, temperature {temperature:.3f}) → {export}")
    return res


def _audit_reads(config: TrainConfig, table: FeatureTable) -> None:
    """Report the rows a neural training run reads (:mod:`prodcat.core.audit`): training rows
    (and the lexical model's out-of-fold fit), validation rows (early stopping), calibration rows."""
    if not audit.active():
        return
    audit.read("fit:neural", select_train_rows(table, config).column("product_id"))
    audit.read("early_stopping", table.rows(splits=[config.data.val_split]).column("product_id"))
    audit.read("calibrate", table.rows(splits=[config.data.calib_split]).column("product_id"))


def _train_decision(config: TrainConfig, table: FeatureTable | None,
                    progress: Callable[[str], None] | None, save: bool = True) -> TrainResult:
    """:func:`train` for ``model.fusion: decision`` (:mod:`prodcat.train.decision`): no Ray Train
    workers (the components are linear models fitted in this process)."""
    from prodcat.train.decision import train_decision

    stored = [m for m in config.model.modalities if m != LEXICAL]
    if table is None:
        table = load_feature_table(config.data.products, config.data.embeddings, stored,
                                   config.data.taxonomy, config.data.skip_unreadable)
    table = table.with_features(stored).rows(platforms=config.data.platforms)
    if config.data.variants:
        table = attach_variants(table, config.data.variants)
    if progress:
        progress(f"{run_prefix(config)} {describe_counts(table.counts, len(table))}")
    result = train_decision(config, table, progress, save=save)
    if save:
        storage.write_text(storage.join(config.output, "train_result.json"), result.to_json())
    return result


class EpochLines:
    """One terminal line per epoch while ``TorchTrainer.fit()`` runs: the workers put each epoch's
    figures on a ``ray.util.queue.Queue`` (an actor with 0 CPUs, so it works across nodes) and a
    driver thread prints them. A context manager yielding the queue (None when ``log`` is None).

    The queue's actor is placed on the driver's node (soft affinity): a worker node that dies
    does not take the lines with it. Should the actor die all the same, lines stop and the
    training goes on (the workers and the driver both tolerate a dead queue).
    """

    def __init__(self, config: TrainConfig, log: Callable[[str], None] | None) -> None:
        self.config, self.log = config, log
        self.queue = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.log is None:
            return None
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        return self.queue

    def __exit__(self, *exc) -> None:
        if self.queue is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        if self._print_pending():
            try:
                self.queue.shutdown()
            except Exception:  # noqa: BLE001 - its actor is gone: nothing to shut down
                pass

    def _drain(self) -> None:
        while not self._stop.is_set():
            if not self._print_pending(timeout=0.5):
                return

    def _print_pending(self, timeout: float | None = None) -> bool:
        """Print the lines waiting in the queue; False when the queue's actor is gone."""
        from ray.util.queue import Empty

        try:
            while True:
                item = self.queue.get(timeout=timeout) if timeout else self.queue.get_nowait()
                self.log(self.line(item))
        except Empty:
            return True
        except Exception:  # noqa: BLE001 - the queue's actor died: no more lines
            return False

    def line(self, m: dict) -> str:
        """``[train text] epoch 3/20: loss 0.412, val hF 0.9134 (best 0.9134 at 3), 2.7 s``."""
        def num(key: str, digits: int) -> str:
            value = m.get(key)
            return "-" if value is None else f"{value:.{digits}f}"

        return (f"{run_prefix(self.config)} epoch {m['epoch'] + 1}/{self.config.optim.epochs}: "
                f"loss {num('train_loss', 3)}, val loss {num('val_loss', 3)}, val hF "
                f"{num('val_hF', 4)} (best {num('best_val_hF', 4)} at {m['best_epoch'] + 1}), "
                f"valid paths {100 * (m.get('val_path_consistency') or 0):.1f} %, "
                f"{num('epoch_seconds', 1)} s")


def calibrate_checkpoint(checkpoint_uri: str, rows: FeatureTable, threshold: float) -> Calibration:
    """Fit the serving-path temperature on ``rows`` (the calibration split) and write
    ``calibration.json`` (temperature, threshold, ECE before and after)."""
    result = calibrate(load_checkpoint(checkpoint_uri), rows)
    write_calibration(checkpoint_uri, result.temperature, threshold,
                      {"ece_before": result.ece_before, "ece_after": result.ece_after,
                       "products": result.products, "fitted_on": "calibration split, serving logits"})
    return result
