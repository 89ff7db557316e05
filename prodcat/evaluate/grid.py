"""``prodcat evaluate``: a grid of models and baselines on the same splits, in-platform and
leave-one-platform-out (LOPO).

Protocols (folds from the product table's metadata, :func:`prodcat.catalog.build.read_protocol`):

- ``in_platform``: train on the ``train`` split of every platform (early stopping on ``val``),
  test on the ``test`` split; metrics overall and per platform.
- ``lopo``: per held-out platform P, train on the other platforms' ``train`` split (``val`` for
  early stopping), test on every labelled product of P whose category occurs in the training
  rows. ``coverage`` = the share of P's labelled products so covered; the rest cannot be
  predicted by any model trained without P and is reported, not scored.

Grid: ``model.fusion`` x ``model.masking`` x ``model.modalities`` (named modality sets, e.g.
``text``, ``image``, ``text+image``), each a full :func:`prodcat.train.trainer.train` run; plus the flat
TF-IDF + linear SVM baseline (:mod:`prodcat.evaluate.baselines`) on title + description. Every model is
scored on the same rows with :func:`prodcat.core.metrics.hierarchical_metrics`.

Outputs in ``output``: ``results.json``, ``report.md`` and PNG plots (:mod:`prodcat.evaluate.report`),
and one training run folder per (fold, model) under ``runs/``.
"""

from __future__ import annotations

import json
import time
from typing import Callable

import numpy as np

from prodcat.catalog.build import read_protocol
from prodcat.core import audit, storage
from prodcat.core.console import Progress, say
from prodcat.core.metrics import hierarchical_counts, hierarchical_metrics, hierarchical_prf, nodes_of
from prodcat.core.runtime import ensure_ray
from prodcat.core.uncertainty import hf_interval, paired_difference, verdict
from prodcat.evaluate.config import EvaluateConfig
from prodcat.evaluate.finetuning import fold_feature
from prodcat.evaluate.folds import Fold, adapt_rows, check_unlearnt, grid_cells, make_folds, prepare_fold
from prodcat.evaluate.predictions import prediction_table, write_predictions
from prodcat.evaluate.references import reference_models
from prodcat.evaluate.report import (
    comparisons_csv,
    first_grid_model,
    plot_hf,
    prior_label,
    results_csv,
    results_markdown,
    write_report,
)
from prodcat.models.checkpoint import load_checkpoint
from prodcat.train.config import TrainConfig, apply_overrides
from prodcat.train.features import FeatureTable, describe_counts, load_feature_table, select_train_rows
from prodcat.train.lexical import model_inputs
from prodcat.train.trainer import train


def score_model(taxonomy, test: FeatureTable, classes: np.ndarray) -> tuple[dict, np.ndarray]:
    """``(metrics, per-product counts [B, 3])`` of output paths ``classes [B, L]`` on ``test``:
    the one hF on the output path with its bootstrap interval over near-duplicate groups
    (``hF_ci``), the lenient hF beside it, path consistency, per-level metrics, per-platform hF."""
    true = test.column("node")
    if not len(true):
        return {"n": 0}, np.zeros((0, 3), np.int64)
    out = hierarchical_metrics(taxonomy, true, nodes_of(taxonomy, classes), classes)
    counts = hierarchical_counts(taxonomy, true, classes)
    ci = hf_interval(counts, test.column("group_id"))
    out["hF_ci"] = [ci.low, ci.high]
    platforms = test.column("platform")
    out["per_platform_hF"] = {str(p): hierarchical_prf(taxonomy, true[platforms == p],
                                                       classes[platforms == p])["hF"]
                              for p in np.unique(platforms)}
    return out, counts


def model_specs(config: EvaluateConfig) -> list[dict]:
    """The models to run: the named models and grid cells (:func:`grid_cells`, ``kind`` "model"),
    then the reference rows (:mod:`prodcat.evaluate.references`, ``kind`` "reference")."""
    cells = [{**c, "kind": "model"} for c in grid_cells(config)]
    refs = reference_models(config.train, config.models, config.references, config.reference_lexical_grid)
    for name, overrides in refs.items():
        model = apply_overrides(config.train, overrides).model
        cells.append({"name": name, "overrides": overrides, "fusion": model.fusion, "masking": "-",
                      "modality": "+".join(model.modalities), "modalities": list(model.modalities),
                      "kind": "reference"})
    names = [c["name"] for c in cells]
    if len(set(names)) != len(names):
        raise ValueError(f"model names must be unique, got {names}")
    return cells


def cell_config(config: EvaluateConfig, fold: Fold, cell: dict, seed: int) -> TrainConfig:
    """The training config of one model (``cell``) on ``fold`` with ``seed``: it reads only the
    fold's training platforms and writes under ``<output>/runs/<fold>/<model>-seed<seed>``."""
    safe = cell["name"].replace("/", "_").replace("+", "_")
    return apply_overrides(config.train, {
        **cell["overrides"], "data.platforms": fold.train_platforms, "optim.seed": seed,
        "output": storage.join(config.output, "runs", fold.name, f"{safe}-seed{seed}"), "name": safe})


def run_model(table: FeatureTable, fold: Fold, cell: dict, test: FeatureTable, config: EvaluateConfig,
              seed: int, unlabelled: FeatureTable | None = None) -> tuple[dict, dict, np.ndarray]:
    """Train one model on ``fold`` (``table``: the fold's rows, in its label space; the model reads
    only ``fold.train_platforms``) with ``seed``, and score it on ``test``;
    ``(row, prediction, counts [B, 3])``. A decision-level model that chose ``prior: adapt`` or
    self-trains is first adapted to ``unlabelled`` (default ``test``; :func:`prodcat.evaluate.folds.adapt_rows`):
    every product of the fold's scored splits, whether its category is in the fold's label space or
    not, since which are is decided by their labels (on a transfer_val pair, its whole scored
    platform but the test split); only
    their inputs and platforms are read (audited as ``adapt:<fold>``). Self-training with
    ``scope: new_platforms`` adds nothing in-platform (the fold's test platforms are its
    training platforms)."""
    cfg = cell_config(config, fold, cell, seed)
    start = time.perf_counter()
    keep = cell["name"] in config.save_models and fold.protocol == "lopo"
    result = train(cfg, table=table, progress=None, save_model=keep)
    loaded = result.model if result.model is not None else load_checkpoint(result.checkpoint)
    audit.read(f"test:{fold.name}", test.column("product_id"))
    if result.model is not None and loaded.adapts:
        # transductive: the test products' label distribution (EM) or a self-trained component,
        # from their inputs
        rows = test if unlabelled is None else unlabelled
        audit.read(f"adapt:{fold.name}", rows.column("product_id"))
        everything = model_inputs(loaded, rows)
        inputs = inputs_of(everything, rows, test) if unlabelled is not None else everything
        loaded = loaded.adapt(*everything, platforms=rows.column("platform"))
    else:
        inputs = model_inputs(loaded, test)
    pred = loaded.predict(*inputs)
    metrics, counts = score_model(table.taxonomy, test, pred["classes"])
    row = {"fold": fold.name, "protocol": fold.protocol, "model": cell["name"], "kind": cell["kind"],
           "seed": seed, **{k: cell[k] for k in ("fusion", "masking", "modality")}, **metrics,
           "epochs": len(result.history), "best_epoch": int(result.metrics["epoch"]),
           "val_hF": result.metrics["val_hF"], "seconds_per_epoch": result.seconds_per_epoch,
           "peak_memory_mb": result.peak_memory_mb, "train_seconds": time.perf_counter() - start,
           "checkpoint": result.checkpoint, "temperature": result.temperature,
           "train_rows": result.data.get("train_rows")}
    if result.model is not None:          # decision-level fusion: what it chose, on what
        row["combiner"] = {"weights": loaded.combiner.weights, "decoding": loaded.combiner.decoding,
                           "prior": loaded.combiner.prior, "prior_share": loaded.combiner.prior_share,
                           "adapted_on": loaded.combiner.adapted_on,
                           "self_trained": loaded.self_trained and {k: loaded.self_trained.settings[k]
                                                                    for k in ("fitted_on", "adapted_on", "rounds",
                                                                              "outside_label_space")
                                                                    if k in loaded.self_trained.settings},
                           "self_trained_fitted_on": {c.name: c.settings.get("fitted_on")
                                                      for c in loaded.self_trained_components},
                           "reweight": loaded.selection.get("reweight"),
                           "settings": loaded.selection.get("settings", {}),
                           "heldout": loaded.selection.get("heldout", []),
                           "chosen": loaded.selection.get("chosen", {}),
                           "crossfit": loaded.selection.get("crossfit", False),
                           "candidates": [{k: c[k] for k in ("candidate", "decoding", "prior", "prior_share", "hF",
                                                             "vs_equal", "out_of_sample", "per_set", "every_set")
                                           if k in c} for c in loaded.selection.get("candidates", [])]}
    return row, pred, counts


def inputs_of(inputs: tuple[dict, dict], rows: FeatureTable, subset: FeatureTable) -> tuple[dict, dict]:
    """The ``(features, present)`` of ``subset``'s products, taken from ``inputs`` (those of
    ``rows``, which hold every product of ``subset``): the lexical scores of an adapting model's
    test products are not computed twice.

    Raises:
        KeyError: names a product of ``subset`` that ``rows`` lacks.
    """
    position = {p: i for i, p in enumerate(rows.column("product_id"))}
    missing = [p for p in subset.column("product_id") if p not in position]
    if missing:
        raise KeyError(f"{len(missing)} products are not among the rows given, e.g. {missing[0]}")
    index = np.array([position[p] for p in subset.column("product_id")], np.int64)
    features, present = inputs
    return {f: v[index] for f, v in features.items()}, {f: v[index] for f, v in present.items()}


def with_finetuned(table: FeatureTable, test: FeatureTable, fold: Fold, cells: list[dict],
                   config: EvaluateConfig, seed: int, seeds: list[int], info: dict,
                   progress: Callable[[str], None], unlabelled: FeatureTable
                   ) -> tuple[FeatureTable, FeatureTable, FeatureTable]:
    """``(table, test, unlabelled)`` with the fold's fine-tuned text feature added
    (:func:`fold_feature`): the encoder fine-tuned with ``seed`` (its training subsample) on the
    fold's training platforms, embedding the rows the models of ``seeds`` read and the products
    adapting reads (``unlabelled``: :func:`prodcat.evaluate.folds.adapt_rows`, covered by the
    fold's label space or not, so a fine-tuned model self-trains on the pool a frozen one does);
    with ``finetune.nested`` one variant per training platform Q for Q's cross-platform held-out
    set. The summary goes to ``info["finetune"]`` (the first) and ``info["finetune_seeds"]`` (one
    per fine-tuning seed)."""
    tuned, data = config.finetune.feature, config.train.data
    ids = np.asarray(table.column("product_id"), dtype=str)
    adapt_ids = np.asarray(unlabelled.column("product_id"), dtype=str)
    every = np.concatenate([ids, np.setdiff1d(adapt_ids, ids)])   # + those outside the label space
    x, present, trained_on, summary = fold_feature(
        config.finetune, data.products, config.output, fold.name, fold.train_platforms, every, seed,
        progress, embed_ids=np.union1d(rows_read(table, fold, cells, test, config, seeds), adapt_ids))
    version = summary["fingerprint"]
    at = dict(zip(every.tolist(), range(len(every))))
    where = np.array([at[p] for p in adapt_ids], dtype=np.int64)
    unlabelled = unlabelled.add_feature(tuned, x[where], present[where], trained_on=trained_on,
                                        version=version)
    table = table.add_feature(tuned, x[:len(ids)], present[:len(ids)], trained_on=trained_on,
                              version=version)
    if config.finetune.nested and len(fold.train_platforms) >= 2:
        inner_ids = training_rows_read(table, fold, cells, config, seeds)
        summary["inner"] = []
        for q in fold.train_platforms:   # the cross-platform held-out set of q reads these
            xq, present_q, trained_q, inner = fold_feature(
                config.finetune, data.products, config.output, f"{fold.name}-without-{q}",
                [p for p in fold.train_platforms if p != q], ids, seed, progress, embed_ids=inner_ids)
            table = table.add_variant(tuned, q, ids, xq, present_q, trained_q, inner["fingerprint"])
            summary["inner"].append({"without": q, **inner})
    info.setdefault("finetune", summary)
    info.setdefault("finetune_seeds", []).append(summary)
    test = table.where(np.isin(table.column("product_id"), test.column("product_id")))
    check_unlearnt(table, fold, test)
    return table, test, unlabelled


def rows_read(table: FeatureTable, fold: Fold, cells: list[dict], test: FeatureTable,
              config: EvaluateConfig, seeds: list[int] | None = None) -> np.ndarray:
    """The product ids the fold's models read (each a subset of ``table``'s rows): for every model
    and seed (``seeds``, default ``config.seeds``), its training rows (the seeded subsample
    :func:`select_train_rows` draws, as training does) and the validation and calibration splits
    of the fold's training platforms; and the test rows. What :func:`fold_feature` embeds with
    the fold's fine-tuned encoder."""
    mine = table.rows(platforms=fold.train_platforms)
    ids = [test.column("product_id"), training_rows_read(table, fold, cells, config, seeds)]
    for cell in cells:
        cfg = cell_config(config, fold, cell, config.seeds[0])     # splits do not depend on the seed
        ids.append(mine.rows(splits=[cfg.data.val_split, cfg.data.calib_split]).column("product_id"))
    return np.unique(np.concatenate([np.asarray(i, dtype=str) for i in ids]))


def training_rows_read(table: FeatureTable, fold: Fold, cells: list[dict],
                       config: EvaluateConfig, seeds: list[int] | None = None) -> np.ndarray:
    """The product ids of every model and seed's (``seeds``, default ``config.seeds``) training
    subsample on ``fold`` (drawn as :func:`select_train_rows` draws them): the rows the
    cross-platform held-out sets of a decision-level model are fitted on and predict, what an
    inner fine-tuning embeds."""
    mine = table.rows(platforms=fold.train_platforms)
    ids = [select_train_rows(mine, cell_config(config, fold, cell, seed)).column("product_id")
           for cell in cells for seed in (config.seeds if seeds is None else seeds)]
    return np.unique(np.concatenate([np.asarray(i, dtype=str) for i in ids]))


def compare(fold: str, counts: dict[str, np.ndarray], groups: np.ndarray, reference: str,
            seed: int = 0) -> list[dict]:
    """Every model against ``reference`` on the fold's test products: the paired bootstrap
    interval of ``hF(model) - hF(reference)`` and its verdict."""
    out = []
    for name, c in counts.items():
        if name == reference or reference not in counts:
            continue
        d = paired_difference(c, counts[reference], groups)
        out.append({"fold": fold, "model": name, "reference": reference, "seed": seed,
                    "difference": d.estimate, "low": d.low, "high": d.high, "real": d.excludes_zero(),
                    "verdict": verdict(d, name, reference)})
    return out


def evaluate(config: EvaluateConfig, table: FeatureTable | None = None,
             progress: Callable[[str], None] = say) -> dict:
    """Run every fold x seed x model (named models, grid cells, reference rows); write
    ``results.json``, ``report.md``, plots and the predictions (:mod:`prodcat.evaluate.predictions`).

    A model of a leave-one-platform-out fold reads only its training platforms: every choice it
    makes (component settings, weights, temperatures) is made on them (:mod:`prodcat.train.decision`);
    each read is reported to :mod:`prodcat.core.audit`.

    Returns:
        the results dict (as written to ``results.json``).

    Raises:
        FileNotFoundError: when the product table or the store is missing.
    """

    ensure_ray()
    start = time.perf_counter()
    data = config.train.data
    cells = model_specs(config)
    features = sorted({f for c in cells for f in c["modalities"]})
    tuned = config.finetune.feature if config.finetune.feature in features else None
    if table is None:
        table = load_feature_table(data.products, data.embeddings, [f for f in features if f != tuned],
                                   data.taxonomy, data.skip_unreadable)
    if data.platforms:
        table = table.rows(platforms=data.platforms)
    progress(f"[evaluate] {describe_counts(table.counts, len(table))}")
    platforms = sorted(np.unique(table.column("platform")).tolist())
    folds = make_folds(config, read_protocol(data.products), platforms)
    rows, fold_info, predictions, comparisons, against_default = [], [], {}, [], []
    runs = Progress("evaluate", len(folds) * len(cells) * len(config.seeds), "runs", log=progress)
    for fold in folds:
        audit.read(f"begin:{fold.name}", [])
        fold_table, test, info = prepare_fold(table, fold, config)
        fold_info.append(info)
        progress(f"[evaluate] {fold.name}: train {info['n_train']:,} on {fold.train_platforms} "
                 f"({info['label_categories']} categories), test {info['n_test']:,} of "
                 f"{info['n_test_all']:,} (coverage {info['coverage']:.1%}, {info['test_groups']:,} groups)")
        if not len(test):
            continue
        check_unlearnt(table, fold, test)
        base, base_test = fold_table, test
        # what adapting reads (prior adapt, self-training): folds.adapt_rows, every product of the fold's scored
        # splits covered or not, on a transfer_val pair its whole scored platform but the test split; a per-fold
        # fine-tuned feature is embedded for all of them too (before stop 60 only for the covered test products)
        base_unlabelled = unlabelled = adapt_rows(table, fold, config)
        per_seed = bool(tuned) and config.finetune.per_seed and len(config.seeds) > 1
        if tuned and not per_seed:       # one fine-tuning per fold, with the first seed
            fold_table, test, unlabelled = with_finetuned(base, base_test, fold, cells, config, config.seeds[0],
                                                          config.seeds, info, progress, base_unlabelled)
        for seed in config.seeds:
            if per_seed:                 # each seed its own fine-tuning subsample and encoder
                fold_table, test, unlabelled = with_finetuned(base, base_test, fold, cells, config, seed, [seed],
                                                              info, progress, base_unlabelled)
            counts, tables = {}, []
            for cell in cells:
                row, pred, counts[cell["name"]] = run_model(fold_table, fold, cell, test, config, seed,
                                                            unlabelled)
                rows.append(row)
                tables.append(prediction_table(fold.name, cell["name"], seed, test, fold_table.taxonomy,
                                               pred["classes"], pred["level_confidence"]))
                if seed == config.seeds[0]:
                    predictions.setdefault(fold.name, {"true": test.column("node"), "taxonomy":
                                                       fold_table.taxonomy, "models": {}})
                    predictions[fold.name]["models"][cell["name"]] = pred["classes"]
                runs.step(f"{fold.name}{_seed(config, seed)} {cell['name']}: hF {_hf(row)} "
                          f"({_how(row)}{row['train_seconds']:.0f} s)")
                storage.write_text(storage.join(config.output, "results.partial.json"),  # crash insurance
                                   json.dumps({"folds": fold_info, "results": rows}, default=float))
            comparisons += compare(fold.name, counts, test.column("group_id"), config.reference, seed)
            default = first_grid_model(rows, fold.name)
            if default is not None:      # every other row against the default (issue 19: none ahead)
                against_default += compare(fold.name, counts, test.column("group_id"), default, seed)
            if config.predictions:
                write_predictions(config.output, fold.name, seed, tables)
    results = {"config": config.model_dump(mode="json"), "folds": fold_info, "results": rows,
               "comparisons": comparisons, "against_default": against_default, "seeds": list(config.seeds),
               "dataset": {"products": data.products, "embeddings": data.embeddings,
                           "features": features, "rows": len(table), "platforms": platforms,
                           "taxonomy_version": table.taxonomy.version, "counts": table.counts},
               "seconds": time.perf_counter() - start}
    write_report(results, predictions, config.output, plots=config.plots)
    progress(f"[evaluate] {len(rows)} results in {results['seconds']:.0f} s → {config.output}")
    return results


def _seed(config: EvaluateConfig, seed: int) -> str:
    return f" seed {seed}" if len(config.seeds) > 1 else ""


def _how(row: dict) -> str:
    """A few words on how a model was fitted: epochs, or the decision-level combiner."""
    combiner = row.get("combiner")
    if combiner:
        used = [f"{k} {v:.2f}" for k, v in combiner["weights"].items() if v > 0]
        prior = prior_label(combiner)
        return f"{', '.join(used)}; {combiner['decoding']}; " + (f"prior {prior}; " if prior != "none" else "")
    return f"{row['epochs']} epochs, "


def transfer_scores(train: TrainConfig, table: FeatureTable, output: str) -> dict[str, float]:
    """The validation hF of ``train``'s model moved across platforms: for every ordered pair
    (A, B), trained on A's train split, scored on B's validation split (in A's label space);
    ``{"val_<A>_to_<B>": hF, ..., "nested_hF": their mean}``. The mean over all pairs is the
    objective a sweep optimises to choose the *deployed* model, trained on every platform
    (``prodcat tune``, ``sweep.objective: nested_lopo``); a choice for the leave-one-platform-out
    fold that holds out P may only read the pairs among the other platforms
    (:func:`prodcat.evaluate.report.nested_scores`), never this mean.

    Raises:
        ValueError: with fewer than two platforms in ``table``.
    """
    platforms = sorted(np.unique(table.column("platform")).tolist())
    if len(platforms) < 2:
        raise ValueError(f"a cross-platform score needs two or more platforms, got {platforms}")
    config = EvaluateConfig(train=train, grid=None, models={"model": {}}, protocols=["transfer_val"],
                            references=[], output=output, plots=False, predictions=False)
    cell = model_specs(config)[0]
    scores: dict[str, float] = {}
    for fold in make_folds(config, {}, platforms):
        fold_table, test, _ = prepare_fold(table, fold, config)
        if len(test) and len(fold_table.rows(splits=[train.data.val_split],
                                             platforms=fold.train_platforms)):
            scores[fold.name] = run_model(fold_table, fold, cell, test, config, train.optim.seed)[0]["hF"]
    scores["nested_hF"] = float(np.mean(list(scores.values()))) if scores else 0.0
    return scores


def _hf(row: dict) -> str:
    low, high = row.get("hF_ci", [float("nan")] * 2)
    return f"{row['hF']:.4f} [{low:.3f}, {high:.3f}]"


def load_results(output: str) -> dict:
    """``results.json`` of an evaluation output folder."""
    return json.loads(storage.read_text(storage.join(output, "results.json")))


def current_pairs(parts: list[dict], key: str) -> tuple[list[dict], list[dict]]:
    """The paired comparisons ``key`` (``comparisons`` or ``against_default``) of the evaluation
    results ``parts`` (in merge order) that still compare the rows a merge keeps, and those left out.

    A comparison (fold, model, reference, seed) from part ``i`` is current when, for that fold and
    seed, the last part holding a row of ``model`` and the last holding a row of ``reference`` are
    both ``i`` (a name with no row anywhere, e.g. a reference not scored as a row, does not count
    against it); of current ones the later part's wins, as rows do. Left out: each (fold, model,
    reference, seed) for which no part has a current comparison, once, from the last part holding it.
    """
    owner = {(r["fold"], r["model"], r.get("seed", 0)): i for i, p in enumerate(parts) for r in p["results"]}

    def ident(c: dict) -> tuple:
        return c["fold"], c["model"], c["reference"], c.get("seed", 0)

    def is_current(i: int, c: dict) -> bool:
        return all(owner.get((c["fold"], m, c.get("seed", 0)), i) == i for m in (c["model"], c["reference"]))

    kept = {ident(c): c for i, p in enumerate(parts) for c in p.get(key) or [] if is_current(i, c)}
    stale = {ident(c): c for i, p in enumerate(parts) for c in p.get(key) or [] if ident(c) not in kept}
    return list(kept.values()), list(stale.values())


def merge_results(outputs: list[str], output: str) -> dict:
    """Merge the ``results.json`` of several evaluation folders (e.g. in-platform and LOPO run
    separately, or two grids on the same folds) into ``output``: ``results.json``, ``report.md``,
    ``results.csv``, ``comparisons.csv``, ``against_default.csv`` and ``hf_by_model.png``
    (per-fold plots stay in the source folders). Rows and paired comparisons are unioned; a (fold,
    model, seed) present twice keeps the later folder's row, so seeds run apart (``--set
    seeds=[1, 2]``) merge with seed 0 into one report with an interval and a verdict per seed. A
    fold present twice keeps the later folder's description. A paired comparison (``comparisons``,
    ``against_default``) is kept only from the folder whose rows of both its models the merge
    keeps (:func:`current_pairs`): one measured against a row a later folder replaced (a default
    rerun apart on some folds) is left out, counted in ``left_out_pairs`` and the report.

    Raises:
        FileNotFoundError: when a folder has no ``results.json``.
    """

    parts = [load_results(o) for o in outputs]
    folds = {f["fold"]: f for p in parts for f in p["folds"]}
    rows = list({(r["fold"], r["model"], r.get("seed", 0)): r for p in parts for r in p["results"]}.values())
    (comparisons, left_c), (against_default, left_a) = (current_pairs(parts, key)
                                                        for key in ("comparisons", "against_default"))
    seeds = sorted({r.get("seed", 0) for r in rows})
    dataset = dict(parts[-1]["dataset"])
    merged = {"config": [p["config"] for p in parts], "folds": list(folds.values()), "results": rows,
              "comparisons": comparisons, "against_default": against_default, "seeds": seeds,
              "dataset": dataset, "seconds": sum(p["seconds"] for p in parts), "merged_from": outputs,
              "left_out_pairs": left_c + left_a}
    storage.write_text(storage.join(output, "results.json"), json.dumps(merged, indent=2, default=float))
    storage.write_text(storage.join(output, "results.csv"), results_csv(rows))
    storage.write_text(storage.join(output, "comparisons.csv"), comparisons_csv(comparisons))
    storage.write_text(storage.join(output, "against_default.csv"), comparisons_csv(against_default))
    md = results_markdown(merged) + "\nMerged from: " + ", ".join(outputs) + "\n"
    if left_c or left_a:
        md += (f"\nLeft out: {len(left_c) + len(left_a)} paired comparison(s) measured against a row a "
               "later folder replaced (`left_out_pairs` in results.json).\n")
    if rows:
        plot_hf(merged, storage.join(output, "hf_by_model.png"))
        md += "\n![hf_by_model.png](hf_by_model.png)\n"
    storage.write_text(storage.join(output, "report.md"), md)
    return merged
