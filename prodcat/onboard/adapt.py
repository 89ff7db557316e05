"""A model adapted to a new platform from its unlabelled catalogue: its label distribution, and
a component self-trained on its products.

A decision-level fusion model trained with ``prior: adapt`` among its label-prior corrections
(:class:`prodcat.models.decision.Combiner`) and which chose it on its held-out products predicts,
as it is, with no label prior at all (``uniform``). :func:`adapt_checkpoint` reads the new
platform's products (no category needed), their vectors from an embedding store made by the
same encoders (fingerprints checked), estimates the platform's label distribution by EM
(:func:`prodcat.models.decision.em_label_prior`; Saerens et al., 2002) and writes a copy of the
checkpoint that holds it, which ``prodcat serve``, ``prodcat score`` and ``prodcat cascade fit``
load like any checkpoint. Writes ``adapt.json`` and ``adapt.md`` (the estimated distribution's
largest categories beside the training distribution) in the new checkpoint folder. A model
trained with ``model.decision.self_train`` set also gets a ``self_trained`` component: a logistic
regression fitted on the catalogue's products its combination is sure of, labelled with its own
predictions (:meth:`prodcat.models.decision.DecisionModel.adapt`); the reports say how many. The copy keeps
the checkpoint's global temperature (fitted before adaptation, on the training platforms'
calibration split); ``prodcat cascade fit`` fits the cascade's own temperatures as for any
checkpoint.

Letters: B products, C label leaves, D_f dimension of feature f.
"""

from __future__ import annotations

import json
from typing import Callable

import numpy as np
import pyarrow.compute as pc

from prodcat.core import storage

TOP = 15          # categories listed in adapt.md


def adapt_checkpoint(checkpoint: str, products: str, embeddings: str, output: str,
                     platform: str | None = None, skip_unreadable: bool = False,
                     log: Callable[[str], None] | None = None) -> dict:
    """Adapt ``checkpoint`` to the products in ``products`` (those of ``platform`` when given):
    their label distribution (``prior: adapt``) and a self-trained component
    (``model.decision.self_train``), and write the adapted checkpoint to ``output`` (local or
    ``s3://``).

    Products without a vector for a feature in the store are scored without that component
    (``present`` False); products with no stored vector at all are left out and counted.

    Returns:
        the summary written to ``adapt.json``: products read / used / without vectors; with
        ``prior: adapt`` the estimate's entropy (nats) and its largest categories with the
        training share beside; ``self_training``: the products it was fitted on (None without).

    Raises:
        ValueError: the checkpoint is not a decision-level model whose combination chose
            ``prior: adapt`` or that self-trains; a store feature's encoder fingerprint differs from the checkpoint's;
            ``platform`` has no product; no product (of ``platform``) has a stored vector.
        FileNotFoundError: no checkpoint, product table or embedding store there.
        KeyError: the store lacks a feature the model reads.
    """
    from prodcat.embed.store import feature_matrix, read_manifest, read_store
    from prodcat.models.checkpoint import load_checkpoint
    from prodcat.models.decision import DecisionModel
    from prodcat.models.lexical import FEATURE as LEXICAL
    from prodcat.models.lexical import product_text
    from prodcat.score.features import fingerprint_mismatches

    say = log or (lambda _m: None)
    model = load_checkpoint(checkpoint)
    if not isinstance(model, DecisionModel) or not model.adapts:
        prior = model.combiner.prior if isinstance(model, DecisionModel) else "a neural model"
        raise ValueError(f"{checkpoint}: only a decision-level model whose combination chose prior "
                         f"'adapt', that reweights or that self-trains, adapts to a platform (this "
                         f"one: {prior}, no reweighting, no self-training); train it with "
                         "model.decision.priors including adapt, model.decision.reweight or "
                         "model.decision.self_train set")
    table = storage.read_table(products, columns=["product_id", "platform", "title", "description"]
                               + (["category_id"] if _has_labels(products) else []))
    read, everything = table.num_rows, table
    if platform is not None:
        table = table.filter(pc.equal(table["platform"], platform))
        if not len(table):
            have = sorted(set(pc.unique(everything["platform"]).to_pylist()) - {None})
            raise ValueError(f"no product of platform {platform!r} in {products}; it has {have}")
    stored = [f for f in model.features if f != LEXICAL]
    manifest = read_manifest(embeddings)
    if manifest is None:
        raise FileNotFoundError(f"no embedding store at {embeddings}")
    mismatched = fingerprint_mismatches(checkpoint, manifest)
    for f in stored:                                  # before reading a vector
        if f in mismatched:
            want, have = mismatched[f]
            raise ValueError(f"the store's {f} vectors come from encoder {have}, the checkpoint was "
                             f"trained on {want}: embed the catalogue with the checkpoint's "
                             "encoders (prodcat embed)")
    store, manifest = read_store(embeddings, ["product_id"] + [c for f in stored for c in (f"emb_{f}", f"status_{f}")],
                                 skip_unreadable=skip_unreadable)
    index = pc.index_in(table["product_id"], value_set=store["product_id"])
    found = index.is_valid()
    missing = int(len(table) - pc.sum(found).as_py()) if len(table) else 0
    table, index = table.filter(found), index.filter(found)
    if not len(table):
        where = f" of platform {platform!r}" if platform else ""
        raise ValueError(f"none of the products{where} in {products} has a vector in {embeddings}")
    rows = store.take(index)
    features, present = {}, {}
    for f in stored:
        features[f], present[f] = feature_matrix(rows, f)                   # [B, D_f], [B]
    if LEXICAL in model.features:
        texts = [product_text(a, b) for a, b in zip(table["title"].to_pylist(), table["description"].to_pylist())]
        features[LEXICAL] = model.lexical.scores(texts)
    what = " and ".join(w for w, on in (("estimating the label distribution", model.combiner.prior == "adapt"),
                                        ("reweighting", model.model_config.decision.reweight != "none"),
                                        ("self-training", model.model_config.decision.self_train is not None)) if on)
    say(f"[adapt] {what} on {len(table):,} products"
        f"{f' of {platform}' if platform else ''} ({missing:,} without vectors, left out)")
    platforms = table["platform"].to_numpy(zero_copy_only=False)
    new = int(model.new_platform_mask(platforms, len(table)).sum())
    adapted = model.adapt(features, present, platforms=platforms)
    adapted.save(output)
    summary = _summary(adapted, checkpoint, products, platform, read, len(table), missing, new)
    if "category_id" in table.column_names and adapted.combiner.target_log_prior is not None:
        # labels: used after the estimate, for the report only
        summary.update(_against_labels(adapted, table["category_id"]))
    storage.write_text(storage.join(output, "adapt.json"), json.dumps(summary, indent=2))
    storage.write_text(storage.join(output, "adapt.md"), markdown(summary))
    st = summary.get("self_training") or {}
    if st.get("outside_label_space") is not None:
        say(f"[adapt] the gate judged {st['outside_label_space']:,} of {st['adapted_on']:,} products "
            "outside the label space: not pseudo-labelled")
    say(f"[adapt] wrote {output} (adapted on {len(table):,} products; report: adapt.md)")
    return summary


def _has_labels(products: str) -> bool:
    """Whether the product table has a ``category_id`` column (the schema only)."""
    import pyarrow.dataset as ds

    fs, path = storage.filesystem(products)
    return "category_id" in ds.dataset(path, filesystem=fs, format="parquet").schema.names


def _against_labels(model, categories) -> dict:
    """How far the estimate and the training distribution are from the products' own label
    distribution, where they carry labels: total variation ``0.5 sum |p - q|`` in [0, 1] over
    the model's leaves (products labelled outside them are counted apart); ``{}`` when none
    carries a label."""
    leaves = model.decoder.leaves
    counts, outside = np.zeros(len(leaves)), 0
    known = categories.drop_null()
    if not len(known):                                 # no product carries a label
        return {}
    cats, n = np.unique(known.to_numpy(), return_counts=True)
    for c, k in zip(cats, n):
        try:
            node = model.taxonomy.label_node(int(c))
        except (KeyError, ValueError):
            node = -1
        i = int(np.searchsorted(leaves, node))
        if i < len(leaves) and leaves[i] == node:
            counts[i] += k
        else:
            outside += int(k)
    if not counts.sum():
        return {"labelled": 0, "labelled_outside": outside}
    truth = counts / counts.sum()
    target = np.exp(np.asarray(model.combiner.target_log_prior, np.float64))
    train = _training_distribution(model)
    return {"labelled": int(counts.sum()), "labelled_outside": outside,
            "tv_estimate": float(0.5 * np.abs(target / target.sum() - truth).sum()),
            "tv_training": float(0.5 * np.abs(train - truth).sum()),
            "tv_uniform": float(0.5 * np.abs(1.0 / len(truth) - truth).sum())}


def _kept(keep: str, threshold: float, share: float = 0.5) -> str:
    """Which pseudo-labels self-training keeps, in words."""
    if keep == "confidence":
        return f"top probability at least {threshold:g}"
    if keep == "balanced":
        return f"in each category it chooses, the {share:.0%} it is surest of"
    return "the text and lexical components agree with the combination"


def _self_training(model, new_platform_products: int | None = None) -> dict | None:
    """What self-training fitted (features, which products were kept, how many of how many, its
    weight); ``{"added": False, "reason": ...}`` when the model self-trains but added nothing
    (every product of a platform it was trained on, no embedding to read, or the kept products in
    fewer than 2 categories); None when it does not self-train. ``new_platform_products``: how
    many of the products adapted to are of platforms the model was not trained on (None: not
    counted)."""
    settings = model.model_config.decision.self_train
    if settings is None:
        return None
    where = {"scope": settings.scope, "new_platform_products": new_platform_products,
             "trained_platforms": model.trained_platforms}
    comp = model.self_trained
    if comp is not None:
        return {"added": True, **{k: comp.settings[k] for k in ("features", "keep", "threshold", "fitted_on",
                                                                  "adapted_on")},
                **{k: comp.settings[k] for k in ("share", "rounds", "gate", "outside_label_space")
                   if k in comp.settings},
                "weight": float(model.combiner.weights[comp.name]),
                **({"features": model.self_training_features, "fitted_on": comp.settings["co_trained_on"],
                    "views": {c.name: {"features": c.settings["features"], "fitted_on": c.settings["fitted_on"],
                                       "taught_by": c.settings.get("taught_by")}
                              for c in model.self_trained_components}}
                   if settings.views == "cross" else {}), **where}
    if settings.scope == "new_platforms" and new_platform_products == 0:
        reason = (f"every product is of a platform the model was trained on "
                  f"({', '.join(model.trained_platforms or [])}), and it self-trains on new platforms "
                  "only (`model.decision.self_train.scope: new_platforms`)")
    elif not model.self_training_features:
        reason = "the model reads no embedding to self-train on"
    else:
        reason = (f"the products the model is sure of (kept: {_kept(settings.keep, settings.threshold, settings.share)}) "
                  "span fewer than 2 categories")
    return {"added": False, "features": model.self_training_features, "keep": settings.keep,
            "threshold": settings.threshold, **where, "reason": reason}


def _training_distribution(model) -> np.ndarray:
    """``[C]`` the label distribution the components were fitted on (``combiner.log_prior``,
    where 0 marks an unseen leaf), normalised."""
    train = np.asarray(model.combiner.log_prior, np.float64)
    train = np.where(train < 0, np.exp(train), 0.0)
    return train / train.sum() if train.sum() > 0 else train


def _summary(model, checkpoint: str, products: str, platform: str | None, read: int, used: int,
             missing: int, new_platform_products: int | None = None) -> dict:
    base = {"checkpoint": checkpoint, "products": products, "platform": platform,
            "products_read": int(read), "products_used": int(used), "without_vectors": int(missing),
            "self_training": _self_training(model, new_platform_products),
            "reweight": model.selection.get("reweight"), "weights": dict(model.combiner.weights)}
    if model.combiner.target_log_prior is None:           # self-training only: no estimate
        return base
    leaves = model.decoder.leaves
    target = np.exp(np.asarray(model.combiner.target_log_prior, np.float64))
    train = _training_distribution(model)
    order = np.argsort(-target)[:TOP]
    nonzero = target[target > 0]
    return {**base,
            "entropy_nats": float(-(nonzero * np.log(nonzero)).sum()),
            "training_entropy_nats": float(-(train[train > 0] * np.log(train[train > 0])).sum()),
            "top": [{"category_id": int(model.taxonomy.ids[int(leaves[i])]),
                     "path": model.taxonomy.path(int(leaves[i])), "share": float(target[i]),
                     "training_share": float(train[i])} for i in order]}


def markdown(summary: dict) -> str:
    """``adapt.md``: what the estimate was made from, and its largest categories; what
    self-training fitted; the components' reweighting."""
    where = f" of platform `{summary['platform']}`" if summary["platform"] else ""
    st = summary.get("self_training")
    sections = []
    if st is not None:
        kept = _kept(st["keep"], st["threshold"], st.get("share", 0.5))
        if not st["added"]:
            sentence = f"Nothing added: {st['reason']}."
        elif st.get("views"):
            sentence = (f"Co-training (`views: cross`) on {st['adapted_on']:,} products{where}: one "
                        "logistic regression per input, each labelled by the other inputs' components "
                        f"where they are sure (kept: {kept}), each added with weight {st['weight']:g}:")
        else:
            sentence = (f"A logistic regression on {' + '.join(st['features'])} fitted on {st['fitted_on']:,} of the "
                        f"{st['adapted_on']:,} products{where}, labelled with the model's own predictions (kept: "
                        f"{kept}), added to the combination with weight {st['weight']:g}.")
        sections = ["## Self-training", "", sentence, ""]
        if st.get("views"):
            sections += [f"- `{name}` on {' + '.join(v['features'])}: fitted on {v['fitted_on']:,} products "
                         f"labelled by {', '.join(v['taught_by'] or [])}" for name, v in st["views"].items()] + [""]
        if st.get("outside_label_space") is not None:
            sections += [
                f"The gate judged {st['outside_label_space']:,} of them outside the label space (their "
                "embedding far from every category the model was trained on: not pseudo-labelled; "
                "`model.decision.self_train.gate`). Its threshold is set on the training platforms' "
                "own products, so on a new platform it also rejects many products of categories the "
                "model knows: read the count as an upper bound on what is outside the label space.", ""]
    rw = summary.get("reweight")
    if rw is not None:
        sections += ["## Component weights", "", (
            f"Each component's top-leaf accuracy on the {rw['adapted_on']:,} products of new platforms, "
            "estimated from how the components agree (one-coin Dawid-Skene, no label read), and its "
            "weight scaled by its log-odds:"), "", "| component | estimated accuracy | weight as trained | weight |",
            "|---|---:|---:|---:|"]
        sections += [f"| {k} | {a:.3f} | {rw['weights_before'][k]:.2f} | {summary['weights'][k]:.2f} |"
                          for k, a in rw["accuracy"].items()] + [""]
    if "top" not in summary:
        return "\n".join([f"# Adapted to the products{where} in `{summary['products']}`", "",
                           f"{summary['products_used']:,} products used ({summary['without_vectors']:,} "
                           f"without stored vectors, left out); the model: `{summary['checkpoint']}`. "
                           "Its combination keeps its label-prior correction; no distribution was "
                           "estimated.", "", *sections]) + "\n"
    lines = [*(["# Adapted to the target platform", ""] + sections if sections else []),
             ("## " if sections else "# ") + "Label distribution of the target platform", "",
             f"Estimated by EM (Saerens et al., 2002) from {summary['products_used']:,} unlabelled "
             f"products{where} in `{summary['products']}` ({summary['without_vectors']:,} without "
             f"stored vectors, left out); the model: `{summary['checkpoint']}`. Entropy "
             f"{summary['entropy_nats']:.2f} nats (the training distribution: "
             f"{summary['training_entropy_nats']:.2f}).", "",
             *([f"The products carry labels ({summary['labelled']:,} in the model's label space), "
                f"read after the estimate: its total variation from their label distribution is "
                f"{summary['tv_estimate']:.3f}, the training distribution's "
                f"{summary['tv_training']:.3f}, a uniform one's {summary['tv_uniform']:.3f} (0: the "
                "same, 1: disjoint).", ""] if summary.get("tv_estimate") is not None else []),
             "| category | estimated share | training share |", "|---|---:|---:|"]
    lines += [f"| {t['path']} | {t['share']:.3f} | {t['training_share']:.3f} |" for t in summary["top"]]
    return "\n".join(lines) + "\n"

