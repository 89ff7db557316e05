"""The two-stage cascade: fit temperatures and the threshold tau on validation, report the
cost/accuracy trade-off (hF against escalation rate, with each stage's cost per product).

  prodcat cascade fit --text-model runs/sample/text/model --multimodal-model runs/sample/mm/model
  prodcat cascade fit ... --goal hf_within=0.5      # smallest escalation within 0.5 hF points
  prodcat cascade fit ... --goal max_escalation=0.3 # best hF sending at most 30% to stage 2
  prodcat cascade show runs/sample/cascade            # print cascade.json
  prodcat cascade export runs/sample/cascade s3://bucket/cascade --include-weights

Writes <output>/cascade.json (loaded by `prodcat serve` and `prodcat score --model`),
cascade_report.md, cascade_report.json and cascade_curve.png, with both checkpoints inside the
folder (text_model/, multimodal_model/) and named relative to cascade.json: the folder works
wherever it is copied. `export` makes such a folder from any cascade (also an older one that
named its checkpoints relative to the directory its fit ran in); --include-weights adds the
encoder weights (encoders/), so no node needs PRODCAT_SHARED_DIR or a model hub.
"""

from __future__ import annotations

import argparse

from prodcat.core.config import flag_overrides, load_config

HELP = "fit the cascade (temperatures, tau) on validation and plot hF vs escalation and cost"


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    fit = sub.add_parser("fit", help="fit temperatures and tau, write cascade.json and the report")
    fit.add_argument("--config", help="CascadeFitConfig YAML; flags below override it")
    fit.add_argument("--text-model", help="stage-1 checkpoint")
    fit.add_argument("--multimodal-model", help="stage-2 checkpoint")
    fit.add_argument("--products", help="product table (labels, splits, raw inputs for timing)")
    fit.add_argument("--embeddings", help="embedding store both models were trained on")
    fit.add_argument("--output", help="report folder (default runs/sample/cascade)")
    fit.add_argument("--goal", metavar="KIND=VALUE",
                     help="hf_within=0.5 (default), max_escalation=0.3 or min_hf=80")
    fit.add_argument("--skip-unreadable", action="store_true",
                     help="leave out store parts that cannot be read (counted in the report) "
                     "instead of stopping")
    fit.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override any CascadeFitConfig field, e.g. --set cost_sample=0")
    show = sub.add_parser("show", help="print a cascade.json")
    show.add_argument("cascade", help="cascade.json or its folder")
    export = sub.add_parser("export", help="write a self-contained copy of a cascade (checkpoints "
                            "inside; optionally the encoder weights) to a folder or s3://")
    export.add_argument("cascade", help="cascade.json or its folder, local or s3://")
    export.add_argument("output", help="new folder, local or s3://")
    export.add_argument("--include-weights", action="store_true",
                        help="copy the encoder weights into <output>/encoders/ too (resolved here: "
                        "shared:, local folders, s3:// or a cached hub snapshot)")
    export.add_argument("--overwrite", action="store_true", help="replace a cascade already there")


def run(args: argparse.Namespace) -> int:
    # lazy: stage modules load torch and Ray; importing them here keeps 'prodcat --help' fast
    from prodcat.cascade.bundle import export_cascade
    from prodcat.cascade.fit import CascadeFitConfig, fit_cascade
    from prodcat.cascade.spec import read_cascade

    if args.action == "show":
        print(read_cascade(args.cascade).to_json())
        return 0
    if args.action == "export":
        export_cascade(args.cascade, args.output, include_weights=args.include_weights,
                       overwrite=args.overwrite)
        return 0

    flags = {"text_model": args.text_model, "multimodal_model": args.multimodal_model,
             "products": args.products, "embeddings": args.embeddings, "output": args.output}
    overrides = flag_overrides(flags)
    if args.goal:
        kind, _, value = args.goal.partition("=")
        overrides += [f"goal.kind={kind}", f"goal.value={value or 0.5}"]
    if args.skip_unreadable:
        overrides.append("skip_unreadable=true")
    config = load_config(CascadeFitConfig, args.config, overrides + list(args.set))
    fit_cascade(config)  # prints temperatures, costs and tau; writes cascade.json and the report
    return 0
