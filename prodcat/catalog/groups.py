"""Near-duplicate groups, so that products that are the same or near-same never straddle splits.

Two products of one platform belong to the same group when they share any of these keys
(transitively, by union-find):

- ``text``: the same normalized title and description (NFKC, case-folded, punctuation and runs of
  white space folded into one space);
- ``variant``: the platform's own variant key, when its adapter names one (``variant_key``; H&M:
  the product code, the first 7 digits of ``article_id``: one garment in several colours);
- ``image``: near-identical images: the same 64-bit perceptual hash (``imagehash.phash``, a DCT
  hash; Zauner 2010). Equal hashes only: a lossless or same-size copy almost always matches, a
  copy re-encoded at another size differs by 1-4 bits in about 1 case in 5 and is not joined (a
  Hamming radius would need a neighbour search; not built).

A group's id is its smallest ``product_id``; its split is drawn from a hash of that id
(:func:`prodcat.catalog.split.split_of`), so every member lands in the same split (and a new,
smaller member can move the group: see :mod:`prodcat.catalog.split`).
"""

from __future__ import annotations

import io
import os
import re
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from typing import Iterable

from prodcat.core import storage

#: grouping keys, in the order they are reported
KEYS = ("text", "variant", "image")


def normalized_text(title: str | None, description: str | None) -> str:
    """Title and description folded for duplicate detection (case, accents kept, punctuation and
    white space collapsed)."""
    text = unicodedata.normalize("NFKC", f"{title or ''} | {description or ''}").casefold()
    return re.sub(r"[\W_]+", " ", text).strip()


def image_hash(uri: str | None) -> str | None:
    """The perceptual hash (16 hex digits) of the image at ``uri``; None without an image or when
    it cannot be read. Decoded in full, whatever the format (a JPEG draft decode would make the
    hash depend on the file format: a PNG copy of a JPEG then often missed its original)."""
    if not uri:
        return None
    import imagehash
    from PIL import Image

    try:
        with Image.open(io.BytesIO(storage.read_bytes(uri))) as image:
            return str(imagehash.phash(image))
    except Exception:  # a missing or broken file has no hash; the embedding stage reports why
        return None


def image_hashes(uris: list[str | None], workers: int | None = None,
                 min_parallel: int = 2000) -> list[str | None]:
    """:func:`image_hash` of many images, in the order given (None where there is no image or it
    cannot be read).

    Args:
        uris: image URIs (local paths or ``s3://``), None for a product without an image.
        workers: processes (default: the CPUs this process may use, ``os.sched_getaffinity``;
            ``os.cpu_count`` where that does not exist).
        min_parallel: below this many images (or with one worker) they are hashed in this process.

    Processes, not threads: ``imagehash.phash``'s grey-scale conversion, resize and DCT hold the
    GIL; on 2 CPUs and 12,000 real images four threads ran at 0.60x a plain loop, two processes
    at 1.61x (``benchmarks/image_hashing.py``). The pool starts its workers with ``spawn`` (the
    caller may run Ray's threads, which a ``fork`` would copy mid-flight); a script calling this
    needs the usual ``if __name__ == "__main__":`` guard (the ``prodcat`` command has it).
    """
    workers = workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    if workers <= 1 or sum(u is not None for u in uris) < min_parallel:
        return [image_hash(u) for u in uris]
    import multiprocessing

    chunk = max(64, len(uris) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(image_hash, uris, chunksize=chunk))


def group_keys(row: dict) -> dict[str, str | None]:
    """``{key: value}`` of one product row (``variant_key`` and ``image_hash`` fields optional);
    values are prefixed with the platform, so groups never span platforms."""
    platform = row["platform"]
    text = normalized_text(row.get("title"), row.get("description"))
    return {"text": f"{platform}|{text}" if text else None,
            "variant": f"{platform}|{row['variant_key']}" if row.get("variant_key") else None,
            "image": f"{platform}|{row['image_hash']}" if row.get("image_hash") else None}


def assign_groups(rows: list[dict]) -> list[str]:
    """The group id of every row (its group's smallest ``product_id``), joining rows that share
    any key of :func:`group_keys` (union-find with path halving)."""
    parent = list(range(len(rows)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, row in enumerate(rows):
        for value in group_keys(row).values():
            if value is None:
                continue
            j = first.setdefault(value, i)
            a, b = find(i), find(j)
            if a != b:
                parent[max(a, b)] = min(a, b)
    members: dict[int, list[int]] = defaultdict(list)
    for i in range(len(rows)):
        members[find(i)].append(i)
    group_of = [""] * len(rows)
    for indices in members.values():
        gid = min(rows[i]["product_id"] for i in indices)
        for i in indices:
            group_of[i] = gid
    return group_of


def cross_split_pairs(rows: list[dict], splits: Iterable[str]) -> dict[str, dict[str, int]]:
    """``{platform: {key: n}}``: pairs of products that share a grouping key but sit in different
    splits (0 for every key once splits follow the groups)."""
    splits = list(splits)
    by_key: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
    for row, split in zip(rows, splits):
        for key, value in group_keys(row).items():
            if value is not None:
                by_key[(row["platform"], key, value)][split] += 1
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KEYS, 0))
    for (platform, key, _), counts in by_key.items():
        n = sum(counts.values())
        out[platform][key] += n * (n - 1) // 2 - sum(c * (c - 1) // 2 for c in counts.values())
    return {p: dict(v) for p, v in sorted(out.items())}


def group_summary(rows: list[dict], group_of: list[str]) -> dict[str, dict]:
    """Per platform: products, groups, products in groups of two or more, the largest group
    (size and a few titles, to eyeball what a key joined)."""
    out: dict[str, dict] = {}
    sizes = Counter(group_of)
    for platform in sorted({r["platform"] for r in rows}):
        mine = [(r, g) for r, g in zip(rows, group_of) if r["platform"] == platform]
        groups = {g for _, g in mine}
        largest = max(groups, key=lambda g: (sizes[g], g))
        out[platform] = {
            "products": len(mine), "groups": len(groups),
            "products_in_shared_groups": sum(1 for _, g in mine if sizes[g] > 1),
            "largest_group": {"id": largest, "size": sizes[largest],
                              "titles": sorted({r["title"] for r, g in mine if g == largest})[:5]}}
    return out
