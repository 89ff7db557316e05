"""Would hubness reduction make the label-name component better on a new platform? Validation only.

The default's label-name component is zero-shot: ``cos(product text embedding, embedded category
path)`` per leaf (``prodcat.models.components.LabelComponent``). With Flipkart held out most of
the default's errors are deodorants titled "… Combo Set" that the label names send to
"Apparel & Accessories > Clothing > Outfit Sets". A label that is the nearest neighbour of many
products it does not describe is a *hub* (Radovanović et al., JMLR 2010); the standard remedy in
cross-domain nearest-neighbour retrieval is cross-domain similarity local scaling (CSLS, Conneau et
al., ICLR 2018: ``2 cos(x, l) - r(l)``, ``r(l)`` the mean cosine of label ``l`` to its ``k``
nearest products of the new platform; the product's own term is the same for every label and
drops out of the argmax), which needs only the new platform's unlabelled products, as the
default's self-training does. Mean-centring (``cos(x, l) - mean over the platform's products of
cos(x', l)``) is the simpler variant.

For every ordered pair of ``--platforms`` A → B, A = B included (in-platform): the label space is
the leaves of A's ``train`` split; the pool that ``r(l)`` reads is every product of B that is not
in B's ``test`` split (as the default adapts to a new platform); the scored rows are B's ``val``
split whose category is in A's label space. Each variant's strict hF (``prodcat.core.metrics
.hierarchical_prf``) and top-1 leaf accuracy; no label of B is read but to score, no test row at
all. The labels are embedded by the store's text encoder (``prodcat.train.labels``: the paths, as
the preset's ``label_prior: paths``).

    python benchmarks/label_hubness.py --products runs/full/catalog/products.parquet \\
        --embeddings runs/full/embeddings --platforms hm myntra \\
        --out docs/results/full-frozen/stop52/label_hubness

Writes ``label_hubness.json`` and ``label_hubness.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

KS = (10, 50, 200)


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def variants(scored: np.ndarray, pool: np.ndarray, ks=KS) -> dict[str, np.ndarray]:
    """Per variant, the ``[B, C]`` label scores of the scored products.

    Args:
        scored: ``[B, C]`` cosines of the scored products to the C labels.
        pool: ``[N, C]`` cosines of the new platform's unlabelled pool to the labels (N >= 1; a k
            above N reads the whole pool).
    """
    out = {"plain": scored, "centred": scored - pool.mean(axis=0)}
    top = -np.sort(-pool, axis=0)                                          # [N, C], descending
    for k in ks:
        out[f"csls{k}"] = 2 * scored - top[:min(k, len(pool))].mean(axis=0)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--platforms", nargs="+", default=None,
                        help="the platforms whose pairs are scored (default: every platform)")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from prodcat.core.metrics import hierarchical_prf
    from prodcat.models.config import ModelConfig
    from prodcat.train.features import load_feature_table
    from prodcat.train.labels import label_embeddings

    start = time.perf_counter()
    table = load_feature_table(args.products, args.embeddings, ["text"])
    taxonomy = table.taxonomy
    feats, present, _ = table.arrays()
    x = _normalise(feats["text"].astype(np.float64))
    platform, split, node = table.column("platform"), table.column("split"), table.column("node")
    labels = _normalise(label_embeddings(taxonomy, ModelConfig(label_prior="paths", label_prior_feature="text"),
                                         table.manifest).astype(np.float64))
    leaves_all = set(int(n) for n in taxonomy.leaves)
    have = sorted(np.unique(platform).tolist())
    platforms = args.platforms or have
    unknown = sorted(set(platforms) - set(have))
    if unknown:
        parser.error(f"--platforms: {', '.join(unknown)} not in {args.products} (it has {', '.join(have)})")
    rows = []
    for a in platforms:
        space = np.array(sorted(set(np.unique(node[(platform == a) & (split == "train")]).tolist()) & leaves_all))
        for b in platforms:
            pool = np.flatnonzero((platform == b) & (split != "test") & present["text"])
            val = np.flatnonzero((platform == b) & (split == "val") & present["text"] & np.isin(node, space))
            found = variants(x[val] @ labels[space].T, x[pool] @ labels[space].T)
            row = {"train": a, "scored": b, "labels": int(len(space)), "pool": int(len(pool)), "products": int(len(val))}
            for name, s in found.items():
                pred = space[s.argmax(axis=1)]
                row[name] = {"hF": hierarchical_prf(taxonomy, node[val], pred)["hF"],
                             "accuracy": float((pred == node[val]).mean())}
            rows.append(row)
            print(f"[label-hubness] {a} → {b}: {len(val):,} products ({time.perf_counter() - start:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict)]
    (out / "label_hubness.json").write_text(json.dumps(
        {"command": "python benchmarks/label_hubness.py " + " ".join(argv), "ks": list(KS), "rows": rows}, indent=2))
    lines = ["# The label-name component alone, with and without hubness reduction (validation)", "",
             "Strict hF / top-1 leaf accuracy of the zero-shot label names on the scored platform's `val` split "
             "(categories in the training platform's label space); the reduction reads the scored platform's "
             "products outside its `test` split, unlabelled.", "",
             "| variant | " + " | ".join(f"{r['train']} → {r['scored']} ({r['products']:,})" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for name in names:
        lines.append(f"| {name} | " + " | ".join(f"{r[name]['hF']:.4f} / {r[name]['accuracy']:.4f}" for r in rows) + " |")
    (out / "label_hubness.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
