"""Which rows each step of a fit or a choice reads: a record a test can check.

Training, model choice and calibration call :func:`read` with the products a step reads (its
``product_id`` values). Nothing is kept unless a :func:`recording` is active, so the calls cost a
comparison in normal runs. The evaluation's tests record a whole leave-one-platform-out run and
check that no step before the test reads a product of the held-out platform.

Example:
    >>> with recording() as reads:
    ...     read("fit:lexical", ["hm:1", "hm:2"])
    >>> reads[0].step, list(reads[0].product_ids)
    ('fit:lexical', ['hm:1', 'hm:2'])
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np


@dataclass(frozen=True)
class Read:
    """One step's read: ``step`` (e.g. ``fit:lexical@cross_platform:hm``) and the products."""

    step: str
    product_ids: np.ndarray


_active: ContextVar[list[Read] | None] = ContextVar("prodcat_audit", default=None)


@contextmanager
def recording() -> Iterator[list[Read]]:
    """Record every :func:`read` made inside the block (in this thread / task) into the list
    it yields."""
    reads: list[Read] = []
    token = _active.set(reads)
    try:
        yield reads
    finally:
        _active.reset(token)


def read(step: str, product_ids: Iterable[str]) -> None:
    """Note that ``step`` reads ``product_ids`` (kept only inside :func:`recording`)."""
    reads = _active.get()
    if reads is not None:
        reads.append(Read(step, np.asarray(list(product_ids), object)))


def active() -> bool:
    """True inside :func:`recording` (callers may skip building an id list otherwise)."""
    return _active.get() is not None
