"""``prodcat recategorize propose``: the categories of a catalogue → proposed subcategories.

The driver loads each category's products and stored embeddings, runs one Ray task per category
(:func:`prodcat.recategorize.task.recategorize_category`, ``num_cpus`` each, fractions allowed,
so several categories run side by side) and, as each finishes, writes its outputs; then the
run's report and the review file.

Output folder (``config.output``, local or ``s3://``)::

    recategorize.json                   config; per category: scores per variant and platform,
                                        clusters (size, platforms, names, examples), timings
    report.md                           what a person reads (tables, names, titles, the PNGs)
    accept.yaml                         the review file: set accept: true (and a name) per
                                        subcategory, then `prodcat recategorize apply`
    review.html                         the same review as a page: images, labels inside, tick
                                        and rename, download accept.yaml
    <category id>/assignments.parquet   product_id, platform, finer_label, title, cluster,
                                        first_level_cluster, probability, x, y
    <category id>/scatter.png           2-D UMAP coloured by cluster and by finer label
    <category id>/cluster_<k>.png       representative products of cluster k
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import pyarrow as pa

from prodcat.core import storage
from prodcat.core.console import Progress, say
from prodcat.core.runtime import ensure_ray
from prodcat.recategorize.config import RecategorizeConfig
from prodcat.recategorize.data import CategoryData, load_categories
from prodcat.recategorize.extension import write_accept_template
from prodcat.recategorize.figures import example_grid, scatter
from prodcat.recategorize.page import write_review_page
from prodcat.recategorize.report import write_report
from prodcat.recategorize.task import CategoryResult, recategorize_category

SUMMARY = "recategorize.json"  # read back by prodcat.recategorize.extension
ASSIGNMENTS = "assignments.parquet"
HEARTBEAT_S = 30.0  # seconds between "still running" lines


def fingerprint(category_id: int, product_ids, clusters) -> str:
    """16 hex digits of the sha256 of a category's (product_id, cluster) assignments: the review
    file names it, so `apply` refuses a review made for other proposals."""
    digest = hashlib.sha256(str(category_id).encode())
    for pid, cluster in zip(product_ids, clusters):
        digest.update(f"\n{pid}\t{int(cluster)}".encode())
    return digest.hexdigest()[:16]


def _assignments(data: CategoryData, result: CategoryResult) -> pa.Table:
    return pa.table({
        "product_id": pa.array(data.product_id.tolist(), pa.string()),
        "platform": pa.array(data.platform.tolist(), pa.string()),
        "finer_label": pa.array(data.finer_label.tolist(), pa.string()),
        "title": pa.array(data.title.tolist(), pa.string()),
        "cluster": pa.array(result.labels, pa.int64()),
        "first_level_cluster": pa.array(result.first_level, pa.int64()),
        "probability": pa.array(result.probability, pa.float32()),
        "x": pa.array(result.coords[:, 0], pa.float32()),
        "y": pa.array(result.coords[:, 1], pa.float32())})


def write_category(output: str, data: CategoryData, result: CategoryResult) -> dict:
    """Write one category's assignments and PNGs under ``<output>/<id>/``; return its summary
    entry (JSON-ready; file names relative to ``output``)."""
    folder = str(data.category_id)
    storage.write_table(_assignments(data, result), storage.join(output, folder, ASSIGNMENTS))
    finer = np.asarray([f"{p}:{str(f).split(' > ')[-1]}" for p, f in zip(data.platform, data.finer_label)])
    scatter(result.coords, result.labels, [c.name for c in result.clusters], finer, data.path,
            storage.join(output, folder, "scatter.png"))
    clusters = []
    for info in result.clusters:
        grid = f"{folder}/cluster_{info.cluster}.png"
        example_grid([str(data.title[i]) for i in info.examples],
                     [data.image_uri[i] for i in info.examples],
                     f"{data.path} › cluster {info.cluster}: {info.name} ({info.size:,} products)",
                     storage.join(output, grid))
        clusters.append({
            "cluster": info.cluster, "size": info.size, "platforms": info.platforms,
            "name": info.name, "terms": info.terms, "first_level_cluster": info.parent,
            "label_mix": info.label_mix, "grid": grid,
            "examples": [{"product_id": str(data.product_id[i]), "platform": str(data.platform[i]),
                          "title": str(data.title[i]), "finer_label": str(data.finer_label[i]),
                          "image_uri": data.image_uri[i] or None}
                         for i in info.examples]})
    platforms, counts = np.unique(data.platform.astype(str), return_counts=True)
    return {
        "category_id": data.category_id, "path": data.path, "products": len(data),
        "platforms": {str(p): int(n) for p, n in zip(platforms, counts)},
        "not_embedded": data.not_embedded, "capped": data.capped,
        "variant": result.variant, "scores": result.scores, "clusters": clusters,
        "noise_share": float((result.labels == -1).mean()), "rescued": result.rescued,
        "min_cluster_size": result.min_cluster_size,
        "splits": {str(k): v for k, v in result.splits.items()}, "simclr": result.simclr,
        "seconds": result.seconds, "scatter": f"{folder}/scatter.png",
        "assignments": f"{folder}/{ASSIGNMENTS}",
        "fingerprint": fingerprint(data.category_id, data.product_id, result.labels)}


def _headline(entry: dict) -> str:
    s = entry["scores"][entry["variant"]]["all"]
    return (f"{entry['path']}: {entry['products']:,} products → {s['clusters']} clusters "
            f"(finer labels: up to {s['labels']} per platform), purity {s['purity']:.3f}, NMI "
            f"{s['nmi']:.3f}, ARI {s['ari']:.3f}, accuracy {s['accuracy']:.3f}, noise "
            f"{100 * s['noise_share']:.1f} % ({entry['seconds'].get('total', 0):.0f} s)")


def propose(config: RecategorizeConfig) -> dict:
    """Run the recategorization of ``config``'s categories; returns ``recategorize.json``'s content.

    Raises:
        ValueError: when no category has enough embedded products (the message says which were
            skipped and why).
        FileNotFoundError, KeyError: from :func:`prodcat.recategorize.data.load_categories`.
    """
    import ray  # lazy: Ray starts only when a recategorization runs

    start = time.perf_counter()
    categories, taxonomy, skipped = load_categories(config)
    for item in skipped:
        say(f"[recategorize] skipped {item['path']}: {item['reason']}")
    if not categories:
        raise ValueError("no category to recategorize: " + ("; ".join(
            f"{s['path']}: {s['reason']}" for s in skipped) or "the product table has no labelled, "
            "embedded products"))
    for data in categories:
        per = ", ".join(f"{p} {n:,}" for p, n in zip(*np.unique(data.platform.astype(str), return_counts=True)))
        say(f"[recategorize] {data.path} ({data.category_id}): {len(data):,} products ({per})"
            + (f"; {data.not_embedded:,} not in the store" if data.not_embedded else "")
            + (f"; {data.capped:,} left out by the per-platform cap" if data.capped else ""))
    ensure_ray()
    task = ray.remote(recategorize_category)
    refs = {task.options(num_cpus=config.num_cpus, name=f"recategorize-{d.category_id}").remote(d, config): d
            for d in categories}
    progress = Progress("recategorize", total=len(refs), unit="categories")
    entries, pending = [], list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1, timeout=HEARTBEAT_S)
        if not done:  # a line now and then, so a long run never looks stuck
            say(f"[recategorize] {len(entries)}/{len(refs)} categories done after "
                f"{progress.elapsed:.0f} s; still running: "
                + ", ".join(refs[r].path.split(" > ")[-1] for r in pending))
            continue
        entry = write_category(config.output, refs[done[0]], ray.get(done[0]))
        entries.append(entry)
        progress.step(_headline(entry))
    entries.sort(key=lambda e: [d.category_id for d in categories].index(e["category_id"]))
    summary = {"config": config.model_dump(mode="json"), "taxonomy_version": taxonomy.version,
               "categories": entries, "skipped": skipped,
               "wall_seconds": round(time.perf_counter() - start, 1)}
    storage.write_text(storage.join(config.output, SUMMARY), json.dumps(summary, indent=2))
    report = write_report(config.output, summary)
    accept = write_accept_template(config.output, summary)
    write_review_page(config.output, summary)
    say(f"[recategorize] {len(entries)} categor{'y' if len(entries) == 1 else 'ies'} in "
        f"{summary['wall_seconds']:.0f} s → {report}; review and edit {accept} (or open "
        f"review.html beside it), then "
        f"`prodcat recategorize apply --proposals {config.output}`")
    return summary

