"""Fitting the cascade on the validation split: temperatures, tau, the cost/accuracy curve, a report.

``fit_cascade`` loads the two checkpoints and the embedding store (the vectors both were trained
on), then on the validation split:

1. fits each model's softmax temperature (teacher-forced logits, :func:`prodcat.models.calibration.fit_temperature` in :mod:`prodcat.models.calibration`);
2. predicts with both models and computes the stage-1 calibrated confidence of every product;
3. builds the hF-vs-escalation curve and picks tau for the stated :class:`CascadeGoal`;
4. measures each stage's cost per product (ms) on raw products (encoders + head, this machine);
5. reports the same curve on the test split, and the test point that tau lands on.

Outputs in ``output``: ``cascade.json`` (what serving and bulk scoring load), ``cascade_report.json``,
``cascade_report.md`` and ``cascade_curve.png``.

Letters: B products, L levels.
"""

from __future__ import annotations

import json
import math
import time
from typing import Callable

import numpy as np

from prodcat.cascade.bundle import bundle_checkpoints
from prodcat.cascade.config import CascadeFitConfig
from prodcat.cascade.policy import (
    CascadeCurve,
    cascade_curve,
    choose_threshold,
    combine_confidence,
)
from prodcat.cascade.spec import CascadeSpec, load_taxonomy_of, write_cascade
from prodcat.cascade.stage import StageRunner
from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.metrics import hierarchical_counts, real_paths
from prodcat.core.report import figure, save_png
from prodcat.embed.store import StoreMismatch
from prodcat.models.calibration import expected_calibration_error, fit_temperature
from prodcat.models.checkpoint import load_checkpoint
from prodcat.train.features import load_feature_table


def _check_store(loaded, manifest: dict, store: str) -> None:
    """The store's vectors must come from the encoders the checkpoint was trained with."""

    for f, info in loaded.encoders.items():
        want = info.get("fingerprint", {}).get("key")
        have = manifest.get("features", {}).get(f, {}).get("fingerprint", {}).get("key")
        if want and have and want != have:
            raise StoreMismatch(f"{store}: feature {f!r} has fingerprint {have}, but checkpoint "
                                f"{loaded.uri} was trained on {want}")


def _predict(loaded, table, temperature: float, mode: str):
    """``(confidence [B], predicted nodes [B])`` of one model on a feature table."""
    feats, present, _ = table.with_features(loaded.features).arrays()
    pred = loaded.predict(feats, present, temperature=temperature)
    level_conf = np.where(pred["classes"] >= 0, pred["level_confidence"], np.nan)
    return combine_confidence(level_conf, mode), pred["node"]


def _fit_temperature(loaded, table) -> tuple[float, float, float]:
    """``(T, ECE before, ECE after)`` on ``table`` (teacher-forced logits; ECE of the top path
    confidence against exact-path correctness)."""
    import torch

    feats, present, targets = table.with_features(loaded.features).arrays()
    x = {f: torch.as_tensor(v) for f, v in feats.items()}
    p = {f: torch.as_tensor(v) for f, v in present.items()}
    with torch.no_grad():
        logits = loaded.model(x, p, torch.as_tensor(targets), teacher_forcing=True)
    t = fit_temperature([z.float().numpy() for z in logits], targets)
    true = real_paths(loaded.taxonomy)[table.column("node")]
    eces = []
    for temp in (1.0, t):
        conf, nodes = _predict(loaded, table, temp, "path")
        exact = (real_paths(loaded.taxonomy)[nodes] == true).all(axis=1)
        eces.append(expected_calibration_error(conf, exact))
    return t, eces[0], eces[1]


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
        ValueError: checkpoints on different taxonomies, or an empty split.
    """

    taxonomy = load_taxonomy_of(config.text_model, config.multimodal_model)
    text, mm = load_checkpoint(config.text_model), load_checkpoint(config.multimodal_model)
    features = sorted(set(text.features) | set(mm.features))
    table = load_feature_table(config.products, config.embeddings, features)
    if table.taxonomy.to_json() != taxonomy.to_json():
        raise ValueError(f"the checkpoints were trained on another taxonomy than {config.products}'s "
                         "taxonomy.json; fit the cascade on the product table they were trained on")
    for loaded in (text, mm):
        _check_store(loaded, table.manifest, config.embeddings)
    splits = {name: table.rows(splits=[name]) for name in (config.val_split, config.test_split)}
    if any(len(t) == 0 for t in splits.values()):
        raise ValueError(f"empty split in {config.products}: {({k: len(v) for k, v in splits.items()})}")
    val = splits[config.val_split]
    t_text, ece_text_before, ece_text_after = _fit_temperature(text, val)
    t_mm, ece_mm_before, ece_mm_after = _fit_temperature(mm, val)
    log(f"[cascade] temperatures text {t_text:.3f} (ECE {ece_text_before:.3f} → {ece_text_after:.3f}), "
        f"multimodal {t_mm:.3f} (ECE {ece_mm_before:.3f} → {ece_mm_after:.3f})")
    costs = {"text": float("nan"), "multimodal_after_text": float("nan"), "multimodal": float("nan")}
    if config.cost_sample:
        costs = measure_stage_costs(config.text_model, config.multimodal_model, config.products,
                                    config.val_split, config.cost_sample, config.cost_batch_size,
                                    config.torch_threads)
        log(f"[cascade] ms per product: text {costs['text']:.2f}, multimodal after text "
            f"{costs['multimodal_after_text']:.2f}, multimodal alone {costs['multimodal']:.2f}")
    curves = {}
    for name, rows in splits.items():
        conf, text_nodes = _predict(text, rows, t_text, config.confidence_mode)
        _, mm_nodes = _predict(mm, rows, t_mm, config.confidence_mode)
        true = rows.column("node")
        curves[name] = cascade_curve(conf, hierarchical_counts(taxonomy, true, text_nodes),
                                     hierarchical_counts(taxonomy, true, mm_nodes),
                                     costs["text"], costs["multimodal_after_text"])
    threshold, k = choose_threshold(curves[config.val_split], config.goal)
    val_point = curves[config.val_split].at(threshold)
    test_point = curves[config.test_split].at(threshold)
    log(f"[cascade] tau={threshold:.4f} ({config.goal.describe()}): val {_describe(val_point)}; "
        f"test {_describe(test_point)}")
    validation = {"temperature": {"text": t_text, "multimodal": t_mm},
                  "ece": {"text": [ece_text_before, ece_text_after],
                          "multimodal": [ece_mm_before, ece_mm_after]},
                  "val": val_point, "test": test_point,
                  "endpoints": {name: {"text_only_hF": c.text_only_hf,
                                       "multimodal_only_hF": c.multimodal_only_hf}
                                for name, c in curves.items()},
                  "cost_ms": {k2: (None if np.isnan(v) else round(v, 3)) for k2, v in costs.items()},
                  "products": {name: len(rows) for name, rows in splits.items()}}
    spec = CascadeSpec(config.text_model, config.multimodal_model, threshold, t_text, t_mm,
                       config.confidence_mode, goal=config.goal.model_dump(), validation=validation)
    if config.bundle:  # a self-contained folder: the checkpoints inside, named relative to it
        spec = bundle_checkpoints(spec, config.output)
    write_cascade(spec, config.output)
    report = {"spec": json.loads(spec.to_json()),
              "versions": {"text": text.version, "multimodal": mm.version},
              "curves": {name: c.to_dict() for name, c in curves.items()}}
    storage.write_text(storage.join(config.output, "cascade_report.json"), json.dumps(report, indent=2))
    plot_curves(curves, threshold, storage.join(config.output, "cascade_curve.png"), costs["multimodal"])
    storage.write_text(storage.join(config.output, "cascade_report.md"),
                       report_markdown(spec, curves, config, text.version, mm.version))
    return report


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


def report_markdown(spec: CascadeSpec, curves: dict[str, CascadeCurve], config: CascadeFitConfig,
                    text_version: str, mm_version: str) -> str:
    """The cascade report: goal, tau, temperatures, and a table of points on the test curve."""
    v = spec.validation
    lines = [
        "# Cascade report", "",
        f"- text model `{config.text_model}` ({text_version}), multimodal model "
        f"`{config.multimodal_model}` ({mm_version})",
        f"- goal: {config.goal.describe()} on the `{config.val_split}` split → "
        f"**tau = {spec.threshold:.4f}** ({spec.confidence_mode} confidence)",
        f"- temperatures: text {spec.text_temperature:.3f}, multimodal {spec.multimodal_temperature:.3f}"
        f" (ECE text {v['ece']['text'][0]:.3f} → {v['ece']['text'][1]:.3f}, multimodal "
        f"{v['ece']['multimodal'][0]:.3f} → {v['ece']['multimodal'][1]:.3f})",
        f"- cost per product on this machine ({config.cost_sample} raw products, image decoding + "
        f"encoders + head): text stage {v['cost_ms']['text']} ms; multimodal stage after the text "
        f"stage (reusing its text vectors) {v['cost_ms']['multimodal_after_text']} ms; multimodal "
        f"alone {v['cost_ms']['multimodal']} ms. Cascade cost = text + escalation x multimodal "
        "after text.", "",
        "| split | escalation | hF | hP | hR | cascade ms/product | text-only hF | multimodal-only hF |",
        "|---|---|---|---|---|---|---|---|"]
    for name in (config.val_split, config.test_split):
        p, c = v["val" if name == config.val_split else "test"], curves[name]
        cost = f"{p['cost_ms']:.2f}" if math.isfinite(p["cost_ms"]) else "n/a"
        lines.append(f"| {name} | {p['escalation_rate']:.1%} | {100 * p['hF']:.2f} | "
                     f"{100 * p['hP']:.2f} | {100 * p['hR']:.2f} | {cost} | "
                     f"{100 * c.text_only_hf:.2f} | {100 * c.multimodal_only_hf:.2f} |")
    test = curves[config.test_split]
    lines += ["", f"Points of the `{config.test_split}` curve (tau → escalation, hF, cost):", "",
              "| tau | escalation | hF | ms/product |", "|---|---|---|---|"]
    for rate in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0):
        k = int(np.searchsorted(test.escalation_rate, rate - 1e-12))
        k = min(k, len(test.threshold) - 1)
        cost = f"{test.cost_ms[k]:.2f}" if np.isfinite(test.cost_ms[k]) else "n/a"
        tau = "inf" if np.isinf(test.threshold[k]) else f"{test.threshold[k]:.4f}"
        lines.append(f"| {tau} | {test.escalation_rate[k]:.1%} | {100 * test.hf[k]:.2f} | {cost} |")
    lines += ["", "![hF vs escalation](cascade_curve.png)", ""]
    return "\n".join(lines)

