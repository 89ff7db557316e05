"""Fine-tuning a text encoder end to end on Ray Train: ``finetune(config)`` (``prodcat finetune``).

    product table ─► training rows (split, platforms, subsample) ─► tokens (the encoder's own
    tokenizer and text)  ─► TorchTrainer: N data-parallel workers, encoder + linear head over
    the label leaves, cross-entropy; a checkpoint every epoch  ─► <output>/encoder (a new
    encoder version) + its fingerprint + an encoder config snippet

The loop and the model are :mod:`prodcat.train.finetune_loop`. A worker that dies (its node
killed, an out-of-memory kill) restarts the worker group from the last epoch checkpoint
(``FailureConfig(max_failures)``); a rerun with the same ``output`` and ``name`` resumes the same
way (Ray Train finds the run's checkpoints in its storage, ``<output>/ray/<name>``).

Output (``output``, local or ``s3://``)::

    <output>/encoder/              config.json, model.safetensors, tokenizer files: loads with
                                   transformers.AutoModel / AutoTokenizer.from_pretrained, and as
                                   a prodcat text encoder (weights: <output>/encoder)
    <output>/encoder/prodcat_encoder.json   fingerprint (architecture, weights sha256, settings,
                                   key), the encoder config, the base weights, labels, history
    <output>/encoder/trained_on.parquet     the product ids it was trained on (``product_id``): a
                                   store that adds its feature keeps them
                                   (:data:`prodcat.embed.store.ENCODER_TRAINED_ON`)
    <output>/encoder.yaml          an EmbedConfig naming the encoder (``encoders: {text_ft: ...}``):
                                   ``prodcat embed --config <output>/encoder.yaml --output <store>``
                                   adds its feature (``ft_text``) to an existing store
    <output>/head/                 head.safetensors + head.json (the linear head, label ids)
    <output>/finetune_result.json  what :func:`finetune` returns
    <output>/ray/<name>/           Ray Train's run storage: epoch checkpoints (resume)

Letters: N training products, T tokens.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from prodcat.core import storage
from prodcat.core.console import clock, say
from prodcat.core.errors import DataError
from prodcat.core.runtime import ensure_ray
from prodcat.embed.encoders import TextEncoderConfig
from prodcat.embed.encoders.inputs import TextInputs, input_column
from prodcat.embed.store import ENCODER_TRAINED_ON
from prodcat.train.finetune_config import FinetuneConfig
from prodcat.train.finetune_loop import (
    ENCODER_DIR,
    HEAD,
    HEAD_META,
    STATE,
    finetune_loop_per_worker,
    resume_problem,
    run_settings,
)

ENCODER_META = "prodcat_encoder.json"
SNIPPET = "encoder.yaml"
RESULT = "finetune_result.json"


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns (also ``<output>/finetune_result.json``).

    Attributes:
        encoder: the fine-tuned encoder folder (``<output>/encoder``), local path or ``s3://``.
        fingerprint: its prodcat fingerprint key (architecture + weights sha256 + settings), the
            key a store's manifest and a checkpoint record for its feature.
        encoder_config: the encoder config naming it (JSON data of a ``TextEncoderConfig``).
        feature: the feature it makes (``ft_text`` by default).
        snippet: ``<output>/encoder.yaml``.
        history: per epoch ``epoch``, ``train_loss``, ``train_accuracy`` (on training batches,
            dropout on), ``products_per_s`` (all workers), ``epoch_seconds``, ``step``,
            ``cpu_seconds`` and ``products_per_cpu_s`` (rank 0's process CPU time: a rate that
            does not depend on what else the machine runs).
        products_per_s: training products per second over all epochs run (all workers).
        seconds: the whole call (s), data preparation and export included.
        train_products: rows trained on; labels: classes of the head.
        resumed_after: epochs after which the run restarted from a checkpoint.
    """

    encoder: str
    fingerprint: str
    encoder_config: dict
    feature: str
    snippet: str
    history: list[dict]
    products_per_s: float
    seconds: float
    train_products: int
    labels: int
    resumed_after: list[int] = field(default_factory=list)
    run_path: str = ""


# ---------------------------------------------------------------------------------- data
def training_rows(config: FinetuneConfig) -> pa.Table:
    """The labelled rows of ``data.train_split`` on ``data.platforms`` (and among
    ``data.only_products`` when set), subsampled to ``data.max_train_products`` (seeded), labels
    with fewer than ``min_products_per_label`` products left out; columns ``product_id``,
    ``title``, ``description``, ``category_id``.

    Raises:
        ValueError: when no row is left (the message says which filter emptied it), or
            ``data.only_products`` has no ``product_id`` column.
        prodcat.core.errors.UnreadableFile: ``data.only_products`` cannot be read.
    """
    data = config.data
    table = storage.read_table(data.products, columns=[
        "product_id", "platform", "split", "category_id", "title", "description"])
    keep = pc.and_(pc.is_valid(table["category_id"]), pc.equal(table["split"], data.train_split))
    if data.platforms is not None:
        keep = pc.and_(keep, pc.is_in(table["platform"], value_set=pa.array(data.platforms)))
    if data.only_products is not None:
        listed = storage.read_table(data.only_products)
        if "product_id" not in listed.column_names:
            raise ValueError(f"data.only_products {data.only_products} has no product_id column "
                             f"(columns: {listed.column_names})")
        keep = pc.and_(keep, pc.is_in(table["product_id"],
                                      value_set=listed["product_id"].cast(table["product_id"].type)))
    rows = table.filter(keep)
    if data.max_train_products and rows.num_rows > data.max_train_products:
        pick = np.random.default_rng(data.sample_seed).permutation(rows.num_rows)
        rows = rows.take(np.sort(pick[:data.max_train_products]))
    if data.min_products_per_label > 1 and rows.num_rows:
        counts = pc.value_counts(rows["category_id"]).to_pylist()
        big = [c["values"] for c in counts if c["counts"] >= data.min_products_per_label]
        rows = rows.filter(pc.is_in(rows["category_id"], value_set=pa.array(big, rows["category_id"].type)))
    if not rows.num_rows:
        raise ValueError(f"no training rows in {data.products}: split {data.train_split!r}, "
                         f"platforms {data.platforms}, labelled"
                         f"{', among ' + data.only_products if data.only_products else ''}, at least "
                         f"{data.min_products_per_label} per label; check data.*")
    return rows.select(["product_id", "title", "description", "category_id"])


def tokenize_rows(rows: pa.Table, encoder: TextEncoderConfig) -> dict[str, np.ndarray]:
    """``{"ids": int32 [N, T], "mask": int8 [N, T], "labels": int64 [N], "label_ids": int64 [C],
    "product_id": [N]}`` with the encoder's own tokenizer and text (title + description, as it
    embeds; T = ``max_tokens``); rows without text are left out."""
    inputs = TextInputs(encoder)
    feature = next(iter(encoder.feature_names()))
    out = inputs({"title": rows["title"].to_pylist(), "description": rows["description"].to_pylist()})
    ok = np.asarray(out[f"status_{feature}"]) == "ok"
    categories = rows["category_id"].to_numpy(zero_copy_only=False)[ok].astype(np.int64)
    label_ids, labels = np.unique(categories, return_inverse=True)
    return {"ids": np.ascontiguousarray(out[input_column(feature, "ids")][ok]),
            "mask": np.ascontiguousarray(out[input_column(feature, "mask")][ok]),
            "labels": labels.astype(np.int64), "label_ids": label_ids,
            "product_id": np.asarray(rows["product_id"].to_pylist(), object)[ok]}


# ---------------------------------------------------------------------------------- Ray Train
def _storage(config: FinetuneConfig) -> tuple[str, Any]:
    """``(storage_path, storage_filesystem)`` for Ray's RunConfig: ``<output>/ray``."""
    if storage.is_remote(config.output):
        return config.output[len("s3://"):].rstrip("/") + "/ray", storage.s3_filesystem()
    return os.path.abspath(os.path.join(config.output, "ray")), None


def latest_checkpoint(config: FinetuneConfig) -> str | None:
    """The URI of the newest epoch checkpoint of this output + name (what a rerun resumes from),
    or None when the run has none yet."""
    import pyarrow.fs as pafs

    run = storage.join(config.output, "ray", config.name)
    fs, path = storage.filesystem(run)
    if fs.get_file_info(path).type != pafs.FileType.Directory:
        return None
    names = sorted(i.base_name for i in fs.get_file_info(pafs.FileSelector(path))
                   if i.type == pafs.FileType.Directory and i.base_name.startswith("checkpoint_"))
    return storage.join(run, names[-1]) if names else None


class CheckpointMismatch(DataError, ValueError):
    """The output + name holds a checkpoint of another fine-tuning (other settings or labels); the
    message names what changed, the checkpoint, and what to do. The CLI prints it without a
    traceback."""


def check_resumable(config: FinetuneConfig, head: dict) -> None:
    """Before starting Ray Train: a rerun of this output + name must have the settings and
    labels of the run it resumes.

    Raises:
        CheckpointMismatch: (a ``ValueError``) naming the fields that changed (or the label
            count), the checkpoint, and the two ways on: another output or name, or removing
            the output to start over.
    """
    latest = latest_checkpoint(config)
    if latest is None or not storage.exists(storage.join(latest, HEAD_META)):
        return
    problem = resume_problem(json.loads(storage.read_text(storage.join(latest, HEAD_META))), head)
    if problem:
        raise CheckpointMismatch(f"{problem} ({latest}); or remove {config.output} to fine-tune "
                                 "there anew")


def build_trainer(config: FinetuneConfig, data_ref, head: dict, progress_queue=None,
                  callbacks: list | None = None):
    """The ``TorchTrainer`` for ``config`` (call ``.fit()``); ``data_ref``: an ObjectRef of the
    token arrays (:func:`tokenize_rows`), ``head``: ``{"labels": [category ids]}``."""
    import ray.train
    from ray.train.torch import TorchTrainer

    storage_path, filesystem = _storage(config)
    scaling = config.scaling
    return TorchTrainer(
        finetune_loop_per_worker,
        train_loop_config={"config": config.model_dump(mode="json"), "data": data_ref,
                           "head": head, "progress": progress_queue},
        scaling_config=ray.train.ScalingConfig(
            num_workers=scaling.num_workers, use_gpu=scaling.use_gpu,
            resources_per_worker={"CPU": scaling.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=config.name, storage_path=storage_path, storage_filesystem=filesystem,
            failure_config=ray.train.FailureConfig(max_failures=scaling.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=config.keep_checkpoints),
            callbacks=callbacks or None))


def finetune(config: FinetuneConfig, progress: Callable[[str], None] | None = say,
             callbacks: list | None = None) -> FinetuneResult:
    """Fine-tune ``config.encoder`` end to end (or resume the run of the same output + name) and
    write the new encoder version (module docstring). A run already finished in ``output`` with
    the same settings is returned as it is (:func:`finished`), without starting Ray Train.

    Args:
        progress: where progress lines go (a line every ``optim.log_every_s`` within an epoch, one
            per epoch, the closing line); None: silent.
        callbacks: Ray Train ``UserCallback`` s for the run (tests watch checkpoints with one).

    Raises:
        ValueError: no training rows. CheckpointMismatch (a ``ValueError`` and a ``DataError``):
            a checkpoint of this output + name made with other settings or labels (checked
            before Ray Train starts). ray.train.TrainingFailedError: workers failed more than
            ``scaling.max_failures`` times.
    """
    import ray

    start = time.perf_counter()
    log = progress or (lambda _line: None)
    config = with_absolute_paths(config)
    rows = training_rows(config)
    done = finished(config, rows)
    if done is not None:
        log(f"[finetune] already finished in {config.output} with these settings: encoder "
            f"{done.encoder} (feature {done.feature}, fingerprint {done.fingerprint}); nothing to do "
            "(a new --output, or other settings, fine-tunes again)")
        return done
    data = tokenize_rows(rows, config.encoder)
    digest = training_digest(rows)
    head = {"labels": [int(c) for c in data["label_ids"]], "pooling": config.encoder.pooling,
            "normalize": config.encoder.normalize,
            "logit_scale": config.logit_scale if config.encoder.normalize else 1.0,
            "settings": run_settings(config, digest), "products": config.data.products}
    check_resumable(config, head)
    n = len(data["labels"])
    log(f"[finetune] {n:,} training products ({config.data.train_split} split, platforms "
        f"{', '.join(config.data.platforms) if config.data.platforms else 'all'}"
        f"{', among those of ' + config.data.only_products if config.data.only_products else ''}), "
        f"{len(head['labels'])} labels; {config.encoder.weights} at {config.encoder.max_tokens} "
        f"tokens, {config.optim.epochs} epoch(s), {config.scaling.num_workers} worker(s)"
        f"{' with GPUs' if config.scaling.use_gpu else ''}{_precision(config)} → {config.output}")
    ensure_ray()
    data_ref = ray.put({k: data[k] for k in ("ids", "mask", "labels")})
    with _Lines(log if progress else None) as queue:
        result = build_trainer(config, data_ref, head, queue, callbacks).fit()
    if result.checkpoint is None:
        raise RuntimeError("fine-tuning reported no checkpoint")
    with result.checkpoint.as_directory() as folder:
        with open(os.path.join(folder, STATE)) as f:
            state = json.load(f)
        encoder_uri = export_encoder(folder, config)
    encoder_config = output_encoder_config(config, encoder_uri)
    fingerprint = encoder_fingerprint(encoder_config)
    history = state["history"]
    seconds = sum(h["epoch_seconds"] for h in history)
    res = FinetuneResult(
        encoder=encoder_uri, fingerprint=fingerprint["key"],
        encoder_config=encoder_config.model_dump(mode="json"),
        feature=next(iter(encoder_config.feature_names())),
        snippet=storage.join(config.output, SNIPPET), history=history,
        products_per_s=round(sum(h["products"] for h in history) / seconds, 2) if seconds else 0.0,
        seconds=round(time.perf_counter() - start, 2), train_products=n, labels=len(head["labels"]),
        resumed_after=list(state.get("resumed_after", [])), run_path=str(result.path or ""))
    write_metadata(config, res, fingerprint, head, digest)
    storage.write_table(rows.select(["product_id"]), storage.join(encoder_uri, ENCODER_TRAINED_ON))
    log(f"[finetune] done in {clock(res.seconds)} ({res.products_per_s} products/s training): "
        f"encoder {res.encoder} (feature {res.feature}, fingerprint {res.fingerprint}); add it to a "
        f"store with `prodcat embed --config {res.snippet} --products ... --output <store>`")
    return res


def with_absolute_paths(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with a relative local ``encoder.weights`` folder made absolute (Ray Train
    workers run in another working directory); hub ids, ``shared:`` and ``s3://`` stay."""
    weights = config.encoder.weights
    if storage.is_remote(weights) or weights.startswith("shared:") or not os.path.exists(weights):
        return config
    encoder = config.encoder.model_copy(update={"weights": os.path.abspath(weights)})
    return config.model_copy(update={"encoder": encoder})


def training_digest(rows: pa.Table) -> str:
    """What an encoder was fine-tuned on, wherever the product table lies: sha256 (16 hex) over
    the training rows' ``product_id``, ``title``, ``description`` and ``category_id``
    (:func:`training_rows`), in order."""
    digest = hashlib.sha256()
    for name in ("product_id", "title", "description", "category_id"):
        digest.update(json.dumps([name, rows[name].to_pylist()], default=str).encode())
    return digest.hexdigest()[:16]


def run_identity(config: FinetuneConfig) -> dict:
    """The settings that make one encoder: every field of ``config`` but ``output``, ``name``,
    ``data.products`` and ``data.only_products`` (the rows are identified by
    :func:`training_digest` of the training rows, so a table or list moved or named by another
    path still matches), local weights made absolute."""
    settings = with_absolute_paths(config).model_dump(mode="json")
    settings = {k: v for k, v in settings.items() if k not in ("output", "name")}
    settings["data"] = {k: v for k, v in settings["data"].items() if k not in ("products", "only_products")}
    return settings


def finished(config: FinetuneConfig, rows: pa.Table | None = None) -> FinetuneResult | None:
    """The result of a fine-tuning already finished in ``config.output`` with the same settings
    (:func:`run_identity`) on the same training rows (:func:`training_digest`; ``rows``: the
    :func:`training_rows` of ``config`` when already read), or None: none there, or one made with
    other settings or rows. Reading it costs no Ray Train start: the evaluation fine-tunes each
    distinct encoder (platforms, seed, settings) once and reuses it in every fold that needs it
    (:func:`prodcat.evaluate.finetuning.fold_feature`). A copied ``output`` still works: the
    encoder folder is taken from where ``output`` is now.

    Raises:
        ValueError: a result is there with these settings and the training rows cannot be drawn
            (:func:`training_rows`).
    """
    encoder = storage.join(config.output, ENCODER_DIR)
    if not storage.is_remote(encoder):
        encoder = os.path.abspath(encoder)
    path, meta_path = storage.join(config.output, RESULT), storage.join(encoder, ENCODER_META)
    if not (storage.exists(path) and storage.exists(meta_path)):
        return None
    meta = json.loads(storage.read_text(meta_path))
    if run_identity(FinetuneConfig(**meta["finetune"])) != run_identity(config):
        return None
    if "training_rows" in meta:
        if meta["training_rows"] != training_digest(training_rows(config) if rows is None else rows):
            return None
    elif meta["finetune"]["data"]["products"] != config.data.products:   # made before stop 34
        return None
    result = FinetuneResult(**json.loads(storage.read_text(path)))
    result.encoder_config = {**result.encoder_config, "weights": encoder}
    result.encoder, result.snippet = encoder, storage.join(config.output, SNIPPET)
    return result


# ---------------------------------------------------------------------------------- export
def export_encoder(checkpoint_dir: str, config: FinetuneConfig) -> str:
    """Copy the checkpoint's encoder folder to ``<output>/encoder`` and its head to
    ``<output>/head``; returns the encoder folder's URI (absolute when local)."""
    target = storage.join(config.output, ENCODER_DIR)
    if not storage.is_remote(target):
        target = os.path.abspath(target)
    if storage.exists(target):
        _clear(target)
    storage.copy_tree(os.path.join(checkpoint_dir, ENCODER_DIR), target)
    for name in (HEAD, HEAD_META):
        storage.write_bytes(storage.join(config.output, "head", name),
                            storage.read_bytes(os.path.join(checkpoint_dir, name)))
    return target


def _clear(folder: str) -> None:
    fs, path = storage.filesystem(folder)
    fs.delete_dir_contents(path)


def output_encoder_config(config: FinetuneConfig, encoder_uri: str) -> TextEncoderConfig:
    """The base encoder's config with ``weights`` = the fine-tuned folder and
    ``feature_prefix`` = ``config.feature_prefix`` (same text, pooling, normalisation, token
    limit; the same run-time settings: batch and pool sizes, CPUs)."""
    return config.encoder.model_copy(update={"weights": encoder_uri,
                                             "feature_prefix": config.feature_prefix})


def encoder_fingerprint(encoder_config: TextEncoderConfig) -> dict:
    """The fingerprint (``Fingerprint.to_dict()``: architecture, weights sha256, settings, key)
    of the encoder as ``prodcat embed`` and the cascade's stage runner compute it: by loading it
    through the text encoder family (on the CPU)."""
    from prodcat.embed.encoders import build_encoder

    encoder = build_encoder(encoder_config.model_copy(update={"device": "cpu"}))
    return encoder.fingerprint.to_dict()


def write_metadata(config: FinetuneConfig, result: FinetuneResult, fingerprint: dict, head: dict,
                   training: str | None = None) -> None:
    """``encoder/prodcat_encoder.json``, ``encoder.yaml`` (an EmbedConfig with this encoder only)
    and ``finetune_result.json``; ``training``: :func:`training_digest` of its training rows."""
    meta = {"fingerprint": fingerprint, "encoder": config.encoder_name,
            "feature": result.feature, "config": result.encoder_config,
            "base": config.encoder.weights, "labels": len(head["labels"]),
            "train_products": result.train_products, "history": result.history,
            "finetune": config.model_dump(mode="json"),
            **({"training_rows": training} if training else {})}
    storage.write_text(storage.join(result.encoder, ENCODER_META), json.dumps(meta, indent=2))
    snippet = {"encoders": {config.encoder_name: _snippet_fields(result.encoder_config)}}
    storage.write_text(result.snippet, (
        f"# prodcat encoder config: the text encoder fine-tuned by `prodcat finetune` ({config.name})\n"
        f"# fingerprint {result.fingerprint}, feature {result.feature}. Add its vectors to a store:\n"
        f"#   prodcat embed --config {result.snippet} --products <products.parquet> --output <store>\n"
        f"# or copy the block under `encoders:` into another EmbedConfig (configs/encoders.*.yaml).\n")
        + yaml.safe_dump(snippet, sort_keys=False))
    storage.write_text(storage.join(config.output, RESULT), json.dumps(asdict(result), indent=2))


def _snippet_fields(config: dict) -> dict:
    """The encoder config without fields at their defaults (a short, readable YAML block)."""
    defaults = TextEncoderConfig(weights="x").model_dump(mode="json")
    return {k: v for k, v in config.items() if k in ("family", "weights") or v != defaults.get(k)}


class _Lines:
    """Progress lines from the rank-0 worker while ``fit()`` runs: a ``ray.util.queue.Queue``
    (an actor with 0 CPUs) drained by a driver thread. A context manager yielding the queue
    (None when ``log`` is None)."""

    def __init__(self, log: Callable[[str], None] | None) -> None:
        self.log, self.queue, self._thread = log, None, None

    def __enter__(self):
        import threading

        if self.log is None:
            return None
        import ray
        from ray.util.queue import Queue
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
        # on the driver's node: a worker node that dies does not take the driver's lines with it
        self.queue = Queue(actor_options={"num_cpus": 0, "scheduling_strategy": here})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drain, daemon=True)
        self._thread.start()
        return self.queue

    def _drain(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                self.log(self.queue.get(timeout=0.5))
            except Empty:
                if self._stop.is_set():
                    return
            except Exception:  # noqa: BLE001 - the queue actor went away: no more lines
                return

    def __exit__(self, *exc) -> None:
        if self.queue is None:
            return
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self.queue.shutdown()
        except Exception:  # noqa: BLE001 - its actor died with its node: nothing to shut down
            pass


def _precision(config: FinetuneConfig) -> str:
    """``", bf16"`` and the like for the start line (:func:`prodcat.core.runtime.precision_note`);
    empty for float32."""
    from prodcat.core.runtime import precision_note

    note = precision_note("cuda" if config.scaling.use_gpu else "cpu", config.optim.precision)
    return f", {note}" if note else ""
