"""The model for a new platform, chosen on a few of its labelled products.

Everything else in :mod:`prodcat.onboard` reads a new platform's inputs only. When whoever onboards
a platform can label a few of its products, :func:`choose` uses them for one decision: which
setting of the default to deploy there. Each candidate (``ChooseConfig.candidates``: the default
and, by default, the default without its label names) is trained on the other platforms in their
label space (:func:`prodcat.onboard.measure.fold_model`), adapted to the new platform's products,
inputs only (:func:`prodcat.onboard.measure.fold_adapted`; the default self-trains there), and
predicts every product of the new platform. The labelled products the choice reads are the
platform's rows in ``labelled_splits`` or a ``labels`` file; a ``max_labelled`` cap draws them
where the candidates' paths differ (``sampling: disagreement``; where they agree a label adds
exactly 0 to their paired difference: query by committee, Seung, Opper & Sompolinsky 1992), and
``propose`` writes such products to label before any label exists. The first candidate is kept
unless another beats it there by a real difference (strict hF, 95 % paired bootstrap over
near-duplicate groups, :func:`prodcat.core.uncertainty.paired_difference`) in at least
:data:`MIN_GROUPS` groups where their scores differ, then the best of those on the labelled
products: the ``paired`` rule by which ``prodcat train`` chooses a combination
(:func:`prodcat.train.decision.pick`). The new platform's other labelled products, if any (rows of
other splits), are scored afterwards as a check; the choice never reads them.

Why: with Flipkart as the new platform the default's label names cost 14-17 hF points, and no
choice made on the other platforms sees it; with 25 labelled Flipkart products drawn where the
two candidates disagree this rule drops them in 98-100 % of draws, gaining 14-17 points on the
whole fold, and with H&M or Myntra it keeps them wherever they help (an analysis of the
evaluation's predictions, ``benchmarks/labelled_choice.py``; docs/evaluation.md).

Output folder: ``candidates/<name>/`` (each candidate's ``model/`` and ``adapted/``, and
``candidate.json``, by which a later run with the same settings reuses them), ``model/`` (a copy
of the chosen checkpoint, which ``prodcat score``, ``serve`` and ``cascade fit`` load),
``choice.json``, ``report.md``; with ``propose``, ``to_label.csv`` and ``proposal.json`` instead.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.metrics import hierarchical_counts, prf_from_counts
from prodcat.core.uncertainty import N_RESAMPLES, paired_difference
from prodcat.embed.store import read_manifest
from prodcat.models.checkpoint import copy_checkpoint, load_checkpoint
from prodcat.models.files import CONFIG
from prodcat.onboard.config import ChooseConfig, MeasureConfig
from prodcat.onboard.measure import fold_adapted, fold_model
from prodcat.train.config import TrainConfig
from prodcat.train.features import TEXT, FeatureTable, load_feature_table
from prodcat.train.lexical import model_inputs

REPORT = "report.md"
CANDIDATE = "candidate.json"
MIN_GROUPS = 6          # groups where the scores differ before a candidate may replace the first


@dataclass
class Predictions:
    """Every candidate's output on the new platform's products, in product-id order.

    Attributes:
        ids, groups, splits: ``[N]`` the platform's products, their near-duplicate groups and splits.
        category: ``[N]`` the product table's category ids (read only where a choice reads labels).
        text: ``[N]`` their title and description, the first 200 characters (for to_label.csv).
        classes: ``{candidate: [N, L]}`` the class chosen per level (-1 padded).
        category_id, category_path: ``{candidate: [N]}`` the predicted category.
    """

    ids: np.ndarray
    groups: np.ndarray
    splits: np.ndarray
    category: np.ndarray
    text: np.ndarray
    classes: dict[str, np.ndarray]
    category_id: dict[str, np.ndarray]
    category_path: dict[str, np.ndarray]

    @classmethod
    def of(cls, models: dict, table: FeatureTable, platform: str) -> Predictions:
        rows = table.rows(platforms=[platform])
        order = np.argsort(rows.column("product_id"), kind="stable")
        out = {"classes": {}, "category_id": {}, "category_path": {}}
        for name, model in models.items():
            pred = model.predict(*model_inputs(model, rows))
            for key in out:
                out[key][name] = np.asarray(pred[key])[order]
        text = (rows.column(TEXT) if TEXT in rows.table.column_names
                else np.full(len(rows), "", object))
        return cls(*(np.asarray(rows.column(c))[order] for c in ("product_id", "group_id", "split",
                                                                  "category_id")),
                   np.asarray([str(t)[:200] for t in text], object)[order], **out)

    def disagreeing(self, reference: str) -> np.ndarray:
        """``[N]`` :func:`disagreeing` over the candidates' paths."""
        return disagreeing(self.classes, self.groups, reference)


def disagreeing(predicted: dict[str, np.ndarray], groups: np.ndarray, reference: str) -> np.ndarray:
    """``[N]`` True for every product of a near-duplicate group in which some candidate's output
    differs from ``reference``'s on some product: read from the predictions alone, no label.
    Elsewhere every candidate scores as the reference does, so a label there cannot tell them
    apart. ``predicted``: ``{candidate: [N]}`` category ids or ``[N, L]`` classes per level."""
    differs = np.zeros(len(groups), bool)
    for name, p in predicted.items():
        if name != reference:
            d = np.asarray(p) != np.asarray(predicted[reference])
            differs |= d.reshape(len(groups), -1).any(axis=1)
    return np.isin(groups, np.unique(groups[differs]))


def draw_groups(groups: np.ndarray, pool: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``[N]`` mask: whole groups of the ``pool`` products drawn in a random order (``seed``)
    while they hold at most ``n`` products in all, and at least the first group drawn (None:
    the whole pool)."""
    if n is None or pool.sum() <= n:
        return pool.copy()
    names, inverse, sizes = np.unique(groups[pool], return_inverse=True, return_counts=True)
    order = np.random.default_rng(seed).permutation(len(names))
    taken = order[:max(1, int(np.searchsorted(np.cumsum(sizes[order]), n, side="right")))]
    mask = np.zeros(len(groups), bool)
    mask[np.flatnonzero(pool)[np.isin(inverse, taken)]] = True
    return mask


def labelled_sample(pred: Predictions, config: ChooseConfig, labels: set[int], reference: str,
                    known: set[int] | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """``(mask [N], category ids [N], given [N], counts)``: the products the choice reads and
    their labels, and every product that came with a label (``given``; those are not check
    products):
    the rows of ``labels_file`` (``config.labels``) or else the platform's rows in
    ``labelled_splits``, those whose category is among ``labels`` (the training platforms' label
    space); with ``max_labelled``, at most that many in whole near-duplicate groups drawn
    (``seed``) among all of them (``sampling: random``) or among those where the candidates
    disagree (``disagreement``).

    Raises:
        ValueError: fewer than 2 such products, or a bad labels file (:func:`_labels_file`;
            ``known``: the taxonomy's category ids). With ``disagreement`` and a cap, fewer than 2 groups where the
            candidates disagree is not an error: no label can tell them apart there, the mask is
            empty and the first candidate is kept.
    """
    category = pred.category.astype(np.int64)
    if config.labels:
        given, category = _labels_file(config.labels, pred, known)
        source = f"{int(given.sum()):,} in {config.labels}"
    else:
        given = np.isin(pred.splits, config.labelled_splits)
        source = f"{int(given.sum()):,} in splits {', '.join(config.labelled_splits)}"
    covered = np.asarray([int(c) in labels for c in category], bool)
    candidates = given & covered
    disagree = candidates & pred.disagreeing(reference)
    pool = disagree if config.sampling == "disagreement" else candidates
    counts = {"in_source": int(given.sum()), "outside_label_space": int((given & ~covered).sum()),
              "source": source, "sampling": config.sampling, "disagreeing": int(disagree.sum())}
    if config.max_labelled is None:
        mask = candidates
    else:
        mask = draw_groups(pred.groups, pool, config.max_labelled, config.seed)
        if (config.sampling == "disagreement" and len(np.unique(pred.groups[mask])) < 2
                and candidates.sum() >= 2):        # no label could show a real difference
            return np.zeros_like(mask), category, given, {**counts, "labelled": 0}
    if mask.sum() < 2:
        where = f"file {config.labels}" if config.labels else f"splits {config.labelled_splits}"
        raise ValueError(f"{config.platform}: {int(mask.sum())} labelled product(s) in {where} "
                         f"whose category the other platforms have ({counts['outside_label_space']} outside "
                         "their label space); label more, or widen labelled_splits")
    return mask, category, given, {**counts, "labelled": int(mask.sum())}


def _labels_file(uri: str, pred: Predictions, known: set[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(mask [N], category ids [N])`` of a product_id, category_id file (CSV or Parquet; rows
    without a category skipped) over the platform's products.

    Raises:
        FileNotFoundError: no such file. ValueError: a missing column, a category that is not a
            number or (``known``: the taxonomy's category ids) not in the taxonomy, product ids
            not of the platform, or one product given two different categories.
    """
    if not storage.exists(uri):
        raise FileNotFoundError(f"labels file {uri} not found")
    if uri.endswith(".parquet"):
        table = storage.read_table(uri)
    else:
        import io

        import pyarrow.csv as pacsv

        table = pacsv.read_csv(io.BytesIO(storage.read_text(uri).encode()), convert_options=pacsv.ConvertOptions(
            column_types={"product_id": "string", "category_id": "string"}, strings_can_be_null=True))
    missing = [c for c in ("product_id", "category_id") if c not in table.column_names]
    if missing:
        raise ValueError(f"labels file {uri} has no column {missing[0]!r} (it needs product_id and category_id)")
    ids = np.asarray(table.column("product_id").to_pylist(), object)
    raw = table.column("category_id").to_pylist()
    keep = np.asarray([c is not None and str(c).strip() != "" for c in raw], bool)
    ids = ids[keep].astype(str)
    try:
        values = np.asarray([int(float(str(c).strip())) for c, k in zip(raw, keep) if k], np.int64)
    except ValueError as err:
        raise ValueError(f"labels file {uri}: category_id must be a Google category id ({err})") from None
    if known is not None and not set(values.tolist()) <= known:
        bad = sorted(set(values.tolist()) - known)
        raise ValueError(f"labels file {uri}: {len(bad):,} category id(s) not in the taxonomy, e.g. {bad[0]}")
    given: dict[str, int] = {}
    for p, c in zip(ids, values.tolist()):
        if given.setdefault(p, c) != c:
            raise ValueError(f"labels file {uri}: product {p!r} is labelled both {given[p]} and {c}")
    position = {str(p): i for i, p in enumerate(pred.ids)}
    unknown = [p for p in ids if p not in position]
    if unknown:
        raise ValueError(f"labels file {uri}: {len(unknown):,} product id(s) not of the new platform, "
                         f"e.g. {unknown[0]!r}")
    mask = np.zeros(len(pred.ids), bool)
    category = np.full(len(pred.ids), -1, np.int64)
    where = np.asarray([position[p] for p in ids], np.int64)
    mask[where], category[where] = True, values
    return mask, category


def _counts(model, category: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``[B, 3]`` hierarchical counts of predicted ``classes`` ``[B, L]`` against the category ids."""
    true = np.asarray([model.taxonomy.label_node(int(c)) for c in category], np.int64)
    return hierarchical_counts(model.taxonomy, true, classes)


def propose(pred: Predictions, config: ChooseConfig, reference: str) -> dict:
    """Write ``to_label.csv``: about ``config.propose`` products (whole groups, drawn with
    ``seed``) where the candidates disagree, no label read; returns what was written."""
    import csv
    import io

    pool = pred.disagreeing(reference)
    mask = draw_groups(pred.groups, pool, config.propose, config.seed)
    names = list(pred.classes)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["product_id", "group_id", "text", "category_id",
                     *[f"{n}_{k}" for n in names for k in ("category_id", "path")]])
    for i in np.flatnonzero(mask):
        writer.writerow([pred.ids[i], pred.groups[i], pred.text[i], "",
                         *[v for n in names for v in (int(pred.category_id[n][i]), pred.category_path[n][i])]])
    target = storage.join(config.output, "to_label.csv")
    storage.write_text(target, buffer.getvalue())
    return {"to_label": target, "proposed": int(mask.sum()), "disagreeing": int(pool.sum()),
            "products": int(len(pred.ids))}


def _hf(counts: np.ndarray) -> float:
    return float(prf_from_counts(*counts.sum(axis=0))["hF"]) if len(counts) else 0.0


def pick(scored: dict[str, np.ndarray], groups: np.ndarray, reference: str, seed: int = 0,
         n_resamples: int = N_RESAMPLES, min_groups: int = MIN_GROUPS) -> tuple[str, dict]:
    """The ``paired`` rule: ``reference`` unless candidates beat it on these products by a real
    difference, then the best of those; ``(chosen, {name: difference})`` (hF points with the 95 %
    paired interval over groups, ``n_resamples`` bootstrap resamples, and ``groups_differing``).

    A percentile bootstrap over a handful of groups is no evidence: two products on which a
    candidate is right and the reference wrong give the interval [+100, +100]. So a candidate
    replaces the reference only where their scores differ in at least ``min_groups`` groups (6:
    the fewest with which a two-sided sign test can reject at 5 %, 2 x 0.5^6 = 0.031); below that
    its difference is marked ``too_few``.

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
        differing = int(len(np.unique(np.asarray(groups)[(counts != base).any(axis=1)])))
        diffs[name] = {"difference": round(100 * d.estimate, 2), "low": round(100 * d.low, 2),
                       "high": round(100 * d.high, 2), "real": bool(d.excludes_zero()),
                       "groups_differing": differing}
        if d.low > 0 and differing < min_groups:
            diffs[name]["too_few"] = True
        elif d.low > 0:
            beating.append((_hf(counts), name))
    return (max(beating)[1] if beating else reference), diffs


def choose(config: ChooseConfig, log: Callable[[str], None] = say) -> dict:
    """Train, adapt and compare every candidate (module docstring); returns ``choice.json``'s content.

    Raises:
        ValueError: the platform is not in the product table, no other platform, no candidate,
            candidates in different label spaces, fewer than 2 labelled products in the training
            platforms' label space, or a labels file without product_id and category_id, with a
            category that is not a number, or naming products that are not the platform's.
        FileNotFoundError: a missing product table, embedding store or labels file.
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
    models, loaded = {}, {}
    for name in names:
        model = None                                  # loaded once where it is not adapted
        train = load_config(TrainConfig, train_file, [*config.train_overrides, *config.candidates[name]])
        folder = storage.join(config.output, "candidates", name)
        key = _candidate_key(config, train, name, table)
        reused = _reusable_candidate(folder, key)
        if reused:
            models[name] = reused
            log(f"[onboard choose] {name}: reusing {folder} (trained and adapted by an earlier run "
                "with the same settings)")
        else:
            log(f"[onboard choose] {name}: trained on {', '.join(others)}"
                f"{' (' + ', '.join(config.candidates[name]) + ')' if config.candidates[name] else ''} ...")
            checkpoint, origin = fold_model(measure_config, train, table, config.platform, others, folder, log)
            adapted, model = None, load_checkpoint(checkpoint)
            if config.adapt and getattr(model, "adapts", False):
                checkpoint, adapted = fold_adapted(measure_config, checkpoint, config.platform, folder, log)
                model = None                          # the adapted checkpoint is read below
            models[name] = {"checkpoint": checkpoint, "model": origin, "adapted": adapted}
            record = {"key": key, "checkpoint": "adapted" if adapted is not None else "model",  # in its folder
                      "model": origin, "adapted": adapted}
            storage.write_text(storage.join(folder, CANDIDATE), json.dumps(record, indent=2))
        loaded[name] = model if model is not None else load_checkpoint(models[name]["checkpoint"])
    taxonomy = loaded[reference].taxonomy
    if any(not np.array_equal(m.taxonomy.ids, taxonomy.ids) for m in loaded.values()):
        raise ValueError("the candidates were trained in different label spaces; candidates may change "
                         "how a model is trained, not which rows it learns")
    pred = Predictions.of(loaded, table, config.platform)
    if config.propose:
        out = {"config": config.model_dump(mode="json"), "platform": config.platform, "others": others,
               "reference": reference, "candidates": models, **propose(pred, config, reference),
               "seconds": round(time.perf_counter() - start, 1)}
        storage.write_text(storage.join(config.output, "proposal.json"), json.dumps(out, indent=2))
        log(f"[onboard choose] the candidates disagree on {out['disagreeing']:,} of {config.platform}'s "
            f"{out['products']:,} products; {out['proposed']:,} of them to label → {out['to_label']} "
            "(fill in category_id, a Google category id; each candidate's guess is beside it), then run "
            "again with --labels pointing at the filled file")
        return out
    labels = {int(c) for c in taxonomy.ids[taxonomy.leaves]}
    known = {int(c) for c in table.taxonomy.ids}
    labelled, category, given, sample = labelled_sample(pred, config, labels, reference, known)
    # the check: the table's other labelled products in the label space (a labels file's rows never)
    check = ~(given if config.labels else labelled) & np.asarray([int(c) in labels for c in pred.category], bool)
    log(f"[onboard choose] choosing on {sample['labelled']:,} labelled {config.platform} products "
        f"({sample['source']}; {sample['outside_label_space']:,} outside the other platforms' label space "
        f"left out{'; drawn where the candidates disagree' if config.max_labelled and config.sampling == 'disagreement' else ''}"
        f"); {int(check.sum()):,} other labelled products check the choice afterwards")
    scored, checks = {}, {}
    for name, model in loaded.items():
        scored[name] = _counts(model, category[labelled], pred.classes[name][labelled])
        if check.any():
            checks[name] = _counts(model, pred.category[check], pred.classes[name][check])
        models[name].update({"hF_labelled": round(_hf(scored[name]), 4) if labelled.any() else None,
                             "hF_check": round(_hf(checks[name]), 4) if name in checks else None})
        log(f"[onboard choose] {name}: "
            + (f"hF {models[name]['hF_labelled']:.4f} on the labelled products" if labelled.any() else "")
            + (f"{', ' if labelled.any() else ''}{models[name]['hF_check']:.4f} on the check products"
               if name in checks else ""))
    if labelled.any():
        chosen, diffs = pick(scored, pred.groups[labelled], reference, config.seed)
    else:                                        # they agree on every product: nothing to choose
        chosen, diffs = reference, {}
        log(f"[onboard choose] the candidates predict the same path for every labelled {config.platform} "
            "product: no label can tell them apart")
    for name, d in diffs.items():
        if d.get("too_few"):
            log(f"[onboard choose] {name} is ahead on the labelled products ({d['difference']:+.2f}) but their "
                f"scores differ in only {d['groups_differing']} near-duplicate group(s), fewer than {MIN_GROUPS}: "
                f"too few to decide; label more where the candidates disagree (--propose)")
    check_diffs = pick(checks, pred.groups[check], reference, config.seed)[1] if checks else {}
    target = copy_checkpoint(models[chosen]["checkpoint"], storage.join(config.output, "model"))
    out = {"config": config.model_dump(mode="json"), "platform": config.platform, "others": others,
           "reference": reference, "chosen": chosen, "model": target, **sample,
           "check_products": int(check.sum()), "labelled_ids": [str(i) for i in pred.ids[labelled]],
           "candidates": models,
           "against_reference": diffs, "against_reference_check": check_diffs,
           "seconds": round(time.perf_counter() - start, 1)}
    storage.write_text(storage.join(config.output, "choice.json"), json.dumps(out, indent=2))
    storage.write_text(storage.join(config.output, REPORT), report_markdown(out))
    log(f"[onboard choose] chose {chosen} for {config.platform}"
        + (f" ({diffs[chosen]['difference']:+.2f} hF points [{diffs[chosen]['low']:+.2f}, "
           f"{diffs[chosen]['high']:+.2f}] over {reference} on the labelled products)" if chosen != reference
           else f" (no candidate beat it by a real difference on {sample['labelled']:,} labelled products)"
           if sample["labelled"] else " (the candidates agree wherever a label could be read)")
        + f" → {target}; {storage.join(config.output, REPORT)} ({out['seconds']:.0f} s)")
    return out


def _candidate_key(config: ChooseConfig, train: TrainConfig, name: str, table: FeatureTable) -> str:
    """What a candidate's trained and adapted checkpoints depend on, hashed: its full training
    config, the product table and store (their paths, the table's rows per platform and the
    store's feature fingerprints, so a catalogue grown in place is trained on again), the
    platform and whether it adapts."""
    rows = dict(zip(*np.unique(np.asarray(table.column("platform")).astype(str), return_counts=True)))
    text = json.dumps({"train": train.model_dump(mode="json"), "products": config.products,
                       "embeddings": config.embeddings, "platform": config.platform,
                       "rows": {k: int(v) for k, v in rows.items()}, "store": table.manifest.get("features"),
                       "adapt": config.adapt, "name": name}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reusable_candidate(folder: str, key: str) -> dict | None:
    """The record of a candidate an earlier run trained (and adapted) with the same ``key`` in
    ``folder``, if its checkpoint is still there; else None. The record names the checkpoint by
    its folder inside ``folder`` (``model`` or ``adapted``), so an output folder copied or moved
    elsewhere (or to ``s3://``) is still reused."""
    uri = storage.join(folder, CANDIDATE)
    if not storage.exists(uri):
        return None
    record = json.loads(storage.read_text(uri))
    if record.pop("key", None) != key or record.get("checkpoint") not in ("model", "adapted"):
        return None
    checkpoint = storage.join(folder, record["checkpoint"])
    if not storage.exists(storage.join(checkpoint, CONFIG)):
        return None
    return {**record, "checkpoint": checkpoint}


def report_markdown(out: dict) -> str:
    """``report.md``: the candidates' hF on the labelled and check products, and each against the
    reference with its paired interval."""
    def cell(d: dict | None) -> str:
        if not d:
            return "–"
        return f"{d['difference']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]" + (" (real)" if d["real"] else "")
    drawn = ""
    if out["config"]["max_labelled"] is not None:
        drawn = (f"; at most {out['config']['max_labelled']:,} drawn in whole groups "
                 + ("where the candidates disagree (" + f"{out['disagreeing']:,} such products)"
                    if out["sampling"] == "disagreement" else "at random"))
    agree = (" The candidates predict the same path for every labelled product where they could be "
             "compared (or in fewer than 2 near-duplicate groups do they differ): no label can tell "
             "them apart, and the first is kept." if not out["labelled"] else "")
    lines = [f"# The model for {out['platform']}, chosen on {out['labelled']:,} labelled products", "",
             f"Candidates trained on {', '.join(out['others'])}, each adapted to {out['platform']}'s products "
             f"(inputs only) when it adapts; the first, `{out['reference']}`, is kept unless another beats "
             "it on the labelled products by a real difference (strict hF, 95 % paired bootstrap over "
             "near-duplicate groups). The check products are the platform's other labelled products in "
             "the label space; the choice never read them." + agree, "",
             f"**Chosen: `{out['chosen']}`** → `{out['model']}`", "",
             f"Labelled products: {out['labelled']:,} (of {out['source']}; {out['outside_label_space']:,} outside "
             f"the other platforms' label space left out{drawn}); check products: {out['check_products']:,}.", "",
             "| candidate | hF, labelled | − reference, labelled | hF, check | − reference, check |",
             "|---|---|---|---|---|"]
    def score(v: float | None) -> str:
        return "–" if v is None else f"{v:.4f}"
    for name, m in out["candidates"].items():
        lines.append(f"| `{name}` | {score(m['hF_labelled'])} | {cell(out['against_reference'].get(name))} "
                     f"| {score(m['hF_check'])} | {cell(out['against_reference_check'].get(name))} |")
    return "\n".join(lines) + "\n"
