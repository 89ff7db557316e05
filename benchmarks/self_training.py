"""Self-training on the target platform's own products: does it help the default, on validation?

``prior: adapt`` (stop 39) estimates only a new platform's *label distribution* from its
unlabelled products. Self-training also moves the decision boundaries: a classifier is fitted on
the target platform's own inputs, with the default's predictions there as pseudo-labels, and its
log-probabilities are added to the default's (pseudo-labelling, Lee 2013; self-training,
Yarowsky 1995; with a second view of the product, co-training, Blum & Mitchell 1998).

For every fold of an evaluate config's protocols (by default ``in_platform_val`` and
``transfer_val``: validation splits only, never a test fold), the default is trained as
``prodcat evaluate`` trains it (:func:`prodcat.evaluate.grid.cell_config`,
:func:`prodcat.train.trainer.train`); then, on *every* product of the scored split (covered by the
fold's label space or not: which are covered is decided by their labels):

- pseudo-labels: the default's most probable leaf, kept where its probability is at least 0.8
  (``conf0.8``) or where the text and lexical components alone agree with it (``agree``);
- a multinomial logistic regression (scikit-learn, C = 1, L2-normalised inputs) on the text
  embedding (``text``) or the text and image embeddings side by side (``text+image``), fitted on
  the kept products and *cross-fitted*: the products are cut into 5 folds by near-duplicate group
  (``GroupKFold``) and each fold is scored by the regression fitted on the others, so no product's
  own pseudo-label scores it;
- its probabilities, smoothed towards uniform (5 %: a leaf no kept product has is not ruled out),
  are added in log space to the default's combination with weight ``w`` (0.25, 0.5, 1), and the
  sum is decoded as the default decodes.

Labels are read only to score. The table gives hF per fold, and for ``transfer_val`` the nested
score per held-out platform P (``nested_P``: the mean over the pairs among the other platforms, as
the evaluation report's "Choosing a model" table).

    python benchmarks/self_training.py --config configs/evaluate.selection-adapt.yaml \\
        --out docs/results/full-frozen/self-training/selection --cache runs/full/self-training-cache

Stop 40 (full size, frozen encoders, seed 0; docs/notes/issue-19.md, "Stop 40"). Self-training
on the scored split only (278 to 2,857 products): only the two lightest variants (``conf0.8``,
w 0.25) are at or above the default both on ``in_platform_val`` and on ``nested_flipkart``, level
with it on every fold. With ``--pool platform`` (5,816 to 39,884 products, as many as a held-out
platform has): five variants are behind the default by a real difference on no fold and ahead by
one on at least one; the rule written before that round names ``conf0.8/text+image/w1``
(nested_flipkart 0.9258 against 0.9215).

A fold with no covered product to score is skipped (and said so); with none at all, SystemExit.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml

#: pseudo-label selections, the target regression's inputs, and the weights of its log-probabilities
SELECTIONS = ("conf0.8", "agree")
INPUTS = {"text": ["text"], "text+image": ["text", "image"]}
WEIGHTS = (0.25, 0.5, 1.0)
#: share of each target distribution spread uniformly over the leaves
SMOOTHING = 0.05


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows of ``x [B, D]`` scaled to unit L2 norm (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def pseudo_labels(combined: np.ndarray, components: dict[str, np.ndarray], selection: str) -> tuple[np.ndarray, np.ndarray]:
    """``(leaf index [B], kept [B] bool)`` from the default's combined ``log p [B, C]``: kept where
    the top probability is >= 0.8 (``conf0.8``) or where the ``text`` and ``lexical`` components'
    own most probable leaves are the same as the combination's (``agree``).

    Raises:
        ValueError: an unknown ``selection``.
    """
    from prodcat.models.decision import pseudo_labels as select  # what the product does

    if selection not in SELECTIONS:
        raise ValueError(f"unknown selection {selection!r}; choose one of: {', '.join(SELECTIONS)}")
    return select(combined, components, "confidence" if selection == "conf0.8" else "agree", 0.8)


def target_log_probs(x: np.ndarray, labels: np.ndarray, kept: np.ndarray, groups: np.ndarray,
                     classes: int, folds: int = 5, smoothing: float = SMOOTHING, seed: int = 0) -> np.ndarray:
    """Cross-fitted ``log p [B, classes]`` of a logistic regression fitted on the target products'
    pseudo-labels: products cut into ``folds`` folds by ``groups`` (scikit-learn's ``GroupKFold``),
    each scored by the regression fitted on the *kept* products of the other folds, then
    ``(1 - smoothing) p + smoothing / classes``. A fold whose other kept products hold one leaf
    gets that leaf; none, the uniform distribution. ``folds=1``: no cross-fitting, one regression
    fitted on every kept product scores them all (what a single adapted checkpoint would do).

    Raises:
        ValueError: when the products form fewer than 2 groups.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups).astype(str)
    n_groups = len(np.unique(groups))
    if folds > 1 and n_groups < 2:
        raise ValueError(f"cross-fitting needs 2 or more near-duplicate groups, got {n_groups}")
    x = normalise(np.asarray(x, np.float64))
    out = np.zeros((len(x), classes))
    everything = np.arange(len(x))
    splits = ([(everything, everything)] if folds == 1
              else GroupKFold(n_splits=min(folds, n_groups)).split(x, labels, groups))
    for fit, score in splits:
        fit = fit[kept[fit]]
        p = np.full((len(score), classes), 1.0 / classes)
        seen = np.unique(labels[fit])
        if len(seen) == 1:
            p[:] = 0.0
            p[:, seen[0]] = 1.0
        elif len(seen) > 1:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")              # lbfgs may stop at max_iter
                model = LogisticRegression(C=1.0, max_iter=300, random_state=seed).fit(x[fit], labels[fit])
            p[:] = 0.0
            p[:, model.classes_] = model.predict_proba(x[score])
        out[score] = p
    return np.log((1.0 - smoothing) * out + smoothing / classes)


def pool_splits(evaluate, fold) -> list[str]:
    """The splits ``--pool platform`` self-trains on: the validation and calibration splits of
    the fold's scored platforms, and their training split too when the fold's model was not
    trained on any of them (never the test split).

    Raises:
        SystemExit: when a split the fold scores is not among them (a leave-one-platform-out fold
            scores every split but ``val``: use ``--pool split`` there).
    """
    data = evaluate.train.data
    splits = [data.val_split, data.calib_split]
    if not set(fold.test_platforms) & set(fold.train_platforms):
        splits.append(data.train_split)
    if fold.test_splits is None or not set(fold.test_splits) <= set(splits):
        raise SystemExit(f"--pool platform: fold {fold.name} scores splits {fold.test_splits or 'all'}, "
                         f"not all among {splits}; use --pool split for it")
    return splits


def fold_data(table, evaluate, fold, seed: int, pool: str = "split") -> dict:
    """The default trained on ``fold`` as ``prodcat evaluate`` trains it, and what it gives every
    product it self-trains on (``pool``: ``split``, every product of the fold's scored splits;
    ``platform``, of :func:`pool_splits`): ``{"fold", "model", "components" {name: [U, C]},
    "features" {text, image: [U, D]}, "groups" [U], "scored" (indices of the covered products of
    the scored splits [T]), "nodes" [T]}``."""
    from prodcat.evaluate.folds import prepare_fold
    from prodcat.evaluate.grid import cell_config, model_specs
    from prodcat.train.lexical import model_inputs
    from prodcat.train.trainer import train

    fold_table, test, _ = prepare_fold(table, fold, evaluate)
    if not len(test):
        return {}
    splits = fold.test_splits if pool == "split" else pool_splits(evaluate, fold)
    unlabelled = table.rows(splits=splits, platforms=fold.test_platforms)
    cell = next(c for c in model_specs(evaluate) if c["name"] == "default")
    model = train(cell_config(evaluate, fold, cell, seed), table=fold_table, progress=None, save_model=False).model
    if model is None:
        raise SystemExit("the default is not a decision-level model; this script needs one")
    features, present = model_inputs(model, unlabelled)
    position = {p: i for i, p in enumerate(unlabelled.column("product_id"))}
    return {"fold": fold.name, "pool": pool, "model": model, "components": model.component_log_probs(features, present),
            "features": {k: np.where(present[k][:, None], features[k], 0.0) for k in ("text", "image")
                         if k in features},
            "groups": unlabelled.column("group_id"),
            "scored": np.array([position[p] for p in test.column("product_id")], np.int64),
            "nodes": test.column("node")}


def fold_table(data: dict, seed: int = 0, crossfit: int = 5) -> dict:
    """hF of the default and of every variant on the fold's covered products (``data``:
    :func:`fold_data`)."""
    from prodcat.core.metrics import hierarchical_counts, prf_from_counts
    from prodcat.core.uncertainty import paired_difference

    model, components = data["model"], data["components"]
    combined = model.combiner.combine(components)
    groups = np.asarray(data["groups"])[data["scored"]]

    def counts(log_p: np.ndarray) -> np.ndarray:
        classes = model.decoder.decode(log_p[data["scored"]], model.combiner.decoding)
        return hierarchical_counts(model.taxonomy, data["nodes"], classes)

    def hf(c: np.ndarray) -> float:
        return float(prf_from_counts(*c.sum(axis=0))["hF"])

    base = counts(combined)
    out = {"fold": data["fold"], "products": len(combined), "scored": len(data["scored"]),
           "prior": model.combiner.prior, "default": hf(base), "variants": {}, "difference": {}, "kept": {}}
    for selection in SELECTIONS:
        labels, kept = pseudo_labels(combined, components, selection)
        out["kept"][selection] = float(kept.mean())
        for name, inputs in INPUTS.items():
            if any(i not in data["features"] for i in inputs):
                continue
            x = np.hstack([normalise(data["features"][i]) for i in inputs])
            target = target_log_probs(x, labels, kept, data["groups"], combined.shape[1], folds=crossfit,
                                      seed=seed)
            for w in WEIGHTS:
                mine = counts(combined + w * target)
                key = f"{selection}/{name}/w{w:g}"
                out["variants"][key] = hf(mine)
                d = paired_difference(mine, base, groups, seed=seed)   # hF points against the default
                out["difference"][key] = [100 * d.estimate, 100 * d.low, 100 * d.high]
    return out


def nested(results: list[dict]) -> dict[str, dict[str, float]]:
    """``{"nested_<P>": {"default" | variant: mean hF}}`` over the ``val_<a>_to_<b>`` folds whose
    platforms are not P (the evaluation report's nested score), for every platform P named."""
    pairs = {r["fold"]: r for r in results if r["fold"].startswith("val_") and "_to_" in r["fold"]}
    platforms = sorted({p for f in pairs for p in f[len("val_"):].split("_to_")})
    out = {}
    for held in platforms:
        inner = [r for f, r in pairs.items() if held not in f[len("val_"):].split("_to_")]
        if inner:
            names = ["default", *inner[0]["variants"]]
            out[f"nested_{held}"] = {n: float(np.mean([r["default"] if n == "default" else r["variants"][n]
                                                       for r in inner])) for n in names}
    return out


def markdown(results: list[dict], nested_scores: dict) -> str:
    """A table per fold (rows: the default, then each variant; columns: folds and nested scores)."""
    columns = [(r["fold"], {"default": r["default"], **r["variants"]}) for r in results]
    columns += list(nested_scores.items())
    names = ["default", *results[0]["variants"]]
    sizes = {r["fold"]: r["scored"] for r in results}
    lines = ["# Self-training on the scored platform's own products", "",
             "hF on each fold's covered products; the default's own row first. Command: `python "
             "benchmarks/self_training.py` (its docstring). Products self-trained on: "
             + ", ".join(f"{r['fold']} {r['products']:,}" for r in results) + ". Kept: the share of pseudo-labels kept "
             "per selection: " + "; ".join(f"{r['fold']} " + ", ".join(f"{k} {v:.2f}" for k, v in r["kept"].items())
                                           for r in results), "",
             "| variant | " + " | ".join(f"{c} ({sizes[c]:,})" if c in sizes else c for c, _ in columns) + " |",
             "|---|" + "---:|" * len(columns)]
    for n in names:
        lines.append(f"| {n} | " + " | ".join(f"{v.get(n, float('nan')):.4f}" for _, v in columns) + " |")
    large = [r for r in results if r["scored"] >= 100]
    lines += ["", "Against the default, in hF points with the 95 % paired bootstrap interval over "
              "near-duplicate groups (folds of 100 products or more):", "",
              "| variant | " + " | ".join(f"{r['fold']} ({r['scored']:,})" for r in large) + " |",
              "|---|" + "---:|" * len(large)]
    for n in names[1:]:
        lines.append(f"| {n} | " + " | ".join("{:+.2f} [{:+.2f}, {:+.2f}]".format(*r["difference"][n])
                                             for r in large) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from prodcat.catalog.build import read_protocol
    from prodcat.evaluate.config import EvaluateConfig
    from prodcat.evaluate.folds import make_folds
    from prodcat.train.features import load_feature_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="an evaluate config (its train section and data)")
    parser.add_argument("--protocols", nargs="+", default=["in_platform_val", "transfer_val"],
                        help="the folds' protocols (default: the validation ones, in_platform_val "
                        "transfer_val; lopo scores test folds: an ablation, never a choice)")
    parser.add_argument("--seed", type=int, default=0, help="the training subsample's seed (default 0)")
    parser.add_argument("--pool", choices=["split", "platform"], default="split",
                        help="what each fold self-trains on (inputs only): split, every product of "
                        "the splits it scores (default); platform, every product of its scored "
                        "platforms outside the test split and its model's training rows (validation "
                        "folds only)")
    parser.add_argument("--crossfit", type=int, default=5, help="folds of the cross-fitting over "
                        "near-duplicate groups (default 5); 1: none, one regression fitted on every "
                        "kept product scores them all")
    parser.add_argument("--out", required=True, help="folder for self_training.{json,md}")
    parser.add_argument("--cache", help="folder for each fold's trained default and scores (pickle, "
                        "named by config file, fold and seed; read when there, written when not)")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(open(args.config))
    evaluate = EvaluateConfig.model_validate({**raw, "protocols": args.protocols, "models": {"default": {}},
                                              "references": [], "grid": None,
                                              "output": tempfile.mkdtemp(prefix="self-training-")})
    data = evaluate.train.data
    table = load_feature_table(data.products, data.embeddings,
                               [m for m in evaluate.train.model.modalities if m != "lexical"],
                               data.taxonomy, data.skip_unreadable)
    platforms = sorted(np.unique(table.column("platform")).tolist())
    results = []
    for fold in make_folds(evaluate, read_protocol(data.products), platforms):
        start = time.perf_counter()
        pool = "" if args.pool == "split" else f"-pool{args.pool}"
        cached = (Path(args.cache) / f"{Path(args.config).stem}-{fold.name}-seed{args.seed}{pool}.pkl"
                  if args.cache else None)
        if cached and cached.exists():
            fold_scores = pickle.loads(cached.read_bytes())
        else:
            fold_scores = fold_data(table, evaluate, fold, args.seed, args.pool)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps(fold_scores))
        if not fold_scores:
            print(f"{fold.name}: no covered product to score, skipped", flush=True)
            continue
        results.append(fold_table(fold_scores, args.seed, args.crossfit))
        print(f"{fold.name}: default {results[-1]['default']:.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    if not results:
        raise SystemExit("no fold had a product to score")
    scores = nested(results)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "self_training.json").write_text(json.dumps(
        {"seed": args.seed, "config": args.config, "protocols": args.protocols, "pool": args.pool, "crossfit": args.crossfit, "folds": results,
         "nested": scores}, indent=2))
    (out / "self_training.md").write_text(markdown(results, scores))
    print(markdown(results, scores))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
