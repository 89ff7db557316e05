"""The evaluation report: ``results.json``, ``report.md`` and PNG plots (matplotlib, Agg backend).

Plots (per fold that has predictions; the "best" model is the grid model with the highest hF):
- ``hf_by_model.png``: hF of every model in every fold (grouped bars).
- ``per_category_f1_<fold>.png``: per-category F1 of the best model beside the TF-IDF baseline, for
  the categories with the most test products.
- ``confusion_level<l>_<fold>.png``: row-normalised confusion of the best model at levels 0 and 1
  (at most ``MAX_CLASSES`` classes by support; the rest pooled as "other").
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np

from prodcat.core import storage
from prodcat.core.metrics import class_paths, nodes_of, real_paths
from prodcat.core.report import figure, fmt, markdown_table, save_png
from prodcat.core.taxonomy import Taxonomy

MAX_CATEGORIES = 40
MAX_CLASSES = 20
MAX_CONFUSIONS = 6


def best_grid_model(results: list[dict], fold: str) -> str | None:
    """The grid model with the highest hF in ``fold`` (None when the fold has none): a description
    of that fold's results, never a model choice (on a test fold it would be choosing on test)."""
    rows = [r for r in summarize(results) if r["fold"] == fold and r["kind"] in ("grid", "model")]
    return max(rows, key=lambda r: r["hF"])["model"] if rows else None


def first_grid_model(results: list[dict], fold: str) -> str | None:
    """The fold's default: the model named ``default``, else the config's first model."""
    models = [r["model"] for r in results if r["fold"] == fold and r["kind"] in ("grid", "model")]
    return "default" if "default" in models else (models[0] if models else None)


def summarize(rows: list[dict]) -> list[dict]:
    """One row per (fold, model) over the seeds: the first seed's row with ``hF`` the mean over
    seeds, ``hF_seeds`` each seed's, ``hF_spread`` ``[min, max]`` and ``hF_ci`` the mean of the
    seeds' bootstrap intervals (rows without a seed count as one seed)."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["fold"], r["model"]), []).append(r)
    out = []
    for group in groups.values():
        hfs = [g["hF"] for g in group]
        row = {**group[0], "hF": float(np.mean(hfs)), "hF_seeds": hfs,
               "hF_spread": [float(min(hfs)), float(max(hfs))]}
        cis = [g["hF_ci"] for g in group if "hF_ci" in g]
        if cis:
            row["hF_ci"] = [float(np.mean([c[0] for c in cis])), float(np.mean([c[1] for c in cis]))]
        for key in ("hP", "hR", "accuracy", "path_consistency"):
            if all(key in g for g in group):
                row[key] = float(np.mean([g[key] for g in group]))
        out.append(row)
    return out


def _hf_ci(r: dict) -> str:
    low, high = r.get("hF_ci", [float("nan"), float("nan")])
    spread = r.get("hF_spread")
    if spread and len(r.get("hF_seeds", [])) > 1:
        return f"{r['hF']:.3f} ({spread[0]:.3f}–{spread[1]:.3f}) [{low:.3f}, {high:.3f}]"
    return f"{r['hF']:.3f} [{low:.3f}, {high:.3f}]"


def nested_scores(results: dict) -> dict[str, dict[str, float]]:
    """Per model, the validation scores for choosing it: ``in_platform_val`` and, per platform P,
    ``nested_<P>``: the mean hF over the ``transfer_val`` pairs among the other platforms (a
    leave-one-platform-out inside the training platforms of the outer fold that holds out P). No
    mean over P: a mean over every pair reads pairs that train on or score P, so it may not choose
    a model for the fold that holds out P."""
    rows = results["results"]
    pairs = {f["fold"]: (f["train_platforms"][0], f["test_platforms"][0])
             for f in results["folds"] if f["protocol"] == "transfer_val"}
    platforms = sorted({p for pair in pairs.values() for p in pair})
    out: dict[str, dict[str, float]] = {}
    for r in summarize(rows):
        model = out.setdefault(r["model"], {})
        if r["fold"] == "in_platform_val":
            model["in_platform_val"] = r["hF"]
    for name, model in out.items():
        hf = {pairs[r["fold"]]: r["hF"] for r in summarize(rows) if r["model"] == name and r["fold"] in pairs}
        for held_out in platforms:
            inner = [v for (a, b), v in hf.items() if held_out not in (a, b)]
            if inner:
                model[f"nested_{held_out}"] = float(np.mean(inner))
    return out


def selection_markdown(results: dict) -> list[str]:
    """The validation table models are chosen by (best per column in bold)."""
    scores = nested_scores(results)
    columns = sorted({k for s in scores.values() for k in s}, key=lambda k: (k != "in_platform_val", k))
    if not columns:
        return []
    best = {c: max((s.get(c, -1.0) for s in scores.values())) for c in columns}
    rows = [[m, *[("**" + fmt(s[c]) + "**" if s.get(c) == best[c] else fmt(s[c])) if c in s else "-"
                  for c in columns]] for m, s in scores.items()]
    return ["## Choosing a model on validation (never a test fold)", "",
            "`in_platform_val`: hF on the calibration split (rows neither early stopping nor "
            "decision-level fusion's weights read), trained on every platform's training split: "
            "the in-platform choice. `nested_P`: the mean hF over the ordered pairs of the *other* "
            "platforms (train on one's train split, score the other's validation split): the "
            "leave-one-platform-out inside the training platforms of the fold that holds out P; "
            "the choice for that fold is made on this column alone.",
            "", markdown_table(["model", *columns], rows), ""]


def _data_line(ds: dict) -> list[str]:
    """The products used against the catalogue's, and store rows skipped as unreadable."""
    counts = ds.get("counts")
    if not counts:
        return []
    line = (f"Data: {ds['rows']:,} labelled products used of {counts['labelled_products']:,} "
            f"labelled ({counts['catalogue_products']:,} products in the catalogue); "
            f"{counts['labelled_without_vectors']:,} labelled products have no store row; ")
    line += (f"**{counts['skipped_unreadable_rows']:,} store rows in "
             f"{len(counts['skipped_unreadable_parts'])} unreadable part(s) skipped** "
             f"(--skip-unreadable: {', '.join(counts['skipped_unreadable_parts'])})."
             if counts["skipped_unreadable_parts"] else "no store part skipped.")
    return [line, ""]


def results_markdown(results: dict) -> str:
    """The Markdown report: folds and coverage, hF with 95 % intervals by model and fold (mean and
    spread over seeds), the comparisons with the reference model and the error ratio, every other
    row against the default, what the decision-level models chose, then one table per fold."""
    raw, folds = results["results"], results["folds"]
    rows = summarize(raw)
    seeds = results.get("seeds") or sorted({r.get("seed", 0) for r in raw})
    levels = sorted({int(k[5:-9]) for r in rows for k in r if k.startswith("level") and k.endswith("_macro_f1")})
    ds = results["dataset"]
    lines = ["# Evaluation", "",
             f"Products {ds['products']}, embedding store {ds['embeddings']} (features "
             f"{', '.join(ds['features'])}), {ds['rows']:,} labelled products with embeddings on "
             f"{', '.join(ds['platforms'])}; taxonomy {ds['taxonomy_version']}. Seeds "
             f"{', '.join(map(str, seeds))}. Total time {results['seconds']:.0f} s.", "", *_data_line(ds),
             "hF is scored on the path each model outputs, level by level (an invalid path loses "
             "credit for its wrong nodes); brackets are 95 % bootstrap intervals over near-duplicate "
             "groups of the test products" + (" (the mean of the seeds' intervals; parentheses: the "
                                              "lowest and highest hF over the seeds, each seed a "
                                              "different training subsample)" if len(seeds) > 1 else "")
             + ". Each fold's label space is its training rows' categories; a model of a "
             "leave-one-platform-out fold reads nothing of the held-out platform before its test.",
             "", "## Folds", ""]
    lines.append(markdown_table(
        ["fold", "train on", "test on", "train rows", "test rows (covered / all)", "coverage",
         "categories covered", "test groups"],
        [[f["fold"], ", ".join(f["train_platforms"]),
          ", ".join(f["test_platforms"]) + (f" ({', '.join(f['test_splits'])} split{'s' if len(f['test_splits']) > 1 else ''})" if f["test_splits"] else " (all splits)"),
          f["n_train"], f"{f['n_test']:,} / {f['n_test_all']:,}", f"{f['coverage']:.1%}",
          f"{f['covered_categories']} / {f['test_categories']}", f.get("test_groups", "-")]
         for f in folds]))
    lines += ["", "Coverage: the share of the test platforms' labelled products whose category "
              "occurs in the training rows; the rest cannot be predicted by any model trained without "
              "it and is reported, not scored.", ""]
    lines += finetune_markdown(folds)
    lines += selection_markdown(results)
    fold_names = [f["fold"] for f in folds if any(r["fold"] == f["fold"] for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["fold"], r["model"]): r for r in rows}
    lines += ["## hF [95 % CI] by model and fold", "", markdown_table(
        ["model", *fold_names], [[m, *[_hf_ci(by[(f, m)]) if (f, m) in by else "-" for f in fold_names]]
                                 for m in models])]
    lines += comparison_markdown(results.get("comparisons") or [], seeds)
    lines += error_ratio_markdown(rows, reference_of(results))
    lines += against_default_markdown(results.get("against_default") or [], seeds)
    lines += choices_markdown(raw)
    lenient = [r for r in rows if r.get("path_consistency", 1.0) < 1.0 and "hF_lenient" in r]
    if lenient:
        lines += ["", "## Invalid paths: the strict hF against the old lenient one", "",
                  "The lenient hF scored only the deepest output node with its own ancestors, so an "
                  "invalid path lost nothing; the same predictions, scored both ways:", "",
                  markdown_table(["fold", "model", "valid paths", "hF (output path)", "lenient hF"],
                                 [[r["fold"], r["model"], f"{100 * r['path_consistency']:.1f} %",
                                   r["hF"], r["hF_lenient"]] for r in lenient])]
    for fold in fold_names:
        table_rows = []
        for r in sorted((r for r in rows if r["fold"] == fold), key=lambda r: -r["hF"]):
            table_rows.append([r["model"], r["modality"], r["fusion"], r["masking"], _hf_ci(r),
                               r["hP"], r["hR"], *[r.get(f"level{l}_macro_f1", float("nan")) for l in levels],
                               r.get("path_consistency", float("nan")), r.get("accuracy", float("nan")),
                               int(r["n"]), r.get("epochs", "-"), fmt(r.get("train_seconds", float("nan")), 1)])
        lines += ["", f"## {fold}", "", markdown_table(
            ["model", "modality", "fusion", "masking", "hF [95 % CI]", "hP", "hR",
             *[f"L{l} macro-F1" for l in levels], "valid paths", "accuracy", "n", "epochs", "fit s"],
            table_rows)]
        best = best_grid_model(raw, fold)
        if best:
            r = by[(fold, best)]
            per = ", ".join(f"{p} {v:.3f}" for p, v in r.get("per_platform_hF", {}).items())
            lines += ["", f"Highest hF in this fold: **{best}** (hF {_hf_ci(r)}; per platform: "
                      f"{per}); a description, not a choice: models are chosen on validation."]
    return "\n".join(lines) + "\n"


def finetune_markdown(folds: list[dict]) -> list[str]:
    """The fine-tuned text encoders of the folds (:mod:`prodcat.evaluate.finetuning`): each fold's
    own and, with ``finetune.nested``, one per training platform left out (what that platform's
    cross-platform held-out set reads); empty when no fold fine-tuned."""
    rows = []
    for f in folds:
        for tuned in f.get("finetune_seeds") or ([f["finetune"]] if f.get("finetune") else []):
            for t, used in [(tuned, "the fold's models")] + [
                    (i, f"held-out set of {i['without']}") for i in tuned.get("inner", [])]:
                rows.append([f["fold"], t["fold"], str(tuned.get("seed", "")),
                             ", ".join(t.get("platforms", f["train_platforms"])), used,
                             f"{t['train_products']:,}", fmt(t["products_per_s"], 1),
                             fmt(t["seconds"], 0) + (" (reused)" if t.get("reused") else ""),
                             f"{t['embedded']:,}", str(t["fingerprint"])[:12]])
    if not rows:
        return []
    return ["## Fine-tuned text encoders", "",
            "Each fine-tuned on the listed platforms' training split only; its vectors are read by "
            "the models of the fold, or (nested) by the cross-platform held-out set of the platform "
            "it left out, so the fine-tuned component is chosen on a platform its encoder never read. "
            "Seed: the training subsample it was fine-tuned on (with `finetune.per_seed`, one encoder "
            "per seed). An encoder with the same platforms, seed and settings is fine-tuned once and reused "
            "(its seconds are those of the run that made it); embedded: the rows this fold read.",
            "", markdown_table(["fold", "encoder", "seed", "fine-tuned on", "read by", "products",
                                "products/s", "seconds", "embedded", "fingerprint"], rows), ""]


def by_row(comparisons: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """``{(fold, model): its paired comparisons, one per seed}``, in the order they came."""
    grouped: dict[tuple[str, str], list[dict]] = {}
    for c in comparisons:
        grouped.setdefault((c["fold"], c["model"]), []).append(c)
    return grouped


def ahead_of_default(against_default: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """``[(fold, model, its comparisons, one per seed)]`` of the rows ahead of the fold's default
    by a real difference (paired 95 % interval over near-duplicate groups above 0) on every seed,
    from ``results["against_default"]``; empty when no row is (issue 19: "no component and no
    reference row beats the default by a real difference on any fold")."""
    return [(fold, model, cs) for (fold, model), cs in by_row(against_default).items()
            if all(c["real"] and c["difference"] > 0 for c in cs)]


def against_default_markdown(against_default: list[dict], seeds: list) -> list[str]:
    """Every other row of each fold (ablations, components' reference rows, the baseline) against
    the fold's default, paired over the same test products, then one line naming the rows ahead
    of it by a real difference on every seed (or saying none is)."""
    if not against_default:
        return []
    ahead = ahead_of_default(against_default)
    line = ("No row is ahead of the default by a real difference on any fold." if not ahead else
            "Ahead of the default by a real difference" + (" on every seed" if len(seeds) > 1 else "")
            + ": " + "; ".join(f"{model} in {fold} ({100 * np.mean([c['difference'] for c in cs]):+.2f} points)"
                               for fold, model, cs in ahead) + ".")
    return comparison_markdown(against_default, seeds, "Every row against the default") + ["", line]


def comparison_markdown(comparisons: list[dict], seeds: list, title: str | None = None) -> list[str]:
    """Every model against the reference: the paired bootstrap difference per seed and how many
    seeds call it real (``title``: the section's heading, by default "Against <reference>")."""
    if not comparisons:
        return []
    table = []
    for (fold, model), cs in by_row(comparisons).items():
        better = sum(c["real"] and c["difference"] > 0 for c in cs)
        worse = sum(c["real"] and c["difference"] < 0 for c in cs)
        verdict = (f"{model} beats" if better == len(cs) else f"{cs[0]['reference']} beats" if worse == len(cs)
                   else "no real difference" if not better and not worse
                   else f"mixed ({better} better, {worse} worse of {len(cs)})")
        table.append([fold, model, f"{100 * np.mean([c['difference'] for c in cs]):+.2f}",
                      "; ".join(f"[{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]" for c in cs), verdict])
    title = title or f"Against {comparisons[0]['reference']}"
    return ["", f"## {title} (paired bootstrap over groups)", "",
            "A difference is real when its 95 % interval excludes 0" + (
                f"; one interval per seed ({', '.join(map(str, seeds))}), and a verdict holds when "
                "every seed agrees" if len(seeds) > 1 else "") + ".", "",
            markdown_table(["fold", "model", "hF difference (points)", "95 % CI", "verdict"], table)]


def reference_of(results: dict) -> str:
    """The reference model's name (a merged report keeps the first config's)."""
    config = results.get("config") or {}
    config = config[0] if isinstance(config, list) and config else config
    return config.get("reference", "tfidf") if isinstance(config, dict) else "tfidf"


def error_ratio_markdown(rows: list[dict], reference: str) -> list[str]:
    """Per fold, ``(1 - hF default) / (1 - hF reference)``: the share of the reference's errors
    the default still makes (the goal: <= 0.7)."""
    by = {(r["fold"], r["model"]): r for r in rows}
    table = []
    for fold in dict.fromkeys(r["fold"] for r in rows):
        default = first_grid_model(rows, fold)
        if default is None or (fold, reference) not in by:
            continue
        d, ref = by[(fold, default)]["hF"], by[(fold, reference)]["hF"]
        ratio = (1 - d) / (1 - ref) if ref < 1 else float("nan")
        table.append([fold, f"{d:.4f}", f"{ref:.4f}", f"{ratio:.2f}", "yes" if ratio <= 0.7 else "no"])
    if not table:
        return []
    return ["", f"## Error ratio: the default's errors against {reference}'s", "",
            "(1 − hF default) / (1 − hF reference), means over seeds; the goal is ≤ 0.7 (30 % "
            "fewer errors than the tuned lexical baseline).", "",
            markdown_table(["fold", "hF default", f"hF {reference}", "error ratio", "≤ 0.7"], table)]


def choices_markdown(rows: list[dict]) -> list[str]:
    """What each decision-level model chose inside its fold (on held-out products of the
    training platforms): component weights, decoding, label-prior correction, lexical settings
    (first seed)."""
    chosen = [r for r in rows if r.get("combiner") and r.get("seed", 0) == rows[0].get("seed", 0)]
    if not chosen:
        return []
    table = []
    for r in chosen:
        c = r["combiner"]
        lexical = c.get("settings", {}).get("lexical")
        table.append([r["fold"], r["model"], _chosen(c),
                      ", ".join(f"{k} {v:.2f}" for k, v in c["weights"].items()), c["decoding"],
                      prior_label(c),
                      ", ".join(f"{k}={v}" for k, v in lexical.items()) if lexical else "-",
                      "; ".join(f"{h['name']} ({h['products']:,})" for h in c.get("heldout", []))])
    return ["", "## What the decision-level models chose (held-out products of the training platforms)", "",
            "Candidate: what the model's choice rule kept (`model.decision.choice`); for the "
            "paired rule, the fitted weights' held-out hF minus equal weights' (paired 95 % interval "
            "over near-duplicate groups) beside it: fitted weights are kept only when it is above 0. "
            "Cross-fitted: each held-out set scored by weights fitted on the other sets "
            "(`model.decision.crossfit`); in sample: by weights fitted on it too. Prior: how the "
            "combination counts the training label prior (`model.decision.priors`: none, once, "
            "uniform, adapt; fitted, with the share of it removed).", "",
            markdown_table(["fold", "model", "candidate", "weights", "decoding", "prior", "lexical",
                            "chosen on (products)"], table)]


def prior_label(combiner: dict) -> str:
    """The prior correction a combiner record names (``none`` when it names none), with its share
    in [0, 1] when ``fitted``: ``fitted share 0.39`` (so a line that also names the *fitted weights*
    candidate, ``fitted / best_path / prior fitted share 0.39``, says which is which)."""
    prior = combiner.get("prior", "none")
    share = combiner.get("prior_share")
    return f"{prior} share {share:.2f}" if share is not None else prior


def _chosen(combiner: dict) -> str:
    """The chosen candidate, with the fitted weights' held-out difference to equal weights."""
    chosen = combiner.get("chosen") or {}
    text = chosen.get("candidate", "-")
    fitted = [c for c in combiner.get("candidates", []) if c["candidate"] == "fitted" and "vs_equal" in c]
    if fitted:
        best = max(fitted, key=lambda c: c["hF"])
        e, lo, hi = (100 * v for v in best["vs_equal"])
        where = "cross-fitted" if best.get("out_of_sample") else "in sample"
        text += f" (fitted − equal {e:+.2f} [{lo:+.2f}, {hi:+.2f}], {where})"
    return text


def plot_hf(results: dict, uri: str) -> None:
    """Grouped bars: hF per model (bars) per fold (groups)."""
    import matplotlib.pyplot as plt

    rows = summarize(results["results"])
    folds = list(dict.fromkeys(r["fold"] for r in rows))
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["fold"], r["model"]): r["hF"] for r in rows}
    width = 0.8 / max(len(models), 1)
    fig, ax = figure(figsize=(max(6, 1.6 * len(folds) + 0.15 * len(models) * len(folds)), 4.5))
    cmap = plt.get_cmap("tab20")
    for i, m in enumerate(models):
        ax.bar(np.arange(len(folds)) + i * width, [by.get((f, m), 0.0) for f in folds], width,
               label=m, color=cmap(i % 20))
    ax.set_xticks(np.arange(len(folds)) + 0.4 - width / 2, folds)
    ax.set_ylabel("hierarchical F1")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    ax.set_title("hF by model and fold")
    save_png(fig, uri)


def per_category_f1(taxonomy: Taxonomy, true: np.ndarray, pred: np.ndarray) -> dict[int, tuple[float, int]]:
    """``{category id: (F1, support)}`` over the true categories (virtual node = its parent)."""
    from sklearn.metrics import f1_score

    t, p = taxonomy.ids[true], taxonomy.ids[pred]
    labels = np.unique(t)
    f1 = f1_score(t, p, labels=labels, average=None, zero_division=0)
    support = {int(c): int((t == c).sum()) for c in labels}
    return {int(c): (float(v), support[int(c)]) for c, v in zip(labels, f1)}


def plot_per_category(taxonomy: Taxonomy, true: np.ndarray, models: dict[str, np.ndarray],
                      uri: str, title: str) -> None:
    """Horizontal bars: per-category F1 of each model in ``models``, top categories by support."""

    scores = {m: per_category_f1(taxonomy, true, p) for m, p in models.items()}
    first = next(iter(scores.values()))
    cats = sorted(first, key=lambda c: -first[c][1])[:MAX_CATEGORIES]
    names = [f"{taxonomy.path_of_id(c).split(' > ')[-1][:28]} ({first[c][1]})" for c in cats]
    height = 0.8 / len(models)
    fig, ax = figure(figsize=(8, 0.28 * len(cats) + 1.5))
    for i, (m, s) in enumerate(scores.items()):
        ax.barh(np.arange(len(cats)) + i * height, [s[c][0] for c in cats], height, label=m)
    ax.set_yticks(np.arange(len(cats)) + 0.4 - height / 2, names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (category = exact label; test products in brackets)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    save_png(fig, uri)


def level_labels(taxonomy: Taxonomy, nodes: np.ndarray, level: int) -> np.ndarray:
    """The real ancestor node at ``level`` of each node (-1 when shallower)."""

    paths = real_paths(taxonomy)
    return paths[np.asarray(nodes, np.int64), level] if level < paths.shape[1] else np.full(len(nodes), -1)


def plot_confusion(taxonomy: Taxonomy, true: np.ndarray, pred_classes: np.ndarray, level: int,
                   uri: str, title: str) -> bool:
    """Row-normalised confusion at ``level`` of true nodes ``[B]`` against the node each output
    path (``pred_classes [B, L]``) holds there; False (nothing written) when no product reaches it."""
    t = level_labels(taxonomy, true, level)
    p = class_paths(taxonomy, pred_classes)[:, level]
    keep = t >= 0
    if not keep.any():
        return False
    t, p = t[keep], p[keep]
    classes, counts = np.unique(t, return_counts=True)
    top = classes[np.argsort(-counts)][:MAX_CLASSES]
    index = {int(c): i for i, c in enumerate(top)}
    other = len(top)
    matrix = np.zeros((len(top) + 1, len(top) + 1))
    for a, b in zip(t, p):
        matrix[index.get(int(a), other), index.get(int(b), other)] += 1
    matrix = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    names = [taxonomy.names[int(c)][:24] for c in top] + ["other / none"]
    size = 0.35 * len(names) + 2.5
    fig, ax = figure(figsize=(size + 1, size))
    im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    save_png(fig, uri)
    return True


def top_confusions(taxonomy: Taxonomy, true_ids, predicted_ids, limit: int = MAX_CONFUSIONS) -> list[dict]:
    """The most frequent wrong outputs: ``[{"true", "predicted", "products", "share_of_errors"}]``,
    most frequent first, at most ``limit`` (every pair when ``limit`` is None).

    Args:
        true_ids: int ``[B]`` true category ids.
        predicted_ids: int ``[B]`` category id of each output's deepest node (a virtual "X itself"
            node counts as X; 0, the root, for no output).

    ``true`` and ``predicted`` are the categories' last path names (the full path when names
    repeat); ``share_of_errors`` in [0, 1] is the pair's share of all wrong outputs (an output is
    wrong when its category id differs from the true one, the accuracy's definition).

    Raises:
        ValueError: when the two arrays differ in length.
    """
    t, p = np.asarray(true_ids, np.int64), np.asarray(predicted_ids, np.int64)
    if t.shape != p.shape:
        raise ValueError(f"true_ids {t.shape} and predicted_ids {p.shape} differ in shape")
    wrong = t != p
    if not wrong.any():
        return []
    pairs, counts = np.unique(np.stack([t[wrong], p[wrong]], axis=1), axis=0, return_counts=True)
    order = np.argsort(-counts, kind="stable")[:limit]
    leaves = Counter(taxonomy.path_of_id(c).split(" > ")[-1] for c in {int(c) for c in taxonomy.ids[1:]})

    def name(category_id: int) -> str:
        if category_id <= 0:
            return "(no output)"
        path = taxonomy.path_of_id(category_id)
        leaf = path.split(" > ")[-1]
        return leaf if leaves[leaf] == 1 else path

    total = int(wrong.sum())
    return [{"true": name(int(pairs[i, 0])), "predicted": name(int(pairs[i, 1])),
             "products": int(counts[i]), "share_of_errors": float(counts[i] / total)} for i in order]


def confusions_markdown(confusions: dict[tuple[str, str], list[dict]]) -> list[str]:
    """The report's "Largest confusions" section from ``{(fold, model): top_confusions(...)}``."""
    rows = [[fold, model, c["true"], c["predicted"], c["products"], f"{c['share_of_errors']:.0%}"]
            for (fold, model), cs in confusions.items() for c in cs]
    if not rows:
        return []
    return ["", "## Largest confusions", "",
            f"The most frequent wrong outputs of the default and the reference in each fold (at most "
            f"{MAX_CONFUSIONS}; the first seed): true category, output category, products, share of "
            "that model's wrong outputs. All of them: `confusions.csv`.", "",
            markdown_table(["fold", "model", "true", "output", "products", "share of errors"], rows)]


RESULT_COLUMNS = ("fold", "protocol", "model", "kind", "seed", "n", "hF", "hF_low", "hF_high", "hP",
                  "hR", "accuracy", "path_consistency", "train_seconds")
COMPARISON_COLUMNS = ("fold", "model", "reference", "seed", "difference", "low", "high", "real")
CONFUSION_COLUMNS = ("fold", "model", "true", "predicted", "products", "share_of_errors")


def _csv(rows: list[dict], columns: tuple[str, ...]) -> str:
    import csv
    import io

    out = io.StringIO()
    writer = csv.DictWriter(out, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def results_csv(rows: list[dict]) -> str:
    """``results.csv``: one line per (fold, model, seed) with hF, its interval, hP, hR."""
    return _csv([{**r, "hF_low": r.get("hF_ci", [None, None])[0], "hF_high": r.get("hF_ci", [None, None])[1]}
                 for r in rows], RESULT_COLUMNS)


def comparisons_csv(comparisons: list[dict]) -> str:
    """``comparisons.csv``: one line per (fold, model, seed): hF(model) - hF(reference), the paired
    bootstrap interval, whether it excludes 0."""
    return _csv(comparisons, COMPARISON_COLUMNS)


def fold_confusions(results: dict, predictions: dict, limit: int | None = MAX_CONFUSIONS
                    ) -> dict[tuple[str, str], list[dict]]:
    """``{(fold, model): top_confusions(...)}`` for each fold's default and the reference model."""
    out = {}
    reference = reference_of(results)
    for fold, pred in predictions.items():
        taxonomy = pred["taxonomy"]
        true_ids = taxonomy.ids[np.asarray(pred["true"], np.int64)]
        for model in dict.fromkeys([first_grid_model(results["results"], fold), reference]):
            if model in pred["models"]:
                out[(fold, model)] = top_confusions(
                    taxonomy, true_ids, taxonomy.ids[nodes_of(taxonomy, pred["models"][model])], limit)
    return out


def write_report(results: dict, predictions: dict, output: str, plots: bool = True) -> list[str]:
    """Write ``results.json``, ``report.md`` and (with ``plots``) the PNGs; returns the file names.

    Args:
        predictions: ``{fold: {"true": nodes [B], "taxonomy": the fold's Taxonomy,
            "models": {model: output classes [B, L]}}}``.
    """
    written = ["results.json", "report.md", "results.csv", "comparisons.csv", "against_default.csv",
               "confusions.csv"]
    storage.write_text(storage.join(output, "results.json"), json.dumps(results, indent=2, default=float))
    storage.write_text(storage.join(output, "results.csv"), results_csv(results["results"]))
    storage.write_text(storage.join(output, "comparisons.csv"), comparisons_csv(results.get("comparisons") or []))
    storage.write_text(storage.join(output, "against_default.csv"),
                       comparisons_csv(results.get("against_default") or []))
    md = results_markdown(results)
    confusions = fold_confusions(results, predictions, None)          # every pair: confusions.csv
    storage.write_text(storage.join(output, "confusions.csv"), _csv(
        [{"fold": f, "model": m, **c} for (f, m), cs in confusions.items() for c in cs], CONFUSION_COLUMNS))
    md += "\n".join(confusions_markdown({k: cs[:MAX_CONFUSIONS] for k, cs in confusions.items()})) + "\n" \
        if confusions else ""
    if plots and results["results"]:
        plot_hf(results, storage.join(output, "hf_by_model.png"))
        written.append("hf_by_model.png")
        for fold, pred in predictions.items():
            best = first_grid_model(results["results"], fold)   # the default, against the reference
            if best is None:
                continue
            taxonomy = pred["taxonomy"]
            shown = {best: nodes_of(taxonomy, pred["models"][best])}
            reference = reference_of(results)
            if reference in pred["models"]:
                shown[reference] = nodes_of(taxonomy, pred["models"][reference])
            name = f"per_category_f1_{fold}.png"
            plot_per_category(taxonomy, pred["true"], shown, storage.join(output, name),
                              f"{fold}: per-category F1")
            written.append(name)
            for level in (0, 1):
                name = f"confusion_level{level}_{fold}.png"
                if plot_confusion(taxonomy, pred["true"], pred["models"][best], level,
                                  storage.join(output, name), f"{fold}, {best}: level {level}"):
                    written.append(name)
        md += "\n## Plots\n\n" + "\n".join(f"![{n}]({n})" for n in written if n.endswith(".png")) + "\n"
    storage.write_text(storage.join(output, "report.md"), md)
    return written
