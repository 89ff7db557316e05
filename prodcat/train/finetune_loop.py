"""The per-worker fine-tuning loop (Ray Train ``train_loop_per_worker``) and its model.

:class:`EncoderClassifier` is the text encoder (a Hugging Face ``AutoModel``) pooled and
normalised exactly as :class:`prodcat.embed.encoders.text.TextEncoder` embeds
(:func:`prodcat.embed.encoders.text.pool_hidden`, then L2 normalisation when the encoder config
says so), under a flat linear head over the label leaves; cross-entropy trains both end to end.

The head reads ``logit_scale`` x the normalised vector (a cosine classifier's temperature).

Each epoch every worker takes its share of one seeded permutation of the training rows (rank r
of W takes rows ``perm[r::W]``, all workers the same count, so DDP steps stay in lock step), cut
into batches of similar token counts (sorted within windows of ``optim.bucket_window`` batches,
then shuffled: less padding), runs
AdamW with a linear warm-up and decay, and rank 0 writes a checkpoint: ``encoder/`` (the encoder
in ``save_pretrained`` layout with its tokenizer), ``head.safetensors`` + ``head.json``,
``optimizer.safetensors`` + ``optimizer.json`` and ``finetune_state.json`` (safetensors and JSON,
never pickle). Shuffling and dropout are seeded per epoch and the learning rate is a function of
the step, so a run resumed from epoch k's checkpoint continues as the uninterrupted run did.

Letters: B batch, T tokens, H hidden size, C labels.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time

import numpy as np

from prodcat.core.console import clock as _clock
from prodcat.core.runtime import autocast
from prodcat.embed.encoders.fingerprint import resolve_weights
from prodcat.embed.encoders.text import pool_hidden
from prodcat.models.checkpoint import load_optimizer_state, optimizer_state
from prodcat.models.files import OPTIMIZER, OPTIMIZER_META
from prodcat.train.finetune_config import FinetuneConfig

ENCODER_DIR = "encoder"
HEAD, HEAD_META, STATE = "head.safetensors", "head.json", "finetune_state.json"


def build_classifier(encoder_path: str, num_labels: int, pooling: str, normalize: bool,
                     logit_scale: float = 1.0):
    """An :class:`EncoderClassifier` (torch ``nn.Module``) on the weights at ``encoder_path``; the
    head reads ``logit_scale`` x the (normalised) vector."""
    import torch
    from transformers import AutoModel

    class EncoderClassifier(torch.nn.Module):
        """Encoder → pooled (normalised) vector ``[B, H]`` → logits ``[B, C]``."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = AutoModel.from_pretrained(encoder_path, dtype=torch.float32)
            self.head = torch.nn.Linear(int(self.encoder.config.hidden_size), num_labels)
            torch.nn.init.zeros_(self.head.weight)
            torch.nn.init.zeros_(self.head.bias)

        def embed(self, ids, mask):
            """ids, mask ``[B, T]`` → ``[B, H]``, the vector the text encoder stores."""
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state  # [B, T, H]
            pooled = pool_hidden(hidden, mask, pooling).float()                        # [B, H]
            return torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled

        def forward(self, ids, mask):
            return self.head(self.embed(ids, mask) * logit_scale)                     # [B, C]

    return EncoderClassifier()


def param_groups(model, optim) -> list[dict]:
    """AdamW groups: encoder weights (decayed), encoder biases and LayerNorm (not decayed), head."""
    decay, no_decay = [], []
    for name, p in model.encoder.named_parameters():
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name
         else decay).append(p)
    return [{"params": decay, "lr": optim.lr, "weight_decay": optim.weight_decay, "peak": optim.lr},
            {"params": no_decay, "lr": optim.lr, "weight_decay": 0.0, "peak": optim.lr},
            {"params": list(model.head.parameters()), "lr": optim.head_lr, "weight_decay": 0.0,
             "peak": optim.head_lr}]


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up over ``warmup x total`` steps, then linear decay to 0 at ``total``."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    return max(0.0, (total - step) / max(1, total - warm))


def epoch_rows(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This worker's row indices for ``epoch``: its stride of one seeded permutation, every
    worker the same count (``n // world``)."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return perm[rank::world][: n // world]


def epoch_batches(lengths: np.ndarray, seed: int, epoch: int, rank: int, world: int,
                  batch_size: int, window: int) -> list[np.ndarray]:
    """This worker's batches for ``epoch`` (:func:`epoch_rows` cut into ``batch_size`` rows):
    within each window of ``window`` batches the rows are sorted by token count (``lengths``
    ``[N]``), so a batch pads little, and the batches are then shuffled (seeded). ``window`` <= 1:
    plain random batches. Always :func:`steps_per_epoch` batches."""
    rows = epoch_rows(len(lengths), seed, epoch, rank, world)
    if window <= 1:
        return [rows[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    span, batches = window * batch_size, []
    for start in range(0, len(rows), span):
        chunk = rows[start:start + span]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    order = np.random.default_rng([seed, epoch, rank, 1]).permutation(len(batches))
    return [batches[i] for i in order]


def steps_per_epoch(n: int, world: int, batch_size: int) -> int:
    return math.ceil((n // world) / batch_size)


# ------------------------------------------------------------------------------ checkpoints
#: fields a resumed run may change: how long, how it logs, where and on what it runs
RESUMABLE_CHANGES = ("optim.epochs", "optim.log_every_s", "scaling.", "output", "name",
                     "keep_checkpoints", "encoder_name", "feature_prefix", "encoder.device",
                     "encoder.batch_size", "encoder.pool_size", "encoder.max_pool_size",
                     "encoder.num_cpus", "encoder.num_gpus", "encoder.gpu_cost",
                     "encoder.num_threads", "encoder.precision")


def run_settings(config: FinetuneConfig, training_rows: str) -> dict:
    """The dotted fields of ``config`` that a resumed run must keep (everything that changes
    the rows, the model or the optimisation), for comparison with a checkpoint's. The product
    table counts by what it holds, not where it lies: ``data.products`` (and
    ``data.only_products``) are left out and
    ``data.training_rows`` holds ``training_rows``, the digest of the run's training rows
    (:func:`prodcat.train.finetune.training_digest`), so a table moved or named by another path
    resumes and an edited one does not."""
    from prodcat.core.config import flatten_dotted

    flat = flatten_dotted(config.model_dump(mode="json"))
    flat = ({k: v for k, v in flat.items() if k not in ("data.products", "data.only_products")}
            | {"data.training_rows": training_rows})
    return {k: v for k, v in sorted(flat.items()) if not k.startswith(RESUMABLE_CHANGES)}


def resume_problem(found: dict, head_meta: dict) -> str | None:
    """Why a checkpoint's ``head.json`` (``found``) cannot be resumed by a run whose head is
    ``head_meta`` (other settings, other labels), or None when it can. A checkpoint made before
    its settings held ``data.training_rows`` (it has ``data.products``, a path) resumes when that
    path is ``head_meta["products"]``."""
    old, new = dict(found.get("settings", {})), head_meta.get("settings", {})
    if "data.products" in old and "data.training_rows" not in old:       # made before stop 35
        products = old.pop("data.products")
        old["data.training_rows"] = (new.get("data.training_rows") if products == head_meta.get("products")
                                     else f"the rows of {products}")
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        return ("the checkpoint of this output + name was made with other settings ("
                + ", ".join(f"{k}: {old.get(k)!r} then, {new.get(k)!r} now" for k in changed)
                + "); resume with the same settings and training rows (only optim.epochs, logging "
                "and scaling may change), or use another output or name")
    if found.get("labels") != head_meta["labels"]:
        return (f"the checkpoint of this output + name was trained on {len(found.get('labels', []))} "
                f"other labels than this run's {len(head_meta['labels'])} (a different data "
                "selection); use another output or name")
    return None


def save_state(folder: str, model, optimizer, state: dict, head_meta: dict, tokenizer_path: str) -> None:
    """Write a fine-tuning checkpoint into the local ``folder`` (module docstring)."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    inner = getattr(model, "module", model)
    encoder_dir = os.path.join(folder, ENCODER_DIR)
    inner.encoder.save_pretrained(encoder_dir, safe_serialization=True)
    AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(encoder_dir)
    save_file({k: v.detach().cpu().contiguous() for k, v in inner.head.state_dict().items()},
              os.path.join(folder, HEAD))
    tensors, meta = optimizer_state(optimizer)
    save_file(tensors, os.path.join(folder, OPTIMIZER))
    with open(os.path.join(folder, OPTIMIZER_META), "w") as f:
        json.dump(meta, f, default=float)
    with open(os.path.join(folder, HEAD_META), "w") as f:
        json.dump(head_meta, f, indent=2)
    with open(os.path.join(folder, STATE), "w") as f:
        json.dump(state, f, indent=2)


def restore_state(folder: str, model, head_meta: dict) -> dict:
    """Load the head and loop state of a checkpoint (the encoder was built from its
    ``encoder/``; the optimizer is restored once the model is on its device); returns the loop
    state.

    Raises:
        ValueError: the checkpoint was made with other settings or labels (another run in this
            output + name).
    """
    from safetensors.torch import load_file

    with open(os.path.join(folder, HEAD_META)) as f:
        problem = resume_problem(json.load(f), head_meta)
    if problem:
        raise ValueError(problem)
    model.head.load_state_dict(load_file(os.path.join(folder, HEAD)))
    with open(os.path.join(folder, STATE)) as f:
        return json.load(f)


# ------------------------------------------------------------------------------ the loop
def finetune_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's ``train_loop_per_worker`` for fine-tuning.

    Args:
        loop_config: ``{"config": FinetuneConfig JSON, "data": ObjectRef of {"ids": int32 [N, T],
            "mask": int8 [N, T], "labels": int64 [N]}, "head": {"labels": [category ids]},
            "progress": queue or None}``; the base weights (and tokenizer) are resolved on the
            worker's node from ``config.encoder.weights``.
    """
    import ray
    import ray.train
    import ray.train.torch
    import torch

    config = FinetuneConfig.model_validate(loop_config["config"])
    opt = config.optim
    torch.set_num_threads(config.scaling.torch_threads or max(1, round(config.scaling.cpus_per_worker)))
    data = ray.get(loop_config["data"])
    base = str(resolve_weights(config.encoder.weights))
    head_meta = loop_config["head"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    checkpoint = ray.train.get_checkpoint()
    with (checkpoint.as_directory() if checkpoint else _nothing()) as folder:
        torch.manual_seed(opt.seed)
        source = os.path.join(folder, ENCODER_DIR) if folder else base
        model = build_classifier(source, len(head_meta["labels"]), config.encoder.pooling,
                                 config.encoder.normalize, head_meta["logit_scale"])
        state = {"epoch": -1, "step": 0, "history": [], "resumed_after": []}
        if folder:     # a restarted worker group, or a rerun with the same output + name
            state = restore_state(folder, model, head_meta)
            state["resumed_after"] = state["resumed_after"] + [state["epoch"]]
        groups = param_groups(model, opt)
        model = ray.train.torch.prepare_model(model, parallel_strategy_kwargs={
            "find_unused_parameters": True})   # the pooler (unused by mean pooling) gets no grad
        optimizer = torch.optim.AdamW(groups)  # after the move: its state lands on the device
        if folder:
            load_optimizer_state(optimizer, folder)
    device = ray.train.torch.get_device()
    n = len(data["labels"])
    total = opt.epochs * steps_per_epoch(n, world, opt.batch_size)
    say = _sayer(loop_config.get("progress"), rank)
    for epoch in range(state["epoch"] + 1, opt.epochs):
        metrics = _one_epoch(model, optimizer, data, epoch, state, total, config, rank, world,
                             device, say)
        state = {**state, "epoch": epoch, "step": metrics["step"],
                 "history": state["history"] + [metrics]}
        _report(metrics, model, optimizer, state, head_meta, base, rank)
        say(_epoch_line(metrics, config, total))


def _one_epoch(model, optimizer, data: dict, epoch: int, state: dict, total: int,
               config: FinetuneConfig, rank: int, world: int, device, say) -> dict:
    """One pass over this worker's rows; returns the epoch's metrics (global rates)."""
    import torch

    opt = config.optim
    torch.manual_seed(opt.seed * 100_003 + epoch * 1_009 + rank)   # dropout: same after a resume
    batches = epoch_batches(data["mask"].sum(axis=1), opt.seed, epoch, rank, world,
                            opt.batch_size, opt.bucket_window)
    model.train()
    step, loss_sum, correct, seen = state["step"], 0.0, 0, 0
    start = last = time.perf_counter()
    cpu_start = time.process_time()                   # this worker's CPU time, all its threads
    for k, batch in enumerate(batches):
        mask_np = data["mask"][batch]
        width = max(1, int(mask_np.sum(axis=1).max()))                 # trim padding
        ids = torch.from_numpy(data["ids"][batch, :width].astype(np.int64)).to(device)
        mask = torch.from_numpy(mask_np[:, :width].astype(np.int64)).to(device)
        labels = torch.from_numpy(data["labels"][batch]).to(device)
        factor = lr_factor(step, total, opt.warmup)
        for group in optimizer.param_groups:
            group["lr"] = group["peak"] * factor
        with autocast(device, opt.precision):
            logits = model(ids, mask)                                   # [B, C]
        loss = torch.nn.functional.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if opt.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), opt.max_grad_norm)
        optimizer.step()
        step += 1
        loss_sum += float(loss.detach()) * len(batch)
        correct += int((logits.argmax(-1) == labels).sum())
        seen += len(batch)
        now = time.perf_counter()
        if now - last >= opt.log_every_s and k + 1 < len(batches):
            last = now
            rate = seen * world / (now - start)
            say(f"[finetune] epoch {epoch + 1}/{opt.epochs}: step {step}/{total}, loss "
                f"{loss_sum / seen:.3f}, {rate:.1f} products/s, ETA "
                f"{_clock((total - step) * opt.batch_size * world / rate)}")
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return {"epoch": epoch, "step": step, "steps": step - state["step"], "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1), "products": seen * world,
            "epoch_seconds": seconds, "products_per_s": seen * world / seconds if seconds else 0.0,
            "cpu_seconds": cpu, "products_per_cpu_s": seen / cpu if cpu else 0.0}


def _report(metrics: dict, model, optimizer, state: dict, head_meta: dict, base: str, rank: int) -> None:
    """Report ``metrics`` with a checkpoint from rank 0 (every worker must call report)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as folder:
        save_state(folder, model, optimizer, state, head_meta, base)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder))


def _epoch_line(m: dict, config: FinetuneConfig, total: int) -> str:
    """``[finetune] epoch 1/2: loss 2.345, accuracy 0.512 (training batches), 23.4 products/s,
    3:10, checkpoint saved; ETA 3:10``."""
    left = (total - m["step"]) * m["epoch_seconds"] / max(1, m["steps"])
    return (f"[finetune] epoch {m['epoch'] + 1}/{config.optim.epochs}: loss {m['train_loss']:.3f}, "
            f"accuracy {m['train_accuracy']:.3f} (training batches), {m['products_per_s']:.1f} "
            f"products/s, {_clock(m['epoch_seconds'])}, checkpoint saved"
            + (f"; ETA {_clock(left)}" if m["step"] < total else ""))


def _sayer(queue, rank: int):
    """Rank 0's lines go to the driver's queue (and this worker's log); other ranks stay quiet."""
    def say(line: str) -> None:
        if rank != 0:
            return
        print(line, flush=True)
        if queue is not None:
            try:
                queue.put_nowait(line)
            except Exception:  # noqa: BLE001 - the driver's queue is gone (its node died): log only
                pass
    return say


class _nothing:
    """A context manager yielding None (no checkpoint to open)."""

    def __enter__(self):
        return None

    def __exit__(self, *exc) -> None:
        return None

