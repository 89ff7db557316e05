"""Would aligning a new platform's embeddings to the training platforms' help the regressions? Validation only.

The default's text and image components are logistic regressions on one frozen embedding each
(``prodcat.models.components.LinearComponent``). On a platform they were not trained on, the
embeddings of the same category sit elsewhere (other photography, other wording). The standard
label-free corrections, which read only the new platform's unlabelled products (as the default's
self-training does):

- ``centred``: every platform's vectors centred on that platform's own mean before the
  regression's L2 normalisation (the first-order part of the shift; the mean of the source is
  read on its training rows, the target's on its unlabelled pool);
- ``coral``: CORAL (Sun, Feng & Saenko, "Return of Frustratingly Easy Domain Adaptation", AAAI
  2016): the centred source vectors whitened by their covariance and re-coloured by the target's
  (``X_s C_s^{-1/2} C_t^{1/2}``; each covariance plus ``tr(C)/D · I``: the paper adds the
  identity to covariances of unit-scale features, and an L2-normalised embedding's eigenvalues
  are about 1/D), the regression fitted on them, the target's centred vectors scored as they are.

For every ordered pair of ``--platforms`` A → B, A = B included (in-platform): the regression is
fitted on ``--train-rows`` random products of A's ``train`` split (``C`` as the preset's
``linear_C``); the pool the target statistics read is every product of B that is not in B's
``test`` split; the scored rows are B's ``val`` split whose category is in A's label space. Each
variant's strict hF (``prodcat.core.metrics.hierarchical_counts``) and top-1 leaf accuracy, and the
paired difference to ``plain`` with a 95 % bootstrap interval over near-duplicate groups
(``prodcat.core.uncertainty.paired_difference``, as every evaluation's). No label of B is read
but to score; no test row at all.

    python benchmarks/feature_alignment.py --products runs/full/catalog/products.parquet \\
        --embeddings runs/full/embeddings --out docs/results/full-frozen/stop57/feature_alignment

Writes ``feature_alignment.json`` and ``feature_alignment.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

VARIANTS = ("plain", "centred", "coral")


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _sqrtm(cov: np.ndarray, power: float) -> np.ndarray:
    """``cov ** power`` of a symmetric positive definite ``[D, D]`` matrix (eigendecomposition)."""
    values, vectors = np.linalg.eigh(cov)
    return (vectors * np.clip(values, 1e-12, None) ** power) @ vectors.T


def _shrunk_cov(x: np.ndarray) -> np.ndarray:
    cov = np.cov(x, rowvar=False)
    return cov + np.trace(cov) / len(cov) * np.eye(len(cov))


def align(variant: str, source: np.ndarray, target_pool: np.ndarray, scored: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray]:
    """``(training inputs [N, D], scored inputs [B, D])`` for one variant.

    Args:
        source: ``[N, D]`` L2-normalised training vectors (the source platform's).
        target_pool: ``[M, D]`` L2-normalised unlabelled vectors of the scored platform (M >= 2).
        scored: ``[B, D]`` L2-normalised vectors to score (of the scored platform).

    Raises:
        ValueError: for a variant not in :data:`VARIANTS`.
    """
    if variant == "plain":
        return source, scored
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    source = source - source.mean(axis=0)
    scored = scored - target_pool.mean(axis=0)
    if variant == "coral":
        source = source @ _sqrtm(_shrunk_cov(source), -0.5) @ _sqrtm(_shrunk_cov(target_pool), 0.5)
    return source, scored


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--platforms", nargs="+", default=None,
                        help="the platforms whose pairs are scored (default: every platform)")
    parser.add_argument("--features", nargs="+", default=["text", "image"])
    parser.add_argument("--train-rows", type=int, default=4000,
                        help="random training products of the source platform per regression (default 4000)")
    parser.add_argument("--C", type=float, default=10.0, help="inverse L2 strength (the preset's linear_C)")
    parser.add_argument("--seed", type=int, default=0)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from prodcat.core.metrics import hierarchical_counts, prf_from_counts
    from prodcat.core.uncertainty import paired_difference
    from prodcat.models.components import LinearComponent
    from prodcat.train.features import load_feature_table

    start = time.perf_counter()
    table = load_feature_table(args.products, args.embeddings, list(args.features))
    taxonomy = table.taxonomy
    feats, present, _ = table.arrays()
    platform, split, node = table.column("platform"), table.column("split"), table.column("node")
    groups = table.column("group_id")
    leaves_all = set(int(n) for n in taxonomy.leaves)
    have = sorted(np.unique(platform).tolist())
    platforms = args.platforms or have
    unknown = sorted(set(platforms) - set(have))
    if unknown:
        parser.error(f"--platforms: {', '.join(unknown)} not in {args.products} (it has {', '.join(have)})")
    rows = []
    for feature in args.features:
        x = _normalise(feats[feature].astype(np.float64))
        for a in platforms:
            train = np.flatnonzero((platform == a) & (split == "train") & present[feature]
                                   & np.isin(node, list(leaves_all)))
            rng = np.random.default_rng([args.seed, have.index(a)])    # the same draw whatever --platforms
            train = np.sort(rng.choice(train, size=min(args.train_rows, len(train)), replace=False))
            space = np.unique(node[train])
            for b in platforms:
                pool = np.flatnonzero((platform == b) & (split != "test") & present[feature])
                val = np.flatnonzero((platform == b) & (split == "val") & present[feature] & np.isin(node, space))
                row = {"feature": feature, "train": a, "scored": b, "training_products": int(len(train)),
                       "labels": int(len(space)), "pool": int(len(pool)), "products": int(len(val))}
                if len(val) == 0 or len(pool) < 2 or len(space) < 2:
                    print(f"[feature-alignment] {feature} {a} → {b}: skipped ({len(val)} products in the label "
                          f"space, a pool of {len(pool)}, {len(space)} labels)", flush=True)
                    continue
                correct = {}
                for variant in VARIANTS:
                    source, scored = align(variant, x[train], x[pool], x[val])
                    model = LinearComponent.fit("probe", feature, source, node[train], taxonomy, C=args.C,
                                                seed=args.seed)
                    pred = model.leaves[model.scores(scored).argmax(axis=1)]
                    correct[variant] = hierarchical_counts(taxonomy, node[val], pred)
                    row[variant] = {"hF": prf_from_counts(*correct[variant].sum(axis=0))["hF"],
                                    "accuracy": float((pred == node[val]).mean())}
                for variant in VARIANTS[1:]:
                    d = paired_difference(correct[variant], correct["plain"], groups[val], seed=args.seed)
                    row[variant]["minus_plain"] = [100 * d.estimate, 100 * d.low, 100 * d.high]
                rows.append(row)
                print(f"[feature-alignment] {feature} {a} → {b}: {len(val):,} products, plain "
                      f"{row['plain']['hF']:.4f}, centred {row['centred']['hF']:.4f}, coral "
                      f"{row['coral']['hF']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "feature_alignment.json").write_text(json.dumps(
        {"command": "python benchmarks/feature_alignment.py " + " ".join(argv), "rows": rows}, indent=2))
    lines = ["# The text and image regressions alone, with and without feature alignment (validation)", "",
             "Strict hF of a logistic regression fitted on the training platform's `train` split, on the scored "
             "platform's `val` split (categories in the training label space); the alignment reads the scored "
             "platform's products outside its `test` split, unlabelled. Difference to `plain` in hF points "
             "[95 % paired bootstrap interval over near-duplicate groups].", "",
             "| feature | pair (products) | plain | centred | coral |", "|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{r['plain']['hF']:.4f}"] + [
            f"{r[v]['hF']:.4f} ({r[v]['minus_plain'][0]:+.2f} [{r[v]['minus_plain'][1]:+.2f}, "
            f"{r[v]['minus_plain'][2]:+.2f}])" for v in VARIANTS[1:]]
        lines.append(f"| {r['feature']} | {r['train']} → {r['scored']} ({r['products']:,}) | " + " | ".join(cells) + " |")
    (out / "feature_alignment.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
