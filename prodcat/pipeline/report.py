"""The main job's report: one Markdown file (with the stages' PNG plots) that a person can read
without opening code. Every figure is read from a file a stage wrote; a missing stage output is
said plainly in its section instead of failing the report."""

from __future__ import annotations

import glob
import json
import re
from pathlib import Path


def _json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _include(path: Path, folder: str) -> list[str]:
    """A stage's own Markdown report, headings pushed two levels down (so they nest under the
    section's ``##``), relative links re-rooted to ``folder``."""
    if not path.exists():
        return [f"_(not produced: {folder}/{path.name} is missing — did the stage run?)_"]
    text = path.read_text()
    text = re.sub(r"\]\((?!https?:|/|#)([^)]+)\)", lambda m: f"]({folder}/{m.group(1)})", text)
    text = re.sub(r"^(#+) ", lambda m: "##" + m.group(1) + " ", text, flags=re.M)
    return [text.strip()]


def _round(value, digits: int = 3):
    return round(value, digits) if isinstance(value, float) else value


def _latest_embed_summary(out: Path) -> dict | None:
    """The latest run summary that embedded something (else the latest one), or None."""
    summaries = [_json(Path(f)) for f in sorted(glob.glob(str(out / "embeddings" / "summary-*.json")))]
    summaries = [s for s in summaries if s]
    busy = [s for s in summaries if s.get("embedded")]
    return (busy or summaries or [None])[-1]


def _throughput(out: Path) -> list[str]:
    lines = ["| stage | figure |", "|---|---|"]
    build = _json(out / "catalog" / "build_summary.json")
    if build:
        lines.append(f"| catalog build | {build['products']:,} products in {build['seconds']} s |")
    emb = _latest_embed_summary(out)
    if emb and emb.get("embedded"):
        per = ", ".join(f"{k} {v['products_per_s_per_actor']} products/s per actor"
                        for k, v in emb["encoders"].items())
        lines.append(f"| embed | {emb['embedded']:,} products, {emb['products_per_s']} "
                     f"products/s overall ({per}); {emb['skipped_already_embedded']:,} already in the store |")
    elif emb:
        lines.append(f"| embed | nothing new to embed: {emb['skipped_already_embedded']:,} products "
                     "already in the store (no run summary with throughput is kept in it) |")
    tuned = _json(out / "finetune" / "finetune_result.json")
    if tuned:
        lines.append(f"| fine-tuning ({tuned.get('feature')}) | {tuned.get('train_products', 0):,} "
                     f"products × {len(tuned.get('history', []))} epoch(s), "
                     f"{tuned.get('products_per_s', 0):.1f} products/s, {tuned.get('seconds', 0):.0f} s |")
    inner = {p.parent.name.removeprefix("finetune-without-"): _json(p)
             for p in sorted(out.glob("finetune-without-*/finetune_result.json"))}
    if inner:
        lines.append("| fine-tuning, nested (each platform's held-out set of the stages' choice) | "
                     + "; ".join(f"without {q}: {r.get('train_products', 0):,} products, "
                                 f"{r.get('seconds', 0):.0f} s" for q, r in inner.items() if r) + " |")
    for name in ("text", "multimodal"):
        res = _json(out / "train" / name / "train_result.json")
        if res and "heldout_hF" in res.get("metrics", {}):      # decision-level fusion: no epochs
            m = res["metrics"]
            lines.append(f"| train ({name}) | decision-level fusion of {m.get('components', '?').replace(',', ', ')} "
                         f"fitted in {res['wall_seconds']:.0f} s on {m.get('train_rows', 0):,} rows; "
                         f"held-out hF {m['heldout_hF']:.4f}"
                         + (f"; chose {m['choice']} (weights / decoding / label prior)" if m.get("choice") else "")
                         + " |")
        elif res:
            lines.append(f"| train ({name}) | {res['seconds_per_epoch']:.2f} s/epoch, peak "
                         f"{res['peak_memory_mb']:.0f} MiB, val hF {res['metrics'].get('val_hF', 0):.4f} |")
    score = _json(out / "predictions" / "_summary.json")
    if score:
        stages = ", ".join(f"{k} {v} products/s" for k, v in score.get("stage_products_per_s", {}).items()
                           if v is not None)
        lines.append(f"| bulk scoring ({score.get('mode')}) | {score.get('rows', 0):,} rows, "
                     f"{score.get('products_per_s')} products/s overall ({stages}); escalation rate "
                     f"{score.get('escalation_rate')} at tau {_round(score.get('threshold'))}"
                     + ("; vectors reused from the embedding store" if score.get("features_from") else "")
                     + " |")
    demo = _json(out / "serve_demo.json")
    if demo:
        ms = sorted(r["single_request_ms"] for r in demo["rows"])
        lines.append(f"| service (single-product requests) | median {ms[len(ms) // 2]} ms, max {ms[-1]} ms "
                     f"over {len(ms)} requests |")
    return lines


def _pct(value) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) else "n/a"


def _headline(out: Path, seconds: dict[str, float], predicted: tuple[int, int]) -> list[str]:
    """The few figures a reader wants first, each read from a stage's output file;
    ``predicted`` is :func:`_prediction_counts`."""
    lines = []
    build = _json(out / "catalog" / "build_summary.json")
    if build:
        platforms = build["platforms"].values()
        read = sum(p["read"] for p in platforms)
        accepted = sum(p.get("accepted", 0) for p in platforms)
        kept = (f"{accepted:,} accepted, {build['rejects']:,} rejected (each with a reason in "
                "`catalog/rejects.parquet`)")
        if any("sampled" in p for p in platforms):
            kept += f"; the stratified sample keeps {build['products']:,} of the accepted"
        n = len(build["platforms"])
        lines.append(f"- **Products:** {read:,} records read from {n} platform{'s' * (n != 1)} "
                     f"→ {kept}; taxonomy of {build['taxonomy']['nodes']} nodes over "
                     f"{len(build['taxonomy']['nodes_per_level'])} levels.")
        groups = build.get("groups")
        if groups:
            pairs = groups["cross_split_pairs"]
            before = sum(sum(v.values()) for v in pairs["by_product_id"].values())
            after = sum(sum(v.values()) for v in pairs["by_group"].values())
            lines.append(f"- **Splits by near-duplicate group:** pairs of products sharing a title + "
                         f"description, a variant key or a perceptual image hash across splits: "
                         f"{before:,} with product-id splits → {after:,} with group splits.")
    total = sum(seconds.values())
    if total:
        lines.append(f"- **Wall time of the stages:** {total:,.0f} s ({total / 60:.1f} min).")
    evaluation = _json(out / "eval" / "results.json") or {}
    lines += _evaluation_headline(evaluation)
    lines += _recategorize_headline(out)
    cascade = _json(out / "cascade" / "cascade.json")
    if cascade and "test" in cascade.get("validation", {}):
        v = cascade["validation"]
        ends = v.get("endpoints", {}).get("test", {})
        ci = v["test"].get("hF_ci")
        ci_text = f" [95 % CI {100 * ci[0]:.2f}, {100 * ci[1]:.2f}]" if ci else ""
        ece = "; ".join(f"{k} {e[0]:.3f} → {e[1]:.3f}" for k, e in v.get("ece", {}).items())
        lines.append(f"- **Cascade (test split):** hF {100 * v['test']['hF']:.2f}{ci_text} at "
                     f"{_pct(v['test']['escalation_rate'])} escalation (tau {cascade['threshold']:.3f}, "
                     f"chosen on the {v.get('fitted_on', 'validation')} split); text-only "
                     f"{100 * ends.get('text_only_hF', float('nan')):.2f}, multimodal-only "
                     f"{100 * ends.get('multimodal_only_hF', float('nan')):.2f}; calibration error "
                     f"(ECE) before → after temperature scaling: {ece}.")
    score = _json(out / "predictions" / "_summary.json")
    if score:
        text = (f"- **Bulk scoring:** {score.get('rows', 0):,} rows in, {predicted[0]:,} rows "
                f"out, {predicted[1]:,} with an error; escalation rate "
                f"{_pct(score.get('escalation_rate'))}")
        scored = _json(out / "predictions" / "_evaluation.json")
        if scored:
            ci = scored.get("hF_ci")
            text += (f"; test-split hF {scored['hF']:.4f}"
                     + (f" [95 % CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                     + f" over {scored['products']:,} products")
        lines.append(text + ".")
    demo = _json(out / "serve_demo.json")
    if demo:
        right = sum(r["predicted_path"] == r["true_path"] for r in demo["rows"])
        lines.append(f"- **Service:** {right} of {len(demo['rows'])} real test products categorized "
                     "exactly right over HTTP (the table at the end shows each).")
    return lines or ["_(no stage output yet)_"]


def _evaluation_headline(evaluation: dict) -> list[str]:
    """Per test fold: the main job's default model against the tuned lexical baseline (mean over
    seeds, intervals, the paired-bootstrap verdict, the error ratio); the best model when it is
    another; the rows ahead of the default by a real difference, if any."""
    from prodcat.evaluate.report import ahead_of_default, by_row, reference_of, summarize

    rows = summarize(evaluation.get("results", []))
    reference = reference_of(evaluation)
    comparisons = by_row(evaluation.get("comparisons", []))
    against = evaluation.get("against_default") or []
    compared = {c["fold"] for c in against}
    ahead = ahead_of_default(against)
    lines = []
    for fold in dict.fromkeys(r["fold"] for r in rows):
        if fold.startswith(("val_", "in_platform_val")):
            continue
        mine = {r["model"]: r for r in rows if r["fold"] == fold}
        default = mine.get("default") or next((r for r in mine.values() if r.get("kind") in ("grid", "model")), None)
        baseline = mine.get(reference)
        if default is None:
            continue
        text = f"- **hF, {fold}** (test, n = {default['n']:,.0f}): {default['model']} {_ci(default)}"
        if baseline is not None:
            text += f"; {reference} (tuned lexical baseline) {_ci(baseline)}"
            found = comparisons.get((fold, default["model"]), [])
            if found:
                real = [c for c in found if c["real"]]
                if len(real) == len(found):
                    winner = default["model"] if found[0]["difference"] > 0 else reference
                    text += f" → {winner} beats ({100 * found[0]['difference']:+.2f} points "
                    text += f"[{100 * found[0]['low']:+.2f}, {100 * found[0]['high']:+.2f}])"
                else:
                    text += " → no real difference"
            if baseline["hF"] < 1:
                text += f"; error ratio {(1 - default['hF']) / (1 - baseline['hF']):.2f}"
        best = max(mine.values(), key=lambda r: r["hF"])
        if best is not default and best is not baseline:
            text += f"; best {best['model']} {_ci(best)}"
        if fold in compared:
            mine_ahead = [f"{model} ({100 * sum(c['difference'] for c in cs) / len(cs):+.2f} points)"
                          for f, model, cs in ahead if f == fold]
            text += ("; ahead of the default by a real difference: " + ", ".join(mine_ahead) if mine_ahead
                     else "; no row ahead of the default by a real difference")
        lines.append(text + ".")
    return lines


def _ci(row: dict) -> str:
    ci = row.get("hF_ci")
    return f"{row['hF']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _recategorize_headline(out: Path) -> list[str]:
    """One line per recategorized category: clusters against finer labels, purity, noise."""
    summary = _json(out / "recategorize" / "recategorize.json") or {}
    lines = []
    for entry in summary.get("categories", []):
        s = entry["scores"][entry["variant"]]["all"]
        raw = entry["scores"].get("raw+cascade", {}).get("all")
        lines.append(f"- **Recategorization of {entry['path'].split(' > ')[-1]}** ({entry['products']:,} "
                     f"products): {s['clusters']} proposed subcategories against up to {s['labels']} "
                     f"finer labels per platform; purity {s['purity']:.3f}, NMI {s['nmi']:.3f}, "
                     f"accuracy {s['accuracy']:.3f}, {_pct(s['noise_share'])} unassigned"
                     + (f" (without SimCLR: purity {raw['purity']:.3f} with {raw['clusters']} clusters)"
                        if raw else "") + ".")
    return lines


def _prediction_counts(out: Path) -> tuple[int, int]:
    """(rows, rows with an error) over the run's prediction Parquet files, read from the files
    themselves rather than a run summary, so rows written by earlier, resumed runs count too."""
    import pyarrow.parquet as pq

    rows = errors = 0
    for f in glob.glob(str(out / "predictions" / "part-*.parquet")):
        error = pq.read_table(f, columns=["error"]).column("error")
        rows += len(error)
        errors += len(error) - error.null_count
    return rows, errors


def _score_section(out: Path, predicted: tuple[int, int]) -> list[str]:
    score = _json(out / "predictions" / "_summary.json")
    if not score:
        return ["_(bulk scoring did not run)_"]
    answered = score.get("answered_by", {})
    rows = [("input", f"`{score.get('input')}`" + (f" through adapters {', '.join(score['adapters'])}"
                                                   if score.get("adapters") else "")),
            ("rows in / rows out", f"{score.get('rows', 0):,} / {predicted[0]:,}"),
            ("rows with an error (reason in the `error` column)", f"{predicted[1]:,}"),
            ("answered by the text stage / multimodal stage",
             f"{answered.get('text', 0):,} / {answered.get('multimodal', 0):,}"),
            ("escalation rate (tau)", f"{_pct(score.get('escalation_rate'))} "
                                      f"({_round(score.get('threshold'))})"),
            ("wall time", f"{score.get('wall_s')} s ({score.get('products_per_s')} products/s)"),
            ("features", f"text and image vectors reused from `{score['features_from']}` (only the "
                         "heads ran); from raw products each row is also decoded and encoded"
             if score.get("features_from") else "computed from the raw products (decode + encoders)")]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    evaluation = _json(out / "predictions" / "_evaluation.json")
    if evaluation:
        lines += ["", f"Against the true categories of the {evaluation['split']} split "
                  f"({evaluation['products']:,} products): hF {evaluation['hF']:.4f} (hP "
                  f"{evaluation['hP']:.4f}, hR {evaluation['hR']:.4f}); " + _stage_shares(evaluation)]
    lines += ["", "Machine-readable: `predictions/_summary.json`, `predictions/_evaluation.json`; "
              "the predictions themselves: `predictions/part-*.parquet`."]
    return lines


def _stage_shares(evaluation: dict) -> str:
    """Which stage answered how many of the scored products, at what hF. A stage that answered
    none (tau = 0: nothing escalated) has no keys in ``_evaluation.json`` and is said so."""
    text, mm = evaluation.get("text_products", 0), evaluation.get("multimodal_products", 0)
    first = (f"the text stage answered {text:,} of them at hF {evaluation['text_hF']:.4f}" if text
             else "the text stage answered none of them")
    second = (f"the multimodal stage the {mm:,} uncertain ones at hF {evaluation['multimodal_hF']:.4f}"
              if mm else "the multimodal stage none (nothing was escalated)")
    return f"{first}, {second}."


def _serve_section(out: Path) -> list[str]:
    demo = _json(out / "serve_demo.json")
    if not demo:
        return ["_(the service stage did not run)_"]
    lines = [f"The service was started on {demo['url']}, answered one batch request of "
             f"{len(demo['rows'])} real test-split products (HTTP {demo['batch_status']}, "
             f"{demo['batch_ms']} ms) and one request per product, then was stopped. The last column is "
             "the same batch sent again with `?abstain=0.95` (partial paths: each answer stops at the "
             "deepest level reaching the precision target; HTTP "
             f"{demo.get('abstain', {}).get('status', '-')}).", "",
             "| product | image | true category | predicted | stage | confidence | ms | with abstain=0.95 |",
             "|---|---|---|---|---|---|---|---|"]
    for r in demo["rows"]:
        conf = f"{r['confidence']:.2f}" if r["confidence"] is not None else "-"
        partial = r.get("partial_path") or "(nothing kept)"
        if r.get("stopped_at_level") is None:
            partial = "-"
        elif r.get("partial_path") != r["predicted_path"]:
            partial += f" (stopped: {r.get('stop_reason')})"
        lines.append(f"| {r['title'][:60]} | {'yes' if r['has_image'] else 'no'} | {r['true_path']} | "
                     f"{r['predicted_path']} | {r['stage']} | {conf} | {r['single_request_ms']} | {partial} |")
    return lines


def onboard_section(out: Path) -> list[str]:
    """A new platform on day one: per held-out platform the mapping suggestions against its hand
    mapping, and partial paths per fold (in-platform from the cascade, LOPO from the onboard stage)."""
    from prodcat.onboard.measure import ABSTAIN_HEADERS, SUMMARY_HEADERS, abstain_rows, summary_rows

    data = _json(out / "onboard" / "onboard.json")
    if not data:
        return ["_(the onboard stage did not run)_"]
    folds = data["folds"]
    target = data["config"]["abstain_target"]
    lines = ["Each platform met as a new one: the fold's model (trained without it) suggests a Google "
             "category per source category; the suggestions are compared with the hand-made mapping "
             "(details, per-fold review pages and the listed uncoverable categories: "
             "[onboard/report.md](onboard/report.md)).", "",
             "| " + " | ".join(SUMMARY_HEADERS) + " |", "|" + "---|" * len(SUMMARY_HEADERS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in summary_rows(folds)]
    rows = abstain_rows(folds, target)
    cascade = (_json(out / "cascade" / "cascade.json") or {}).get("validation", {}).get("abstain", {})
    test = cascade.get("test")
    if test:
        full = next(p for p in test if p["target"] is None)
        at = next((p for p in test if p["target"] == target), None)
        if at:
            rows.insert(0, ["in-platform (cascade, test)", "-", f"{100 * full['hP']:.1f}",
                            f"{100 * full['hR']:.1f}", f"{100 * at['hP']:.1f}", f"{100 * at['hR']:.1f}",
                            _pct(at["full_paths"]), _pct(at["answered"])])
    lines += ["", f"Partial paths at a target precision of {target} per level (thresholds from each "
              "model's calibration split; strict hF scores the partial path):", "",
              "| " + " | ".join(ABSTAIN_HEADERS) + " |", "|" + "---|" * len(ABSTAIN_HEADERS)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    lines += ["", "![suggestion coverage against agreement](onboard/agreement.png) "
              "![partial paths per fold](onboard/abstain_curve.png)"]
    return lines


def write_report(out: Path, timings: dict[str, float], config: dict) -> Path:
    """Write ``<out>/report.md`` from the stages' outputs; returns its path."""
    out = Path(out)
    state = _json(out / "pipeline.json") or {}
    seconds = {**state.get("stage_seconds", {}), **timings}
    predicted = _prediction_counts(out)
    size = "all products" if config.get("full") else (
        f"stratified sample: at most {config.get('sample_per_category')} products per (platform, "
        "Google category), chosen by a hash of product_id")
    lines = ["# prodcat main job report", "",
             f"Run folder `{out}`; size: {size}. Stage wall times (s): "
             + ", ".join(f"{k} {v}" for k, v in seconds.items()) + ".", "",
             "## Headline figures", ""] + _headline(out, seconds, predicted)
    lines += ["", "## Throughput of each stage", ""] + _throughput(out)
    lines += ["", "## Data and unified taxonomy", ""] + _include(out / "catalog" / "build_summary.md", "catalog")
    lines += ["", "## Evaluation: per-level metrics, leave-one-platform-out, baselines", ""]
    lines += _include(out / "eval" / "report.md", "eval")
    lines += ["", "## Recategorization: finer subcategories found in the data", ""]
    lines += _include(out / "recategorize" / "report.md", "recategorize")
    lines += ["", "## Two-stage cascade: hF against escalation rate", ""]
    lines += _include(out / "cascade" / "cascade_report.md", "cascade")
    lines += ["", "## Bulk scoring", ""]
    lines += _score_section(out, predicted)
    lines += ["", "## A new platform on day one: suggested mappings, partial paths", ""]
    lines += onboard_section(out)
    lines += ["", "## The service, answering real products over HTTP", ""] + _serve_section(out)
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
