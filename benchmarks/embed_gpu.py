"""GPU embedding benchmark: the production encoders' ceiling, the wrappers' efficiency, the Ray
Data pipeline and a plain DataLoader loop, in one run on the real sample products.

    python benchmarks/embed_gpu.py --products <catalog>/products.parquet          # on a GPU
    python benchmarks/embed_gpu.py --tiny --n 48 --repeat 1 --out /tmp/gpu-test   # CPU test

What it measures (products or items/s; towers: RoBERTa text, ViT image, CLIP text, CLIP image):

1. **ceiling**: each tower's bare forward on inputs already on the device (tokens sorted by
   length and trimmed per batch, as the encoder does), at several batch sizes, bf16 autocast;
   the three encoders back to back: 1 / Σ (1 / tower rate).
2. **wrappers**: ``encoder.forward`` on prepared numpy inputs (what a pipeline actor does: pinned
   copy, forward, pooling, back to numpy) and ``encoder.encode`` on raw products (what the
   cascade's Serve replicas do: the CPU half in-process too), each against its tower's ceiling;
   the CPU half alone (``encoder.inputs``, one process).
3. **pipeline**: ``run_embedding`` over the sample repeated ``--repeat`` times (products/s over
   the whole run and after its first part, i.e. without start-up), with GPU utilisation sampled
   through NVML every 0.1 s; per pool layout in ``--layouts``.
4. **plain loop**: a torch ``DataLoader`` whose ``--workers`` processes decode and prepare the
   inputs (the same ``encoder.inputs``), the same three encoders' ``forward`` in the main
   process, on the same products, with NVML.

Models: the production architectures at random weights (``gpu_models.py``) unless
``--models-from`` names folders with real ones. It prints the measured ``gpu_cost`` values and
batch sizes for ``configs/encoders.production.yaml`` and writes ``<out>/embed_gpu.json`` and
``<out>/embed_gpu.md`` (default ``benchmarks/``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_models  # noqa: E402  (beside this script)

REPO = Path(__file__).resolve().parent.parent
#: gpu_cost (µs per product) of configs/encoders.production.yaml, used when no ceiling was measured
DEFAULT_COST_US = {"text": 130.0, "image": 113.0, "clip": 82.0}
TOWERS = {"text": ("text", "text"), "image": ("image", "image"),
          "clip_text": ("clip", "clip_text"), "clip_image": ("clip", "clip_image")}


# -- inputs -----------------------------------------------------------------------------------------
def load_products(uri: str, n: int | None, repeat: int, workdir: Path):
    """The sample products (image paths made absolute against the table's folder), the first
    ``n``, repeated ``repeat`` times with distinct ids; written to ``workdir`` for the pipeline."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(uri, columns=["product_id", "title", "description", "image_uri"])
    table = table.slice(0, n) if n else table
    base = Path(uri).resolve().parent
    uris = [u if not u or Path(u).is_absolute() else str(base / u)
            for u in table["image_uri"].to_pylist()]
    table = table.set_column(3, "image_uri", pa.array(uris, pa.string()))
    copies = [table.set_column(0, "product_id", pc.binary_join_element_wise(
        table["product_id"], pa.scalar(f"#{k}"), "")) for k in range(repeat)]
    full = pa.concat_tables(copies)
    pq.write_table(full, workdir / "products.parquet")
    return table, full


def embed_config(models: dict, args, layout: tuple[int, float], gpu_cost: dict[str, float]):
    """The production config's shape with these model folders: bf16, ``num_gpus: auto`` split by
    the measured ``gpu_cost``; ``layout`` = (actors per encoder, auto_gpus)."""
    from prodcat.embed.pipeline import EmbedConfig

    actors, share = layout
    common = {"device": args.device, "precision": args.precision, "batch_size": args.batch_size,
              "pool_size": actors, "max_pool_size": actors, "num_cpus": args.actor_cpus,
              "num_gpus": "auto", "num_threads": args.actor_threads}
    encoders = {
        "text": {"family": "text", "weights": str(models["text"]), "max_tokens": args.max_tokens,
                 "gpu_cost": gpu_cost["text"], **common},
        "image": {"family": "image", "weights": str(models["image"]), "gpu_cost": gpu_cost["image"],
                  **common},
        "clip": {"family": "joint", "weights": str(models["clip"]), "gpu_cost": gpu_cost["clip"],
                 **common}}
    return EmbedConfig(encoders=encoders, auto_gpus=share, decode_batch_size=args.decode_batch,
                       decode_num_cpus=args.decode_cpus, tokenize_batch_size=args.tokenize_batch,
                       block_rows=args.tokenize_batch, write_rows=args.write_rows)


# -- GPU utilisation ------------------------------------------------------------------------------
class GpuSampler:
    """NVML utilisation (% of time a kernel ran) and memory every ``interval_s`` in a thread;
    :meth:`stats` is None where NVML or a GPU is missing (the CPU test)."""

    def __init__(self, interval_s: float = 0.1) -> None:
        self.interval_s, self.samples = interval_s, []
        self._stop = threading.Event()
        try:
            import pynvml  # lazy: nvidia-ml-py, only on GPU machines

            pynvml.nvmlInit()
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self._nvml = self._handle = None

    def __enter__(self) -> "GpuSampler":
        if self._handle is not None:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            util = self._nvml.nvmlDeviceGetUtilizationRates(self._handle)
            memory = self._nvml.nvmlDeviceGetMemoryInfo(self._handle)
            self.samples.append((time.time(), util.gpu, memory.used / 2**30))
            time.sleep(self.interval_s)

    def __exit__(self, *exc) -> None:
        self._stop.set()

    def stats(self, since: float | None = None, until: float | None = None) -> dict | None:
        """Mean / median GPU busy % and peak memory (GiB) over the samples in [since, until]."""
        rows = [s for s in self.samples if (since is None or s[0] >= since)
                and (until is None or s[0] <= until)]
        if not rows:
            return None
        util = np.array([r[1] for r in rows], float)
        return {"samples": len(rows), "gpu_busy_mean_pct": round(float(util.mean()), 1),
                "gpu_busy_median_pct": round(float(np.median(util)), 1),
                "memory_peak_gib": round(max(r[2] for r in rows), 2)}


# -- 1. ceilings ------------------------------------------------------------------------------------
def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def tower_call(enc, tower: str):
    """``(make device inputs for rows, bare forward)`` of one tower; inputs are prepared once."""
    model = enc.model
    if tower == "text":
        return lambda x: model(input_ids=x[0], attention_mask=x[1]).last_hidden_state
    if tower == "image":
        return model
    return model.encode_text if tower == "clip_text" else model.encode_image


def device_batches(enc, tower: str, prepared: dict, batch_size: int) -> list:
    """The tower's prepared inputs cut into device tensors of ``batch_size`` rows (text: sorted by
    length and trimmed per batch, as :meth:`TextEncoder.forward_tokens` does)."""
    from prodcat.embed.encoders.inputs import input_column

    feature = TOWERS[tower][1]
    if tower == "text":
        ids, mask = prepared[input_column(feature, "ids")], prepared[input_column(feature, "mask")]
        lengths = mask.sum(1)
        order = np.argsort(lengths, kind="stable")
        out = []
        for i in range(0, len(order), batch_size):
            rows = order[i:i + batch_size]
            width = max(1, int(lengths[rows].max()))
            out.append((enc.to_device(ids[rows, :width]).long(), enc.to_device(mask[rows, :width]).long()))
        return out
    if tower == "clip_text":
        ids = prepared[input_column(feature, "ids")]
        return [enc.to_device(ids[i:i + batch_size]).long() for i in range(0, len(ids), batch_size)]
    pixels = prepared[input_column(feature, "pixels")]
    return [enc.pixels_to_device(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)]


def time_tower(enc, tower: str, batches: list, device: str, passes: int) -> float:
    """Items/s of the bare forward over ``batches`` (after one warm-up batch)."""
    import torch

    call = tower_call(enc, tower)
    n = sum(len(b[0]) if isinstance(b, tuple) else len(b) for b in batches)
    with torch.inference_mode(), enc.autocast():
        call(batches[0])
        sync(device)
        start = time.perf_counter()
        for _ in range(passes):
            for batch in batches:
                call(batch)
        sync(device)
    return n * passes / (time.perf_counter() - start)


def ceilings(encoders: dict, prepared: dict, batch_sizes: list[int], device: str, passes: int) -> dict:
    """Tower → {batch size: items/s} of the bare forward, and the best."""
    out = {}
    for tower, (name, _) in TOWERS.items():
        rates = {}
        for size in batch_sizes:
            batches = device_batches(encoders[name], tower, prepared[name], size)
            rates[size] = round(time_tower(encoders[name], tower, batches, device, passes), 1)
            del batches
        best = max(rates.values())
        enough = min(s for s, r in rates.items() if r >= 0.95 * best)
        out[tower] = {"items_per_s": rates, "best": best, "batch_size_95pct": enough}
    return out


# -- 2. wrappers ----------------------------------------------------------------------------------
def timed(fn, device: str, repeat: int = 1) -> float:
    fn()                                  # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    sync(device)
    return (time.perf_counter() - start) / repeat


def wrappers(encoders: dict, inputs: dict, raw: dict, prepared: dict, device: str) -> dict:
    """Per encoder: items/s of ``forward`` (prepared inputs), ``encode`` (raw products) and the
    CPU half alone (``inputs``); per tower: ``encode_texts`` / ``encode_pixels``."""
    from prodcat.embed.encoders.inputs import pixel_column

    n = len(raw["product_id"])
    out = {}
    for name, enc in encoders.items():
        out[name] = {
            "forward_products_per_s": round(n / timed(lambda: enc.forward(prepared[name]), device), 1),
            "encode_products_per_s": round(n / timed(lambda: enc.encode(raw), device), 1),
            "cpu_inputs_products_per_s": round(n / timed(lambda: inputs[name](raw), "cpu"), 1)}
    texts = [f"{t}. {d}" for t, d in zip(raw["title"], raw["description"])]
    out["text"]["encode_texts_per_s"] = round(n / timed(lambda: encoders["text"].encode_texts(texts), device), 1)
    out["clip"]["encode_texts_per_s"] = round(n / timed(lambda: encoders["clip"].encode_texts(texts), device), 1)
    for name in ("image", "clip"):
        pixels = raw[pixel_column(encoders[name].image_size)]
        out[name]["encode_pixels_per_s"] = round(
            n / timed(lambda: encoders[name].encode_pixels(pixels), device), 1)
    return out


# -- 3. the pipeline --------------------------------------------------------------------------------
def pipeline(models: dict, args, layout, gpu_cost, workdir: Path, tag: str) -> dict:
    """``run_embedding`` into a fresh store, with NVML sampled over the whole run."""
    from prodcat.embed.pipeline import run_embedding

    config = embed_config(models, args, layout, gpu_cost).model_copy(update={
        "products": str(workdir / "products.parquet"), "output": str(workdir / f"store-{tag}")})
    start = time.time()
    with GpuSampler() as sampler:
        summary = run_embedding(config, log=lambda line: print(line, flush=True), log_every_s=10)
    end = time.time()
    first = start + summary["first_part_s"] if summary.get("first_part_s") else None
    return {"layout": {"actors_per_encoder": layout[0], "auto_gpus": layout[1]},
            "products": summary["embedded"], "seconds": round(end - start, 2),
            "products_per_s": summary["products_per_s"],
            "steady_products_per_s": summary["steady_products_per_s"],
            "first_part_s": summary["first_part_s"], "encoders": summary["encoders"],
            "gpu": sampler.stats(), "gpu_steady": sampler.stats(since=first, until=end),
            "failures": summary["failures"]}


# -- 4. the plain loop ------------------------------------------------------------------------------
class _Products:
    """A map-style dataset of product dicts."""

    def __init__(self, table) -> None:
        self.rows = table.to_pylist()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.rows[i]


class _Collate:
    """DataLoader worker: decode images and run every encoder's CPU half on one batch."""

    def __init__(self, inputs: dict, sizes: list[int]) -> None:
        self.inputs, self.sizes = inputs, sizes

    def __call__(self, rows: list[dict]) -> dict:
        from prodcat.embed.extractor import decode_images

        batch = {k: [r[k] for r in rows] for k in ("product_id", "title", "description", "image_uri")}
        batch.update(decode_images(batch, self.sizes))
        return {name: prepare(batch) for name, prepare in self.inputs.items()}


def plain_loop(encoders: dict, inputs: dict, products, args) -> dict:
    """DataLoader (``--workers`` processes: decode + inputs) → the encoders' ``forward`` in this
    process, one batch of ``--batch-size`` products at a time; NVML sampled."""
    from torch.utils.data import DataLoader

    sizes = sorted({e.image_size for e in encoders.values() if e.image_size})
    loader = DataLoader(_Products(products), batch_size=args.batch_size, num_workers=args.workers,
                        collate_fn=_Collate(inputs, sizes), prefetch_factor=4 if args.workers else None,
                        persistent_workers=False)
    start = time.perf_counter()
    n = 0
    with GpuSampler() as sampler:
        for batch in loader:
            for name, enc in encoders.items():
                enc.forward(batch[name])
            n += len(batch["text"]["status_text"])
    seconds = time.perf_counter() - start
    return {"products": n, "workers": args.workers, "seconds": round(seconds, 2),
            "products_per_s": round(n / seconds, 1), "gpu": sampler.stats()}


# -- the run ---------------------------------------------------------------------------------------
def build_encoders(models: dict, args) -> tuple[dict, dict]:
    """The three encoders in this process, and their CPU halves in the transfer dtype."""
    from prodcat.embed.encoders import build_encoder

    config = embed_config(models, args, (1, 1.0), {k: 1.0 for k in models})
    encoders = {n: build_encoder(c.model_copy(update={"num_gpus": 0.0})) for n, c in config.encoders.items()}
    return encoders, {n: e.inputs for n, e in encoders.items()}


def attempt(name: str, fn, errors: dict):
    """``fn()``, or None with the error recorded under ``name``: one failing measurement (an
    older library on the lent machine, say) leaves the others standing."""
    import traceback

    try:
        return fn()
    except Exception as err:  # recorded in the JSON and printed; the run goes on
        errors[name] = f"{type(err).__name__}: {err}"
        traceback.print_exc()
        return None


def measure(args, workdir: Path) -> dict:
    """Every measurement of the module docstring, in order; returns the result dict."""
    import torch

    from prodcat.core.runtime import ensure_ray, torch_device
    from prodcat.embed.extractor import decode_images

    device, errors = torch_device(args.device), {}
    sample, products = load_products(args.products, args.n, args.repeat, workdir)
    texts = gpu_models.catalog_texts(sample)
    t0 = time.perf_counter()
    models = gpu_models.build_models(Path(args.models_from or workdir / "models"), args.size, texts)
    encoders, inputs = build_encoders(models, args)
    setup_s = time.perf_counter() - t0
    raw = {c: sample[c].to_pylist() for c in ("product_id", "title", "description", "image_uri")}
    raw.update(decode_images(raw, sorted({e.image_size for e in encoders.values() if e.image_size})))
    prepared = {name: prepare(raw) for name, prepare in inputs.items()}
    ceiling = attempt("ceiling", lambda: ceilings(encoders, prepared, args.batch_sizes, device,
                                                  args.passes), errors)
    wrapped = attempt("wrappers", lambda: wrappers(encoders, inputs, raw, prepared, device), errors)
    per_product_us = dict(DEFAULT_COST_US)
    if ceiling:
        per_product_us = {"text": 1e6 / ceiling["text"]["best"], "image": 1e6 / ceiling["image"]["best"],
                          "clip": 1e6 / ceiling["clip_text"]["best"] + 1e6 / ceiling["clip_image"]["best"]}
    gpu_cost = {k: round(v, 1) for k, v in per_product_us.items()}
    plain = attempt("plain_loop", lambda: plain_loop(encoders, inputs, products, args), errors)
    lengths = prepared_lengths(inputs["text"], raw)
    encoders.clear(), prepared.clear()          # free the GPU for the pipeline
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    ensure_ray(num_cpus=args.ray_cpus, object_store_memory=int(args.object_store_gb * 2**30))
    runs = [attempt(f"pipeline {layout}", lambda layout=layout: pipeline(
        models, args, layout, gpu_cost, workdir, f"{layout[0]}x{layout[1]}"), errors)
        for layout in args.layouts]
    return {"device": gpu_name(device), "setup_s": round(setup_s, 2), "products_unique": sample.num_rows,
            "products_per_run": products.num_rows, "text_tokens_mean": lengths,
            "ceiling": ceiling, "ceiling_products_per_s": round(1e6 / sum(per_product_us.values()), 1),
            "wrappers": wrapped, "gpu_cost_us": gpu_cost, "gpu_cost_measured": bool(ceiling),
            "plain_loop": plain, "pipeline": [r for r in runs if r], "errors": errors}


def prepared_lengths(text_inputs, raw: dict) -> float:
    from prodcat.embed.encoders.inputs import token_lengths

    return round(float(token_lengths(text_inputs(raw), ["text"]).mean()), 1)


def gpu_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device.startswith("cuda") else f"cpu ({os.cpu_count()} cores)"


#: --tiny: sizes for a CPU test run in well under a minute on 2 cores
TINY_DEFAULTS = {"n": 32, "repeat": 2, "batch_size": 16, "batch_sizes": [8, 16], "passes": 1,
                 "max_tokens": 64, "workers": 1, "layouts": "1x1.0", "ray_cpus": 2,
                 "actor_cpus": 0.3, "actor_threads": 1, "decode_batch": 16, "decode_cpus": 0.2,
                 "tokenize_batch": 32, "write_rows": 16, "object_store_gb": 0.5}


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--products", default=str(REPO / "runs/sample/catalog/products.parquet"),
                        help="product table; relative image_uri values resolve against its folder")
    parser.add_argument("--n", type=int, help="use the first N products only")
    parser.add_argument("--repeat", type=int, default=6, help="pipeline and plain loop run on the "
                        "products this many times over (distinct ids)")
    parser.add_argument("--tiny", action="store_true", help="tiny models, CPU sizes: a test run")
    parser.add_argument("--models-from", help="folder with text-<size>/, image-<size>/, clip-<size>/ "
                        "(built there when missing)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="bf16", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--batch-size", type=int, default=256, help="products per forward")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="batch sizes of the ceiling sweep")
    parser.add_argument("--passes", type=int, default=2, help="passes over the sample per ceiling")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--workers", type=int, default=14, help="DataLoader workers of the plain loop")
    parser.add_argument("--layouts", default="1x1.0,2x0.5", help="pipeline runs: ACTORSxAUTO_GPUS, "
                        "comma-separated (1x1.0: one actor per encoder sharing one GPU)")
    parser.add_argument("--ray-cpus", type=int, help="CPUs of the local Ray instance (default all)")
    parser.add_argument("--object-store-gb", type=float, default=16.0,
                        help="object store of the local Ray instance (GiB)")
    parser.add_argument("--actor-cpus", type=float, default=1.0)
    parser.add_argument("--actor-threads", type=int, default=None)
    parser.add_argument("--decode-batch", type=int, default=128)
    parser.add_argument("--decode-cpus", type=float, default=0.5)
    parser.add_argument("--tokenize-batch", type=int, default=1024)
    parser.add_argument("--write-rows", type=int, default=2048)
    parser.add_argument("--out", default=str(REPO / "benchmarks"), help="folder for embed_gpu.json/.md")
    if parser.parse_known_args(argv)[0].tiny:     # CPU test sizes unless given explicitly
        parser.set_defaults(**TINY_DEFAULTS)
    args = parser.parse_args(argv)
    args.size = "tiny" if args.tiny else "base"
    args.layouts = [(int(a), float(b)) for a, b in (item.split("x") for item in args.layouts.split(","))]
    return args


def _rate(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def markdown(r: dict) -> str:
    """The result as a Markdown report: ceilings, wrappers, pipeline and plain loop."""
    lines = [f"# GPU embedding benchmark ({r['device']}, {r['size']} models, {r['precision']})", "",
             f"{r['products_unique']:,} sample products (mean {r['text_tokens_mean']} text tokens at "
             f"most {r['max_tokens']}); pipeline and plain loop on {r['products_per_run']:,}; "
             f"batch size {r['batch_size']}; {r['seconds_total']} s in all.", ""]
    if r["ceiling"] and r["wrappers"]:
        lines += [_tower_table(r["ceiling"], r["wrappers"]), "",
                  "CLIP rows compare the encoder (both towers) with both bare towers back to back.", ""]
    lines += [_run_table(r), ""]
    plain = (r["plain_loop"] or {}).get("products_per_s")
    best = max([p["steady_products_per_s"] or 0 for p in r["pipeline"]] or [0])
    lines += [f"Ceiling (the three encoders' bare forwards back to back): "
              f"{r['ceiling_products_per_s']:,.0f} products/s"
              + (f". Best pipeline (after its first part) / plain loop: {best / plain:.2f}." if plain else "."),
              "", ("gpu_cost for configs/encoders.production.yaml (µs per product, measured): "
                   if r["gpu_cost_measured"] else "gpu_cost (not measured; the config's): ")
              + ", ".join(f"{k}: {v}" for k, v in r["gpu_cost_us"].items()), ""]
    if r["errors"]:
        lines += ["Errors:", ""] + [f"- {k}: {v}" for k, v in r["errors"].items()] + [""]
    return "\n".join(lines)


def _tower_table(c: dict, w: dict) -> str:
    from prodcat.core.report import markdown_table

    rows = []
    for tower, (name, _) in TOWERS.items():
        best = c[tower]["best"]
        fwd, enc = w[name]["forward_products_per_s"], w[name]["encode_products_per_s"]
        if name == "clip":   # one forward/encode covers both towers: compare with both back to back
            best = 1 / (1 / c["clip_text"]["best"] + 1 / c["clip_image"]["best"])
        rows.append([tower, _rate(c[tower]["best"]), c[tower]["batch_size_95pct"], _rate(fwd),
                     f"{fwd / best:.2f}", _rate(enc), f"{enc / best:.2f}",
                     _rate(w[name]["cpu_inputs_products_per_s"])])
    return markdown_table(["tower", "bare forward items/s", "batch for 95 %", "forward products/s",
                           "forward / bare", "encode products/s", "encode / bare",
                           "CPU half products/s (1 process)"], rows)


def _run_table(r: dict) -> str:
    from prodcat.core.report import markdown_table

    ceiling = r["ceiling_products_per_s"]
    runs = [[f"run_embedding, {p['layout']['actors_per_encoder']} actor(s) per encoder, "
             f"auto_gpus {p['layout']['auto_gpus']}", _rate(p["products_per_s"]),
             _rate(p["steady_products_per_s"]), f"{(p['steady_products_per_s'] or 0) / ceiling:.2f}",
             _busy(p["gpu_steady"] or p["gpu"])] for p in r["pipeline"]]
    if r["plain_loop"]:
        plain = r["plain_loop"]
        runs.append([f"plain loop: DataLoader, {plain['workers']} workers + the encoders in one "
                     "process", _rate(plain["products_per_s"]), "",
                     f"{plain['products_per_s'] / ceiling:.2f}", _busy(plain["gpu"])])
    return markdown_table(["run", "products/s (whole run)", "products/s after the first part",
                           "/ ceiling", "GPU busy (NVML)"], runs)


def _busy(stats: dict | None) -> str:
    return "n/a (no NVML)" if not stats else f"{stats['gpu_busy_mean_pct']} % mean"


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="embed-gpu-") as tmp:
        result = measure(args, Path(tmp))
    result.update({"seconds_total": round(time.perf_counter() - start, 1), "argv": argv or sys.argv[1:],
                   "python": sys.version.split()[0], "machine": platform.platform(),
                   "cpus": os.cpu_count(), "size": args.size, "precision": args.precision,
                   "batch_size": args.batch_size, "max_tokens": args.max_tokens})
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "embed_gpu.json").write_text(json.dumps(result, indent=2))
    (out / "embed_gpu.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
