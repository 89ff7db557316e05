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

import numpy as np

from prodcat.core import storage
from prodcat.core.metrics import real_paths
from prodcat.core.report import figure, fmt, save_png
from prodcat.core.taxonomy import Taxonomy

MAX_CATEGORIES = 40
MAX_CLASSES = 20


def best_grid_model(results: list[dict], fold: str) -> str | None:
    """The grid model with the highest hF in ``fold`` (None when the fold has none)."""
    rows = [r for r in results if r["fold"] == fold and r["kind"] == "grid"]
    return max(rows, key=lambda r: r["hF"])["model"] if rows else None


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
    """The Markdown report: folds and coverage, a summary pivot, then one table per fold."""
    rows, folds = results["results"], results["folds"]
    levels = sorted({int(k[5:-9]) for r in rows for k in r if k.startswith("level") and k.endswith("_macro_f1")})
    ds = results["dataset"]
    lines = ["# Evaluation", "",
             f"Products {ds['products']}, embedding store {ds['embeddings']} (features "
             f"{', '.join(ds['features'])}), {ds['rows']:,} labelled products with embeddings on "
             f"{', '.join(ds['platforms'])}; taxonomy {ds['taxonomy_version']}. "
             f"Total time {results['seconds']:.0f} s.", "", *_data_line(ds),
             "## Folds", "", "| fold | train on | test on | train rows | test rows (covered / all) "
             "| coverage | categories covered |", "|---|---|---|---|---|---|---|"]
    for f in folds:
        split = "test split" if f["test_splits"] else "all splits"
        used = f.get("n_train_used", f["n_train"])
        train_rows = f"{f['n_train']:,}" + (f" ({used:,} used)" if used < f["n_train"] else "")
        lines.append(f"| {f['fold']} | {', '.join(f['train_platforms'])} | {', '.join(f['test_platforms'])} "
                     f"({split}) | {train_rows} | {f['n_test']:,} / {f['n_test_all']:,} | "
                     f"{f['coverage']:.1%} | {f['covered_categories']} / {f['test_categories']} |")
    lines += ["", "LOPO scores only the held-out products whose category occurs in the training "
              "platforms' training rows; coverage is that share.", ""]
    fold_names = [f["fold"] for f in folds if any(r["fold"] == f["fold"] for r in rows)]
    models = list(dict.fromkeys(r["model"] for r in rows))
    by = {(r["fold"], r["model"]): r for r in rows}
    lines += ["## hF by model and fold", "", "| model | " + " | ".join(fold_names) + " |",
              "|---|" + "---|" * len(fold_names)]
    for m in models:
        cells = [fmt(by[(f, m)]["hF"]) if (f, m) in by else "-" for f in fold_names]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    for fold in fold_names:
        lines += ["", f"## {fold}", "", "| model | modality | fusion | masking | hF | hP | hR | "
                  + " | ".join(f"L{l} macro-F1" for l in levels)
                  + " | consistency | accuracy | n | epochs | s/epoch | peak MiB |",
                  "|---|---|---|---|---|---|---|" + "---|" * len(levels) + "---|---|---|---|---|---|"]
        for r in sorted((r for r in rows if r["fold"] == fold), key=lambda r: -r["hF"]):
            lines.append("| " + " | ".join(fmt(v) for v in [
                r["model"], r["modality"], r["fusion"], r["masking"], r["hF"], r["hP"], r["hR"],
                *[r.get(f"level{l}_macro_f1", float("nan")) for l in levels],
                r.get("path_consistency", float("nan")), r.get("accuracy", float("nan")), int(r["n"]),
                r.get("epochs", "-")]) + f" | {fmt(r.get('seconds_per_epoch', float('nan')), 2)} | "
                f"{fmt(r.get('peak_memory_mb', float('nan')), 0)} |")
        best = best_grid_model(rows, fold)
        if best:
            r = by[(fold, best)]
            per = ", ".join(f"{p} {v:.3f}" for p, v in r.get("per_platform_hF", {}).items())
            lines += ["", f"Best grid model: **{best}** (hF {r['hF']:.3f}; per platform: {per})."]
            if (fold, "tfidf-linear") in by:
                lines.append(f"TF-IDF baseline hF {by[(fold, 'tfidf-linear')]['hF']:.3f}.")
    return "\n".join(lines) + "\n"


def plot_hf(results: dict, uri: str) -> None:
    """Grouped bars: hF per model (bars) per fold (groups)."""
    import matplotlib.pyplot as plt

    rows = results["results"]
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


def plot_confusion(taxonomy: Taxonomy, true: np.ndarray, pred: np.ndarray, level: int, uri: str,
                   title: str) -> bool:
    """Row-normalised confusion at ``level``; False (nothing written) when no product reaches it."""

    t, p = level_labels(taxonomy, true, level), level_labels(taxonomy, pred, level)
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


def write_report(results: dict, predictions: dict, taxonomy: Taxonomy, output: str,
                 plots: bool = True) -> list[str]:
    """Write ``results.json``, ``report.md`` and (with ``plots``) the PNGs; returns the file names.

    Args:
        predictions: ``{fold: {"true": nodes [B], "models": {model: nodes [B]}}}``.
    """
    written = ["results.json", "report.md"]
    storage.write_text(storage.join(output, "results.json"), json.dumps(results, indent=2, default=float))
    md = results_markdown(results)
    if plots and results["results"]:
        plot_hf(results, storage.join(output, "hf_by_model.png"))
        written.append("hf_by_model.png")
        for fold, pred in predictions.items():
            best = best_grid_model(results["results"], fold)
            if best is None:
                continue
            shown = {best: pred["models"][best]}
            if "tfidf-linear" in pred["models"]:
                shown["tfidf-linear"] = pred["models"]["tfidf-linear"]
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
