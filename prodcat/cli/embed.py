"""Embed products with text, image and joint encoders (Ray Data actor pools) into the store.

  prodcat embed --config configs/encoders.offline.yaml \\
      --products runs/sample/catalog/products.parquet --output runs/sample/embeddings
  prodcat embed --config configs/encoders.production.yaml --products s3://b/cat --output s3://b/emb
  prodcat embed ... --set encoders.image.image_size=128 --set encoders.text.pool_size=2
  prodcat embed ... --limit 2000         # embed at most 2,000 new products, resume later
  prodcat embed ... --platforms myntra   # embed Myntra's products only
  prodcat embed ... --splits train       # embed the training split only
  prodcat embed --show --output runs/sample/embeddings   # describe an existing store
  prodcat embed --upgrade-store --output runs/sample/embeddings  # convert an older store format

A rerun skips products already in the store with the same encoder fingerprints; a feature the
store holds with other weights is refused (use a new --output or --overwrite). Encoders whose
features the store does not hold yet are added to it: e.g. a fine-tuned text encoder
(`prodcat finetune` writes <output>/encoder.yaml, feature ft_text):
  prodcat embed --config runs/finetune/encoder.yaml --products <products.parquet> --output <store>
embeds every product for ft_text only, in parts of its own beside the stored ones (nothing stored
is rewritten; resumable like any run); the products the encoder was fine-tuned on are kept in the
store (trained_on/ft_text.parquet): a decision-level model is never scored on them when it chooses,
and an evaluation refuses a fold whose test platform the encoder learnt. --show lists each feature
with the products it holds (and how many its encoder was trained on). A store part that cannot be
read stops the command with the file named, unless --skip-unreadable is given (its products are
then embedded again and the count is in the summary).
"""

from __future__ import annotations

import argparse
import json

from prodcat.core.config import load_config
from prodcat.core.console import say
from prodcat.core.paths import REPO_ROOT

HELP = "embed products (text, image, joint encoders) into the embedding store, resumably"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="EmbedConfig YAML (default configs/encoders.offline.yaml "
                        "of this checkout)")
    parser.add_argument("--products", help="product table (Parquet file or folder, local or s3://)")
    parser.add_argument("--output", help="embedding store folder (local or s3://)")
    parser.add_argument("--limit", type=int, help="embed at most N new products this run")
    parser.add_argument("--platforms", help="embed only these platforms' products (comma-separated, "
                        "e.g. hm,myntra: the store of an encoder fine-tuned without a platform is read "
                        "by that platform's held-out set only)")
    parser.add_argument("--splits", help="embed only these splits' products (comma-separated, e.g. "
                        "train: the rows prodcat train's cross-platform held-out sets fit on and "
                        "predict, what the store of an encoder fine-tuned without a platform needs)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a store made with other encoders instead of refusing")
    parser.add_argument("--progress", action="store_true", help="show Ray Data's progress bars")
    parser.add_argument("--show", action="store_true",
                        help="print the manifest and row counts of the store at --output, then exit")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="go on past store parts that cannot be read (re-embeds their products; "
                        "the count is in the summary) instead of stopping")
    parser.add_argument("--upgrade-store", action="store_true",
                        help="convert the store at --output to the current store format, then exit")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any EmbedConfig field, e.g. --set encoders.text.batch_size=128")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.embed.pipeline import EmbedConfig, run_embedding
    from prodcat.embed.store import embedded_ids, read_store, read_trained_on, upgrade_store

    if args.upgrade_store:
        if not args.output:
            raise SystemExit("--upgrade-store needs --output <store>")
        result = upgrade_store(args.output, log=say)
        say(f"[embed] store format is current: {result['upgraded']} of {result['parts']} parts "
            f"rewritten ({result['rows']:,} rows) → {args.output}")
        return 0
    if args.show:
        table, manifest = read_store(args.output, columns=["product_id"],
                                     skip_unreadable=args.skip_unreadable)
        per_feature, _ = embedded_ids(args.output, skip_unreadable=args.skip_unreadable)
        learnt = read_trained_on(args.output, list(manifest["features"]))
        print(json.dumps({"rows": table.num_rows, "version": manifest.get("version", 1),
                          "skipped_unreadable": manifest["skipped"], "features": {
            f: {"dim": d["dim"], "fingerprint": d["fingerprint"]["key"], "encoder": d["encoder"],
                "rows": len(per_feature.get(f, [])),
                **({"trained_on": len(learnt[f])} if f in learnt else {})}
            for f, d in manifest["features"].items()}}, indent=2))
        return 0
    overrides = list(args.set)
    if args.skip_unreadable:
        overrides.append("skip_unreadable=true")
    for field in ("products", "output", "limit"):
        value = getattr(args, field)
        if value is not None:
            overrides.append(f"{field}={value}")
    for field in ("platforms", "splits"):
        value = getattr(args, field)
        if value:
            overrides.append(f"{field}={json.dumps([v.strip() for v in value.split(',') if v.strip()])}")
    config = load_config(EmbedConfig, args.config or _default_config(), overrides)
    if args.progress:
        import ray.data

        ray.data.DataContext.get_current().enable_progress_bars = True
    run_embedding(config, overwrite=args.overwrite)
    return 0


def _default_config() -> str:

    path = REPO_ROOT / "configs" / "encoders.offline.yaml"
    if not path.is_file():
        raise SystemExit("no --config given and configs/encoders.offline.yaml not found")
    return str(path)
