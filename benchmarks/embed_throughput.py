"""Products/s of the Ray Data embedding pipeline against a plain single-process PyTorch loop.

Both sides use the same encoders (the offline config: MiniLM text, EfficientNet-Lite0 image),
the same batch sizes, the same image decoding code (prodcat.embed.imaging) and the same total number
of torch threads (``--threads``): the plain loop runs everything in one process with that many
threads; the pipeline runs one text and one image actor with one thread each (and decoding in
Ray tasks). Both timings include loading the models; Ray is started before either is timed.

    python benchmarks/embed_throughput.py --n 2000            # writes benchmarks/embed_throughput.json
    python benchmarks/embed_throughput.py --n 300 --sizes 64  # a quick look

Prints one JSON object: products/s of each side, their ratio (pipeline / plain), the pipeline's
fixed start-up cost (a run over ``--warm-n`` products), and per-stage busy seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def sample_products(uri: str, n: int, seed: int):
    """``n`` products drawn at random (fixed seed) from the product table."""
    import numpy as np

    from prodcat.core import storage

    table = storage.read_table(uri)
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, size=min(n, table.num_rows),
                                                      replace=False))
    return table.take(rows)


def plain_loop(products, config, threads: int) -> dict:
    """One process, no Ray: per encoder, its batches in turn (decoding images inline)."""
    import torch

    from prodcat.embed.encoders import build_encoder
    from prodcat.embed.extractor import decode_images

    torch.set_num_threads(threads)
    start = time.perf_counter()
    encoders = {name: build_encoder(cfg) for name, cfg in config.encoders.items()}
    loaded = time.perf_counter()
    columns = {c: products[c].to_pylist() for c in ("product_id", "title", "description",
                                                   "image_uri")}
    seconds: dict[str, float] = {}
    for name, enc in encoders.items():
        t = time.perf_counter()
        size = config.encoders[name].batch_size
        for i in range(0, products.num_rows, size):
            batch = {c: v[i:i + size] for c, v in columns.items()}
            if enc.image_size:
                batch.update(decode_images(batch, [enc.image_size], config.image_limits))
            enc.encode(batch)
        seconds[name] = time.perf_counter() - t
    total = time.perf_counter() - start
    return {"seconds": round(total, 2), "load_s": round(loaded - start, 2),
            "products_per_s": round(products.num_rows / total, 2),
            "stage_s": {k: round(v, 2) for k, v in seconds.items()}}


def pipeline(products, config, workdir: Path, tag: str) -> dict:
    """The Ray Data pipeline (run_embedding) into a fresh store; wall time includes start-up."""
    from prodcat.core import storage
    from prodcat.embed.pipeline import run_embedding

    table_uri = str(workdir / f"products-{tag}.parquet")
    storage.write_table(products, table_uri)
    cfg = config.model_copy(update={"products": table_uri, "output": str(workdir / f"store-{tag}")})
    start = time.perf_counter()
    summary = run_embedding(cfg, log=lambda _: None)
    total = time.perf_counter() - start
    return {"seconds": round(total, 2), "products_per_s": round(products.num_rows / total, 2),
            "ray_data_s": summary["pipeline_s"], "encoders": summary["encoders"],
            "failures": summary["failures"]}


def benchmark_config(path: str, threads: int, text_tokens: int | None):
    """The offline config with one 1-thread actor per encoder (``threads`` = 2 in total)."""
    from prodcat.core.config import load_config
    from prodcat.embed.pipeline import EmbedConfig

    overrides = {}
    for name in ("text", "image"):
        overrides.update({f"encoders.{name}.pool_size": 1, f"encoders.{name}.num_threads": 1,
                          f"encoders.{name}.num_cpus": 0.8})
    if text_tokens:
        overrides["encoders.text.max_tokens"] = text_tokens
    if threads != 2:
        raise SystemExit("the pipeline layout here is 2 actors × 1 thread: use --threads 2")
    return load_config(EmbedConfig, path, overrides)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", default=str(REPO / "runs/sample/catalog/products.parquet"))
    parser.add_argument("--config", default=str(REPO / "configs/encoders.offline.yaml"))
    parser.add_argument("--n", type=int, default=2000, help="products measured (≥ 2,000 for the record)")
    parser.add_argument("--warm-n", type=int, default=64, help="products of the start-up probe run")
    parser.add_argument("--threads", type=int, default=2, help="torch threads in total, each side")
    parser.add_argument("--text-tokens", type=int, help="override encoders.text.max_tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(REPO / "benchmarks/embed_throughput.json"))
    args = parser.parse_args(argv)

    from prodcat.core.runtime import ensure_ray

    config = benchmark_config(args.config, args.threads, args.text_tokens)
    products = sample_products(args.products, args.n, args.seed)
    ensure_ray(num_cpus=args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        warm = pipeline(products.slice(0, args.warm_n), config, workdir, "warm")
        plain = plain_loop(products, config, args.threads)
        piped = pipeline(products, config, workdir, "full")
    result = {
        "products": products.num_rows, "threads": args.threads, "cpus": os.cpu_count(),
        "python": sys.version.split()[0], "machine": platform.platform(),
        "load_average_at_end": os.getloadavg(),
        "encoders": {n: {"weights": e.weights, "batch_size": e.batch_size,
                         **({"max_tokens": e.max_tokens} if e.family == "text" else {}),
                         **({"image_size": e.image_size} if e.family == "image" else {})}
                     for n, e in config.encoders.items()},
        "plain_loop": plain, "pipeline": piped,
        "pipeline_startup_probe": {"products": args.warm_n, "seconds": warm["seconds"]},
        "ratio_pipeline_over_plain": round(piped["products_per_s"] / plain["products_per_s"], 3),
    }
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
