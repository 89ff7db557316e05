"""Fine-tuning speed: ``prodcat finetune`` (Ray Train, one worker) against the same training loop in
a plain process, on the same rows, model and settings, in one run.

    python benchmarks/finetune_gpu.py --products .gpu-data/products.parquet --models /tmp/models --out $OUT
    python benchmarks/finetune_gpu.py --tiny --products runs/sample/catalog/products.parquet \\
        --models /tmp/m --out /tmp/ft                                          # a CPU check

Models (``gpu_models.py``, random weights; speed only): ``minilm``, the shape of
all-MiniLM-L6-v2 that ``configs/finetune.default.yaml`` fine-tunes, and ``roberta``, RoBERTa-base
(the production text encoder). For each: the product table's training rows (``--n`` at most),
tokenized once (``prodcat.train.finetune.tokenize_rows``), then

1. **plain**: ``build_classifier`` on the device, AdamW over ``param_groups``, and the epoch of
   ``prodcat.train.finetune_loop`` (the same batches, warm-up, clipping and bf16 autocast), in
   this process: no Ray, no DDP wrapper, no checkpoints;
2. **ray_train**: ``prodcat.train.finetune.finetune`` with ``scaling.use_gpu`` (one worker): the
   ``TorchTrainer``, a checkpoint per epoch, the exported encoder.

Each records training products/s per epoch (the first epoch includes CUDA warm-up) and wall
seconds; the ratio is Ray Train's last-epoch rate over the plain loop's. Writes
``<out>/finetune_gpu.json`` and ``<out>/finetune_gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import gpu_models  # noqa: E402  (beside this script)

ARCHS = {"minilm": "minilm", "roberta": "text"}      # benchmark name → gpu_models name


def config_for(args, weights: Path, products: str, output: Path):
    """The ``FinetuneConfig`` both arms use: ``configs/finetune.default.yaml`` with this run's
    weights, rows, batch size, precision and device."""
    from prodcat.core.config import load_config
    from prodcat.train.finetune_config import FinetuneConfig

    repo = Path(__file__).resolve().parent.parent
    config = load_config(FinetuneConfig, repo / "configs/finetune.default.yaml")
    return config.model_copy(update={
        "encoder": config.encoder.model_copy(update={"weights": str(weights), "max_tokens": args.max_tokens}),
        "data": config.data.model_copy(update={"products": products, "max_train_products": args.n}),
        "optim": config.optim.model_copy(update={"epochs": args.epochs, "batch_size": args.batch_size,
                                                 "precision": args.precision, "log_every_s": 1e9}),
        "scaling": config.scaling.model_copy(update={"use_gpu": args.device == "cuda",
                                                     "cpus_per_worker": args.cpus, "torch_threads": args.cpus,
                                                     "max_failures": 0}),
        "output": str(output), "name": "bench"})


def plain(config) -> dict:
    """The fine-tuning epoch in this process (module docstring, 1)."""
    import numpy as np
    import torch

    from prodcat.train.finetune import tokenize_rows, training_rows
    from prodcat.train.finetune_loop import _one_epoch, build_classifier, param_groups, steps_per_epoch

    start = time.perf_counter()
    device = torch.device("cuda" if config.scaling.use_gpu else "cpu")
    torch.set_num_threads(int(config.scaling.torch_threads))
    data = tokenize_rows(training_rows(config), config.encoder)
    torch.manual_seed(config.optim.seed)
    model = build_classifier(config.encoder.weights, len(data["label_ids"]), config.encoder.pooling,
                             config.encoder.normalize,
                             config.logit_scale if config.encoder.normalize else 1.0).to(device)
    optimizer = torch.optim.AdamW(param_groups(model, config.optim))
    total = config.optim.epochs * steps_per_epoch(len(data["labels"]), 1, config.optim.batch_size)
    state, epochs = {"step": 0}, []
    for epoch in range(config.optim.epochs):
        metrics = _one_epoch(model, optimizer, data, epoch, state, total, config, 0, 1, device,
                             lambda line: None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        state["step"] = metrics["step"]
        epochs.append({k: metrics[k] for k in ("epoch_seconds", "products_per_s", "train_loss")})
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {"products": int(len(data["labels"])), "mean_tokens": float(np.mean(data["mask"].sum(1))),
            "epochs": epochs, "wall_seconds": round(time.perf_counter() - start, 2),
            "peak_gpu_gib": round(peak, 2) if peak else None}


def ray_train(config) -> dict:
    """``prodcat finetune`` (module docstring, 2)."""
    from prodcat.train.finetune import finetune

    start = time.perf_counter()
    res = finetune(config, progress=lambda line: print(line, flush=True))
    return {"products": res.train_products,
            "epochs": [{k: h[k] for k in ("epoch_seconds", "products_per_s", "train_loss")} for h in res.history],
            "wall_seconds": round(time.perf_counter() - start, 2), "fingerprint": res.fingerprint}


def markdown(r: dict) -> str:
    lines = [f"# Fine-tuning: Ray Train against a plain loop ({r['device']})", "",
             f"{r['settings']}", "",
             "| model | arm | products | epoch 1 products/s | last epoch products/s | wall s |",
             "|---|---|---:|---:|---:|---:|"]
    for arch, arms in r["models"].items():
        for arm in ("plain", "ray_train"):
            a = arms.get(arm)
            if a:
                lines.append(f"| {arch} | {arm} | {a['products']:,} | {a['epochs'][0]['products_per_s']:.1f} | "
                             f"{a['epochs'][-1]['products_per_s']:.1f} | {a['wall_seconds']:.1f} |")
        if arms.get("ratio") is not None:
            lines.append(f"| {arch} | **ratio** (Ray Train / plain, last epoch) | | | **{arms['ratio']:.2f}** | |")
    if r["errors"]:
        lines += ["", "Errors: " + "; ".join(f"{k}: {v}" for k, v in r["errors"].items())]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import pyarrow.parquet as pq
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", required=True, help="product table with labels and splits")
    parser.add_argument("--models", required=True, help="model folders (built there when missing)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="finetune_gpu.json/.md")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS), choices=list(ARCHS))
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU check)")
    parser.add_argument("--n", type=int, default=6000, help="training rows at most")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64, help="products per step")
    parser.add_argument("--max-tokens", type=int, default=64, help="as configs/finetune.default.yaml")
    parser.add_argument("--precision", default=None, choices=["fp32", "bf16"],
                        help="default bf16 on a GPU, fp32 on the CPU")
    parser.add_argument("--cpus", type=int, default=4, help="CPUs (and torch threads) of each arm")
    args = parser.parse_args(argv)
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    args.precision = args.precision or ("bf16" if args.device == "cuda" else "fp32")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="finetune-gpu-"))
    from gpu_extras import absolute_table  # image paths absolute, taxonomy beside it
    products = absolute_table(args.products, work)
    texts = gpu_models.catalog_texts(pq.read_table(products, columns=["title", "description"]))
    models = gpu_models.build_models(Path(args.models), "tiny" if args.tiny else "base", texts,
                                     tuple(ARCHS[a] for a in args.archs))
    result = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
              "settings": (f"{args.epochs} epochs, batch {args.batch_size}, {args.max_tokens} tokens, "
                           f"{args.precision}, {args.cpus} CPUs per arm; random weights"),
              "models": {}, "errors": {}}
    from embed_gpu import attempt

    def save() -> None:       # after every arm: a run stopped by its timeout keeps what it measured
        (out / "finetune_gpu.json").write_text(json.dumps(result, indent=2))
        (out / "finetune_gpu.md").write_text(markdown(result))

    for arch in args.archs:
        weights, arms = models[ARCHS[arch]], {}
        result["models"][arch] = arms
        arms["plain"] = attempt(f"{arch} plain", lambda: plain(
            config_for(args, weights, products, work / f"{arch}-plain")), result["errors"])
        save()
        arms["ray_train"] = attempt(f"{arch} ray_train", lambda: ray_train(
            config_for(args, weights, products, work / f"{arch}-ray")), result["errors"])
        if arms["plain"] and arms["ray_train"]:
            arms["ratio"] = round(arms["ray_train"]["epochs"][-1]["products_per_s"]
                                  / arms["plain"]["epochs"][-1]["products_per_s"], 3)
        save()
        print(json.dumps({arch: arms}, indent=1), flush=True)
    print(markdown(result))
    return 0 if not result["errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
