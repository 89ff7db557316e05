"""Deterministic splits and the leave-one-platform-out protocol.

A product's split is drawn from a hash of its near-duplicate group's id
(:mod:`prodcat.catalog.groups`; the id contains the platform), so near-duplicates never straddle
splits. Rebuilding the table, adding platforms or sampling never moves a product between splits,
except when a new product changes its group's id: it joins two groups, or it has a smaller
``product_id`` than the group's members (the id is the smallest member's), and then the whole
group may move.
"""

from __future__ import annotations

import hashlib

from prodcat.core.schema import SPLITS

#: train / val / calib / test: the 10 % validation share of earlier versions is cut in two halves,
#: one for early stopping and model choice, one for calibration
FRACTIONS = (0.8, 0.05, 0.05, 0.1)


def split_of(key: str, fractions: tuple[float, ...] = FRACTIONS, seed: str = "prodcat") -> str:
    """The split (:data:`prodcat.core.schema.SPLITS`) of a group id (or any key), by a SHA-1 hash
    mapped to [0, 1).

    Raises:
        ValueError: when ``fractions`` does not give one share per split summing to 1.
    """
    if len(fractions) != len(SPLITS) or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must give one share per split {SPLITS} summing to 1, got {fractions}")
    digest = hashlib.sha1(f"{seed}:{key}".encode("utf-8")).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in zip(SPLITS, fractions):
        edge += fraction
        if u < edge:
            return name
    return SPLITS[-1]


def leave_one_platform_out(platforms: list[str]) -> list[dict[str, object]]:
    """The LOPO folds: train on every platform but one, test on the held-out one."""
    return [{"test": held_out, "train": [p for p in platforms if p != held_out]}
            for held_out in sorted(platforms)]
