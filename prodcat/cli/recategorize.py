"""Recategorization: propose finer subcategories from the data, review them, extend the taxonomy.

  prodcat recategorize propose --products runs/full/catalog/products.parquet \\
      --embeddings runs/full/embeddings --category 187 --output runs/recategorize
  prodcat recategorize propose ... --category 187 --category "Apparel & Accessories > Clothing > Pants"
  prodcat recategorize propose ... --min-products 500          # every category with >= 500 products
  prodcat recategorize propose ... --set simclr.temperature=0.2 --set clustering.min_cluster_size=25
  # read runs/recategorize/report.md, edit runs/recategorize/accept.yaml (accept: true, name), then
  prodcat recategorize apply --proposals runs/recategorize --output runs/catalog-extended
  prodcat train --products runs/catalog-extended/products.parquet --embeddings runs/full/embeddings ...
  prodcat recategorize map --predictions preds/ --taxonomy runs/catalog-extended/taxonomy.json \\
      --from-version google-2021-09-21 --output preds-extended.parquet

propose: per category, a SimCLR projection network (NT-Xent on two augmented views of the stored
embeddings) → UMAP → HDBSCAN with a cascade step (too large or too mixed clusters re-clustered
one level down; noise joins a cluster only when its soft membership is high enough). Scores the
clusters against each platform's own finer labels (purity, NMI, ARI, Hungarian accuracy, with the
cluster count and the unassigned share), with and without SimCLR and the cascade step. Writes
recategorize.json, report.md, PNGs per category and the review file accept.yaml.

apply: the accepted subcategories become child nodes (ids from 1,000,000,000 up: never a Google
id) of a new taxonomy version with an old → new id map; writes taxonomy.json, the relabelled
products.parquet and extension.{json,md} into --output.

map: predictions made under an earlier taxonomy version → the ids and paths of the new one.
"""

from __future__ import annotations

import argparse

from prodcat.core.config import dump_config, flag_overrides, load_config

HELP = "propose finer subcategories (SimCLR, UMAP, cascade clustering), accept them into the taxonomy"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    propose = sub.add_parser("propose", help="cluster categories into proposed subcategories, "
                             "score them, write the report and the review file",
                             description="Per category (one Ray task each): SimCLR on the stored "
                             "embeddings → UMAP → HDBSCAN with the cascade step; scores against each "
                             "platform's finer labels with the ablations. Writes recategorize.json, "
                             "report.md, accept.yaml and <category id>/{assignments.parquet, "
                             "scatter.png, cluster_<k>.png} into --output.")
    propose.add_argument("--config", help="RecategorizeConfig YAML; flags below override it")
    propose.add_argument("--products", help="product table (sets products)")
    propose.add_argument("--embeddings", help="embedding store folder (sets embeddings)")
    propose.add_argument("--output", help="proposal folder (default runs/recategorize)")
    propose.add_argument("--category", action="append", dest="categories", metavar="ID_OR_PATH",
                         help="a category id or ' > ' path (repeatable); none: every category "
                         "with at least --min-products embedded products")
    propose.add_argument("--min-products", type=int, help="smallest category recategorized (200)")
    propose.add_argument("--max-per-platform", type=int,
                         help="cap products per (category, platform), chosen by hash")
    propose.add_argument("--features", nargs="+", help="store features to use (default text image)")
    propose.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                         help="override any RecategorizeConfig field, e.g. --set simclr.epochs=100")
    propose.add_argument("--show-config", action="store_true", help="print the resolved config and exit")

    apply = sub.add_parser("apply", help="accepted subcategories → extended taxonomy.json and a "
                           "relabelled products.parquet",
                           description="Reads the reviewed accept.yaml (accept: true, name) and "
                           "writes taxonomy.json (a new version: new nodes with ids from "
                           "1,000,000,000, the old → new id map), the relabelled products.parquet "
                           "and extension.{json,md} into --output (a new folder).")
    apply.add_argument("--proposals", required=True, help="folder written by `propose`")
    apply.add_argument("--accept", help="the reviewed accept.yaml (default: in --proposals)")
    apply.add_argument("--products", help="product table to relabel (default: the one proposed on)")
    apply.add_argument("--output", required=True, help="new catalogue folder")
    apply.add_argument("--version", help="version tag of the extended taxonomy")

    mapping = sub.add_parser("map", help="predictions made under an earlier taxonomy version → "
                             "ids and paths of an extended one")
    mapping.add_argument("--predictions", required=True, help="prediction Parquet file or folder")
    mapping.add_argument("--taxonomy", required=True, help="the extended taxonomy.json")
    mapping.add_argument("--from-version", required=True, help="the version the predictions were made under")
    mapping.add_argument("--output", required=True, help="Parquet file to write")


def _propose_overrides(args: argparse.Namespace) -> list[str]:
    flags = {"products": args.products, "embeddings": args.embeddings, "output": args.output,
             "categories": args.categories, "min_products": args.min_products,
             "max_products_per_platform": args.max_per_platform, "features": args.features}
    return list(args.set) + flag_overrides(flags)


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch, umap and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.core import storage
    from prodcat.core.console import say
    from prodcat.core.taxonomy import Taxonomy
    from prodcat.recategorize.config import RecategorizeConfig
    from prodcat.recategorize.extension import ApplyConfig, apply_extension, map_predictions
    from prodcat.recategorize.propose import propose

    if args.action == "propose":
        config = load_config(RecategorizeConfig, args.config, _propose_overrides(args))
        if args.show_config:
            print(dump_config(config), end="")
            return 0
        propose(config)  # prints one line per category; report.md and accept.yaml in --output
        return 0
    if args.action == "apply":
        flags = {"proposals": args.proposals, "accept": args.accept, "products": args.products,
                 "output": args.output, "version": args.version}
        apply_extension(load_config(ApplyConfig, None, {k: v for k, v in flags.items() if v is not None}))
        return 0
    taxonomy = Taxonomy.from_json(storage.read_text(args.taxonomy))
    table = map_predictions(storage.read_table(args.predictions), taxonomy, args.from_version)
    storage.write_table(table, args.output)
    say(f"[recategorize] {table.num_rows:,} predictions mapped from {args.from_version} to "
        f"{taxonomy.version} → {args.output}")
    return 0
