"""Train the hierarchical classifier with Ray Train on the embedding store.

  prodcat train --config configs/train.default.yaml
  prodcat train --config configs/train.default.yaml --set model.fusion=late --set optim.lr=3e-4
  prodcat train --products runs/sample/catalog/products.parquet --embeddings runs/sample/embeddings \\
      --output runs/sample/train --set scaling.num_workers=2 --set scaling.cpus_per_worker=0.5
  prodcat train --show-config --config configs/train.default.yaml   # print the resolved config

Checkpoints (safetensors + JSON) are written every epoch under <output>/ray/<name>; the best one
(by validation hF, early stopping with optim.patience) is copied to <output>/model and calibrated.
Rerunning with the same --output and name resumes from the last checkpoint. A store part or
product table that cannot be read stops the command with the file named, unless
--skip-unreadable is given (the skipped rows are then counted in train_result.json and on the
terminal, beside the labelled products used against the catalogue's).
"""

from __future__ import annotations

import argparse

from prodcat.core.config import dump_config, load_config

HELP = "train the classifier (Ray Train, checkpoints, early stopping, resume)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TrainConfig YAML (e.g. configs/train.default.yaml)")
    parser.add_argument("--products", help="product table (sets data.products)")
    parser.add_argument("--embeddings", help="embedding store folder (sets data.embeddings)")
    parser.add_argument("--output", help="run folder, local or s3:// (sets output)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any TrainConfig field by dotted name, e.g. --set model.fusion=late")
    parser.add_argument("--skip-unreadable", action="store_true",
                        help="leave out store parts that cannot be read (counted in the summary) "
                        "instead of stopping (sets data.skip_unreadable)")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def overrides_from(args: argparse.Namespace) -> list[str]:
    """``--set`` values plus the shortcut flags as dotted overrides (flags win)."""
    extra = {"data.products": args.products, "data.embeddings": args.embeddings, "output": args.output,
             "data.skip_unreadable": "true" if getattr(args, "skip_unreadable", False) else None}
    return list(args.set) + [f"{k}={v}" for k, v in extra.items() if v is not None]


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.train.config import TrainConfig
    from prodcat.train.trainer import train

    config = load_config(TrainConfig, args.config, overrides_from(args))
    if args.show_config:
        print(dump_config(config), end="")
        return 0
    train(config)  # prints one line per epoch and the best epoch; figures in train_result.json
    return 0
