"""Fine-tune the text encoder end to end on Ray Train; write a new encoder version.

  prodcat finetune --config configs/finetune.default.yaml
  prodcat finetune --products runs/sample/catalog/products.parquet --output runs/finetune \\
      --set optim.epochs=2 --set encoder.max_tokens=64 --set data.max_train_products=2000
  prodcat finetune ... --set data.platforms=[hm,myntra]        # a leave-one-platform-out fold
  prodcat finetune ... --set scaling.num_workers=4 --set scaling.use_gpu=true --set optim.precision=bf16
  prodcat finetune --show-config --config configs/finetune.default.yaml

What it does: the labelled rows of the training split (of data.platforms; a seeded subsample of
data.max_train_products) are tokenized with the encoder's own tokenizer and text (title +
description, encoder.max_tokens); a TorchTrainer with scaling.num_workers data-parallel workers
trains the encoder and a linear head over the label leaves (cross-entropy, AdamW, warm-up then
linear decay), the vector pooled and normalised exactly as `prodcat embed` embeds, so the result
is a drop-in text encoder. A checkpoint (safetensors + JSON) is written every epoch under
<output>/ray/<name>; a worker that dies restarts from it (scaling.max_failures), and rerunning
with the same --output and name resumes.

What it writes: <output>/encoder (a folder transformers' AutoModel and AutoTokenizer load, with
prodcat_encoder.json: its fingerprint, the architecture and weights sha256), <output>/encoder.yaml
(an embedding config naming it, feature ft_text), <output>/head, <output>/finetune_result.json.
Then add its vectors beside the frozen ones in an existing store:
  prodcat embed --config <output>/encoder.yaml --products <products.parquet> --output <store>
and train on feature ft_text (--set model.modalities=[ft_text,...]); the checkpoint records the
encoder's fingerprint, so the service and bulk scoring load these weights and refuse others.
"""

from __future__ import annotations

import argparse

from prodcat.core.config import dump_config, load_config

HELP = "fine-tune the text encoder end to end (Ray Train) into a new encoder version"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="FinetuneConfig YAML (e.g. configs/finetune.default.yaml)")
    parser.add_argument("--products", help="product table (sets data.products)")
    parser.add_argument("--output", help="run folder, local or s3:// (sets output)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any FinetuneConfig field by dotted name, e.g. "
                        "--set optim.epochs=1 --set data.platforms=[hm,myntra]")
    parser.add_argument("--show-config", action="store_true", help="print the resolved config and exit")


def run(args: argparse.Namespace) -> int:
    # lazy: the stage module loads Ray; importing it here keeps 'prodcat --help' fast
    from prodcat.train.finetune import finetune
    from prodcat.train.finetune_config import FinetuneConfig

    extra = {"data.products": args.products, "output": args.output}
    overrides = list(args.set) + [f"{k}={v}" for k, v in extra.items() if v is not None]
    config = load_config(FinetuneConfig, args.config, overrides)
    if args.show_config:
        print(dump_config(config), end="")
        return 0
    finetune(config)
    return 0
