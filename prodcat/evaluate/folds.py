"""Train/test arrangements of an evaluation: in-platform and leave-one-platform-out (LOPO).

- ``in_platform``: train on the ``train`` split of every platform, test on the ``test`` split.
- ``lopo``: per held-out platform P, train on the other platforms' ``train`` split, test on every
  labelled product of P whose category occurs in the training rows; ``coverage`` is that share
  (the rest cannot be predicted by a model that never saw P and is reported, not scored).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from prodcat.evaluate.config import EvaluateConfig, GridSettings
from prodcat.train.features import FeatureTable


@dataclass
class Fold:
    """One train/test arrangement."""

    name: str
    protocol: str
    train_platforms: list[str]
    test_platforms: list[str]
    test_splits: list[str] | None  # None: every split of the test platforms


def make_folds(config: EvaluateConfig, protocol: dict, platforms: list[str]) -> list[Fold]:
    """The folds to run, from the product table's protocol (LOPO folds) and ``config``.

    Raises:
        ValueError: when LOPO is asked for with fewer than two platforms.
    """
    folds = []
    if "in_platform" in config.protocols:
        folds.append(Fold("in_platform", "in_platform", platforms, platforms, [config.test_split]))
    if "lopo" in config.protocols:
        lopo = protocol.get("leave_one_platform_out") or [
            {"test": p, "train": [q for q in platforms if q != p]} for p in platforms]
        if len(platforms) < 2:
            raise ValueError(f"leave-one-platform-out needs two or more platforms, got {platforms}")
        for f in lopo:
            if f["test"] in platforms and (config.lopo_platforms is None or f["test"] in config.lopo_platforms):
                train_on = [p for p in f["train"] if p in platforms]
                folds.append(Fold(f"lopo_{f['test']}", "lopo", train_on, [f["test"]], None))
    return folds


def grid_cells(grid: GridSettings) -> list[dict]:
    """``[{"name", "fusion", "masking", "modality", "modalities"}]`` for every combination."""
    return [{"name": f"{fusion}/{masking}/{mod}", "fusion": fusion, "masking": masking,
             "modality": mod, "modalities": feats}
            for fusion in grid.fusions for masking in grid.maskings
            for mod, feats in grid.modalities.items()]


def split_fold(table: FeatureTable, fold: Fold, config: EvaluateConfig) -> tuple[FeatureTable, dict]:
    """Test rows of ``fold`` restricted to covered categories, and the coverage figures."""
    data = config.train.data
    train_rows = table.rows(splits=[data.train_split], platforms=fold.train_platforms)
    test_rows = table.rows(splits=fold.test_splits, platforms=fold.test_platforms)
    covered_nodes = np.unique(train_rows.column("node"))
    covered = np.isin(test_rows.column("node"), covered_nodes)
    test_nodes = np.unique(test_rows.column("node"))
    info = {"fold": fold.name, "protocol": fold.protocol, "train_platforms": fold.train_platforms,
            "test_platforms": fold.test_platforms, "test_splits": fold.test_splits,
            "n_train": len(train_rows), "n_test_all": len(test_rows), "n_test": int(covered.sum()),
            "n_train_used": min(len(train_rows), data.max_train_products or len(train_rows)),
            "coverage": float(covered.mean()) if len(covered) else 0.0,
            "test_categories": int(len(test_nodes)),
            "covered_categories": int(np.isin(test_nodes, covered_nodes).sum())}
    return test_rows.where(covered), info
