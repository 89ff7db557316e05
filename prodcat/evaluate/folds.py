"""Train/test arrangements of an evaluation: in-platform and leave-one-platform-out (LOPO).

- ``in_platform``: train on the ``train`` split of every platform, test on the ``test`` split.
- ``lopo``: per held-out platform P, train on the other platforms' ``train`` split, test on every
  labelled product of P whose category occurs in the training rows; ``coverage`` is that share
  (the rest cannot be predicted by a model that never saw P and is reported, not scored).

Validation protocols, for choosing models (never a test fold):

- ``in_platform_val``: train on every platform's ``train`` split, score on the ``calib`` split
  (rows that neither early stopping nor decision-level fusion's choices read).
- ``transfer_val``: for every ordered pair of platforms (A, B), train on A's ``train`` split and
  score on B's ``val`` split. The *nested* cross-platform score of a model for the outer fold that
  holds out P is the mean over the pairs among the other platforms (a leave-one-platform-out inside
  the training platforms): a choice made with it never looks at P
  (:func:`prodcat.evaluate.report.nested_scores`).

In all, the label space (taxonomy, heads, virtual leaves) is the training rows' categories only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prodcat.core.schema import SPLITS
from prodcat.evaluate.config import EvaluateConfig
from prodcat.train.config import apply_overrides
from prodcat.train.features import FeatureTable


@dataclass
class Fold:
    """One train/test arrangement."""

    name: str
    protocol: str
    train_platforms: list[str]
    test_platforms: list[str]
    test_splits: list[str] | None  # None: every split of the test platforms (LOPO: all but val)


def make_folds(config: EvaluateConfig, protocol: dict, platforms: list[str]) -> list[Fold]:
    """The folds to run, from the product table's protocol (LOPO folds) and ``config``.

    Raises:
        ValueError: when LOPO is asked for with fewer than two platforms.
    """
    folds = []
    if "in_platform_val" in config.protocols:
        # scored on the calibration split: early stopping picks on ``val`` and decision-level
        # fusion chooses its weights on it, so a choice between models reads rows neither saw
        folds.append(Fold("in_platform_val", "in_platform_val", platforms, platforms,
                          [config.train.data.calib_split]))
    if "transfer_val" in config.protocols:
        folds += [Fold(f"val_{a}_to_{b}", "transfer_val", [a], [b], ["val"])
                  for a in platforms for b in platforms if a != b]
    if "in_platform" in config.protocols:
        folds.append(Fold("in_platform", "in_platform", platforms, platforms, [config.test_split]))
    if "lopo" in config.protocols:
        lopo = protocol.get("leave_one_platform_out") or [
            {"test": p, "train": [q for q in platforms if q != p]} for p in platforms]
        if len(platforms) < 2:
            raise ValueError(f"leave-one-platform-out needs two or more platforms, got {platforms}")
        lopo_splits = [s for s in SPLITS if s != config.train.data.val_split]
        for f in lopo:
            if f["test"] in platforms and (config.lopo_platforms is None or f["test"] in config.lopo_platforms):
                train_on = [p for p in f["train"] if p in platforms]
                # every split of the held-out platform but validation: model selection reads the
                # validation splits (in_platform_val, transfer_val), so they never score a choice
                folds.append(Fold(f"lopo_{f['test']}", "lopo", train_on, [f["test"]], lopo_splits))
    return folds


def grid_cells(config: EvaluateConfig) -> list[dict]:
    """The models to train: ``[{"name", "overrides", "fusion", "masking", "modality",
    "modalities"}]``, the named models first, then every combination of the grid."""
    cells = []
    for name, overrides in config.models.items():
        model = apply_overrides(config.train, overrides).model
        cells.append({"name": name, "overrides": dict(overrides), "fusion": model.fusion,
                      "masking": model.masking, "modality": "+".join(model.modalities),
                      "modalities": list(model.modalities)})
    grid = config.grid
    if grid is not None:
        cells += [{"name": f"{fusion}/{masking}/{mod}", "fusion": fusion, "masking": masking,
                   "modality": mod, "modalities": feats,
                   "overrides": {"model.fusion": fusion, "model.masking": masking,
                                 "model.modalities": feats}}
                  for fusion in grid.fusions for masking in grid.maskings
                  for mod, feats in grid.modalities.items()]
    return cells


def prepare_fold(table: FeatureTable, fold: Fold, config: EvaluateConfig) -> tuple[FeatureTable, FeatureTable, dict]:
    """``(fold table, test rows, coverage figures)`` of one fold.

    The fold's label space is the training rows' categories only: the taxonomy is induced from
    the categories of the training platforms' ``train`` split (so a leave-one-platform-out model
    never has heads, or virtual leaves, for categories only the held-out platform uses), and every
    row is re-targeted to it (:meth:`FeatureTable.retarget`; rows of other categories leave the
    fold). Test rows are the fold's test platforms and splits whose category is covered;
    ``coverage`` is their share of all labelled test rows.
    """
    data = config.train.data
    train_rows = table.rows(splits=[data.train_split], platforms=fold.train_platforms)
    labels = np.unique(train_rows.column("category_id"))
    fold_taxonomy = table.taxonomy.induced(labels.tolist())
    fold_table = table.retarget(fold_taxonomy)
    all_test = table.rows(splits=fold.test_splits, platforms=fold.test_platforms)
    test = fold_table.rows(splits=fold.test_splits, platforms=fold.test_platforms)
    test_categories = np.unique(all_test.column("category_id"))
    info = {"fold": fold.name, "protocol": fold.protocol, "train_platforms": fold.train_platforms,
            "test_platforms": fold.test_platforms, "test_splits": fold.test_splits,
            "n_train": len(train_rows), "n_test_all": len(all_test), "n_test": len(test),
            "n_train_used": min(len(train_rows), data.max_train_products or len(train_rows)),
            "coverage": len(test) / len(all_test) if len(all_test) else 0.0,
            "test_categories": int(len(test_categories)),
            "covered_categories": int(np.isin(test_categories, labels).sum()),
            "label_categories": int(len(labels)),
            "taxonomy_nodes": len(fold_taxonomy) - 1,
            "test_groups": int(len(np.unique(test.column("group_id")))) if len(test) else 0}
    return fold_table, test, info


def adapt_rows(table: FeatureTable, fold: Fold, config: EvaluateConfig) -> FeatureTable:
    """The products whose inputs a model that adapts (prior adapt, self-training) reads on
    ``fold``, never their labels: every product of the fold's scored splits of its test platforms,
    covered by its label space or not; on a ``transfer_val`` fold with ``adapt_pool: platform``
    (the default), every product of the scored platform but its in-platform test split (its
    training split too, which the fold's model never read: the scored platform is not a training
    platform), so validation adapts to a pool the size of what a leave-one-platform-out fold
    adapts to (its whole held-out platform). ``FeatureTable`` rows, any order."""
    splits = fold.test_splits
    if config.adapt_pool == "platform" and fold.protocol == "transfer_val":
        splits = [s for s in SPLITS if s != config.test_split]
    return table.rows(splits=splits, platforms=fold.test_platforms)


def check_unlearnt(table: FeatureTable, fold: Fold, test: FeatureTable) -> None:
    """Refuse a fold whose scoring a fine-tuned encoder has seen: a product of ``test`` among
    the products an encoder of ``table``'s features was trained on
    (:attr:`FeatureTable.trained_on`), or, for a fold that holds platforms out (leave-one-
    platform-out), any product of a held-out platform among them.

    Raises:
        ValueError: naming the feature, how many such products and what to do instead (a
            per-fold fine-tuning: the evaluation config's ``finetune``).
    """
    held_out = [p for p in fold.test_platforms if p not in fold.train_platforms]
    for feature, ids in table.trained_on.items():
        scored = int(np.isin(test.column("product_id").astype(str), ids).sum())
        there = int(table.rows(platforms=held_out).seen_by([feature]).sum()) if held_out else 0
        if scored or there:
            what = (f"{scored:,} of the {len(test):,} products it scores" if scored else
                    f"{there:,} products of {', '.join(held_out)}, the platform(s) it holds out")
            raise ValueError(
                f"fold {fold.name}: the encoder of feature {feature!r} was fine-tuned on {what}; "
                f"its scores would not be an honest test. Evaluate the fine-tuned encoder with "
                f"one fine-tuning per fold on the fold's training platforms (the evaluation "
                f"config's finetune: {{feature: {feature}, ...}}), or leave {feature!r} out")
