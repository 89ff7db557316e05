"""Catalogue commands.

  prodcat catalog build                     # all built-in platforms from ../shared → runs/catalog
  prodcat catalog build --platform myntra hm --output s3://bucket/catalog
  prodcat catalog build --platform my_shop.yaml   # a new platform: a generic adapter config
  prodcat catalog build --sample-per-category 60  # stratified sample (deterministic)
  prodcat catalog platforms                 # list the built-in platform adapters

A new platform without a mapping (the generic adapter, README "Using your own catalogue"):

  prodcat catalog suggest-mapping --adapter myshop.yaml --model runs/sample/cascade --output sugg/
      # → sugg/mapping.yaml (every entry accepted: false), suggestions.parquet, review.html
  prodcat catalog review --suggestions sugg/mapping.yaml --accept-above 0.2 --exclude-rest \\
      --output myshop_mapping.yaml      # or --decisions decisions.yaml from review.html
  prodcat catalog build --platform myntra hm myshop.yaml   # myshop.yaml: mapping: myshop_mapping.yaml
"""

from __future__ import annotations

import argparse
import sys

from prodcat.core.config import flag_overrides, load_config

HELP = ("build the product table from platform exports (catalog build), list adapters, suggest "
        "and review a new platform's category mapping")


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
    suggest = sub.add_parser(
        "suggest-mapping", help="an unmapped export → suggested Google categories to review",
        description="Read a platform's export through its adapter without a mapping, categorize a "
        "sample of each source category's products with bulk scoring on Ray, and propose the top "
        "Google categories per source category with their evidence (share of the category's "
        "products voting, mean calibrated confidence, name similarity, a confidence). Writes "
        "mapping.yaml (the mapping format, every entry accepted: false, with a fingerprint of the "
        "export's source categories), suggestions.parquet, review.html and summary.json.")
    suggest.add_argument("--config", help="SuggestConfig YAML; flags below override it")
    suggest.add_argument("--adapter", help="the platform's adapter: built-in name or AdapterConfig YAML")
    suggest.add_argument("--model", help="cascade (cascade.json or its folder) or one checkpoint folder")
    suggest.add_argument("--output", help="output folder, local or s3://")
    suggest.add_argument("--features-from", metavar="STORE",
                         help="embedding store whose vectors are reused (same encoder weights)")
    suggest.add_argument("--max-per-category", type=int,
                         help="products categorized per source category (default 50)")
    suggest.add_argument("--mode", choices=["cascade", "text", "multimodal"],
                         help="with a cascade: both stages (default) or one")
    suggest.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="override any SuggestConfig field, e.g. --set top_k=5")
    review = sub.add_parser(
        "review", help="apply a review to suggested mappings → a mapping a build reads",
        description="Accept suggestions at or above a confidence, set other Google ids, exclude "
        "source categories with a reason (flags, or --decisions: the YAML review.html downloads); "
        "the result is a mapping table with the reviewed entries accepted. Refuses unknown source "
        "categories or ids, a threshold outside [0, 1], and suggestions made for another version of "
        "the export (its source categories changed).")
    review.add_argument("--suggestions", required=True,
                        help="mapping.yaml of suggest-mapping (or its folder)")
    review.add_argument("--decisions", help="decisions YAML (accept, set, exclude, accept_above, "
                        "exclude_rest), e.g. downloaded from review.html")
    review.add_argument("--accept-above", type=float, metavar="CONFIDENCE",
                        help="accept every top suggestion with at least this confidence (0 to 1)")
    review.add_argument("--accept", action="append", default=[], metavar="SOURCE_PATH",
                        help="accept this source category's top suggestion (repeatable)")
    review.add_argument("--map", action="append", default=[], metavar="SOURCE_PATH=ID",
                        help="map a source category to another Google id (repeatable)")
    review.add_argument("--exclude", action="append", default=[], metavar="SOURCE_PATH=REASON",
                        help="leave a source category's products out, with a reason (repeatable)")
    review.add_argument("--exclude-rest", nargs="?", const="not accepted in review", metavar="REASON",
                        help="exclude every category still unreviewed (default reason: 'not "
                        "accepted in review')")
    review.add_argument("--adapter", help="adapter to check the export against (default: the "
                        "one the suggestions name)")
    review.add_argument("--taxonomy", help="Google taxonomy file (default: the shared one)")
    review.add_argument("--output", required=True, help="the reviewed mapping YAML to write")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.catalog.adapter import builtin_platforms, load_adapter
    from prodcat.catalog.mapping import UnknownCategories, UnreviewedMapping
    from prodcat.catalog.review import MissingCategoryColumn, ReviewError, StaleSuggestions

    if args.action == "platforms":
        for name in builtin_platforms():
            cfg = load_adapter(name)
            print(f"{name:10s} {cfg.format:8s} {cfg.path}")
        return 0
    try:
        if args.action == "suggest-mapping":
            return _suggest(args)
        if args.action == "review":
            return _review(args)
        return _build(args)
    except (MissingCategoryColumn, StaleSuggestions, UnreviewedMapping, UnknownCategories,
            ReviewError) as err:
        print(f"prodcat catalog {args.action}: error: {err}", file=sys.stderr)
        return 2


def _build(args: argparse.Namespace) -> int:
    from prodcat.catalog.build import BuildConfig, build_catalog


    overrides = {key: value for key, value in {
        "platforms": args.platforms, "output": args.output, "max_depth": args.max_depth,
        "sample_per_category": args.sample_per_category,
        "check_images": False if args.no_check_images else None}.items() if value is not None}
    config = load_config(BuildConfig, args.config, args.set)
    config = config.model_copy(update=overrides)
    config = BuildConfig.model_validate(config.model_dump())
    build_catalog(config)  # prints one line per platform and the totals
    return 0


def _suggest(args: argparse.Namespace) -> int:

    from prodcat.onboard.config import SuggestConfig
    from prodcat.onboard.suggest import suggest_mapping

    flags = {"adapter": args.adapter, "model": args.model, "output": args.output,
             "features_from": args.features_from, "max_per_category": args.max_per_category,
             "mode": args.mode}
    overrides = flag_overrides(flags) + list(args.set)
    suggest_mapping(load_config(SuggestConfig, args.config, overrides))
    return 0


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, rest = value.rpartition("=")
        if not sep or not key.strip():
            raise SystemExit(f"prodcat catalog review: error: {flag} takes SOURCE_PATH=VALUE, got {value!r}")
        out[key.strip()] = rest.strip()
    return out


def _review(args: argparse.Namespace) -> int:
    import yaml

    from prodcat.catalog.review import load_decisions, review_mapping
    from prodcat.core import storage
    from prodcat.core.console import say
    from prodcat.core.taxonomy import load_google_taxonomy

    mapped = _pairs(args.map, "--map")
    try:
        ids = {k: int(v) for k, v in mapped.items()}
    except ValueError:
        raise SystemExit(f"prodcat catalog review: error: --map needs integer Google ids, got {mapped}") from None
    decisions = load_decisions(args.decisions, {
        "accept": args.accept, "set": ids, "exclude": _pairs(args.exclude, "--exclude"),
        "accept_above": args.accept_above, "exclude_rest": args.exclude_rest})
    doc, counts = review_mapping(args.suggestions, decisions, load_google_taxonomy(args.taxonomy), args.adapter)
    header = ("# Reviewed category mapping (prodcat catalog review): entries with accepted: true were "
              "looked at;\n# point the adapter's `mapping:` at this file and run prodcat catalog build.\n")
    storage.write_text(args.output, header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
    say(f"[review] {counts['accepted']} accepted, {counts['excluded']} excluded, {counts['unreviewed']} "
        f"still unreviewed → {args.output}" + (" (a build refuses the file until none is left)"
                                              if counts["unreviewed"] else ""))
    return 0
