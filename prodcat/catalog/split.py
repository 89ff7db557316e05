"""Deterministic splits and the leave-one-platform-out protocol.

A product's split depends only on a hash of its ``product_id`` (which contains the platform), so
rebuilding the table, adding platforms or sampling never moves a product between splits.
"""

from __future__ import annotations

import hashlib

from prodcat.core.schema import SPLITS


def split_of(product_id: str, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
             seed: str = "prodcat") -> str:
    """``"train"``, ``"val"`` or ``"test"`` for a product id, by a SHA-1 hash mapped to [0, 1)."""
    digest = hashlib.sha1(f"{seed}:{product_id}".encode("utf-8")).digest()
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
