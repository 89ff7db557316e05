"""The main job on the real catalogues, every stage in order, into one run folder.

  prodcat pipeline                      # stratified sample (≤25 products per platform category)
  prodcat pipeline --full               # all 57,291 records → runs/full
  prodcat pipeline --stages report      # rebuild only the report of an existing run
  prodcat pipeline --sample-per-category 60 --max-epochs 5

Stages: catalog build → embed → train (the text encoder fine-tuned, then the text-only and
multimodal stage models: decision-level fusion) → evaluate (in-platform and
leave-one-platform-out, with the tuned TF-IDF baseline and reference rows) → recategorize
(proposed subcategories of Shoes) → cascade fit → bulk scoring → onboard (each platform met as a
new one: suggested mappings, partial paths) → the cascade service started, real products
categorized over HTTP, stopped → report.md (Markdown + PNG plots).
Stages resume where their outputs allow it (the embedding store skips embedded products).
"""

from __future__ import annotations

import argparse
import os

from prodcat.core import console
from prodcat.core.config import load_config
from prodcat.core.stages import MAIN_JOB_STEPS

HELP = "run the whole pipeline on the real catalogues and write a report (the main job)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", help="run folder (default runs/sample, or runs/full with --full)")
    parser.add_argument("--full", action="store_true", help="all products, not the stratified sample (evaluation: "
                        "configs/evaluate.full.yaml, 10,000 training rows per fold, three seeds, "
                        "the text encoder fine-tuned per fold and seed, nested; the deployed text "
                        "encoder fine-tuned on 6,000 products for 2 epochs, and once more per "
                        "platform left out for the stages' choice, as in the sample: --set "
                        "nested_finetune=false turns that off)")
    parser.add_argument("--sample-per-category", type=int,
                        help="products per (platform, category) in the default sample (25)")
    parser.add_argument("--max-epochs", type=int, help="cap the epochs of every training run")
    parser.add_argument("--stages", nargs="+", metavar="STAGE",
                        choices=MAIN_JOB_STEPS,
                        help="run only these stages (in this order, whatever order they are "
                        f"given in): {' '.join(MAIN_JOB_STEPS)}")
    parser.add_argument("--config", help="PipelineConfig YAML; flags override it")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any PipelineConfig field, e.g. --set demo_products=10")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.cli import main
    from prodcat.pipeline.job import Pipeline, PipelineConfig

    # at full size the evaluation trains every model on the same 10,000 rows per fold
    # (configs/evaluate.full.yaml); a --config or --set evaluate=... still decides
    overrides = (["evaluate=configs/evaluate.full.yaml"] if args.full and not args.config else [])
    overrides += list(args.set)
    if args.full:
        overrides.append("full=true")
    if args.output or args.full:
        overrides.append(f"output={args.output or 'runs/full'}")
    if args.sample_per_category:
        overrides.append(f"sample_per_category={args.sample_per_category}")
    if args.max_epochs:
        overrides.append(f"max_epochs={args.max_epochs}")
    if args.stages:
        overrides.append(f"stages=[{','.join(args.stages)}]")
    config = load_config(PipelineConfig, args.config, overrides)
    console.set_log_dir(os.path.join(config.output, "logs"))
    Pipeline(config, command=main).run()
    return 0
