"""Combination rules for decision-level fusion, scored on held-out products only.

The default sums its components' calibrated log-probabilities (the product rule) and chooses
weights, the label-prior correction and the decoding on *held-out sets*: each training platform
predicted by components fitted on the others, and the validation split
(:mod:`prodcat.train.decision`). This script asks whether another rule would do better there, for
every fold of an evaluation config, reading exactly what that fold's model reads (its training
platforms; never a test row):

- ``product``, ``product-once``, ``product-uniform``: the sum of log-probabilities, with the label
  prior as it is, counted once, or removed (:class:`prodcat.models.decision.Combiner`);
- ``product-em``: ``product-uniform`` times the label distribution of the held-out set itself,
  estimated from its unlabelled scores by EM (Saerens et al., 2002: prior shift;
  :func:`prodcat.models.decision.em_label_prior`, what ``prior: adapt`` does). It is
  transductive: it reads the set's inputs, never their labels, as ``prodcat onboard adapt``
  reads a new platform's catalogue;
- ``sum``, ``sum-uniform``: the mean of the probabilities (Kittler et al., 1998, "On combining
  classifiers": the sum rule, less sensitive to one component's confident error), without and
  with the prior removed from each logistic regression first;
- ``max-rule``: per product, the component with the most probable leaf;
- ``entropy-weighted``: each component's log-probabilities times ``1 - H / log C`` (its normalised
  entropy) per product;
- ``gated``: per-product weights ``softplus(a_k + b_k max p_k + c_k H_k)`` fitted by held-out
  log-likelihood (scipy's L-BFGS-B) and *cross-fitted*: each set scored by the weights fitted on
  the other sets, as the default's fitted weights are;
- each component alone.

Every rule decodes the most probable leaf (``best_path``). The table gives hF per held-out set.

    python benchmarks/combination_rules.py --config configs/evaluate.full-prior.yaml \\
        --out docs/results/full-frozen/rules --cache runs/full/rules-cache

Stop 38 (full size, frozen encoders, seed 0; docs/evaluation.md, "Other combination rules"): the
sum rule gains 9.6 and 11.0 hF points on two of the three sets where Flipkart is the held-out
platform (56 and 71 products) and loses 0.1 to 8.7 on every set where H&M or Myntra is; the
cross-fitted gate is below the product rule on 9 of the 13 sets. Stop 39 (the same data, with
``product-em``): EM's estimate has the best mean over the sets with H&M held out (0.904 against
``once`` 0.901) and with Myntra held out (0.976 against the chosen ``uniform`` 0.970), is level
with Flipkart held out and behind in-platform (0.925 against 0.936: 56 Flipkart products).
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from pathlib import Path

import numpy as np
import yaml

RULES = ["product", "product-once", "product-uniform", "product-em", "sum", "sum-uniform",
         "max-rule", "entropy-weighted"]


def combine(rule: str, log_probs: dict[str, np.ndarray], carriers: dict[str, float],
            log_prior: np.ndarray) -> np.ndarray:
    """Combined leaf scores ``[B, C]`` (log scale; decoded by their argmax) of ``rule``.

    Args:
        log_probs: ``{component: [B, C]}`` calibrated log-probabilities.
        carriers: ``{component: s}``: the components carrying the training label prior and its
            share (:func:`prodcat.train.decision.prior_carriers`).
        log_prior: ``[C]`` the training label distribution (:func:`prodcat.models.decision.label_log_prior`).

    Raises:
        ValueError: an unknown rule.
    """
    from scipy.special import logsumexp

    from prodcat.models.components import log_softmax
    from prodcat.models.decision import Combiner, prior_coefficient

    names = list(log_probs)
    stack = np.stack([log_probs[n] for n in names])                       # [K, B, C]
    if rule in ("product", "product-once", "product-uniform"):           # the default's Combiner
        prior = rule.partition("-")[2] or "none"
        return stack.sum(0) - prior_coefficient({n: 1.0 for n in names}, prior, carriers) * log_prior
    if rule == "product-em":                   # the prior of the set itself: the default's adapt
        combiner = Combiner({n: 1.0 for n in names}, "best_path", "adapt", log_prior, carriers)
        return combiner.adapt(log_probs).combine(log_probs)
    if rule == "sum":
        return logsumexp(stack, axis=0)
    if rule == "sum-uniform":
        flat = np.stack([log_softmax(log_probs[n] - carriers.get(n, 0.0) * log_prior) for n in names])
        return logsumexp(flat, axis=0)
    if rule == "max-rule":
        top = stack.max(2)                                                # [K, B]
        return stack[np.argmax(top, 0), np.arange(stack.shape[1])]
    if rule == "entropy-weighted":
        return ((1 - confidence(stack)[..., 2])[:, :, None] * stack).sum(0)
    raise ValueError(f"unknown rule {rule!r}; choose one of: {', '.join(RULES)}")


def confidence(stack: np.ndarray) -> np.ndarray:
    """Per component and product ``[K, B, 3]``: 1, the top probability, the entropy over ``log C``."""
    top = np.exp(stack.max(2))
    entropy = -(np.exp(stack) * stack).sum(2) / np.log(stack.shape[2])
    return np.stack([np.ones_like(top), top, entropy], 2)


def gate_weights(theta: np.ndarray, stack: np.ndarray) -> np.ndarray:
    """Per-product weights ``[K, B]`` = softplus(confidence . theta_k), ``theta [K, 3]``."""
    return np.logaddexp(0.0, np.einsum("kbf,kf->kb", confidence(stack), theta))


def fit_gate(sets: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """``theta [K, 3]`` maximising the mean (per set) log-likelihood of the gated combination at
    the true leaf; ``sets``: ``(stack [K, B, C], target leaf positions [B])``. Starts at equal
    weights (``a = log(e - 1)``, so softplus = 1)."""
    from scipy.optimize import minimize

    from prodcat.models.components import log_softmax

    k = sets[0][0].shape[0]

    def loss(flat: np.ndarray) -> float:
        theta = flat.reshape(k, 3)
        total = 0.0
        for stack, target in sets:
            z = log_softmax((gate_weights(theta, stack)[:, :, None] * stack).sum(0))
            total -= z[np.arange(len(target)), target].mean()
        return total / len(sets)

    start = np.zeros((k, 3))
    start[:, 0] = np.log(np.e - 1)
    return minimize(loss, start.ravel(), method="L-BFGS-B", options={"maxiter": 200}).x.reshape(k, 3)


def heldout_logprobs(table, evaluate, fold, seed: int) -> dict:
    """One fold's held-out sets as the default's components score them (``table``: every
    product's features; ``evaluate``: the evaluate config; only the fold's training platforms are
    read): ``{"fold", "chosen", "carriers", "taxonomy" (the fold's), "sets": [{"name", "nodes" [B],
    "target" [B], "log_prior" [C], "log_probs": {component: [B, C]}}]}``."""
    from prodcat.evaluate.folds import prepare_fold
    from prodcat.evaluate.grid import cell_config
    from prodcat.models.components import log_softmax
    from prodcat.models.decision import label_log_prior
    from prodcat.train.decision import Fitter, choose, component_specs, heldout_sets, prior_carriers
    from prodcat.train.features import select_train_rows
    from prodcat.train.labels import label_embeddings
    from prodcat.train.trainer import load_training_data

    fold_rows, _, _ = prepare_fold(table, fold, evaluate)
    cfg = cell_config(evaluate, fold, {"name": "default", "overrides": {}}, seed)
    rows, _ = load_training_data(cfg, fold_rows)
    train = select_train_rows(rows, cfg)
    labels = (None if cfg.model.label_prior == "none"
              else label_embeddings(rows.taxonomy, cfg.model, rows.manifest))
    fitter = Fitter(cfg, rows.taxonomy, labels)
    specs = component_specs(cfg)
    sets = heldout_sets(rows, train, cfg.model.decision, cfg.data.val_split, seed, list(rows.features))
    choice = choose(fitter, specs, sets, train.column("node"))
    index = {int(n): i for i, n in enumerate(fitter.leaves)}
    out = {"fold": fold.name, "chosen": {k: choice.chosen[k] for k in ("candidate", "decoding", "prior")},
           "carriers": prior_carriers(specs, choice.temperatures),
           "taxonomy": rows.taxonomy, "sets": []}
    for h in sets:
        nodes = np.asarray(h.rows.column("node"), np.int64)
        out["sets"].append({
            "name": h.name, "nodes": nodes, "target": np.asarray([index[int(n)] for n in nodes]),
            "log_prior": label_log_prior(fitter.leaves, h.fit.column("node")),
            "log_probs": {s.name: log_softmax(fitter.heldout_scores(s, choice.settings[s.name], h),
                                              choice.temperatures[s.name]) for s in specs}})
    return out


def fold_table(data: dict) -> dict:
    """hF per rule and held-out set of one fold (``data``: :func:`heldout_logprobs`)."""
    from prodcat.core.metrics import hierarchical_counts, prf_from_counts
    from prodcat.models.decision import TreeDecoder

    taxonomy = data["taxonomy"]
    decoder = TreeDecoder(taxonomy)
    carriers, sets = data["carriers"], data["sets"]
    names = list(sets[0]["log_probs"])

    def hf(scores: np.ndarray, h: dict) -> float:
        classes = decoder.decode(scores, "best_path")
        return float(prf_from_counts(*hierarchical_counts(taxonomy, h["nodes"], classes).sum(axis=0))["hF"])

    out = {"fold": data["fold"], "sets": {h["name"]: len(h["nodes"]) for h in sets},
           "chosen": data["chosen"], "hF": {}}
    for rule in RULES:
        out["hF"][rule] = {h["name"]: hf(combine(rule, h["log_probs"], carriers, h["log_prior"]), h)
                           for h in sets}
    if len(sets) >= 2:                           # cross-fitted: each set by the others' gate
        out["hF"]["gated"] = {}
        for j, h in enumerate(sets):
            theta = fit_gate([(np.stack([o["log_probs"][n] for n in names]), o["target"])
                              for i, o in enumerate(sets) if i != j])
            stack = np.stack([h["log_probs"][n] for n in names])
            out["hF"]["gated"][h["name"]] = hf((gate_weights(theta, stack)[:, :, None] * stack).sum(0), h)
    for n in names:
        out["hF"][f"{n} alone"] = {h["name"]: hf(h["log_probs"][n], h) for h in sets}
    return out


def markdown(results: list[dict]) -> str:
    """One table per fold: rules as rows, held-out sets as columns."""
    lines = ["# Combination rules on held-out products", "",
             "hF per held-out set (best_path decoding); `product` is the default's rule. Command: "
             "`python benchmarks/combination_rules.py` (its docstring).", ""]
    for r in results:
        sets = list(r["sets"])
        lines += [f"## {r['fold']} (the default chose {r['chosen']['candidate']} / "
                  f"{r['chosen']['decoding']} / prior {r['chosen']['prior']})", "",
                  "| rule | " + " | ".join(f"{s} ({r['sets'][s]:,})" for s in sets) + " | mean |",
                  "|---|" + "---:|" * (len(sets) + 1)]
        for rule, per_set in r["hF"].items():
            values = [per_set[s] for s in sets]
            lines.append(f"| {rule} | " + " | ".join(f"{v:.4f}" for v in values) + f" | {np.mean(values):.4f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from prodcat.catalog.build import read_protocol
    from prodcat.evaluate.config import EvaluateConfig
    from prodcat.evaluate.folds import make_folds
    from prodcat.train.features import load_feature_table

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="an evaluate config (its train section and data)")
    parser.add_argument("--seed", type=int, default=0, help="the training subsample's seed (default 0)")
    parser.add_argument("--folds", nargs="+", help="fold names (default: in_platform and every lopo_*)")
    parser.add_argument("--out", required=True, help="folder for combination_rules.{json,md}")
    parser.add_argument("--cache", help="folder for each fold's held-out log-probabilities (pickle, "
                        "named by config file, fold and seed; read when there, written when not: a "
                        "rerun then skips the fitting; delete it after changing the config's contents)")
    args = parser.parse_args(argv)
    evaluate = EvaluateConfig.model_validate({**yaml.safe_load(open(args.config)),
                                              "protocols": ["in_platform", "lopo"]})
    data = evaluate.train.data
    table = load_feature_table(data.products, data.embeddings,
                               [m for m in evaluate.train.model.modalities if m != "lexical"],
                               data.taxonomy, data.skip_unreadable)
    platforms = sorted(np.unique(table.column("platform")).tolist())
    folds = [f for f in make_folds(evaluate, read_protocol(data.products), platforms)
             if not args.folds or f.name in args.folds]
    results = []
    for fold in folds:
        start = time.perf_counter()
        name = f"{Path(args.config).stem}-{fold.name}-seed{args.seed}.pkl"     # one per config
        cached = Path(args.cache) / name if args.cache else None
        if cached and cached.exists():
            fold_data = pickle.loads(cached.read_bytes())
        else:
            fold_data = heldout_logprobs(table, evaluate, fold, args.seed)
            if cached:
                cached.parent.mkdir(parents=True, exist_ok=True)
                cached.write_bytes(pickle.dumps(fold_data))
        results.append(fold_table(fold_data))
        print(f"{fold.name}: {time.perf_counter() - start:.0f} s", flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "combination_rules.json").write_text(json.dumps({"seed": args.seed, "config": args.config,
                                                            "folds": results}, indent=2))
    (out / "combination_rules.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
