"""Fitting the cascade on the calibration split: temperatures, tau, the cost/accuracy curve, a report.

``fit_cascade`` loads the two checkpoints and the embedding store (the vectors both were trained
on), then on the calibration split (``calib``: products neither training nor early stopping saw):

1. fits each model's softmax temperature on the serving path (:mod:`prodcat.train.calibration`:
   the logits masked by the model's own predicted parents, the path confidence against
   exact-path correctness), with the expected calibration error before and after and a
   reliability diagram per stage;
2. predicts with both models and computes the stage-1 calibrated confidence of every product;
3. builds the hF-vs-escalation curve and picks tau for the stated :class:`CascadeGoal`;
4. measures each stage's cost per product (ms) on raw products (encoders + head, this machine);
5. reports the same curve on the test split, and the test point that tau lands on with a 95 %
   bootstrap interval over near-duplicate groups;
6. fits each stage's abstention thresholds for a grid of target precisions per level
   (:mod:`prodcat.cascade.abstain`) and reports hP against hR of the cascade's partial answers
   as the target moves (``abstain_curve.png``).

Outputs in ``output``: ``cascade.json`` (what serving and bulk scoring load), ``cascade_report.json``,
``cascade_report.md``, ``cascade_curve.png``, ``reliability.png`` and ``abstain_curve.png``.

Letters: B products, L levels.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable

import numpy as np

from prodcat.cascade import abstain
from prodcat.cascade.bundle import bundle_checkpoints
from prodcat.cascade.config import CascadeFitConfig
from prodcat.cascade.policy import (
    CascadeCurve,
    cascade_curve,
    choose_threshold,
    combine_confidence,
    route,
)
from prodcat.cascade.spec import CascadeSpec, load_taxonomy_of, write_cascade
from prodcat.cascade.stage import StageRunner
from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.metrics import hierarchical_counts
from prodcat.core.report import figure, markdown_table, save_png
from prodcat.core.uncertainty import hf_interval
from prodcat.embed.store import StoreMismatch
from prodcat.models.checkpoint import load_checkpoint
from prodcat.train.calibration import calibrate
from prodcat.train.features import describe_counts, load_feature_table
from prodcat.train.lexical import model_inputs


def _check_store(loaded, manifest: dict, store: str) -> None:
    """The store's vectors must come from the encoders the checkpoint was trained with."""

    for f, info in loaded.encoders.items():
        want = info.get("fingerprint", {}).get("key")
        have = manifest.get("features", {}).get(f, {}).get("fingerprint", {}).get("key")
        if want and have and want != have:
            raise StoreMismatch(f"{store}: feature {f!r} has fingerprint {have}, but checkpoint "
                                f"{loaded.uri} was trained on {want}")


def held_out_ece(loaded, rows, temperature: float) -> list[float]:
    """``[ECE at T = 1, ECE at T]`` of the path confidence on ``rows`` (the test split: rows the
    temperature was not fitted on), so the calibration is judged where it was not made."""
    from prodcat.models.calibration import expected_calibration_error, path_confidence
    from prodcat.train.calibration import serving_predictions

    logits, classes, correct = serving_predictions(loaded, rows)
    return [expected_calibration_error(path_confidence(logits, classes, t), correct)
            for t in (1.0, temperature)]


def _predict(loaded, table, temperature: float, mode: str):
    """``(confidence [B], output classes [B, L], level confidences [B, L])`` of one model on a
    feature table."""
    pred = loaded.predict(*model_inputs(loaded, table), temperature=temperature)
    level_conf = np.where(pred["classes"] >= 0, pred["level_confidence"], np.nan)
    return combine_confidence(level_conf, mode), pred["classes"], pred["level_confidence"]


def fit_abstention(taxonomy, outputs: dict, calib_split: str, threshold: float) -> tuple[dict, dict]:
    """``(tables, curves)``: each stage's thresholds fitted on ``calib_split``
    (:func:`prodcat.cascade.abstain.fit_table`), and per split the hP / hR / coverage of the
    cascade's partial answers (text stage below tau escalated to the multimodal stage, each with
    its own thresholds) for the full paths and each target of
    :data:`prodcat.cascade.abstain.CURVE_TARGETS`.

    Args:
        outputs: ``{split: {"true": [B], "confidence": [B], "text": (classes, level conf),
            "multimodal": (classes, level conf)}}``.
    """
    calib = outputs[calib_split]
    tables = {stage: abstain.fit_table(taxonomy, *calib[stage], calib["true"])
              for stage in ("text", "multimodal")}
    curves = {}
    for name, out in outputs.items():
        up = route(out["confidence"], threshold)[:, None]
        classes = np.where(up, out["multimodal"][0], out["text"][0])
        conf = np.where(up, out["multimodal"][1], out["text"][1])
        by_target: dict = {None: None}
        for target in abstain.CURVE_TARGETS:
            t = {s: abstain.as_array(abstain.thresholds_for(tables[s], target)) for s in tables}
            by_target[target] = np.where(up, t["multimodal"][None, :], t["text"][None, :])
        curves[name] = abstain.curve_points(taxonomy, classes, conf, out["true"], by_target)
    return {"fitted_on": calib_split, **tables}, curves


def measure_stage_costs(text_model: str, multimodal_model: str, products_uri: str, split: str,
                        sample: int, batch_size: int, threads: int) -> dict[str, float]:
    """ms per product on ``sample`` raw products of ``split`` (after one warm-up batch), on this
    machine: image decoding, encoders and head.

    Returns:
        ``text`` (stage 1), ``multimodal_after_text`` (stage 2 in the cascade, reusing stage 1's
        text vectors, as the service and bulk scoring do) and ``multimodal`` (stage 2 alone, from
        raw inputs: the multimodal-only cost).
    """
    import pyarrow.compute as pc

    table = storage.read_table(products_uri, columns=["product_id", "title", "description",
                                                      "image_uri", "split"])
    table = table.filter(pc.equal(table["split"], split)).slice(0, sample + batch_size)
    batches = [{k: table.slice(i, batch_size)[k].to_pylist()
                for k in ("product_id", "title", "description", "image_uri")}
               for i in range(0, table.num_rows, batch_size)]
    text = StageRunner(text_model, "text", device="cpu", num_threads=threads)
    mm = StageRunner(multimodal_model, "multimodal", device="cpu", num_threads=threads)
    keep = [f for f, info in text.model.encoders.items() if info.get("modality") == "text"]
    seconds = {"text": 0.0, "multimodal_after_text": 0.0, "multimodal": 0.0}
    n = 0
    for i, batch in enumerate(batches):
        t0 = time.perf_counter()
        first = text.predict_batch(batch, keep_features=keep)
        t1 = time.perf_counter()
        mm.predict_batch({**batch, **{k: v for k, v in first.items()
                                      if k.startswith(("emb_", "status_", "fp_"))}})
        t2 = time.perf_counter()
        mm.predict_batch(batch)
        t3 = time.perf_counter()
        if i == 0:
            continue                                            # warm-up
        n += len(batch["title"])
        for key, dt in (("text", t1 - t0), ("multimodal_after_text", t2 - t1), ("multimodal", t3 - t2)):
            seconds[key] += dt
    return {k: 1000 * v / max(n, 1) for k, v in seconds.items()}


def fit_cascade(config: CascadeFitConfig, log: Callable[[str], None] = say) -> dict:
    """Fit, choose tau, measure, report; returns the report dict (also ``cascade_report.json``).

    Raises:
        FileNotFoundError: a missing checkpoint, product table or store.
        prodcat.embed.store.StoreMismatch: a store made with other encoders than a checkpoint's.
        prodcat.catalog.build.SplitVersionError: a product table with the old splits.
        ValueError: checkpoints on different taxonomies, or an empty split.
    """
    taxonomy = load_taxonomy_of(config.text_model, config.multimodal_model)
    text, mm = load_checkpoint(config.text_model), load_checkpoint(config.multimodal_model)
    features = sorted(set(text.features) | set(mm.features))
    table = load_feature_table(config.products, config.embeddings, features,
                               skip_unreadable=config.skip_unreadable)
    log(f"[cascade] {describe_counts(table.counts)}")
    if table.taxonomy.to_json() != taxonomy.to_json():
        raise ValueError(f"the checkpoints were trained on another taxonomy than {config.products}'s "
                         "taxonomy.json; fit the cascade on the product table they were trained on")
    for loaded in (text, mm):
        _check_store(loaded, table.manifest, config.embeddings)
    splits = {name: table.rows(splits=[name]) for name in (config.calib_split, config.test_split)}
    if any(len(t) == 0 for t in splits.values()):
        raise ValueError(f"empty split in {config.products}: {({k: len(v) for k, v in splits.items()})}")
    calibration = {"text": calibrate(text, splits[config.calib_split]),
                   "multimodal": calibrate(mm, splits[config.calib_split])}
    t_text, t_mm = calibration["text"].temperature, calibration["multimodal"].temperature
    test_ece = {name: held_out_ece(model, splits[config.test_split], c.temperature)
                for (name, c), model in zip(calibration.items(), (text, mm))}
    log("[cascade] temperatures on the calibration split (serving logits): " + "; ".join(
        f"{name} {c.temperature:.3f} (ECE {c.ece_before:.3f} → {c.ece_after:.3f}; on the test split "
        f"{test_ece[name][0]:.3f} → {test_ece[name][1]:.3f})" for name, c in calibration.items()))
    costs = {"text": float("nan"), "multimodal_after_text": float("nan"), "multimodal": float("nan")}
    if config.cost_sample:
        costs = measure_stage_costs(config.text_model, config.multimodal_model, config.products,
                                    config.calib_split, config.cost_sample, config.cost_batch_size,
                                    config.torch_threads)
        log(f"[cascade] ms per product: text {costs['text']:.2f}, multimodal after text "
            f"{costs['multimodal_after_text']:.2f}, multimodal alone {costs['multimodal']:.2f}")
    curves, counts, outputs = {}, {}, {}
    for name, rows in splits.items():
        conf, text_classes, text_lc = _predict(text, rows, t_text, config.confidence_mode)
        _, mm_classes, mm_lc = _predict(mm, rows, t_mm, config.confidence_mode)
        true = rows.column("node")
        outputs[name] = {"true": true, "confidence": conf, "text": (text_classes, text_lc),
                         "multimodal": (mm_classes, mm_lc)}
        counts[name] = (conf, hierarchical_counts(taxonomy, true, text_classes),
                        hierarchical_counts(taxonomy, true, mm_classes))
        curves[name] = cascade_curve(*counts[name], costs["text"], costs["multimodal_after_text"])
    threshold, k = choose_threshold(curves[config.calib_split], config.goal)
    calib_point = curves[config.calib_split].at(threshold)
    test_point = curves[config.test_split].at(threshold)
    conf, text_counts, mm_counts = counts[config.test_split]
    escalated = route(conf, threshold)
    ci = hf_interval(np.where(escalated[:, None], mm_counts, text_counts),
                     splits[config.test_split].column("group_id"))
    test_point["hF_ci"] = [ci.low, ci.high]
    log(f"[cascade] tau={threshold:.4f} ({config.goal.describe()}): calibration split "
        f"{_describe(calib_point)}; test {_describe(test_point)} [95 % CI {100 * ci.low:.2f}, "
        f"{100 * ci.high:.2f}]")
    validation = {"temperature": {"text": t_text, "multimodal": t_mm},
                  "ece": {name: [c.ece_before, c.ece_after] for name, c in calibration.items()},
                  "ece_test": test_ece,
                  "calibration": {name: c.to_dict() for name, c in calibration.items()},
                  "fitted_on": config.calib_split, "calib": calib_point, "test": test_point,
                  "endpoints": {name: {"text_only_hF": c.text_only_hf,
                                       "multimodal_only_hF": c.multimodal_only_hf}
                                for name, c in curves.items()},
                  "cost_ms": {k2: (None if np.isnan(v) else round(v, 3)) for k2, v in costs.items()},
                  "products": {name: len(rows) for name, rows in splits.items()}}
    tables, abstain_curves = fit_abstention(taxonomy, outputs, config.calib_split, threshold)
    validation["abstain"] = abstain_curves
    at = {name: next(p for p in c if p["target"] == 0.95) for name, c in abstain_curves.items()}
    log("[cascade] partial paths at target precision 0.95 per level: " + "; ".join(
        f"{name} hP {100 * p['hP']:.2f}, hR {100 * p['hR']:.2f}, full paths {p['full_paths']:.1%}"
        for name, p in at.items()))
    spec = CascadeSpec(config.text_model, config.multimodal_model, threshold, t_text, t_mm,
                       config.confidence_mode, goal=config.goal.model_dump(), validation=validation,
                       abstain=tables)
    if config.bundle:  # a self-contained folder: the checkpoints inside, named relative to it
        spec = bundle_checkpoints(spec, config.output)
    write_cascade(spec, config.output)
    report = {"spec": json.loads(spec.to_json()),
              "versions": {"text": text.version, "multimodal": mm.version},
              "curves": {name: c.to_dict() for name, c in curves.items()}, "data": table.counts}
    storage.write_text(storage.join(config.output, "cascade_report.json"), json.dumps(report, indent=2))
    plot_curves(curves, threshold, storage.join(config.output, "cascade_curve.png"), costs["multimodal"])
    plot_reliability(calibration, storage.join(config.output, "reliability.png"))
    plot_abstention({f"in-platform {k}": v for k, v in abstain_curves.items()},
                    storage.join(config.output, "abstain_curve.png"))
    storage.write_text(storage.join(config.output, "cascade_report.md"),
                       report_markdown(spec, curves, config, text.version, mm.version)
                       + f"\nData: {describe_counts(table.counts)}.\n")
    return report


def _ece_pair(pair: list[float] | None) -> str:
    return "-" if not pair else f"{pair[0]:.3f} → {pair[1]:.3f}"


def _describe(point: dict) -> str:
    text = f"escalation {point['escalation_rate']:.1%}, hF {100 * point['hF']:.2f}"
    return text + (f", {point['cost_ms']:.2f} ms/product" if math.isfinite(point["cost_ms"]) else "")


def plot_curves(curves: dict[str, CascadeCurve], threshold: float, uri: str,
                multimodal_alone_ms: float = float("nan")) -> None:
    """PNG: hF (points) against escalation rate, and against the expected cost per product
    (with the multimodal model alone as a cross when its cost is known)."""
    fig, axes = figure(1, 2, figsize=(11, 4.2))
    for name, curve in curves.items():
        point = curve.at(threshold)
        axes[0].plot(100 * curve.escalation_rate, 100 * curve.hf, label=name)
        axes[0].scatter([100 * point["escalation_rate"]], [100 * point["hF"]], zorder=3)
        if np.isfinite(curve.cost_ms).any():
            axes[1].plot(curve.cost_ms, 100 * curve.hf, label=name)
            axes[1].scatter([point["cost_ms"]], [100 * point["hF"]], zorder=3)
            if math.isfinite(multimodal_alone_ms):
                axes[1].scatter([multimodal_alone_ms], [100 * curve.multimodal_only_hf], marker="x",
                                zorder=3, label=f"{name}: multimodal alone")
    axes[0].set(xlabel="escalated to the multimodal stage (%)", ylabel="hF (points)",
                title=f"hF vs escalation rate (dots: tau = {threshold:.3f})")
    axes[1].set(xlabel="expected cost per product (ms, this machine)", ylabel="hF (points)",
                title="cost / accuracy trade-off")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    save_png(fig, uri, dpi=120)


def plot_reliability(calibration: dict, uri: str) -> None:
    """PNG: one reliability diagram per stage (accuracy against mean confidence per bin, before and
    after temperature scaling; the diagonal is perfect calibration)."""
    fig, axes = figure(1, len(calibration), figsize=(5.2 * len(calibration), 4.4), squeeze=False)
    for ax, (name, c) in zip(axes[0], calibration.items()):
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        for label, data, style in (("T = 1", c.reliability_before, "o--"),
                                   (f"T = {c.temperature:.2f}", c.reliability_after, "s-")):
            ax.plot(data["confidence"], data["accuracy"], style, label=label)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="path confidence (bin mean)",
               ylabel="exact-path accuracy", title=f"{name} stage: ECE {c.ece_before:.3f} → "
               f"{c.ece_after:.3f} ({c.products} products)")
        ax.grid(alpha=0.3)
        ax.legend()
    save_png(fig, uri)


def report_markdown(spec: CascadeSpec, curves: dict[str, CascadeCurve], config: CascadeFitConfig,
                    text_version: str, mm_version: str) -> str:
    """The cascade report: goal, tau, calibration (ECE before and after, reliability diagrams),
    the chosen point on the calibration and test splits, and points of the test curve."""
    v = spec.validation
    cal = v["calibration"]
    lines = [
        "# Cascade report", "",
        f"- text model `{config.text_model}` ({text_version}), multimodal model "
        f"`{config.multimodal_model}` ({mm_version})",
        f"- goal: {config.goal.describe()} on the `{config.calib_split}` split (products neither "
        f"training nor early stopping saw) → **tau = {spec.threshold:.4f}** ({spec.confidence_mode} "
        "confidence)",
        f"- cost per product on this machine ({config.cost_sample} raw products, image decoding + "
        f"encoders + head): text stage {v['cost_ms']['text']} ms; multimodal stage after the text "
        f"stage (reusing its text vectors) {v['cost_ms']['multimodal_after_text']} ms; multimodal "
        f"alone {v['cost_ms']['multimodal']} ms. Cascade cost = text + escalation x multimodal "
        "after text.", "",
        "## Calibration (serving path)", "",
        "Each stage's temperature is fitted on the logits the service computes (masked by the "
        "model's own predicted parents), so that the path confidence the cascade routes on matches "
        "how often the output path is exactly right. ECE: expected calibration error (15 bins).", "",
        markdown_table(["stage", "temperature", "ECE at T = 1", "ECE after", "products",
                        "exact-path accuracy", "test split: ECE at T = 1 → after"],
                       [[name, c["temperature"], c["ece_before"], c["ece_after"], c["products"],
                         c["accuracy"], _ece_pair(v.get("ece_test", {}).get(name))]
                        for name, c in cal.items()]),
        "", "The first columns are measured on the calibration split the temperature was fitted "
        "on; the last on the test split, which the fit did not read.",
        "", "![reliability diagrams](reliability.png)", "",
        "## The chosen threshold", ""]
    rows = []
    for name, key in ((config.calib_split, "calib"), (config.test_split, "test")):
        p, c = v[key], curves[name]
        ci = p.get("hF_ci")
        hf = f"{100 * p['hF']:.2f}" + (f" [{100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else "")
        cost = f"{p['cost_ms']:.2f}" if math.isfinite(p["cost_ms"]) else "n/a"
        rows.append([name, f"{p['escalation_rate']:.1%}", hf, f"{100 * p['hP']:.2f}",
                     f"{100 * p['hR']:.2f}", cost, f"{100 * c.text_only_hf:.2f}",
                     f"{100 * c.multimodal_only_hf:.2f}"])
    lines.append(markdown_table(["split", "escalation", "hF [95 % CI]", "hP", "hR",
                                 "cascade ms/product", "text-only hF", "multimodal-only hF"], rows))
    test = curves[config.test_split]
    points = []
    for rate in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        k = min(int(np.searchsorted(test.escalation_rate, rate - 1e-12)), len(test.threshold) - 1)
        points.append(["inf" if np.isinf(test.threshold[k]) else f"{test.threshold[k]:.4f}",
                       f"{test.escalation_rate[k]:.1%}", f"{100 * test.hf[k]:.2f}",
                       f"{test.cost_ms[k]:.2f}" if np.isfinite(test.cost_ms[k]) else "n/a"])
    lines += ["", f"Points of the `{config.test_split}` curve (tau → escalation, hF, cost):", "",
              markdown_table(["tau", "escalation", "hF", "ms/product"], points),
              "", "![hF vs escalation](cascade_curve.png)", ""]
    lines += abstention_markdown(v.get("abstain", {}), config.test_split)
    return "\n".join(lines)


def abstention_markdown(curves: dict, split: str) -> list[str]:
    """The partial-paths section of the report: hP, hR, hF and coverage of the cascade's answers
    on ``split`` as the target precision per level moves (thresholds from the calibration split)."""
    points = curves.get(split)
    if not points:
        return []
    return ["## Partial paths: stop where the model stops being sure", "",
            "Each stage's thresholds are chosen on the calibration split for a target precision per "
            "level (`abstain.target_precision`, e.g. 0.95; default: full paths); an answer stops at "
            "the first level whose cumulative confidence falls below its threshold, and the strict "
            f"hF scores the partial path as output. On the `{split}` split:", "",
            markdown_table(["target precision", "hP", "hR", "hF", "full paths", "answered (≥ 1 level)",
                            "levels kept"], abstention_rows(points)),
            "", "![hP against hR](abstain_curve.png)", ""]


def abstention_rows(points: list[dict]) -> list[list]:
    """Table rows of :func:`prodcat.cascade.abstain.curve_points` output."""
    return [["full paths" if p["target"] is None else f"{p['target']:.2f}", f"{100 * p['hP']:.2f}",
             f"{100 * p['hR']:.2f}", f"{100 * p['hF']:.2f}", f"{p['full_paths']:.1%}",
             f"{p['answered']:.1%}", f"{p['depth_share']:.1%}"] for p in points]


def plot_abstention(curves: dict[str, list[dict]], uri: str) -> None:
    """PNG: hP against hR (points) of partial answers as the target precision moves, one line per
    fold or split (the full paths marked with a cross), and the share of full paths against the
    target."""
    fig, axes = figure(1, 2, figsize=(11, 4.2))
    for name, points in curves.items():
        moving = [p for p in points if p["target"] is not None]
        full = next((p for p in points if p["target"] is None), None)
        line = axes[0].plot([100 * p["hR"] for p in moving], [100 * p["hP"] for p in moving], "o-",
                            label=name)[0]
        if full:
            axes[0].scatter([100 * full["hR"]], [100 * full["hP"]], marker="x", color=line.get_color())
        axes[1].plot([p["target"] for p in moving], [100 * p["full_paths"] for p in moving], "o-", label=name)
    axes[0].set(xlabel="hR (points)", ylabel="hP (points)",
                title="partial paths: hP against hR as the target moves (x: full paths)")
    axes[1].set(xlabel="target precision per level", ylabel="answered to the full path (%)",
                title="coverage of full paths")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, uri, dpi=120)
