"""The run's Markdown report (``report.md``), built from ``recategorize.json`` with
:mod:`prodcat.core.report`: what was clustered, how the clusters score against each platform's own
finer labels (the method and its ablations), and every proposed subcategory with what a reviewer
needs to judge it: size, platforms, suggested name and terms, the finer labels inside it,
representative titles and images, the 2-D scatter.
"""

from __future__ import annotations

from prodcat.core import storage
from prodcat.core.report import fmt, markdown_table
from prodcat.recategorize.config import VARIANTS

REPORT = "report.md"


def _pct(value) -> str:
    return f"{100 * value:.1f} %"


def score_rows(entry: dict) -> list[list]:
    """Rows ``[variant, platform, products, clusters, finer labels, noise, purity, NMI, ARI,
    accuracy]`` for every scored variant of a category (the method first)."""
    rows = []
    variants = [entry["variant"]] + [v for v in entry["scores"] if v != entry["variant"]]
    for variant in variants:
        for platform, s in entry["scores"][variant].items():
            labels = s["labels"] if platform != "all" else f"{s['labels']} (max) / {s['labels_total']} (sum)"
            rows.append([VARIANTS.get(variant, variant) if platform == "all" else "", platform,
                         s["products"], s["clusters"], labels, _pct(s["noise_share"]),
                         s["purity"], s["nmi"], s["ari"], s["accuracy"]])
    return rows


SCORE_HEADERS = ["variant", "platform", "products", "clusters", "finer labels", "unassigned",
                 "purity", "NMI", "ARI", "accuracy"]


def summary_rows(summary: dict) -> list[list]:
    """One row per category and variant: the overall (``all``) scores."""
    rows = []
    for entry in summary["categories"]:
        variants = [entry["variant"]] + [v for v in entry["scores"] if v != entry["variant"]]
        for variant in variants:
            s = entry["scores"][variant]["all"]
            rows.append([entry["path"].split(" > ")[-1], VARIANTS.get(variant, variant), s["products"],
                         s["clusters"], s["labels"], _pct(s["noise_share"]), s["purity"], s["nmi"],
                         s["ari"], s["accuracy"]])
    return rows


def _category(entry: dict) -> list[str]:
    simclr = entry.get("simclr")
    lines = [f"## {entry['path']} ({entry['category_id']})", "",
             f"{entry['products']:,} products ("
             + ", ".join(f"{p} {n:,}" for p, n in entry["platforms"].items()) + ")"
             + (f"; {entry['not_embedded']:,} not in the embedding store" if entry["not_embedded"] else "")
             + (f"; {entry['capped']:,} left out by the per-platform cap" if entry["capped"] else "")
             + f". HDBSCAN min_cluster_size {entry.get('min_cluster_size', '-')}. Wall time: "
             + ", ".join(f"{k} {v:.1f} s" for k, v in entry["seconds"].items()) + "."]
    if simclr:
        lines.append(f"SimCLR: {simclr['epochs']} epochs, NT-Xent {simclr['first_loss']:.3f} → "
                     f"{simclr['last_loss']:.3f}, views matched to their partner "
                     f"{_pct(simclr['pair_accuracy'])} of the time in the last epoch.")
    splits = entry.get("splits") or {}
    if splits:
        lines.append("Cascade step: " + "; ".join(
            f"level-1 cluster {k} ({v['reason']}) "
            + (f"kept whole ({v['kept']})" if v.get("kept") else f"→ {v['into']} clusters")
            + (f", {v['unassigned']} left unassigned" if v.get("unassigned") else "")
            for k, v in splits.items()) + ".")
    else:
        lines.append("Cascade step: no level-1 cluster was too large or too mixed.")
    lines.append(f"Noise: {_pct(entry['noise_share'])} of the products are unassigned; "
                 f"{entry['rescued']:,} HDBSCAN noise points joined a cluster by soft membership.")
    lines += ["", "### Against the platforms' own finer labels", "",
              markdown_table(SCORE_HEADERS, score_rows(entry)), "",
              "### Proposed subcategories", "",
              markdown_table(["cluster", "products", "platforms", "suggested name", "c-TF-IDF terms",
                              "finer labels inside (products)", "from level-1"],
                             [[c["cluster"], c["size"], ", ".join(f"{p} {n}" for p, n in c["platforms"].items()),
                               c["name"], ", ".join(c["terms"]),
                               ", ".join(f"{k} {v}" for k, v in list(c["label_mix"].items())[:4]),
                               c["first_level_cluster"]] for c in entry["clusters"]]), "",
              f"![2-D UMAP of {entry['path']}: by cluster and by finer label]({entry['scatter']})", ""]
    for c in entry["clusters"]:
        titles = "; ".join(f"{e['title']} ({e['platform']})" for e in c["examples"])
        lines += [f"**{c['cluster']}. {c['name']}** ({fmt(c['size'])} products): {titles}", "",
                  f"![cluster {c['cluster']}]({c['grid']})", ""]
    return lines


def render(summary: dict) -> str:
    """``report.md``'s text for a ``recategorize.json`` content."""
    cfg = summary["config"]
    lines = ["# Recategorization: finer categories from the data", "",
             f"Products `{cfg['products']}`, embedding store `{cfg['embeddings']}` (features "
             f"{', '.join(cfg['features'])}), taxonomy {summary['taxonomy_version']}; "
             f"{len(summary['categories'])} categor{'y' if len(summary['categories']) == 1 else 'ies'} "
             f"in {summary['wall_seconds']:.0f} s wall.", "",
             "Method: a SimCLR projection network (NT-Xent, temperature "
             f"{cfg['simclr']['temperature']}, {cfg['simclr']['epochs']} epochs; views by feature dropout "
             f"{cfg['simclr']['feature_dropout']}, Gaussian noise {cfg['simclr']['noise_std']}, modality "
             f"dropout {cfg['simclr']['modality_dropout']}) → UMAP ({cfg['umap']['n_neighbors']} neighbours, "
             f"{cfg['umap']['n_components']} components, min_dist {cfg['umap']['min_dist']}, "
             f"{cfg['umap']['metric']}) → HDBSCAN (min_cluster_size {cfg['clustering']['min_cluster_size']}, "
             "a tenth of a smaller category's size, at least 5), "
             f"clusters above {cfg['clustering']['max_share']:.0%} of the category or with a spread "
             f"above {cfg['clustering']['max_spread']}x the median re-clustered one level down; noise "
             f"joins a cluster when its soft membership is at least {cfg['clustering']['soft_threshold']}.",
             "",
             "Scores compare the clusters with each platform's own finer labels (its `source_category`: "
             "Myntra's articleType, H&M's product_type_name), platform by platform, over the assigned "
             "products; `all` is their product-weighted mean, its 'finer labels' the largest and the "
             "summed per-platform counts. Purity rises with the number of clusters: read it with the "
             "cluster count and the unassigned share beside it.", ""]
    if summary.get("skipped"):
        lines += ["Skipped: " + "; ".join(f"{s['path']} ({s['reason']})" for s in summary["skipped"]), ""]
    lines += ["## Summary", "",
              markdown_table(["category", "variant", "products", "clusters", "finer labels (max)",
                              "unassigned", "purity", "NMI", "ARI", "accuracy"], summary_rows(summary)),
              "", "## Reviewing and accepting", "",
              "Each proposed subcategory is listed below with its size, platforms, suggested name, "
              "representative products and the platforms' labels inside it. To add some to the "
              "taxonomy, edit `accept.yaml` in this folder (set `accept: true`, change `name` if you "
              "like; two accepted clusters with the same name become one node), then run "
              "`prodcat recategorize apply --proposals <this folder> --output <new catalogue folder>`: "
              "it writes the extended `taxonomy.json` (a new version, with the old → new id map) and "
              "the relabelled `products.parquet`, which `prodcat train` trains on.", ""]
    for entry in summary["categories"]:
        lines += _category(entry)
    return "\n".join(lines) + "\n"


def write_report(output: str, summary: dict) -> str:
    """Write ``<output>/report.md``; returns its location."""
    uri = storage.join(output, REPORT)
    storage.write_text(uri, render(summary))
    return uri
