"""Train and Serve on the GPU with the production encoders, after ``benchmarks/embed_gpu.py``:
embed the sample once (a store), ``prodcat train`` a text and a text+image model (the default
decision-level fusion: the cascade's two stages) and the learned linear fusion (preset
``linear``, Ray Train on the GPU with ``scaling.use_gpu``: seconds per epoch), ``prodcat cascade fit``, then
``benchmarks/serve_load.py`` against ``prodcat serve`` with ``multimodal_stage.num_gpus: 1``
(latency and products/s of the multimodal stage and the cascade).

    python benchmarks/gpu_extras.py --products .gpu-data/products.parquet --models /tmp/models --out $OUT
    python benchmarks/gpu_extras.py --cpu --tiny --products ... --models /tmp/m --out /tmp/x  # CPU check

``--cpu`` switches every GPU setting off (``use_gpu: false``, ``num_gpus: 0``), so the same code
paths run on a machine without a GPU. Writes ``<out>/gpu_extras.json``; each step's failure is
recorded and the others go on.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import embed_gpu  # noqa: E402  (beside this script)
import gpu_models  # noqa: E402
import serve_load  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def absolute_table(uri: str, workdir: Path, n: int | None = None) -> str:
    """The product table (``n`` rows drawn at random, seed 0, when given) with image paths made
    absolute, and its taxonomy.json beside it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(uri)
    if n and n < table.num_rows:
        table = table.take(np.sort(np.random.default_rng(0).choice(table.num_rows, n, replace=False)))
    base = Path(uri).resolve().parent
    uris = [u if not u or Path(u).is_absolute() else str(base / u) for u in table["image_uri"].to_pylist()]
    table = table.set_column(table.schema.get_field_index("image_uri"), "image_uri", pa.array(uris, pa.string()))
    pq.write_table(table, workdir / "products.parquet")
    (workdir / "taxonomy.json").write_text((base / "taxonomy.json").read_text())
    return str(workdir / "products.parquet")


def embed(products: str, models: dict, args, workdir: Path) -> dict:
    from prodcat.embed.pipeline import run_embedding

    config = embed_gpu.embed_config(models, args, (1, 1.0), embed_gpu.DEFAULT_COST_US)
    if args.cpu:
        config = config.model_copy(update={"encoders": {
            n: e.model_copy(update={"num_gpus": 0.0}) for n, e in config.encoders.items()}})
    config = config.model_copy(update={"products": products, "output": str(workdir / "store")})
    return run_embedding(config, log=lambda line: print(line, flush=True))


def train(products: str, store: str, name: str, modalities: str, args, out: Path,
          preset: str = "default") -> dict:
    """``prodcat train`` of ``preset`` (the default: decision-level fusion, scikit-learn on the
    CPU; ``linear``: the learned feature-level fusion, trained by Ray Train on the GPU)."""
    from prodcat.cli import main as prodcat

    result = out / "train" / name
    code = prodcat(["train", "--config", str(REPO / "configs/train.default.yaml"), "--products", products,
                    "--embeddings", store, "--output", str(result), "--set", f"model.preset={preset}",
                    "--set", f"model.modalities={modalities}", "--set", f"optim.epochs={args.epochs}",
                    "--set", f"scaling.use_gpu={str(not args.cpu).lower()}",
                    "--set", f"scaling.cpus_per_worker={args.train_cpus}"])
    summary = json.loads((result / "train_result.json").read_text()) if code == 0 else {}
    return {"exit": code, "seconds_per_epoch": summary.get("seconds_per_epoch"),
            "wall_seconds": summary.get("wall_seconds"), "epochs": len(summary.get("history", [])),
            "best_val_hF": (summary.get("metrics") or {}).get("val_hF")}


def cascade(products: str, store: str, out: Path, cost_sample: int, threads: int) -> str:
    """``prodcat cascade fit``; its stage costs (ms per product, on the CPU by design) timed on
    ``cost_sample`` products with ``threads`` torch threads (the production encoders on 2 threads
    and 256 products outran the lent machine's time on 2026-12-04)."""
    from prodcat.cli import main as prodcat

    folder = out / "cascade"
    code = prodcat(["cascade", "fit", "--text-model", str(out / "train/text/model"),
                    "--multimodal-model", str(out / "train/multimodal/model"), "--products", products,
                    "--embeddings", store, "--output", str(folder), "--goal", "max_escalation=1.0",
                    "--set", f"cost_sample={cost_sample}", "--set", f"torch_threads={threads}"])
    if code:
        raise RuntimeError(f"prodcat cascade fit exited {code}")
    return str(folder)


def serve(folder: str, products: str, args, out: Path) -> dict:
    gpus = "0" if args.cpu else "1"
    code = serve_load.main(["--cascade", folder, "--products", products, "--products-per-mode",
                            str(args.serve_products), "--batch", "8", "--concurrency", "4",
                            "--modes", "multimodal", "cascade", "--set", f"multimodal_stage.num_gpus={gpus}",
                            "--output", str(out / "serve_load.json"), "--readme", ""])
    return {"exit": code, **json.loads((out / "serve_load.json").read_text())}


def main(argv: list[str] | None = None) -> int:
    import pyarrow.parquet as pq

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", required=True, help="product table with labels and splits")
    parser.add_argument("--models", required=True, help="model folders (built there when missing)")
    parser.add_argument("--out", default=str(REPO / "benchmarks"), help="gpu_extras.json, serve_load.json")
    parser.add_argument("--work", help="stores, checkpoints, cascade (default a temporary folder)")
    parser.add_argument("--cpu", action="store_true", help="every GPU setting off")
    parser.add_argument("--tiny", action="store_true", help="tiny models (a CPU check)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-cpus", type=float, default=1.0)
    parser.add_argument("--serve-products", type=int, default=256)
    parser.add_argument("--n", type=int, help="use N products drawn at random (default all)")
    parser.add_argument("--cost-sample", type=int, default=64,
                        help="products timed per cascade stage on the CPU (0: skip)")
    parser.add_argument("--cost-threads", type=int, default=8, help="torch threads for that timing")
    args, rest = parser.parse_known_args(argv)
    bench = embed_gpu.parse((["--tiny"] if args.tiny else []) + rest)   # encoder settings
    for key, value in vars(bench).items():
        setattr(args, key, getattr(args, key, value))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-extras-"))
    work.mkdir(parents=True, exist_ok=True)
    products = absolute_table(args.products, work, args.n)
    texts = gpu_models.catalog_texts(pq.read_table(products, columns=["title", "description"]))
    models = gpu_models.build_models(Path(args.models), args.size, texts)
    errors, result, start = {}, {"cpu_only": args.cpu, "size": args.size}, time.perf_counter()

    def save() -> None:       # after every step: a run stopped by its timeout keeps what it measured
        result.update({"errors": errors, "seconds_total": round(time.perf_counter() - start, 1)})
        (out / "gpu_extras.json").write_text(json.dumps(result, indent=2, default=str))

    summary = embed_gpu.attempt("embed", lambda: embed(products, models, args, work), errors)
    if summary:
        result["embed"] = {k: summary[k] for k in ("embedded", "products_per_s", "steady_products_per_s",
                                                   "first_part_s", "encoders")}
        save()
        store, result["train"] = str(work / "store"), {}
        for name, mods, preset in (("text", "[text]", "default"), ("multimodal", "[text,image]", "default"),
                                   ("linear_fusion", "[text,image,lexical]", "linear")):
            result["train"][name] = embed_gpu.attempt(f"train {name}", lambda n=name, m=mods, p=preset: train(
                products, store, n, m, args, work, p), errors)
            save()
        folder = embed_gpu.attempt("cascade", lambda: cascade(
            products, store, work, args.cost_sample, args.cost_threads), errors)
        if folder:
            spec = json.loads((Path(folder) / "cascade_report.json").read_text())["spec"]
            result["cascade"] = {"tau": spec["threshold"], "cpu_ms_per_product": spec["validation"]["cost_ms"],
                                 "test": spec["validation"]["test"]}
            save()
            result["serve"] = embed_gpu.attempt("serve", lambda: serve(folder, products, args, out), errors)
    save()
    print(json.dumps({k: v for k, v in result.items() if k != "serve"}, indent=2, default=str))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
