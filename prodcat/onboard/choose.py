"""The model for a new platform, chosen on a few of its labelled products.

Everything else in :mod:`prodcat.onboard` reads a new platform's inputs only. When whoever onboards
a platform can label a few of its products, :func:`choose` uses them for one decision: which
setting of the default to deploy there. Each candidate (``ChooseConfig.candidates``: the default
and, by default, the default without its label names) is trained on the other platforms in their
label space (:func:`prodcat.onboard.measure.fold_model`), adapted to the new platform's products,
inputs only (:func:`prodcat.onboard.measure.fold_adapted`; the default self-trains there), and
predicts the labelled products. The first candidate is kept unless another beats it there by a
real difference (strict hF, 95 % paired bootstrap over near-duplicate groups,
:func:`prodcat.core.uncertainty.paired_difference`), then the best of those on the labelled
products: the ``paired`` rule by which ``prodcat train`` chooses a combination
(:func:`prodcat.train.decision.pick`). The new platform's other labelled products, if any (rows of
other splits), are scored afterwards as a check; the choice never reads them.

Why: with Flipkart as the new platform the default's label names cost 14-17 hF points, and no
choice made on the other platforms sees it; with 100 labelled Flipkart products this rule drops
them and gains 13.8-16.9 points on the others (an analysis of the evaluation's predictions,
``benchmarks/labelled_choice.py``; docs/evaluation.md).

Output folder: ``candidates/<name>/`` (each candidate's ``model/`` and ``adapted/``), ``model/`` (a
copy of the chosen checkpoint, which ``prodcat score``, ``serve`` and ``cascade fit`` load),
``choice.json``, ``report.md``.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.core.uncertainty import N_RESAMPLES, paired_difference
from prodcat.embed.store import read_manifest
from prodcat.models.checkpoint import copy_checkpoint, load_checkpoint
from prodcat.onboard.config import ChooseConfig, MeasureConfig
from prodcat.onboard.measure import fold_adapted, fold_model
from prodcat.train.config import TrainConfig
from prodcat.train.features import FeatureTable, load_feature_table
from prodcat.train.lexical import model_inputs

REPORT = "report.md"


def labelled_sample(table: FeatureTable, config: ChooseConfig, labels: set[int]) -> tuple[np.ndarray, dict]:
    """``(product ids the choice reads, counts)``: the new platform's rows in ``labelled_splits``
    whose category is among ``labels`` (the training platforms' label space), at most
    ``max_labelled`` of them in whole near-duplicate groups drawn at random.

    Raises:
        ValueError: fewer than 2 such products.
    """
    rows = table.rows(splits=config.labelled_splits, platforms=[config.platform])
    covered = np.asarray([int(c) in labels for c in rows.column("category_id")], bool)
    rows = rows.where(covered)
    ids, groups = rows.column("product_id"), rows.column("group_id")
    if config.max_labelled is not None and len(ids) > config.max_labelled:
        names, inverse, sizes = np.unique(groups, return_inverse=True, return_counts=True)
        order = np.random.default_rng(config.seed).permutation(len(names))
        taken = order[:int(np.searchsorted(np.cumsum(sizes[order]), config.max_labelled, side="right"))]
        ids = ids[np.isin(inverse, taken)]
    if len(ids) < 2:
        raise ValueError(f"{config.platform}: {len(ids)} labelled product(s) in splits {config.labelled_splits} "
                         f"whose category the other platforms have ({int((~covered).sum())} outside their "
                         "label space); label more, or widen labelled_splits")
    return ids, {"labelled": int(len(ids)), "outside_label_space": int((~covered).sum()),
                 "in_splits": int(len(covered))}


def _scores(model, table: FeatureTable, platform: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``([B, 3] hierarchical counts, [B] group ids)`` of ``model`` on the products ``ids`` of
    ``platform``, in product-id order."""
    fold = table.rows(platforms=[platform])
    fold = fold.where(np.isin(fold.column("product_id"), ids)).retarget(model.taxonomy)
    order = np.argsort(fold.column("product_id"))
    pred = model.predict(*model_inputs(model, fold))
    counts = hierarchical_counts(model.taxonomy, fold.column("node"), np.asarray(pred["classes"]))
    return counts[order], fold.column("group_id")[order]


def _hf(counts: np.ndarray) -> float:
    return float(prf_from_counts(*counts.sum(axis=0))["hF"]) if len(counts) else 0.0


def pick(scored: dict[str, np.ndarray], groups: np.ndarray, reference: str, seed: int = 0,
         n_resamples: int = N_RESAMPLES) -> tuple[str, dict]:
    """The ``paired`` rule: ``reference`` unless candidates beat it on these products by a real
    difference, then the best of those; ``(chosen, {name: difference})`` (hF points with the 95 %
    paired interval over groups, ``n_resamples`` bootstrap resamples).

    Args:
        scored: per candidate, hierarchical counts ``[B, 3]`` of the same products in one order.
        groups: their near-duplicate group ids ``[B]``.
    """
    base = scored[reference]
    diffs, beating = {}, []
    for name, counts in scored.items():
        if name == reference:
            continue
        d = paired_difference(counts, base, groups, n_resamples=n_resamples, seed=seed)
        diffs[name] = {"difference": round(100 * d.estimate, 2), "low": round(100 * d.low, 2),
                       "high": round(100 * d.high, 2), "real": bool(d.excludes_zero())}
        if d.low > 0:
            beating.append((_hf(counts), name))
    return (max(beating)[1] if beating else reference), diffs


def choose(config: ChooseConfig, log: Callable[[str], None] = say) -> dict:
    """Train, adapt and compare every candidate (module docstring); returns ``choice.json``'s content.

    Raises:
        ValueError: the platform is not in the product table, no other platform, no candidate, or
            fewer than 2 labelled products in the training platforms' label space.
        FileNotFoundError: a missing product table or embedding store.
    """
    from prodcat.core.config import load_config
    from prodcat.core.paths import REPO_ROOT

    start = time.perf_counter()
    if not config.candidates:
        raise ValueError("no candidate to choose among (candidates: {name: [overrides]})")
    train_file = config.train if storage.exists(config.train) else str(REPO_ROOT / config.train)
    stored = sorted((read_manifest(config.embeddings) or {}).get("features", {}))
    table = load_feature_table(config.products, config.embeddings, stored)
    platforms = sorted(set(table.column("platform").tolist()))
    if config.platform not in platforms or len(platforms) < 2:
        raise ValueError(f"platform {config.platform!r} and at least one other are needed; the product "
                         f"table holds {platforms}")
    others = [p for p in platforms if p != config.platform]
    names = list(config.candidates)
    reference = names[0]
    measure_config = MeasureConfig(products=config.products, embeddings=config.embeddings,
                                   output=config.output, adapt=config.adapt)
    scored, groups, checks, models = {}, None, {}, {}
    ids = None
    for name in names:
        train = load_config(TrainConfig, train_file, [*config.train_overrides, *config.candidates[name]])
        folder = storage.join(config.output, "candidates", name)
        log(f"[onboard choose] {name}: trained on {', '.join(others)}"
            f"{' (' + ', '.join(config.candidates[name]) + ')' if config.candidates[name] else ''} ...")
        checkpoint, origin = fold_model(measure_config, train, table, config.platform, others, folder, log)
        model = load_checkpoint(checkpoint)
        adapted = None
        if config.adapt and getattr(model, "adapts", False):
            checkpoint, adapted = fold_adapted(measure_config, checkpoint, config.platform, folder, log)
            model = load_checkpoint(checkpoint)
        if ids is None:
            labels = {int(c) for c in model.taxonomy.ids[model.taxonomy.leaves]}
            ids, sample = labelled_sample(table, config, labels)
            rest = table.rows(platforms=[config.platform])
            rest = rest.where(~np.isin(rest.column("product_id"), ids)
                              & np.asarray([int(c) in labels for c in rest.column("category_id")], bool))
            check_ids = rest.column("product_id")
            log(f"[onboard choose] choosing on {sample['labelled']:,} labelled {config.platform} products "
                f"(splits {', '.join(config.labelled_splits)}; {sample['outside_label_space']:,} outside "
                f"the other platforms' label space left out); {len(check_ids):,} other labelled "
                f"products check the choice afterwards")
        scored[name], groups = _scores(model, table, config.platform, ids)
        if len(check_ids):
            checks[name], check_groups = _scores(model, table, config.platform, check_ids)
        models[name] = {"checkpoint": checkpoint, "model": origin, "adapted": adapted,
                        "hF_labelled": round(_hf(scored[name]), 4),
                        "hF_check": round(_hf(checks[name]), 4) if name in checks else None}
        log(f"[onboard choose] {name}: hF {models[name]['hF_labelled']:.4f} on the labelled products"
            + (f", {models[name]['hF_check']:.4f} on the check products" if name in checks else ""))
    chosen, diffs = pick(scored, groups, reference, config.seed)
    check = pick(checks, check_groups, reference, config.seed)[1] if checks else {}
    target = copy_checkpoint(models[chosen]["checkpoint"], storage.join(config.output, "model"))
    out = {"config": config.model_dump(mode="json"), "platform": config.platform, "others": others,
           "reference": reference, "chosen": chosen, "model": target, **sample,
           "check_products": int(len(check_ids)), "candidates": models,
           "against_reference": diffs, "against_reference_check": check,
           "seconds": round(time.perf_counter() - start, 1)}
    storage.write_text(storage.join(config.output, "choice.json"), json.dumps(out, indent=2))
    storage.write_text(storage.join(config.output, REPORT), report_markdown(out))
    log(f"[onboard choose] chose {chosen} for {config.platform}"
        + (f" ({diffs[chosen]['difference']:+.2f} hF points [{diffs[chosen]['low']:+.2f}, "
           f"{diffs[chosen]['high']:+.2f}] over {reference} on the labelled products)" if chosen != reference
           else f" (no candidate beat it by a real difference on {sample['labelled']:,} labelled products)")
        + f" → {target}; {storage.join(config.output, REPORT)} ({out['seconds']:.0f} s)")
    return out


def report_markdown(out: dict) -> str:
    """``report.md``: the candidates' hF on the labelled and check products, and each against the
    reference with its paired interval."""
    def cell(d: dict | None) -> str:
        if not d:
            return "–"
        return f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" (real)" if d["real"] else "")
    lines = [f"# The model for {out['platform']}, chosen on {out['labelled']:,} labelled products", "",
             f"Candidates trained on {', '.join(out['others'])}, each adapted to {out['platform']}'s products "
             f"(inputs only) when it adapts; the first, `{out['reference']}`, is kept unless another beats "
             "it on the labelled products by a real difference (strict hF, 95 % paired bootstrap over "
             "near-duplicate groups). The check products are the platform's other labelled products in "
             "the label space; the choice never read them.", "",
             f"**Chosen: `{out['chosen']}`** → `{out['model']}`", "",
             f"Labelled products: {out['labelled']:,} (splits {', '.join(out['config']['labelled_splits'])}; "
             f"{out['outside_label_space']:,} outside the other platforms' label space left out); check "
             f"products: {out['check_products']:,}.", "",
             "| candidate | hF, labelled | − reference, labelled | hF, check | − reference, check |",
             "|---|---|---|---|---|"]
    for name, m in out["candidates"].items():
        check = "–" if m["hF_check"] is None else f"{m['hF_check']:.4f}"
        lines.append(f"| `{name}` | {m['hF_labelled']:.4f} | {cell(out['against_reference'].get(name))} "
                     f"| {check} | {cell(out['against_reference_check'].get(name))} |")
    return "\n".join(lines) + "\n"
