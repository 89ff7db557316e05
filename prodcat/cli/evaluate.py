"""Evaluate a grid of models and the TF-IDF baseline, in-platform and leave-one-platform-out.

  prodcat evaluate --config configs/evaluate.default.yaml --output runs/sample/eval
  prodcat evaluate --config configs/evaluate.grid.yaml --output runs/sample/eval-grid
  prodcat evaluate --merge runs/sample/eval-in runs/sample/eval-lopo --output runs/sample/eval-all
  prodcat evaluate --config configs/evaluate.default.yaml --set protocols=[in_platform] \\
      --set grid.fusions=[early,late,attention] --set train.data.max_train_products=5000

Writes results.json, report.md and PNG plots (per-category F1, confusion at levels 0 and 1,
hF by model) into --output, and one training run per (fold, model) under <output>/runs.
"""

from __future__ import annotations

import argparse

from prodcat.core import console
from prodcat.core.config import dump_config, load_config

HELP = "evaluate models and baselines in-platform and leave-one-platform-out (JSON, Markdown, PNG)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="EvaluateConfig YAML (e.g. configs/evaluate.default.yaml)")
    parser.add_argument("--products", help="product table (sets train.data.products)")
    parser.add_argument("--embeddings", help="embedding store (sets train.data.embeddings)")
    parser.add_argument("--output", help="report folder, local or s3:// (sets output)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any EvaluateConfig field, e.g. --set grid.maskings=[none,hard]")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out store parts that cannot be read (counted in the report) "
                        "instead of stopping (sets train.data.skip_unreadable)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("--merge", nargs="+", metavar="FOLDER",
                        help="merge these evaluation folders' results into --output instead of running; a row "
                             "present twice keeps the later folder's, and a paired comparison measured "
                             "against a row a later folder replaced is left out (counted)")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.evaluate.grid import EvaluateConfig, evaluate, merge_results

    if args.merge:
        if not args.output:
            raise SystemExit("--merge needs --output")
        merged = merge_results(args.merge, args.output)
        left = len(merged["left_out_pairs"])
        console.say(f"[evaluate] merged {len(merged['results'])} results → {args.output}/report.md"
                    + (f"; {left} paired comparison(s) left out: measured against a row a later folder "
                       "replaced (left_out_pairs in results.json)" if left else ""))
        return 0

    extra = {"train.data.products": args.products, "train.data.embeddings": args.embeddings,
             "output": args.output,
             "train.data.skip_unreadable": "true" if args.skip_unreadable else None}
    overrides = list(args.set) + [f"{k}={v}" for k, v in extra.items() if v is not None]
    config = load_config(EvaluateConfig, args.config, overrides)
    if args.show_config:
        print(dump_config(config), end="")
        return 0
    results = evaluate(config)
    best: dict[str, dict] = {}
    for row in results["results"]:
        if row["fold"] not in best or row["hF"] > best[row["fold"]]["hF"]:
            best[row["fold"]] = row
    for fold, row in best.items():
        console.say(f"[evaluate] highest hF in {fold}: {row['model']} {row['hF']:.4f} (a "
                    "description; choose models on validation, e.g. configs/evaluate.selection.yaml)")
    return 0
