"""Catalogue commands.

  prodcat catalog build                     # all built-in platforms from ../shared → runs/catalog
  prodcat catalog build --platform myntra hm --output s3://bucket/catalog
  prodcat catalog build --platform my_shop.yaml   # a new platform: a generic adapter config
  prodcat catalog build --sample-per-category 60  # stratified sample (deterministic)
  prodcat catalog platforms                 # list the built-in platform adapters
"""

from __future__ import annotations

import argparse

from prodcat.core.config import load_config

HELP = "build the product table from platform exports (catalog build), list adapters"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    build = sub.add_parser("build", help="platform exports → product table, rejects, taxonomy",
                           description="Read each platform's export through its adapter, clean the "
                           "text, map categories to the Google Product Taxonomy, assign splits, and "
                           "write products.parquet, rejects.parquet, taxonomy.json and "
                           "build_summary.{json,md} into --output.")
    build.add_argument("--config", help="BuildConfig YAML; flags below override it")
    build.add_argument("--platform", nargs="+", dest="platforms",
                       help="built-in platform names or adapter config files (default: all built-in)")
    build.add_argument("--output", help="output folder, local or s3:// (default runs/catalog)")
    build.add_argument("--max-depth", type=int, help="truncate categories deeper than this (default 4)")
    build.add_argument("--sample-per-category", type=int,
                       help="keep at most N products per (platform, category), chosen by hash")
    build.add_argument("--no-check-images", action="store_true",
                       help="do not check that image files exist")
    build.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                       help="override any BuildConfig field, e.g. --set split_seed=abc")
    sub.add_parser("platforms", help="list the built-in platform adapters")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.catalog.adapter import builtin_platforms, load_adapter
    from prodcat.catalog.build import BuildConfig, build_catalog

    if args.action == "platforms":
        for name in builtin_platforms():
            cfg = load_adapter(name)
            print(f"{name:10s} {cfg.format:8s} {cfg.path}")
        return 0

    overrides = {key: value for key, value in {
        "platforms": args.platforms, "output": args.output, "max_depth": args.max_depth,
        "sample_per_category": args.sample_per_category,
        "check_images": False if args.no_check_images else None}.items() if value is not None}
    config = load_config(BuildConfig, args.config, args.set)
    config = config.model_copy(update=overrides)
    config = BuildConfig.model_validate(config.model_dump())
    build_catalog(config)  # prints one line per platform and the totals
    return 0
