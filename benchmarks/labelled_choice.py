"""What k labelled products of a new platform would buy: a choice among the evaluated rows, made
on k products of the held-out platform and scored on its other products.

Not the leave-one-platform-out protocol (which reads nothing of the held-out platform before its
test): an analysis of a different deployment, where whoever onboards a platform labels a few of its
products first. It reads an evaluation's predictions only (:mod:`prodcat.evaluate.predictions`;
nothing is refitted). For each LOPO fold and seed, ``--draws`` times: whole near-duplicate groups
of the fold's test products are drawn at random until they hold ``k`` products (the labelled
sample); among the candidate rows, the ``paired`` rule of ``prodcat onboard choose``
(:func:`prodcat.onboard.choose.pick`, itself ``prodcat train``'s rule for combinations) keeps the
default unless a candidate beats it on the labelled sample by a real difference (95 % paired
bootstrap over groups), and then takes the best of those on the sample; the pick is scored on
the fold's remaining products, against the default and TF-IDF on the same products. The candidates are what a choice could be made among: the shipped default, its
ablation variants (other settings of the same system) and the component and reference rows.

    python benchmarks/labelled_choice.py --taxonomy runs/full/catalog/taxonomy.json \
        --evaluation runs/full/eval-ablation-s47 runs/full/eval-ablation-s48 \
            runs/full/eval-image224:tfidf,logreg-text,logreg-hr_image,tfidf+logreg-text \
        --k 25 50 100 --draws 100 --out docs/results/full-frozen/stop49/labelled-choice.json

An ``--evaluation`` entry ``folder:model,model`` takes only those models from that folder (one
folder's ``default`` may be another model than the next one's). A model in two folders must
predict the same in both (else it stops). Writes JSON (every fold, seed and k: the mean, 5th and
95th percentile over draws of pick − default and pick − TF-IDF on the scored products, in hF
points, and how often each candidate was picked) and prints a Markdown table.

A fold and seed without the default or ``tfidf`` is left out, and said so on stderr. Raises
SystemExit with a message when a folder has no predictions, a model in two folders predicts
differently, or no fold is left.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.core.taxonomy import Taxonomy
from prodcat.onboard.choose import disagreeing, pick

REFERENCE = "tfidf"


def load(specs: list[str]) -> dict[tuple[str, int], pa.Table]:
    """``{(fold, seed): predictions}`` of the LOPO folds, the union of the folders' rows.

    Raises:
        SystemExit: a folder without predictions, or a model in two folders predicting differently.
    """
    tables: dict[tuple[str, int], pa.Table] = {}
    for spec in specs:
        folder, _, names = spec.partition(":")
        models = [m for m in names.split(",") if m] if names else None
        files = sorted(Path(folder, "predictions").glob("lopo_*.parquet"))
        if not files:
            raise SystemExit(f"no leave-one-platform-out predictions under {folder}/predictions")
        for f in files:
            table = pq.read_table(f, columns=["product_id", "group_id", "fold", "model", "seed", "category_id",
                                              "level_category_ids", "true_category_id"])
            if models is not None:
                table = table.filter(pc.is_in(table.column("model"), pa.array(models, pa.string())))
            for (fold, seed) in {(r["fold"], r["seed"]) for r in table.select(["fold", "seed"]).to_pylist()}:
                part = table.filter(pc.and_(pc.equal(table.column("fold"), fold),
                                            pc.equal(table.column("seed"), seed)))
                key = (fold, int(seed))
                if key not in tables:
                    tables[key] = part
                    continue
                have = tables[key]
                shared = set(have.column("model").to_pylist()) & set(part.column("model").to_pylist())
                for model in sorted(shared):
                    if not _paired_rows()._same_rows(have, part, model):
                        raise SystemExit(f"{fold} seed {seed}: model {model!r} predicts differently in "
                                         f"{folder} than in an earlier --evaluation folder")
                new = pc.invert(pc.is_in(part.column("model"), pa.array(sorted(shared), pa.string())))
                tables[key] = pa.concat_tables([have, part.filter(new)])
    return tables


def counts_by_model(table: pa.Table, taxonomy: Taxonomy) -> tuple[dict[str, np.ndarray], np.ndarray,
                                                                   dict[str, np.ndarray]]:
    """``({model: [B, 3] hierarchical counts}, [B] group ids, {model: [B] predicted category
    ids})``, products in one order for all.

    Raises:
        SystemExit: when the models were not scored on the same products.
    """
    level_classes = _paired_rows().level_classes
    df = table.to_pandas()
    out, ids, groups, predicted = {}, None, None, {}
    for model, sub in df.groupby("model"):
        sub = sub.sort_values("product_id")
        if ids is None:
            ids, groups = sub["product_id"].to_numpy(), sub["group_id"].to_numpy()
        elif not np.array_equal(ids, sub["product_id"].to_numpy()):
            raise SystemExit(f"model {model!r} was scored on other products than the others")
        true = np.asarray([taxonomy.label_node(int(c)) for c in sub["true_category_id"]])
        out[model] = hierarchical_counts(taxonomy, true, level_classes(taxonomy, list(sub["level_category_ids"])))
        predicted[model] = sub["category_id"].to_numpy()
    return out, groups, predicted


@functools.cache
def _paired_rows():
    """benchmarks/paired_rows.py, beside this file (benchmarks/ is not a package), loaded once."""
    spec = importlib.util.spec_from_file_location("paired_rows", Path(__file__).with_name("paired_rows.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hf(counts: np.ndarray) -> float:
    return float(prf_from_counts(*counts.sum(axis=0))["hF"])


def draw_sample(groups: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask of whole groups, drawn in random order until they hold at least ``k`` products."""
    names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    order = rng.permutation(len(names))
    taken = order[:int(np.searchsorted(np.cumsum(sizes[order]), k) + 1)]
    return np.isin(inverse, taken)


def analyse(counts: dict[str, np.ndarray], groups: np.ndarray, k: int, draws: int, default: str,
            seed: int, resamples: int, candidates: list[str] | None = None,
            pool: np.ndarray | None = None) -> dict:
    """One fold and seed at one ``k``: pick − default and pick − TF-IDF on the scored products,
    and pick − default on the whole fold (what the choice is worth on the platform it is deployed
    to, whichever products were labelled; the fair comparison between samplings, since
    disagreement sampling leaves the scored products with none of the disagreements), hF points,
    over ``draws`` labelled samples. ``candidates``: the rows the choice is made
    among (None: every row); ``pool`` ``[B]``: the products the labelled sample is drawn from
    (None: all; all of them when it holds fewer than ``k``); the scored products are the rest of
    the fold either way."""
    rng = np.random.default_rng(seed)
    names = candidates if candidates is not None else list(counts)
    inside = np.ones(len(groups), bool) if pool is None else pool
    vs_default, vs_reference, whole, picked, sizes = [], [], [], Counter(), []
    whole_hf = {m: hf(counts[m]) for m in names}
    for _ in range(draws):
        labelled = np.zeros(len(groups), bool)
        labelled[inside] = draw_sample(groups[inside], k, rng)
        scored = ~labelled
        sizes.append(int(labelled.sum()))
        choice, _ = pick({m: counts[m][labelled] for m in names}, groups[labelled], default,
                         n_resamples=resamples)
        picked[choice] += 1
        got = hf(counts[choice][scored])
        vs_default.append(100 * (got - hf(counts[default][scored])))
        vs_reference.append(100 * (got - hf(counts[REFERENCE][scored])))
        whole.append(100 * (whole_hf[choice] - whole_hf[default]))
    def summary(x: list[float]) -> dict:
        a = np.asarray(x)
        return {"mean": round(float(a.mean()), 2), "p05": round(float(np.percentile(a, 5)), 2),
                "p95": round(float(np.percentile(a, 95)), 2)}
    return {"k": k, "draws": draws, "labelled_mean": round(float(np.mean(sizes)), 1),
            "pick_minus_default": summary(vs_default),
            "pick_minus_tfidf": summary(vs_reference), "pick_minus_default_whole_fold": summary(whole),
            "picked": dict(picked.most_common())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluation", nargs="+", required=True,
                        help="evaluation output folders, each optionally folder:model,model")
    parser.add_argument("--taxonomy", required=True, help="the catalogue's taxonomy.json")
    parser.add_argument("--default", default="default", help="the model a choice starts from")
    parser.add_argument("--k", type=int, nargs="+", default=[25, 50, 100],
                        help="labelled products of the held-out platform")
    parser.add_argument("--draws", type=int, default=100, help="labelled samples per fold, seed and k")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per comparison")
    parser.add_argument("--candidates", nargs="+", help="the rows the choice is made among, the "
                        "default first or not (default: every row read, TF-IDF included)")
    parser.add_argument("--sampling", choices=["random", "disagreement"], default="random",
                        help="which products are labelled: random, whole groups drawn from the fold; "
                        "disagreement, whole groups drawn only from those where a candidate predicts "
                        "another category than the default (where they agree, labels cannot tell "
                        "them apart); all of them when fewer than k")
    parser.add_argument("--out", help="JSON output (default: stdout only)")
    args = parser.parse_args(argv)

    taxonomy = Taxonomy.from_json(Path(args.taxonomy).read_text())
    results = []
    for (fold, seed), table in sorted(load(args.evaluation).items()):
        counts, groups, predicted = counts_by_model(table, taxonomy)
        candidates = None if args.candidates is None else list(dict.fromkeys([args.default, *args.candidates]))
        missing = ({args.default, REFERENCE} | set(candidates or [])) - set(counts)
        if missing:
            print(f"[labelled_choice] {fold} seed {seed}: no {sorted(missing)}; left out (models: "
                  f"{sorted(counts)})", file=sys.stderr)
            continue
        full = {m: round(hf(c), 4) for m, c in counts.items()}
        pool = None
        if args.sampling == "disagreement":
            names = candidates or list(counts)
            pool = disagreeing({m: predicted[m] for m in {args.default, *names}}, groups, args.default)
        for k in args.k:
            if k >= len(groups):
                continue
            row = analyse(counts, groups, k, args.draws, args.default, seed, args.resamples, candidates, pool)
            extra = {} if pool is None else {"disagreeing": int(pool.sum())}
            results.append({"fold": fold, "seed": seed, "products": len(groups), **extra,
                            "hF_whole_fold": full, **row})
            print(f"[labelled_choice] {fold} seed {seed} k={k}: pick − default "
                  f"{row['pick_minus_default']['mean']:+.2f}, − tfidf {row['pick_minus_tfidf']['mean']:+.2f}; "
                  f"picked {row['picked']}", file=sys.stderr, flush=True)
    if not results:
        raise SystemExit(f"no fold has both {args.default!r} and {REFERENCE!r} with more than k products")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        chosen_among = candidates if args.candidates is not None else sorted({m for r in results
                                                                              for m in r["hF_whole_fold"]})
        Path(args.out).write_text(json.dumps({"candidates": chosen_among, "sampling": args.sampling,
                                              "rule": "paired", "results": results}, indent=2) + "\n")
    print("| fold | seed | k (labelled, mean) | pick − default on the other products: mean [5 %, 95 %] "
          "| pick − TF-IDF there | pick − default on the whole fold | picked (of draws) |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        d, t, w = r["pick_minus_default"], r["pick_minus_tfidf"], r["pick_minus_default_whole_fold"]
        picked = ", ".join(f"{m} {n}" for m, n in r["picked"].items())
        print(f"| {r['fold']} | {r['seed']} | {r['k']} ({r['labelled_mean']:g}) | {d['mean']:+.2f} [{d['p05']:+.2f}, {d['p95']:+.2f}] "
              f"| {t['mean']:+.2f} [{t['p05']:+.2f}, {t['p95']:+.2f}] | {w['mean']:+.2f} [{w['p05']:+.2f}, {w['p95']:+.2f}] | {picked} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
