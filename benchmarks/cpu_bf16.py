"""bfloat16 autocast on the CPU against float32, in one run: the main job's three heavy computations
(MiniLM's forward at 64 tokens, EfficientNet-Lite0's at 224 px, and a fine-tuning step: forward,
backward and AdamW), on real products of a built catalogue.

    python benchmarks/cpu_bf16.py --products runs/sample/catalog/products.parquet \\
        --out /tmp/cpu-bf16 [--rows 512 --rounds 3 --threads 1]

The encoders are prodcat's own, built from ``configs/encoders.offline.yaml`` with ``precision``
set to ``fp32`` or ``bf16`` (:func:`prodcat.core.runtime.autocast`: bf16 autocast only where the
CPU has bfloat16 instructions, ``cpu_computes_bf16`` in the JSON); the fine-tuning step is
``prodcat.train.finetune_loop``'s classifier (MiniLM + linear head, batch 32) under the same
autocast. Inputs are prepared once (tokens, decoded pixels); each round times every computation
in both precisions, the arms alternating, so a machine that speeds up or slows down touches both.
Reports products/s per arm (median over rounds), the ratio bf16 / fp32, and how far the vectors
move: the cosine between each product's fp32 and bf16 vector (minimum and median over ``--rows``).
Writes ``<out>/cpu_bf16.json`` and prints it. torch threads: ``--threads`` (1 = one embedding
actor of the main job; 2 = a fine-tuning worker).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", default=str(REPO / "runs/sample/catalog/products.parquet"),
                        help="a built catalogue's products.parquet (prodcat catalog build)")
    parser.add_argument("--out", required=True, help="folder for cpu_bf16.json")
    parser.add_argument("--rows", type=int, default=512, help="products with an image, the first by id")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--steps", type=int, default=4, help="fine-tuning steps timed per round")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    import torch

    from prodcat.core import storage
    from prodcat.core.config import load_config
    from prodcat.core.runtime import autocast, cpu_computes_bf16
    from prodcat.embed.encoders import build_encoder
    from prodcat.embed.encoders.fingerprint import resolve_weights
    from prodcat.embed.encoders.inputs import input_column
    from prodcat.embed.extractor import decode_images
    from prodcat.embed.pipeline import EmbedConfig
    from prodcat.train.finetune_loop import build_classifier

    torch.set_num_threads(args.threads)
    table = storage.read_table(args.products, columns=["product_id", "title", "description",
                                                       "image_uri", "has_image"])
    table = table.filter(table["has_image"]).sort_by("product_id").slice(0, args.rows)
    batch = {k: table[k].to_pylist() for k in ("product_id", "title", "description", "image_uri")}
    config = load_config(EmbedConfig, REPO / "configs/encoders.offline.yaml",
                         ["encoders.text.device=cpu", "encoders.image.device=cpu"])
    encoders = {(name, p): build_encoder(config.encoders[name].model_copy(update={"precision": p}))
                for name in ("text", "image") for p in ("fp32", "bf16")}
    size = encoders[("image", "fp32")].image_size
    batch.update(decode_images(batch, [size], config.image_limits))
    inputs = {name: encoders[(name, "fp32")].prepare(batch) for name in ("text", "image")}

    text_cfg = config.encoders["text"]
    classifier = build_classifier(str(resolve_weights(text_cfg.weights)), 150, text_cfg.pooling,
                                  text_cfg.normalize, logit_scale=20.0)
    classifier.train()
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=1e-5)
    ids = np.asarray(inputs["text"][input_column("text", "ids")])           # [N, T]
    mask = np.asarray(inputs["text"][input_column("text", "mask")])         # [N, T]
    labels = torch.from_numpy(np.random.default_rng(0).integers(0, 150, len(ids)))

    step_rows = min(32, len(ids))

    def step_rate(precision: str) -> float:
        done, start = 0, time.perf_counter()
        for k in range(args.steps):
            first = step_rows * k % (len(ids) - step_rows + 1)
            rows = slice(first, first + step_rows)
            width = max(1, int(mask[rows].sum(axis=1).max()))
            x = torch.from_numpy(ids[rows, :width].astype(np.int64))
            m = torch.from_numpy(mask[rows, :width].astype(np.int64))
            with autocast("cpu", precision):
                logits = classifier(x, m)
            loss = torch.nn.functional.cross_entropy(logits.float(), labels[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += step_rows
        return done / (time.perf_counter() - start)

    rates: dict[str, dict[str, list[float]]] = {k: {"fp32": [], "bf16": []}
                                                 for k in ("text", "image", "finetune_step")}
    vectors: dict[tuple[str, str], np.ndarray] = {}
    step_rate("bf16"), step_rate("fp32")                      # warm-up (oneDNN kernels, allocator)
    for r in range(args.rounds):
        for precision in (("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32")):
            for name in ("text", "image"):
                start = time.perf_counter()
                out = encoders[(name, precision)].forward(inputs[name])
                rates[name][precision].append(len(ids) / (time.perf_counter() - start))
                vectors[(name, precision)] = out[f"emb_{name}"]
            rates["finetune_step"][precision].append(step_rate(precision))
            print(f"round {r + 1}/{args.rounds} {precision}: "
                  + ", ".join(f"{k} {v[precision][-1]:.1f}/s" for k, v in rates.items()), flush=True)

    result = {"command": "python benchmarks/cpu_bf16.py " + " ".join(argv or sys.argv[1:]),
              "cpu_computes_bf16": cpu_computes_bf16(), "torch": torch.__version__,
              "threads": args.threads, "rows": len(ids), "rounds": args.rounds,
              "units": "products/s (median over rounds); cosine of each product's fp32 and bf16 vector"}
    for name, arms in rates.items():
        fp32, bf16 = statistics.median(arms["fp32"]), statistics.median(arms["bf16"])
        result[name] = {"fp32": round(fp32, 2), "bf16": round(bf16, 2), "ratio": round(bf16 / fp32, 3),
                        "runs": {k: [round(x, 2) for x in v] for k, v in arms.items()}}
        if name in ("text", "image"):
            a, b = vectors[(name, "fp32")], vectors[(name, "bf16")]
            ok = np.linalg.norm(a, axis=1) > 0
            cos = (a[ok] * b[ok]).sum(1) / (np.linalg.norm(a[ok], axis=1) * np.linalg.norm(b[ok], axis=1))
            result[name]["cosine_min"] = round(float(cos.min()), 6)
            result[name]["cosine_median"] = round(float(np.median(cos)), 6)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "cpu_bf16.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
