"""The largest confusions of each model in an evaluation, from its saved predictions.

``prodcat evaluate`` writes the default's and the reference's largest confusions into its report
(``confusions.csv``); this recomputes them for any model from
``<evaluation output>/predictions/*.parquet`` (:mod:`prodcat.evaluate.predictions`), e.g. for an
evaluation made before the report had them. Per fold, seed and model: the most frequent (true
category, output category) pairs among the wrong outputs, with their share of that model's wrong
outputs (:func:`prodcat.evaluate.report.top_confusions`), as CSV, and a Markdown table on stdout.

    python benchmarks/confusions.py --evaluation runs/full/eval-seeds \
        --taxonomy runs/full/catalog/taxonomy.json --seed 0 \
        --out docs/results/full-frozen/seeds/confusions.csv

Raises SystemExit with a message when the predictions folder is empty.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import pyarrow.parquet as pq

from prodcat.core.report import markdown_table
from prodcat.core.taxonomy import Taxonomy
from prodcat.evaluate.report import CONFUSION_COLUMNS, top_confusions


def confusions(df, taxonomy: Taxonomy, limit: int | None) -> list[dict]:
    """Rows ``{fold, seed, model, true, predicted, products, share_of_errors}`` of one predictions table."""
    rows = []
    for (fold, seed, model), part in df.groupby(["fold", "seed", "model"], sort=False):
        for c in top_confusions(taxonomy, part["true_category_id"].to_numpy(),
                                part["category_id"].fillna(0).to_numpy(), limit):
            rows.append({"fold": fold, "seed": int(seed), "model": model, **c})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", required=True, help="a `prodcat evaluate` output folder")
    parser.add_argument("--taxonomy", required=True, help="the catalogue's taxonomy.json")
    parser.add_argument("--seed", type=int, help="only this seed (default: every seed)")
    parser.add_argument("--models", nargs="*", help="only these models (default: every model)")
    parser.add_argument("--limit", type=int, default=10, help="pairs per fold, seed and model (default 10)")
    parser.add_argument("--out", help="CSV file to write")
    args = parser.parse_args(argv)
    files = sorted(Path(args.evaluation, "predictions").glob("*.parquet"))
    if not files:
        raise SystemExit(f"no predictions under {args.evaluation}/predictions (run prodcat evaluate first)")
    taxonomy = Taxonomy.from_json(Path(args.taxonomy).read_text())
    rows = []
    for f in files:
        df = pq.read_table(f, columns=["fold", "seed", "model", "true_category_id", "category_id"]).to_pandas()
        if args.seed is not None:
            df = df[df["seed"] == args.seed]
        if args.models:
            df = df[df["model"].isin(args.models)]
        rows += confusions(df, taxonomy, args.limit)
    print(markdown_table(["fold", "seed", "model", "true", "output", "products", "share of errors"],
                         [[r["fold"], r["seed"], r["model"], r["true"], r["predicted"], r["products"],
                           f"{r['share_of_errors']:.0%}"] for r in rows]))
    if args.out:
        with open(args.out, "w", newline="") as fh:
            writer = csv.DictWriter(fh, ("fold", "seed", *CONFUSION_COLUMNS[1:]), lineterminator="\n")
            writer.writeheader()
            writer.writerows({**r, "share_of_errors": round(r["share_of_errors"], 4)} for r in rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
