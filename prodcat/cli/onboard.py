"""Onboarding: each platform met as a new one, measured on the leave-one-platform-out folds; a
model adapted to a new platform from its unlabelled products; a model for it chosen on a few of its
labelled products (`prodcat onboard choose --help`).

  prodcat onboard measure --products runs/sample/catalog/products.parquet \\
      --embeddings runs/sample/embeddings --evaluation runs/sample/eval --output runs/sample/onboard
  prodcat onboard measure ... --source export      # each platform's whole export, read unmapped
  prodcat onboard measure ... --set train_overrides='["model.fusion=decision"]'

For every held-out platform: a model trained without it (the evaluation's checkpoint of the fold
when it kept one, else trained here), adapted to the platform's products (inputs only) when it
adapts, as the default does (`--set adapt=false`: as trained); mapping suggestions for the
platform's source categories (as `prodcat catalog suggest-mapping` makes them) compared with
its hand-made mapping (top-1 / top-3 agreement per category and by products, strict hF,
agreement against a confidence threshold), and the fold's partial-path curve (abstention thresholds fitted on the training
platforms' calibration split). Writes report.md, onboard.json, agreement.png, abstain_curve.png
and lopo_<platform>/ (mapping.yaml, suggestions.parquet, review.html, comparison.json, model/,
adapted/).

  prodcat onboard adapt --checkpoint runs/full/model --products new_shop/products.parquet \\
      --embeddings new_shop/embeddings --output runs/full/model-new-shop

A decision-level model that chose `prior: adapt` predicts with no label prior until it is adapted:
`adapt` estimates the new platform's label distribution by EM from its unlabelled products (their
vectors from `prodcat embed` with the checkpoint's encoders; fingerprints checked) and writes an
adapted copy of the checkpoint (with adapt.md / adapt.json) that serve, score and cascade fit load.
The default model (`model.decision.self_train` in its preset, since stop 41) self-trains there: a
logistic regression fitted on the products its combination is sure of, labelled with its own
predictions, joins the combination (docs/evaluation.md). With `scope: new_platforms` (the
default) it does so only from products of platforms the model was not trained on; on a platform
it was trained on, nothing is added and the command says so.
"""

from __future__ import annotations

CHOOSE_HELP = """The model for a new platform, chosen on a few of its labelled products.

  prodcat onboard choose --products runs/full/catalog/products.parquet \\
      --embeddings runs/full/embeddings --platform flipkart --labelled-splits val calib \\
      --max-labelled 25 --output runs/full/choose-flipkart

  # labels to come: first the products worth labelling, then the choice on them
  prodcat onboard choose ... --propose 25 --output runs/full/choose-flipkart
  prodcat onboard choose ... --labels labelled.csv --output runs/full/choose-flipkart

Each candidate setting of the default (default: the default, and the default without its label
names) is trained on the other platforms, adapted to the new platform's products (inputs only),
and predicts the new platform's labelled products (its rows in --labelled-splits whose category
the other platforms have, or the rows of --labels). --max-labelled reads at most that many, whole
near-duplicate groups drawn where the candidates predict different categories (--sampling
disagreement, the default: elsewhere a label cannot tell them apart). The first candidate is kept
unless another beats it there by a real difference (strict hF, 95 % paired bootstrap over groups)
in at least 6 groups where their scores differ, then the best of those. The platform's other labelled products, if any, check the choice
afterwards; the choice never reads them. Writes model/ (the chosen checkpoint), choice.json,
report.md and candidates/<name>/ (reused by a later run with the same settings); with --propose,
to_label.csv and proposal.json instead. Why: docs/onboarding.md, "If you can label a few of the
new platform's products".
"""

import argparse
import sys

from prodcat.core.config import flag_overrides, load_config

HELP = ("measure mapping suggestions and partial paths with each platform held out (LOPO); adapt a "
        "model to a new platform from its unlabelled products (label distribution, self-training); "
        "choose its model on a few labelled products")


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
    adapt = sub.add_parser("adapt", help="a checkpoint adapted to a new platform from its unlabelled "
                           "products: their label distribution (EM), a self-trained component",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    adapt.add_argument("--checkpoint", required=True, help="a decision-level checkpoint that chose "
                       "prior 'adapt' or self-trains (model.decision.self_train, as the default does; local or s3://)")
    adapt.add_argument("--products", required=True, help="the new platform's product table (no "
                       "category needed)")
    adapt.add_argument("--embeddings", required=True, help="their embedding store (prodcat embed, "
                       "the checkpoint's encoders)")
    adapt.add_argument("--platform", help="only the products of this platform (default: all)")
    adapt.add_argument("--skip-unreadable", action="store_true", help="leave out store parts that "
                       "cannot be read (counted) instead of stopping")
    adapt.add_argument("--output", required=True, help="folder for the adapted checkpoint")
    choose = sub.add_parser("choose", help="the model for a new platform chosen on a few of its "
                            "labelled products, among settings of the default trained on the other "
                            "platforms (default: with and without the label names)",
                            description=CHOOSE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    choose.add_argument("--config", help="ChooseConfig YAML; flags below override it")
    choose.add_argument("--products", help="product table with the training platforms and the new one")
    choose.add_argument("--embeddings", help="its embedding store")
    choose.add_argument("--platform", help="the new platform")
    choose.add_argument("--train", help="TrainConfig YAML every candidate starts from "
                        "(default configs/train.default.yaml)")
    choose.add_argument("--labelled-splits", nargs="+", help="splits of the new platform's rows whose "
                        "categories the choice reads (default val)")
    choose.add_argument("--max-labelled", type=int, help="at most this many labelled products "
                        "(whole near-duplicate groups, drawn as --sampling says)")
    choose.add_argument("--sampling", choices=["disagreement", "random"],
                        help="which labelled products a --max-labelled cap reads: disagreement (the "
                        "default), only where the candidates predict different categories (elsewhere "
                        "a label cannot tell them apart); random, any")
    choose.add_argument("--propose", type=int, metavar="N", help="do not choose: write to_label.csv, "
                        "about N products where the candidates disagree (no label read), to be filled "
                        "in and given back with --labels")
    choose.add_argument("--labels", metavar="FILE", help="product_id,category_id CSV or Parquet (e.g. "
                        "to_label.csv filled in): the labelled products the choice reads, instead of "
                        "the new platform's rows in --labelled-splits")
    choose.add_argument("--output", help="output folder (model/ is the chosen checkpoint)")
    choose.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override any ChooseConfig field, e.g. --set 'candidates={default: [], "
                        "no-label: [model.label_prior=none]}'")


def run(args: argparse.Namespace) -> int:
    if args.action == "choose":
        return _choose(args)
    if args.action == "adapt":
        from prodcat.onboard.adapt import adapt_checkpoint

        try:
            summary = adapt_checkpoint(args.checkpoint, args.products, args.embeddings, args.output,
                                       args.platform, args.skip_unreadable, log=print)
        except (ValueError, KeyError, FileNotFoundError) as err:     # what the user can fix: one line
            print(f"prodcat onboard adapt: error: {err}", file=sys.stderr)
            return 2
        if summary.get("top"):
            top = summary["top"][0]
            print(f"largest estimated category: {top['path']} ({top['share']:.1%}; training "
                  f"{top['training_share']:.1%})")
        st = summary.get("self_training")
        if st and st["added"]:
            print(f"self-trained on {st['fitted_on']:,} of {st['adapted_on']:,} products "
                  f"({' + '.join(st['features'])})")
        elif st:
            print(f"self-training added nothing: {st['reason']} (adapt.md)")
        return 0
    from prodcat.onboard.config import MeasureConfig
    from prodcat.onboard.measure import measure

    flags = {"products": args.products, "embeddings": args.embeddings, "evaluation": args.evaluation,
             "train": args.train, "platforms": args.platforms, "source": args.source,
             "max_per_category": args.max_per_category, "output": args.output}
    overrides = flag_overrides(flags) + list(args.set)
    measure(load_config(MeasureConfig, args.config, overrides))
    return 0


def _choose(args: argparse.Namespace) -> int:
    from prodcat.onboard.choose import choose
    from prodcat.onboard.config import ChooseConfig

    flags = {"products": args.products, "embeddings": args.embeddings, "platform": args.platform,
             "train": args.train, "labelled_splits": args.labelled_splits,
             "max_labelled": args.max_labelled, "sampling": args.sampling, "propose": args.propose,
             "labels": args.labels, "output": args.output}
    overrides = flag_overrides(flags) + list(args.set)
    try:
        choose(load_config(ChooseConfig, args.config, overrides))
    except (ValueError, FileNotFoundError) as err:     # what the user can fix: one line
        print(f"prodcat onboard choose: error: {err}", file=sys.stderr)
        return 2
    return 0
