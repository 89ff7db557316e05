"""Each platform met as a new one (``prodcat onboard measure``, the main job's ``onboard`` stage).

For every leave-one-platform-out fold (held-out platform P, training platforms = the others):

1. the fold's model: the evaluation's checkpoint of ``model_name`` for that fold when there is one
   (copied), else trained here on the other platforms' rows in their label space, as the
   evaluation trains it (:func:`prodcat.train.trainer.train` with ``data.platforms``);
   a model that adapts (the default self-trains on a new platform) is then adapted to P's products,
   reading their inputs only (:func:`fold_adapted`, ``adapt: true``), as a leave-one-platform-out
   fold of the evaluation is and as ``prodcat onboard adapt`` would adapt it on day one;
2. its abstention thresholds, fitted on the training platforms' calibration split
   (:func:`prodcat.cascade.abstain.fit_table`, written into the copy's ``calibration.json``), and
   the hP / hR / coverage of partial answers on P's labelled products (all splits but validation,
   the categories the model covers) as the target precision moves;
3. mapping suggestions for P's source categories with that model (:func:`prodcat.onboard.suggest.
   suggest_items`: bulk scoring, votes, names), from P's products in the run's product table
   (``source: products``: stored vectors) or from its whole export read without a mapping
   (``source: export``);
4. the suggestions against P's hand-made mapping (:mod:`prodcat.onboard.compare`) under each
   ranking of the candidates (votes, names); with ``ranking: nested`` P's ranking is the one with
   the better top-1 agreement on the *other* platforms; the confidence threshold recommended for P
   also comes from the other platforms (the smallest whose accepted categories agree with their hand
   mappings ``agreement_goal`` of the time), with P's agreement and coverage at it; the chosen
   ranking's ``mapping.yaml``, ``suggestions.parquet``, ``review.html`` are written.

Output folder: ``lopo_<P>/`` (the suggestion files, ``comparison.json``, the fold's ``model/`` and,
adapted, ``adapted/``),
``onboard.json``, ``report.md``, ``agreement.png``, ``abstain_curve.png``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Callable

import numpy as np

from prodcat.cascade import abstain
from prodcat.cascade.fit import abstention_rows, plot_abstention
from prodcat.catalog.adapter import load_adapter
from prodcat.catalog.build import read_protocol
from prodcat.catalog.mapping import CategoryMapping
from prodcat.catalog.review import read_unmapped
from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.report import markdown_table
from prodcat.core.schema import SPLITS
from prodcat.core.taxonomy import load_google_taxonomy
from prodcat.embed.store import read_manifest
from prodcat.models.checkpoint import copy_checkpoint, load_checkpoint
from prodcat.models.files import CALIBRATION, CONFIG, DEFAULT_CALIBRATION, read_json
from prodcat.onboard.compare import at_threshold, compare, plot_agreement
from prodcat.onboard.compare import recommend as recommend_threshold
from prodcat.onboard.config import MeasureConfig
from prodcat.onboard.suggest import RANKINGS, ModelRef, rank, sample_rows, suggest_items, write_suggestions
from prodcat.train.config import TrainConfig, apply_overrides
from prodcat.train.features import FeatureTable, load_feature_table
from prodcat.train.lexical import model_inputs

REPORT = "report.md"


def _reusable(config: MeasureConfig, platform: str, manifest: dict | None = None,
              log: Callable[[str], None] | None = None) -> str | None:
    """The evaluation's checkpoint of ``model_name`` for the fold holding out ``platform``, when
    every encoder fingerprint it records is the one of the store's vectors (``manifest``: the
    store's); None otherwise. A checkpoint of an evaluation with per-fold fine-tuning reads its
    fold's own fine-tuned encoder (``ft_text``), whose vectors the run's store does not hold: the
    store's come from the run's encoder, fine-tuned on every platform, ``platform`` included, so
    that checkpoint is passed over (and a fold model trained here) with a line saying why."""
    from prodcat.score.features import fingerprint_mismatches

    if not config.evaluation:
        return None
    safe = config.model_name.replace("/", "_").replace("+", "_")
    for name in (f"{safe}-seed0", safe):
        uri = storage.join(config.evaluation, "runs", f"lopo_{platform}", name, "model")
        if storage.exists(storage.join(uri, CONFIG)):
            other = {} if manifest is None else fingerprint_mismatches(uri, manifest)
            if other:
                (log or (lambda _m: None))(
                    f"[onboard] lopo_{platform}: not reusing {uri}: its "
                    + ", ".join(f"{f} (encoder {want})" for f, (want, _) in sorted(other.items()))
                    + " is not the store's; a fold model is trained here")
                return None
            return uri
    return None


def fold_model(config: MeasureConfig, train: TrainConfig, table: FeatureTable, platform: str,
               others: list[str], folder: str, log: Callable[[str], None]) -> tuple[str, str]:
    """``(checkpoint in folder/model, where it came from)``: the evaluation's for this fold, or
    one trained here on ``others`` in their label space."""
    target = storage.join(folder, "model")
    found = _reusable(config, platform, table.manifest, log)
    if found:
        copy_checkpoint(found, target)
        return target, f"reused {found}"
    from prodcat.train.trainer import train as run_training

    rows = table.rows(splits=[train.data.train_split], platforms=others)
    labels = np.unique(rows.column("category_id")).tolist()
    fold_table = table.retarget(table.taxonomy.induced(labels))
    cfg = apply_overrides(train, {"data.platforms": others, "data.products": config.products,
                                  "data.embeddings": config.embeddings,
                                  "output": storage.join(folder, "train"), "name": f"lopo_{platform}"})
    result = run_training(cfg, table=fold_table, progress=log)
    copy_checkpoint(result.checkpoint, target)
    used = (result.data or {}).get("train_rows", len(rows))      # after data.max_train_products
    return target, (f"trained on {', '.join(others)} ({cfg.model.fusion} fusion, {used:,} of their "
                    f"{len(rows):,} training rows)")


def fold_adapted(config: MeasureConfig, checkpoint: str, platform: str, folder: str,
                 log: Callable[[str], None]) -> tuple[str, dict]:
    """``(adapted checkpoint in folder/adapted, what adapting did)``: the fold's model adapted to
    every product of the held-out ``platform`` in the run's product table, reading their inputs
    only (:func:`prodcat.onboard.adapt.adapt_checkpoint`, as ``prodcat onboard adapt`` does on a
    new platform; the labels are read only after, for its report). What it did: products used,
    and the self-training summary (products kept, of how many)."""
    from prodcat.onboard.adapt import adapt_checkpoint

    target = storage.join(folder, "adapted")
    summary = adapt_checkpoint(checkpoint, config.products, config.embeddings, target, platform=platform,
                               log=log)
    st = summary.get("self_training") or {}
    return target, {"products_used": summary["products_used"], "without_vectors": summary["without_vectors"],
                    "self_trained_on": st.get("fitted_on") if st.get("added") else None,
                    "estimated_prior": summary.get("entropy_nats") is not None}


def _adapted_words(adapted: dict | None) -> str:
    """How a fold's model was adapted, in words (for the report)."""
    if adapted is None:
        return "measured as trained (not adapted)"
    what = [f"self-trained on {adapted['self_trained_on']:,}" if adapted["self_trained_on"] else "nothing self-trained",
            *(["its label distribution estimated"] if adapted["estimated_prior"] else [])]
    return (f"adapted to the platform's {adapted['products_used']:,} products (inputs only): "
            + ", ".join(what))


def fold_abstention(model, table: FeatureTable, platform: str, others: list[str], train: TrainConfig,
                    checkpoint: str, target: float) -> dict:
    """Thresholds on the training platforms' calibration split (also written into the
    checkpoint's ``calibration.json``) and the curve on ``platform``'s covered labelled rows."""
    fold = table.retarget(model.taxonomy)
    calib = fold.rows(splits=[train.data.calib_split], platforms=others)
    pred = model.predict(*model_inputs(model, calib))
    fitted = abstain.fit_table(model.taxonomy, pred["classes"], pred["level_confidence"], calib.column("node"))
    calibration = {**read_json(checkpoint, CALIBRATION, DEFAULT_CALIBRATION), "abstain": fitted}
    storage.write_text(storage.join(checkpoint, CALIBRATION), json.dumps(calibration, indent=2))
    splits = [s for s in SPLITS if s != train.data.val_split]
    test = fold.rows(splits=splits, platforms=[platform])
    everything = table.rows(splits=splits, platforms=[platform])
    pred = model.predict(*model_inputs(model, test))
    curve = abstain.curve(model.taxonomy, fitted, pred["classes"], pred["level_confidence"],
                          test.column("node"), sorted(set(abstain.CURVE_TARGETS) | {target}))
    return {"calib_products": len(calib), "test_products": len(test),
            "coverage": len(test) / max(len(everything), 1), "curve": curve,
            "at_target": next(p for p in curve if p["target"] == target),
            "full": next(p for p in curve if p["target"] is None)}


def platform_rows(config: MeasureConfig, platform: str, products) -> tuple[list[dict], Counter, str]:
    """``(rows to score, source categories with their product counts, what was read)``."""
    if config.source == "export":
        adapter = load_adapter(platform).model_copy(update={"mapping": None})
        rows, _ = read_unmapped(adapter)
        from prodcat.onboard.suggest import _stored_ids

        sample = sample_rows(rows, config.max_per_category, "prodcat", _stored_ids(config.embeddings))
        return sample, Counter(r["source_category"] for r in rows), f"its export ({len(rows):,} products)"
    mine = [r for r in products if r["platform"] == platform]
    return (sample_rows(mine, config.max_per_category, "prodcat"), Counter(r["source_category"] for r in mine),
            f"its rows of the product table ({len(mine):,} products)")


def measure(config: MeasureConfig, log: Callable[[str], None] = say) -> dict:
    """Run every fold (see the module docstring); returns ``onboard.json``'s content.

    Raises:
        FileNotFoundError: a missing product table, store or evaluation checkpoint.
        ValueError: fewer than two platforms.
    """
    from prodcat.core.config import load_config
    from prodcat.core.paths import REPO_ROOT

    start = time.perf_counter()
    train_file = config.train if storage.exists(config.train) else str(REPO_ROOT / config.train)
    train = load_config(TrainConfig, train_file, config.train_overrides)
    stored = sorted((read_manifest(config.embeddings) or {}).get("features", {}))
    table = load_feature_table(config.products, config.embeddings, stored)   # every stored feature
    products = storage.read_table(config.products, columns=[
        "product_id", "platform", "title", "description", "image_uri", "source_category"]).to_pylist()
    platforms = sorted({r["platform"] for r in products})
    if len(platforms) < 2:
        raise ValueError(f"leave-one-platform-out needs two or more platforms, got {platforms}")
    google = load_google_taxonomy()
    max_depth = read_protocol(config.products).get("max_depth", 4)
    folds = {}
    for platform in config.platforms or platforms:
        t0 = time.perf_counter()
        others = [p for p in platforms if p != platform]
        folder = storage.join(config.output, f"lopo_{platform}")
        log(f"[onboard] lopo_{platform}: {platform} met as a new platform, model without it ...")
        checkpoint, origin = fold_model(config, train, table, platform, others, folder, log)
        model = load_checkpoint(checkpoint)
        adapted = None
        if config.adapt and getattr(model, "adapts", False):
            checkpoint, adapted = fold_adapted(config, checkpoint, platform, folder, log)
            model = load_checkpoint(checkpoint)
        absts = fold_abstention(model, table, platform, others, train, checkpoint, config.abstain_target)
        rows, counts, read = platform_rows(config, platform, products)
        ref = ModelRef(checkpoint, "checkpoint", checkpoint)
        items, taxonomy = suggest_items(rows, counts, ref, folder, features_from=config.embeddings,
                                        scoring=config.scoring, log=log)
        labels = {int(model.taxonomy.ids[n]) for n in model.taxonomy.leaves}
        hand = CategoryMapping.for_platform(platform)
        results = {r: compare(rank(items, r), hand, labels, google, max_depth) for r in RANKINGS}
        folds[platform] = {"model": origin, "adapted": adapted, "fusion": model.model_config.fusion, "read": read,
                           "abstain": absts, "seconds": round(time.perf_counter() - t0, 1),
                           "_items": items, "_results": results, "_counts": counts, "_ref": ref,
                           "_scored": len(rows), "_version": taxonomy.version}
    choose_rankings(folds, config.ranking)
    recommend(folds, config.agreement_goal)
    for platform, fold in folds.items():
        folder = storage.join(config.output, f"lopo_{platform}")
        fold["suggest"] = write_suggestions(
            rank(fold["_items"], fold["ranking"]["chosen"]), fold["_counts"], platform, platform,
            fold["_ref"], folder, fold["_scored"], fold["_version"], fold["ranking"]["chosen"],
            config.page, log)
        result = fold["_results"][fold["ranking"]["chosen"]]
        storage.write_text(storage.join(folder, "comparison.json"), json.dumps(result, indent=2))
        c, absts = result["coverable"], fold["abstain"]
        log(f"[onboard] lopo_{platform}: {result['counts']['source_categories']} source categories, "
            f"{result['counts']['coverable']} coverable; ranked by {fold['ranking']['chosen']}: top-1 "
            f"{_pct(c.get('top1'))}, top-3 {_pct(c.get('top3'))} (product-weighted "
            f"{_pct(c.get('top1_weighted'))} / {_pct(c.get('top3_weighted'))}); partial paths at "
            f"{config.abstain_target}: hP {_pct(absts['at_target']['hP'])}, full paths "
            f"{_pct(absts['at_target']['full_paths'])} ({fold['seconds']} s)")
    out = {"config": config.model_dump(mode="json"), "folds": {p: public(f) for p, f in folds.items()},
           "seconds": round(time.perf_counter() - start, 1)}
    storage.write_text(storage.join(config.output, "onboard.json"), json.dumps(out, indent=2))
    plot_agreement({p: f["comparison"]["curve"] for p, f in out["folds"].items()},
                   storage.join(config.output, "agreement.png"),
                   {p: f["recommended"]["threshold"] for p, f in out["folds"].items()})
    plot_abstention({f"lopo_{p}": f["abstain"]["curve"] for p, f in folds.items()},
                    storage.join(config.output, "abstain_curve.png"))
    storage.write_text(storage.join(config.output, REPORT), report_markdown(out))
    log(f"[onboard] {len(folds)} folds in {out['seconds']:.0f} s → {storage.join(config.output, REPORT)}")
    return out


def public(fold: dict) -> dict:
    """A fold's JSON-ready record: the chosen ranking's comparison (without the per-category rows)
    and the top-1 agreement of every ranking."""
    result = fold["_results"][fold["ranking"]["chosen"]]
    return {**{k: v for k, v in fold.items() if not k.startswith("_")},
            "comparison": {k: v for k, v in result.items() if k != "categories"}}


def _coverable(fold: dict, ranking: str) -> list[dict]:
    return [r for r in fold["_results"][ranking]["categories"] if r["coverable"]]


def choose_rankings(folds: dict, how: str) -> None:
    """The ranking of each fold: ``how`` itself, or (``nested``) the one whose top-1 agreement over
    the *other* folds' coverable categories is higher (votes on a tie); adds ``ranking``."""
    for platform, fold in folds.items():
        others = {r: [x for p, f in folds.items() if p != platform for x in _coverable(f, r)]
                  for r in RANKINGS}
        on_others = {r: float(np.mean([x["top1"] for x in rows])) if rows else 0.0
                     for r, rows in others.items()}
        chosen = how if how != "nested" else max(RANKINGS, key=lambda r: (on_others[r], r == "votes"))
        fold["ranking"] = {"chosen": chosen, "how": how, "top1_on_others": on_others,
                           "top1_here": {r: fold["_results"][r]["coverable"].get("top1") for r in RANKINGS}}


def recommend(folds: dict, goal: float) -> None:
    """Per fold the threshold recommended from the other folds' coverable categories (under the
    fold's ranking), and this fold's agreement and share at it; adds ``recommended`` to each fold
    and ``recommended_for_new_platforms`` (from every fold)."""
    for platform, fold in folds.items():
        chosen = fold["ranking"]["chosen"]
        others = [r for p, f in folds.items() if p != platform for r in _coverable(f, chosen)]
        threshold = recommend_threshold(others, goal)
        fold["recommended"] = {"goal": goal, "chosen_on": sorted(p for p in folds if p != platform),
                               **at_threshold(_coverable(fold, chosen), threshold)}
    for fold in folds.values():
        chosen = fold["ranking"]["chosen"]
        fold["recommended_for_new_platforms"] = recommend_threshold(
            [r for f in folds.values() for r in _coverable(f, chosen)], goal)


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f} %"


def summary_rows(folds: dict) -> list[list]:
    """One row per held-out platform: the mapping suggestions' figures (the chosen ranking's)."""
    rows = []
    for p, f in folds.items():
        c, n, r = f["comparison"]["coverable"], f["comparison"]["counts"], f["recommended"]
        here = f["ranking"]["top1_here"]
        rows.append([p, n["source_categories"], n["coverable"], n["not_coverable"], n["excluded_by_hand"],
                     f["ranking"]["chosen"], _pct(c.get("top1")), _pct(c.get("top3")),
                     _pct(c.get("top1_weighted")), _pct(c.get("top3_weighted")),
                     f"{100 * c['hF']:.1f}" if "hF" in c else "n/a",
                     " / ".join(_pct(here.get(k)) for k in RANKINGS),
                     "none" if r["threshold"] is None else f"{r['threshold']:.2f}",
                     _pct(r["agreement"]), _pct(r["share"])])
    return rows


SUMMARY_HEADERS = ["held out", "source categories", "coverable", "not coverable", "excluded by hand",
                   "ranking (from others)", "top-1", "top-3", "top-1 (products)", "top-3 (products)",
                   "hF (top-1)", "top-1 by votes / by names", "threshold (from others)",
                   "agreement ≥ threshold", "share ≥ threshold"]


def abstain_rows(folds: dict, target: float) -> list[list]:
    """One row per fold: hP / hR / coverage of full paths and of partial paths at ``target``."""
    rows = []
    for p, f in folds.items():
        full, at = f["abstain"]["full"], f["abstain"]["at_target"]
        rows.append([f"lopo_{p}", f["abstain"]["test_products"], f"{100 * full['hP']:.1f}",
                     f"{100 * full['hR']:.1f}", f"{100 * at['hP']:.1f}", f"{100 * at['hR']:.1f}",
                     _pct(at["full_paths"]), _pct(at["answered"])])
    return rows


ABSTAIN_HEADERS = ["fold", "products", "hP full paths", "hR full paths", "hP partial", "hR partial",
                   "full paths kept", "answered (≥ 1 level)"]


def report_markdown(result: dict) -> str:
    """``report.md``: the suggestions against the hand mappings and partial paths, per fold."""
    cfg, folds = result["config"], result["folds"]
    target = cfg["abstain_target"]
    lines = ["# A new platform on day one: suggested mappings and partial paths", "",
             "Each platform in turn is met as a new one: a model trained without it (the "
             "leave-one-platform-out fold) suggests a Google category for each of its source "
             "categories (" + ("its export, read without a mapping" if cfg["source"] == "export"
                               else "its products in the run's product table") + f", at most "
             f"{cfg['max_per_category']} products per category), compared with its hand-made mapping. "
             "Coverable: the hand-mapped category is one the model has a head for; the others cannot "
             "be suggested and are listed below. The top-3 candidates are the categories most of the "
             "category's products voted for; the ranking orders them by those votes or by the "
             "similarity of their names to the source category's, chosen per platform on the other "
             "platforms. The threshold is the smallest suggestion confidence "
             f"whose accepted categories agree with the hand mapping ≥ {cfg['agreement_goal']:.0%} on "
             "the *other* platforms.", "",
             markdown_table(SUMMARY_HEADERS, summary_rows(folds)), "",
             "![coverage against agreement](agreement.png)", "",
             f"## Partial paths at a target precision of {target} per level", "",
             "Thresholds fitted on the training platforms' calibration split; scored on the held-out "
             "platform's covered products (strict hF: a partial path loses recall, not precision).", "",
             markdown_table(ABSTAIN_HEADERS, abstain_rows(folds, target)), "",
             "![hP against hR](abstain_curve.png)", ""]
    for p, f in folds.items():
        lines += [f"### lopo_{p}", "", f"Model: {f['model']}; {_adapted_words(f.get('adapted'))}. "
                  f"Read: {f['read']}. {f['seconds']} s.", "",
                  markdown_table(["target precision", "hP", "hR", "hF", "full paths", "answered",
                                  "levels kept"], abstention_rows(f["abstain"]["curve"])), ""]
        missing = f["comparison"]["not_coverable"]
        if missing:
            lines += ["Not coverable (hand category outside the training label space): " + "; ".join(
                f"{m['source_category']} → {m['hand_path']} ({m['products']})" for m in missing), ""]
    return "\n".join(lines) + "\n"
