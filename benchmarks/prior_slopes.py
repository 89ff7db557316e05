"""How much of the training label prior each decision-level component's intercepts hold.

The label-prior correction (``model.decision.priors``, :class:`prodcat.models.decision.Combiner`)
counts the prior ``log pi`` in the logistic regressions only
(:func:`prodcat.train.decision.prior_carriers`). This is the check behind that: each component is
fitted on a fold's training rows as ``prodcat train`` fits it, and the least-squares slope of
its per-leaf intercepts against ``log pi`` (over the leaves the rows hold) is printed with their
correlation. A slope near 0 means the intercepts hold none of the prior. Reads training rows only.

    python benchmarks/prior_slopes.py --config configs/evaluate.full-prior.yaml --platforms hm myntra

Stop 37, H&M + Myntra, seed 0: text 0.25 (correlation 0.62), image 97.5 (0.17: the intercepts
of a regression on image vectors are not a scale of log pi), lexical (LinearSVC) 0.006 (0.18).
"""

from __future__ import annotations

import argparse

import numpy as np
import yaml


def intercept_slope(intercepts: np.ndarray, log_prior: np.ndarray) -> tuple[float, float]:
    """``(slope, correlation)`` of ``intercepts [C]`` against ``log_prior [C]`` over the leaves
    with a prior (``log_prior != 0``: leaves the training rows hold).

    Raises:
        ValueError: fewer than 2 such leaves.
    """
    seen = np.asarray(log_prior) != 0
    if seen.sum() < 2:
        raise ValueError(f"{int(seen.sum())} leaves with a prior: a slope needs 2 or more")
    x, y = np.asarray(log_prior, float)[seen], np.asarray(intercepts, float)[seen]
    return float(np.polyfit(x, y, 1)[0]), float(np.corrcoef(x, y)[0, 1])


def main(argv: list[str] | None = None) -> int:
    from prodcat.models.decision import label_log_prior
    from prodcat.train.config import TrainConfig, apply_overrides
    from prodcat.train.decision import Fitter, component_specs
    from prodcat.train.features import select_train_rows
    from prodcat.train.trainer import load_training_data

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True,
                        help="a train config, or an evaluate config (its `train` section is used)")
    parser.add_argument("--platforms", nargs="+", help="the training platforms (default: all)")
    args = parser.parse_args(argv)
    raw = yaml.safe_load(open(args.config))
    config = TrainConfig.model_validate(raw.get("train", raw))
    if args.platforms:
        config = apply_overrides(config, {"data.platforms": args.platforms})
    table, _ = load_training_data(config, None, print)
    train = select_train_rows(table, config)
    fitter = Fitter(config, table.taxonomy, None)
    log_prior = label_log_prior(fitter.leaves, train.column("node"))
    print(f"{len(train):,} training rows, {int((log_prior != 0).sum())} leaves with a prior")
    for spec in component_specs(config):
        if spec.kind == "label":
            continue                          # zero-shot: no intercepts, no prior learnt
        setting = spec.candidates[-1]
        comp, scorer = fitter.fit(spec, setting, train, "prior-slopes")
        intercepts = scorer.intercept if scorer is not None else comp.tensors["intercept"]
        slope, corr = intercept_slope(intercepts, log_prior)
        print(f"{spec.name} {setting}: intercept slope against log pi {slope:.3f} (correlation {corr:.2f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
