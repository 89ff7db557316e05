"""Every row of an evaluation against one model (default: ``default``), from its predictions.

``prodcat evaluate`` compares every model with the tuned TF-IDF baseline and, since stop 53, with
its default (``against_default`` in ``results.json``); this script asks the same question, "does any
part or reference row beat the default?", of evaluations made apart or before stop 53, with any
row as the reference, from the predictions alone (``tests/integration/evaluate/test_grid.py``
checks it gives the evaluation's own figures). This reads ``<evaluation output>/predictions/*.parquet``
(:mod:`prodcat.evaluate.predictions`), rescores each row with the project's strict hF
(:func:`prodcat.core.metrics.hierarchical_counts`) and writes, per fold, seed and model, hF(model)
− hF(reference) in hF points with its 95 % paired-bootstrap interval
(:func:`prodcat.core.uncertainty.paired_difference`, 1,000 resamples) as JSON, and a Markdown
table on stdout, then per fold and model the mean hF over seeds beside its reference's with the
error ratio ``(1 - hF) / (1 - reference hF)``, and per model the sum of |difference| over the
folds of at least ``--min-products`` products (how far it moves from its reference in all).

    python benchmarks/paired_rows.py --evaluation runs/full/eval-frozen \
        --taxonomy runs/full/catalog/taxonomy.json --against default \
        --out docs/results/full-frozen/paired_against_default.json

Several ``--evaluation`` folders (runs of the same folds and seeds, e.g. a new model evaluated on
its own and an earlier run's rows) are read as one: each fold-and-seed file is the union of their
rows. A model present in more than one of them must have the same predictions in each (a check
that the shared rows reproduce), else the command stops. With several folders, a fold and seed
that lacks the reference model is left out, and said so on stderr.

Two runs of the same models (e.g. the main job with its encoders in bf16 and in float32, stop 56)
are told apart with ``--suffix``, one per folder, appended to that folder's model names; an
``--against`` holding ``{model}`` compares each model with its own twin:

    python benchmarks/paired_rows.py --evaluation runs/bf16/eval runs/fp32/eval --suffix "" @fp32 \
        --against "{model}@fp32" --taxonomy runs/bf16/catalog/taxonomy.json

Raises SystemExit with a message when the predictions folder is empty, the reference model is
missing from a fold (with several folders: from every fold), or a model shared by two folders
predicts differently in them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.core.taxonomy import Taxonomy
from prodcat.core.uncertainty import paired_difference


def level_classes(taxonomy: Taxonomy, level_ids: list[list[int]]) -> np.ndarray:
    """``[B, L]`` per-level classes (-1 where a path stops) from per-level category ids."""
    index = [{int(taxonomy.ids[n]): k for k, n in enumerate(nodes)} for nodes in taxonomy.level_nodes]
    out = np.full((len(level_ids), len(index)), -1, np.int64)
    for b, ids in enumerate(level_ids):
        for level, cid in enumerate(ids[:len(index)]):
            if cid is not None and cid >= 0:
                out[b, level] = index[level][int(cid)]
    return out


def compare(table, taxonomy: Taxonomy, against: str) -> list[dict]:
    """Rows ``{fold, seed, model, products, hF, reference_hF, difference, low, high, real, verdict}``
    for one predictions table (differences in hF points)."""
    df = table.to_pandas()
    rows = []
    for (fold, seed), part in df.groupby(["fold", "seed"]):
        counts = {}
        for model, sub in part.groupby("model"):
            sub = sub.sort_values("product_id")
            true = np.asarray([taxonomy.label_node(int(c)) for c in sub["true_category_id"]])
            counts[model] = (hierarchical_counts(taxonomy, true, level_classes(taxonomy, list(sub["level_category_ids"]))),
                             sub["group_id"].to_numpy())
        twins = "{model}" in against
        if not twins and against not in counts:
            raise SystemExit(f"{fold} seed {seed}: no model named {against!r} (models: {sorted(counts)})")
        for model, (c, g) in counts.items():
            reference = against.format(model=model) if twins else against
            if model == reference or reference not in counts:
                continue                                   # the reference itself, or no twin
            ref, groups = counts[reference]
            d = paired_difference(c, ref, groups)
            hf = prf_from_counts(*c.sum(axis=0))["hF"]
            ref_hf = prf_from_counts(*ref.sum(axis=0))["hF"]
            rows.append({"fold": fold, "seed": int(seed), "model": model, "products": int(len(c)),
                         "hF": round(float(hf), 4), "reference_hF": round(float(ref_hf), 4),
                         "difference": round(100 * d.estimate, 2), "low": round(100 * d.low, 2),
                         "high": round(100 * d.high, 2), "real": bool(d.excludes_zero()),
                         "against": reference,
                         "verdict": "no real difference" if not d.excludes_zero() else (
                             f"{model} beats" if d.low > 0 else f"{reference} beats")})
    return rows


def absolute_sums(rows: list[dict], min_products: int) -> dict[str, dict]:
    """Per model, ``{"sum": sum of |difference|, "folds": how many}`` over its rows of at least
    ``min_products`` products, in hF points: how far a model moves from its reference in all
    (with ``--suffix``: between two runs of it, e.g. two stores; stop 58's stability condition)."""
    sums: dict[str, dict] = {}
    for r in rows:
        if r["products"] >= min_products:
            entry = sums.setdefault(r["model"], {"sum": 0.0, "folds": 0})
            entry["sum"] = round(entry["sum"] + abs(r["difference"]), 2)
            entry["folds"] += 1
    return sums


def fold_means(rows: list[dict]) -> list[dict]:
    """Per fold and model, the mean over seeds of its hF and of its reference's, and the error
    ratio ``(1 - mean hF) / (1 - mean reference hF)`` (issue 19's goal: at most 0.7 against the
    tuned TF-IDF); ``None`` where the reference makes no error."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["fold"], r["model"], r["against"]), []).append(r)
    out = []
    for (fold, model, against), rs in groups.items():
        mean = float(np.mean([r["hF"] for r in rs]))
        ref = float(np.mean([r["reference_hF"] for r in rs]))
        out.append({"fold": fold, "model": model, "against": against, "seeds": sorted(r["seed"] for r in rs),
                    "mean_hF": round(mean, 4), "mean_reference_hF": round(ref, 4),
                    "error_ratio": round((1 - mean) / (1 - ref), 2) if ref < 1 else None})
    return out


def merged_predictions(folders: list[str], suffixes: list[str] | None = None) -> dict[str, pa.Table]:
    """``{file name: table}``: each fold-and-seed predictions file, the union of the folders' rows,
    each folder's model names followed by its entry of ``suffixes`` (none by default).

    Raises:
        SystemExit: no predictions in a folder, or a model in two folders with different predictions.
    """
    tables: dict[str, pa.Table] = {}
    suffixes = suffixes or [""] * len(folders)
    if len(suffixes) != len(folders):
        raise SystemExit(f"--suffix needs one entry per --evaluation folder ({len(folders)}), got {len(suffixes)}")
    for folder, suffix in zip(folders, suffixes):
        files = sorted(Path(folder, "predictions").glob("*.parquet"))
        if not files:
            raise SystemExit(f"no predictions under {folder}/predictions")
        for f in files:
            table = pq.read_table(f)
            if suffix:
                renamed = pc.binary_join_element_wise(table.column("model"), pa.scalar(suffix), "")
                table = table.set_column(table.column_names.index("model"), "model", renamed)
            if f.name not in tables:
                tables[f.name] = table
                continue
            have = tables[f.name]
            shared = set(have.column("model").to_pylist()) & set(table.column("model").to_pylist())
            for model in sorted(shared):
                if not _same_rows(have, table, model):
                    raise SystemExit(f"{f.name}: model {model!r} predicts differently in {folder} "
                                     "than in an earlier --evaluation folder")
            new = pc.invert(pc.is_in(table.column("model"), pa.array(sorted(shared), pa.string())))
            tables[f.name] = pa.concat_tables([have, table.filter(new).select(have.column_names)])
    return tables


def _same_rows(a: pa.Table, b: pa.Table, model: str) -> bool:
    """Whether ``model``'s (product, predicted category) pairs are the same in ``a`` and ``b``."""
    def pairs(t: pa.Table) -> list[tuple]:
        sub = t.filter(pc.equal(t.column("model"), model))
        return sorted(zip(sub.column("product_id").to_pylist(), sub.column("category_id").to_pylist()))
    return pairs(a) == pairs(b)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", required=True, nargs="+",
                        help="`prodcat evaluate` output folder(s); several are read as one")
    parser.add_argument("--taxonomy", required=True, help="the catalogue's taxonomy.json")
    parser.add_argument("--against", default="default", help="the reference model (default: "
                        "default); with {model} in it, each model against that name, e.g. "
                        "'{model}@fp32' with --suffix")
    parser.add_argument("--suffix", nargs="+", help="one per --evaluation folder, appended to its "
                        "model names (\"\" for none), to compare two runs of the same models")
    parser.add_argument("--min-products", type=int, default=100, help="the folds the closing "
                        "sum of |difference| per model counts: those of at least this many products "
                        "(default: 100, as the validation rounds' rules)")
    parser.add_argument("--out", help="JSON file to write")
    args = parser.parse_args(argv)
    tables = merged_predictions(args.evaluation, args.suffix)
    taxonomy = Taxonomy.from_json(Path(args.taxonomy).read_text())
    rows = []
    for name in sorted(tables):
        if (len(args.evaluation) > 1 and "{model}" not in args.against
                and args.against not in set(tables[name].column("model").to_pylist())):
            print(f"{name}: no model named {args.against!r}; left out", file=sys.stderr)
            continue
        rows += compare(tables[name], taxonomy, args.against)
    if not rows:
        raise SystemExit(f"no fold has a model named {args.against!r}")
    print(f"| fold | seed | model | hF | hF − {args.against} (points) | 95 % CI | verdict |".replace("{model}", "model"))
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['fold']} | {r['seed']} | {r['model']} | {r['hF']:.4f} | {r['difference']:+.2f} | "
              f"[{r['low']:+.2f}, {r['high']:+.2f}] | {r['verdict']} |")
    means = fold_means(rows)
    print("\n| fold | model | seeds | mean hF | reference's | error ratio |\n|---|---|---|---|---|---|")
    for m in means:
        ratio = "-" if m["error_ratio"] is None else f"{m['error_ratio']:.2f}"
        print(f"| {m['fold']} | {m['model']} | {', '.join(map(str, m['seeds']))} | {m['mean_hF']:.4f} | "
              f"{m['mean_reference_hF']:.4f} | {ratio} |")
    sums = absolute_sums(rows, args.min_products)
    print(f"\nSum of |hF − reference| (points) over folds of {args.min_products} or more products:")
    for model, entry in sums.items():
        print(f"- {model}: {entry['sum']:.2f} over {entry['folds']} fold-seeds")
    if args.out:
        evaluation = args.evaluation[0] if len(args.evaluation) == 1 else args.evaluation
        Path(args.out).write_text(json.dumps({"against": args.against, "evaluation": evaluation,
                                              "rows": rows, "fold_means": means,
                                              "min_products": args.min_products,
                                              "absolute_sums": sums}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
