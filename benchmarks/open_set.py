"""Which of a new platform's products are outside the label space? Label-free scores, on validation.

A model adapted to a new platform reads every product of it (``prodcat onboard adapt``, and
``prodcat evaluate``'s held-out platforms), and most of a new catalogue may be of categories the
model was never trained on: 74 % of Flipkart's products with Flipkart held out, 89 % of Myntra's
for a model trained on Flipkart, 16 % for one trained on H&M. Self-training learns from the
products the combination is sure of; a product outside the label space that it is sure of teaches
the self-trained component a wrong leaf. Out-of-distribution detection scores each product
without its label; which score separates covered from uncovered products here is measured on
validation pairs only (never a test split, never a leave-one-platform-out fold's platform):

For every ordered pair of platforms A → B: logistic regressions on A's text and image embeddings
(A's ``train`` split, at most ``--max-train`` rows, seeded; scikit-learn, C = 10, L2-normalised
inputs, as the default's components), then on every product of B that is not in B's ``test``
split, each score below, and its AUROC for "covered by A's label space" (scikit-learn's
``roc_auc_score``; 0.5 is chance). At the threshold a model can set without B, the 5 % quantile of
the score over A's ``val`` split (95 % of unseen in-space products of the training platform pass,
the usual operating point of the OOD literature), the table gives the share of B's covered
products kept and of its uncovered ones rejected.

- ``msp``: the regression's maximum softmax probability (Hendrycks & Gimpel, ICLR 2017);
- ``maxlogit``: its maximum logit (Hendrycks et al., ICML 2022);
- ``energy``: the log-sum-exp of its logits (Liu et al., NeurIPS 2020);
- ``centroid``: the largest cosine between the product's embedding and a leaf's mean training
  embedding;
- ``knn``: the cosine to the k-th nearest training product (Sun et al., ICML 2022; k = 10);
- each on ``text`` and on ``image``, and ``both``: the mean of the two's quantile ranks among
  A's ``val`` products.

    python benchmarks/open_set.py --products runs/full/catalog/products.parquet \\
        --embeddings runs/full/embeddings --out docs/results/full-frozen/stop45/open_set

Writes ``open_set.json`` and ``open_set.md`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

SCORES = ("msp", "maxlogit", "energy", "centroid", "knn")
FEATURES = ("text", "image")
QUANTILE = 0.05
K = 10


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _scorer(x_train: np.ndarray, y_train: np.ndarray, C: float, seed: int) -> Callable[[np.ndarray], dict]:
    """Fit once on ``x_train [N, D]`` and labels ``y_train [N]``; the returned function gives
    ``{score: [B]}`` for products ``x [B, D]`` (higher: more likely in the label space)."""
    from scipy.special import logsumexp, softmax
    from sklearn.linear_model import LogisticRegression

    xt = _normalise(x_train)
    reg = LogisticRegression(C=C, max_iter=300, random_state=seed).fit(xt, y_train)
    centroids = _normalise(np.stack([xt[y_train == leaf].mean(axis=0) for leaf in np.unique(y_train)]))

    def scores(x: np.ndarray) -> dict[str, np.ndarray]:
        xs = _normalise(x)
        logits = reg.decision_function(xs)
        knn = np.empty(len(xs))
        for start in range(0, len(xs), 2048):
            sims = xs[start:start + 2048] @ xt.T
            knn[start:start + 2048] = -np.partition(-sims, K - 1, axis=1)[:, K - 1]
        return {"msp": softmax(logits, axis=1).max(axis=1), "maxlogit": logits.max(axis=1),
                "energy": logsumexp(logits, axis=1), "centroid": (xs @ centroids.T).max(axis=1), "knn": knn}
    return scores


def _cell(covered: np.ndarray, score: np.ndarray, kept: np.ndarray) -> dict:
    """AUROC of ``score [B]`` for ``covered [B]``, and the shares the threshold (``kept [B]``)
    keeps of the covered products and rejects of the others (None where undefined)."""
    from sklearn.metrics import roc_auc_score

    return {"auroc": float(roc_auc_score(covered, score)) if 0 < covered.sum() < len(covered) else None,
            "covered_kept": float(kept[covered].mean()) if covered.any() else None,
            "uncovered_rejected": float((~kept[~covered]).mean()) if (~covered).any() else None}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", required=True)
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-train", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--C", type=float, default=10.0)
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from prodcat.train.features import load_feature_table

    start = time.perf_counter()
    table = load_feature_table(args.products, args.embeddings, list(FEATURES))
    feats, present, _ = table.arrays()
    platform, split, node = table.column("platform"), table.column("split"), table.column("node")
    rng = np.random.default_rng(args.seed)
    rows = []
    for a in sorted(np.unique(platform)):
        train = np.flatnonzero((platform == a) & (split == "train"))
        if len(train) > args.max_train:
            train = np.sort(rng.choice(train, args.max_train, replace=False))
        val = np.flatnonzero((platform == a) & (split == "val"))
        scorers, on_v = {}, {}
        for f in FEATURES:                                  # fitted once per training platform
            ok_t, ok_v = present[f][train], present[f][val]
            scorers[f] = _scorer(feats[f][train][ok_t], node[train][ok_t], args.C, args.seed)
            on_v[f] = scorers[f](feats[f][val][ok_v])
        for b in sorted(np.unique(platform)):
            if b == a:
                continue
            pool = np.flatnonzero((platform == b) & (split != "test"))
            covered = np.isin(node[pool], node[train])
            row = {"train": a, "scored": b, "products": int(len(pool)), "covered": int(covered.sum())}
            ranks = {}
            for f in FEATURES:
                on_b = scorers[f](feats[f][pool])
                for s in SCORES:
                    row[f"{f}/{s}"] = _cell(covered, on_b[s], on_b[s] >= float(np.quantile(on_v[f][s], QUANTILE)))
                    ranks.setdefault(s, []).append(np.searchsorted(np.sort(on_v[f][s]), on_b[s]) / len(on_v[f][s]))
            for s in SCORES:
                both = np.mean(ranks[s], axis=0)
                row[f"both/{s}"] = _cell(covered, both, both >= QUANTILE)
            rows.append(row)
            print(f"[open-set] {a} → {b}: {covered.sum():,} of {len(pool):,} covered "
                  f"({time.perf_counter() - start:.0f} s)", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{f}/{s}" for f in (*FEATURES, "both") for s in SCORES]
    (out / "open_set.json").write_text(json.dumps({"command": "python benchmarks/open_set.py " + " ".join(argv),
                                                   "seed": args.seed, "max_train": args.max_train,
                                                   "quantile": QUANTILE, "k": K, "rows": rows}, indent=2))
    lines = ["# Covered or not: label-free scores on validation pairs", "",
             f"Seed {args.seed}, at most {args.max_train:,} training rows; threshold: the {QUANTILE:.0%} "
             "quantile over the training platform's `val` split. Cells: AUROC / covered kept / uncovered rejected.", "",
             "| score | " + " | ".join(f"{r['train']} → {r['scored']} ({r['covered']:,} of {r['products']:,})" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for name in names:
        cells = []
        for r in rows:
            c = r[name]
            cells.append(" / ".join("–" if v is None else f"{v:.2f}" for v in (c["auroc"], c["covered_kept"], c["uncovered_rejected"])))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "open_set.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
