"""Onboarding measured: each platform met as a new one, on the leave-one-platform-out folds.

  prodcat onboard measure --products runs/sample/catalog/products.parquet \\
      --embeddings runs/sample/embeddings --evaluation runs/sample/eval --output runs/sample/onboard
  prodcat onboard measure ... --source export      # each platform's whole export, read unmapped
  prodcat onboard measure ... --set train_overrides='["model.fusion=decision"]'

For every held-out platform: a model trained without it (the evaluation's checkpoint of the fold
when it kept one, else trained here), mapping suggestions for the platform's source categories
(as `prodcat catalog suggest-mapping` makes them) compared with its hand-made mapping (top-1 /
top-3 agreement per category and by products, strict hF, agreement against a confidence
threshold), and the fold's partial-path curve (abstention thresholds fitted on the training
platforms' calibration split). Writes report.md, onboard.json, agreement.png, abstain_curve.png
and lopo_<platform>/ (mapping.yaml, suggestions.parquet, review.html, comparison.json, model/).
"""

from __future__ import annotations

import argparse
import json

from prodcat.core.config import load_config

HELP = "measure mapping suggestions and partial paths with each platform held out (LOPO)"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    measure = sub.add_parser("measure", help="suggestions vs hand mappings and partial paths, per "
                             "leave-one-platform-out fold", description=__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    measure.add_argument("--config", help="MeasureConfig YAML; flags below override it")
    measure.add_argument("--products", help="the run's product table")
    measure.add_argument("--embeddings", help="the run's embedding store")
    measure.add_argument("--evaluation", help="evaluation folder whose fold checkpoints are reused")
    measure.add_argument("--train", help="TrainConfig YAML of fold models trained here "
                         "(default configs/train.default.yaml)")
    measure.add_argument("--platform", nargs="+", dest="platforms", help="platforms to hold out (default all)")
    measure.add_argument("--source", choices=["products", "export"],
                         help="what the held-out platform's suggestions read (default products)")
    measure.add_argument("--max-per-category", type=int, help="products scored per source category")
    measure.add_argument("--output", help="output folder")
    measure.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="override any MeasureConfig field")


def run(args: argparse.Namespace) -> int:
    from prodcat.onboard.config import MeasureConfig
    from prodcat.onboard.measure import measure

    flags = {"products": args.products, "embeddings": args.embeddings, "evaluation": args.evaluation,
             "train": args.train, "platforms": args.platforms, "source": args.source,
             "max_per_category": args.max_per_category, "output": args.output}
    overrides = [f"{k}={json.dumps(v)}" for k, v in flags.items() if v is not None] + list(args.set)
    measure(load_config(MeasureConfig, args.config, overrides))
    return 0
