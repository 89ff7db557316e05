"""How far the frozen embeddings can go on the platforms' finer labels: a supervised ceiling for
recategorization.

    python benchmarks/recategorize_ceiling.py --products runs/sample/catalog/products.parquet \\
        --embeddings runs/sample/embeddings --category 187 \\
        --out docs/results/sample/recategorize_ceiling.json

For each category and each platform, a k-nearest-neighbour classifier (cosine, k = 10, or fewer
when a fold has fewer training products) predicts the platform's own finer label
(``source_category``) from the same inputs the clustering reads
(:func:`prodcat.recategorize.simclr.make_inputs`: each modality L2-normalised, centred on its
platform's mean when the config says so, concatenated), by stratified 3-fold cross-validation
(plain shuffled folds when a label has fewer than 3 products). It uses the labels the clustering
never sees, so it bounds what any clustering of these embeddings can reach; the majority label's
share is printed beside it. Products, selection and capping are those of ``prodcat recategorize
propose`` (``prodcat.recategorize.data.load_categories``). Prints one JSON object and writes it to
``--out``.
"""

from __future__ import annotations

import argparse
import json
import platform as host
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FEATURE_SETS = {"text": ["text"], "image": ["image"], "text+image": ["text", "image"]}


def knn_accuracy(x: np.ndarray, labels: np.ndarray, k: int = 10, folds: int = 3,
                 seed: int = 0) -> dict:
    """Cross-validated accuracy of a cosine k-NN classifier on ``x`` ``[B, D]`` → ``labels`` ``[B]``."""
    from sklearn.model_selection import KFold, StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    smallest = min(Counter(labels).values())
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if smallest >= folds
                else KFold(folds, shuffle=True, random_state=seed))
    scores = []
    for train, test in splitter.split(x, labels):
        model = KNeighborsClassifier(n_neighbors=min(k, len(train)), metric="cosine")
        model.fit(x[train], labels[train])
        scores.append(float(np.mean(model.predict(x[test]) == labels[test])))
    return {"accuracy": round(float(np.mean(scores)), 4), "folds": [round(s, 4) for s in scores],
            "stratified": smallest >= folds}


def ceiling(data, center_platforms: bool, k: int = 10) -> dict:
    """Per platform and feature set: the k-NN accuracy on the finer labels (see the module)."""
    from prodcat.recategorize.simclr import make_inputs

    out = {}
    for name in sorted(set(data.platform)):
        rows = np.asarray(data.platform == name)
        labels = np.asarray([str(v) for v in data.finer_label[rows]], object)
        counts = Counter(labels)
        entry = {"products": int(rows.sum()), "labels": len(counts),
                 "majority_share": round(max(counts.values()) / len(labels), 4)}
        for feature_set, features in FEATURE_SETS.items():
            if not all(f in data.features for f in features):
                continue
            inputs = make_inputs({f: data.features[f][rows] for f in features},
                                 {f: data.present[f][rows] for f in features},
                                 data.platform[rows] if center_platforms else None)
            entry[feature_set] = knn_accuracy(inputs.x, labels, k=k)
        out[name] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--products", default="runs/sample/catalog/products.parquet")
    parser.add_argument("--embeddings", default="runs/sample/embeddings")
    parser.add_argument("--category", action="append", default=[], help="id or path (repeatable)")
    parser.add_argument("--config", default=str(ROOT / "configs" / "recategorize.default.yaml"),
                        help="RecategorizeConfig YAML: features, centring, capping")
    parser.add_argument("--k", type=int, default=10, help="neighbours")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args(argv)

    from prodcat.core.config import load_config
    from prodcat.recategorize.config import RecategorizeConfig
    from prodcat.recategorize.data import load_categories

    config = load_config(RecategorizeConfig, args.config, {
        "products": args.products, "embeddings": args.embeddings,
        "categories": args.category or ["187"], "output": "unused"})
    start = time.perf_counter()
    categories, _, skipped = load_categories(config)
    result = {
        "command": "python benchmarks/recategorize_ceiling.py " + " ".join(argv or sys.argv[1:]),
        "machine": f"{host.machine()}, {__import__('os').cpu_count()} CPUs",
        "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": f"cosine {args.k}-NN, 3-fold cross-validation per platform, on "
                  f"make_inputs({config.features}, center_platforms={config.center_platforms})",
        "categories": {str(d.category_id): {"path": d.path, "products": len(d),
                                            "platforms": ceiling(d, config.center_platforms, args.k)}
                       for d in categories},
        "skipped": skipped, "seconds": round(time.perf_counter() - start, 1)}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
