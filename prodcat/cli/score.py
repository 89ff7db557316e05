"""Bulk scoring: the two-stage cascade as a Ray Data job.

  prodcat score --model runs/sample/cascade --input runs/sample/catalog/products.parquet \\
                --output runs/sample/predictions
  prodcat score --model s3://bucket/cascade --input s3://bucket/new.jsonl.gz --output s3://bucket/pred
  prodcat score --model runs/sample/cascade --adapter my_shop.yaml --input export.csv --output pred/
  prodcat score --model runs/sample/cascade --adapter myntra hm flipkart --output pred/  # raw exports
  prodcat score ... --features-from runs/sample/embeddings   # reuse stored vectors (same weights)
  prodcat score ... --mode multimodal          # stage 2 for every row (no routing)
  prodcat score ... --evaluate runs/sample/catalog/products.parquet   # hF on the test split
  prodcat score ... --abstain 0.95             # partial paths: stop where the model is unsure

Every input row appears exactly once in the output: predicted, or with its error. Rerunning the
same command after an interruption scores only the rows not yet written.
"""

from __future__ import annotations

import argparse

from prodcat.core import console, storage
from prodcat.core.config import flag_overrides, load_config

HELP = "score products with the cascade (Ray Data); resumable; every input row appears once"


def _precision(text: str) -> float:
    """A target precision in [0, 1] (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a target precision is a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"the target precision per level must be in [0, 1] (e.g. 0.95), "
                                         f"got {value}")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="ScoreConfig YAML; flags below override it")
    parser.add_argument("--model", help="cascade.json or its folder (from `prodcat cascade fit`)")
    parser.add_argument("--text-model", help="stage-1 checkpoint (overrides the cascade's)")
    parser.add_argument("--multimodal-model", help="stage-2 checkpoint (overrides the cascade's)")
    parser.add_argument("--threshold", type=float, help="tau: stage-1 confidence below it escalates")
    parser.add_argument("--input", help="Parquet file/folder, CSV or JSON Lines, local or s3://")
    parser.add_argument("--adapter", nargs="+", dest="adapters",
                        help="read through these adapters (platform names or AdapterConfig YAML) "
                        "instead of product-table columns; without --input, each adapter's export")
    parser.add_argument("--features-from", metavar="STORE",
                        help="embedding store whose vectors are reused where fingerprints match")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out --features-from store parts that cannot be read (their "
                        "rows are encoded; counted in _summary.json) instead of stopping")
    parser.add_argument("--output", help="predictions folder, local or s3://")
    parser.add_argument("--mode", choices=["cascade", "text", "multimodal"])
    parser.add_argument("--limit", type=int, help="score only the first N rows")
    parser.add_argument("--abstain", type=_precision, metavar="PRECISION",
                        help="partial paths: stop each answer at the deepest level whose calibrated "
                        "confidence reaches the threshold fitted for this target precision per "
                        "level (in [0, 1], e.g. 0.95) on the calibration split; the output's "
                        "stopped_at_level and stop_reason say where and why (default: full paths)")
    parser.add_argument("--overwrite", action="store_true",
                        help="delete predictions of another job in --output first")
    parser.add_argument("--evaluate", metavar="PRODUCTS",
                        help="product table with labels: report hF of the predictions (test split)")
    parser.add_argument("--split", default="test", help="split for --evaluate ('all': every split)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any ScoreConfig field, e.g. --set multimodal_batch_size=32")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.score import ScoreConfig, evaluate_output, score

    flags = {"model": args.model, "text_model": args.text_model,
             "multimodal_model": args.multimodal_model, "threshold": args.threshold,
             "input": args.input, "adapters": args.adapters, "output": args.output,
             "features_from": args.features_from,
             "mode": args.mode, "limit": args.limit, "abstain_target": args.abstain}
    overrides = flag_overrides(flags) + list(args.set)
    if args.skip_unreadable:
        overrides.append("skip_unreadable=true")
    config = load_config(ScoreConfig, args.config, overrides)
    score(config, overwrite=args.overwrite)
    if args.evaluate:
        e = evaluate_output(config, args.evaluate, None if args.split == "all" else args.split)
        console.say(f"[score] hF on the {e['split'] or 'labelled'} rows: {e['hF']:.4f} over "
                    f"{e['products']:,} products → {storage.join(config.output, '_evaluation.json')}")
    return 0
