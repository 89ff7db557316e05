"""Compare two embedding stores of the same products, feature by feature.

Two embeddings of the same products with the same encoders should give the same vectors; in bf16
(``precision: bf16``) a few text vectors differed between two runs (stop 61: 7 of 2,937; the
cause not established, docs/results/sample/stop61/README.md). This script says
how many vectors of each feature differ between two stores, by how much (largest absolute
difference, smallest cosine), and which products they are.

    python benchmarks/store_diff.py runs/sample/embeddings runs/sample/embeddings-again \
        --features text image --out docs/results/sample/stop61/store_diff.json

Output: one line per feature, and with ``--out`` a JSON file (per feature: ``compared`` products
present in both, ``differ``, ``max_abs`` [float], ``min_cosine`` in [-1, 1], ``product_ids`` of
the differing rows). Raises ``FileNotFoundError`` for a missing store and ``KeyError`` for a
feature one store lacks (``prodcat.embed.store.read_vectors``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def compare(store_a: str, store_b: str, feature: str) -> dict:
    """Vectors of ``feature`` in both stores, matched by product id; see the module docstring."""
    from prodcat.embed.store import read_vectors

    ids_a, x_a, ok_a = read_vectors(store_a, feature)
    ids_b, x_b, ok_b = read_vectors(store_b, feature, product_ids=ids_a)
    both = ok_a & ok_b
    a, b, ids = x_a[both], x_b[both], ids_a[both]
    differ = ~np.all(a == b, axis=1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cosine = np.einsum("ij,ij->i", a, b) / np.where(norms > 0, norms, 1.0)
    return {"compared": int(both.sum()), "differ": int(differ.sum()),
            "max_abs": float(np.abs(a - b).max()) if len(a) else 0.0,
            "min_cosine": float(cosine[differ].min()) if differ.any() else 1.0,
            "product_ids": sorted(ids[differ].tolist())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store_a", help="first embedding store (a folder or s3:// URI)")
    p.add_argument("store_b", help="second embedding store, same products")
    p.add_argument("--features", nargs="+", default=["text", "image"], help="features to compare")
    p.add_argument("--out", help="write the comparison here as JSON")
    args = p.parse_args(argv)
    result = {f: compare(args.store_a, args.store_b, f) for f in args.features}
    for f, r in result.items():
        print(f"{f}: {r['differ']:,} of {r['compared']:,} vectors differ "
              f"(max |a - b| {r['max_abs']:.3g}, min cosine {r['min_cosine']:.6f})")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
