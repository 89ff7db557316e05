"""Suggested mapping tables and their review: from a machine's proposal to a mapping a build reads.

``prodcat catalog suggest-mapping`` (:mod:`prodcat.onboard`) writes a mapping table in the
format of ``mappings/*.yaml`` with every entry ``accepted: false`` and a ``suggested`` header: the
platform, the adapter, and a *fingerprint* of the export's source categories. This module reads an
export for that (:func:`read_unmapped`: every record, no mapping; a clear error when no record has
the configured category columns), writes the table (:func:`write_suggested_mapping`) and applies a
review (:func:`review_mapping`, ``prodcat catalog review``): accept the suggestions at or above a
confidence, set other ids, exclude categories with a reason, exclude the rest. A review names only
source categories the suggestions hold and ids the Google taxonomy holds, and is refused when the
export's source categories changed since the suggestions were made (stale suggestions).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from typing import Iterable

import yaml
from pydantic import Field, field_validator

from prodcat.catalog.adapter import AdapterConfig, Reject, load_adapter, normalize, read_export
from prodcat.core import storage
from prodcat.core.config import StrictModel, read_mapping
from prodcat.core.taxonomy import Taxonomy


class MissingCategoryColumn(ValueError):
    """An export none of whose records has the columns the adapter reads the category from."""


class StaleSuggestions(ValueError):
    """Suggestions made for an export whose source categories have changed since."""


class ReviewError(ValueError):
    """A review that cannot be applied: an unknown source category or id, a bad threshold, a file
    that holds no suggestions."""


def categories_fingerprint(categories: Iterable[str]) -> str:
    """16 hex digits of the sha256 of the sorted distinct source category paths."""
    digest = hashlib.sha256()
    for path in sorted(set(categories)):
        digest.update(path.encode() + b"\n")
    return digest.hexdigest()[:16]


def read_unmapped(adapter: AdapterConfig) -> tuple[list[dict], list[Reject]]:
    """Every record of the export as a product row (no category id), and the rejects.

    Raises:
        FileNotFoundError: the export is missing.
        MissingCategoryColumn: no record has any of ``category.columns`` (the message lists the
            columns the export has).
    """
    rows, rejects, columns = [], [], set()
    found = False
    for location, record, raw in read_export(adapter):
        if isinstance(record, str):
            rejects.append(Reject(adapter.platform, None, location, "parse_error", record, raw))
            continue
        columns.update(record)
        found = found or any(c in record for c in adapter.category.columns)
        item = normalize(adapter, location, record, raw)
        (rejects if isinstance(item, Reject) else rows).append(item)
    if not found and (rows or rejects):
        raise MissingCategoryColumn(
            f"{adapter.export_uri()}: no record has the category column(s) "
            f"{adapter.category.columns} that the adapter for {adapter.platform!r} reads; the export's "
            f"columns are {sorted(columns)}. Set `category: {{columns: [...]}}` to the column(s) "
            "holding the platform's own category path (a mapping is suggested per source category)")
    return rows, rejects


def source_categories(adapter: AdapterConfig) -> Counter:
    """``{source category path: products}`` of an export read through ``adapter``.

    Raises:
        MissingCategoryColumn, FileNotFoundError: as :func:`read_unmapped`.
    """
    rows, _ = read_unmapped(adapter)
    return Counter(r["source_category"] for r in rows)


HEADER = """\
# Suggested category mapping for {platform} (prodcat catalog suggest-mapping): every entry is
# `accepted: false` until a person reviews it; `prodcat catalog build` refuses the file before.
# Review: open review.html beside this file, or run
#   prodcat catalog review --suggestions {name} --accept-above 0.2 --exclude-rest --output reviewed.yaml
# (0.2: the confidence at which 82-100 % of suggestions agreed with hand mappings on 3 platforms)
# or edit by hand: set accepted: true, change category_id (and path), or move an entry to
# `excluded` with a reason. `suggestions`, `confidence`, `products` and `examples` are for reading.
"""


def write_suggested_mapping(uri: str, doc: dict) -> str:
    """Write a suggested mapping table (``doc``: ``platform``, ``taxonomy``, ``suggested``,
    ``mappings``, ``excluded``) as commented YAML; returns ``uri``."""
    text = HEADER.format(platform=doc["platform"], name=uri.rsplit("/", 1)[-1])
    storage.write_text(uri, text + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100))
    return uri


def check_fresh(suggested: dict, categories: Iterable[str], where: str) -> None:
    """Refuse suggestions made for other source categories than ``categories``.

    Raises:
        StaleSuggestions: when the fingerprint differs (names the new and the gone categories when
            the file lists them).
    """
    now = set(categories)
    if not suggested.get("fingerprint") or categories_fingerprint(now) == suggested["fingerprint"]:
        return
    then = set(suggested.get("source_categories") or [])
    new, gone = sorted(now - then), sorted(then - now)
    def listed(names: list[str]) -> str:
        return f" ({'; '.join(names[:5])}{' ...' if len(names) > 5 else ''})" if names else ""

    detail = f": {len(new)} new{listed(new)}, {len(gone)} gone{listed(gone)}" if then else ""
    raise StaleSuggestions(
        f"{where} was suggested for another version of the {suggested.get('platform')} export "
        f"(source categories fingerprint {suggested['fingerprint']}, the export now has "
        f"{categories_fingerprint(now)}){detail}. Run `prodcat catalog suggest-mapping` again on "
        "the current export and review the new suggestions")


class ReviewDecisions(StrictModel):
    """What a reviewer decided (``--decisions`` YAML, or the review page's download)."""

    accept: list[str] = Field([], description="source categories whose top suggestion is accepted")
    set: dict[str, int] = Field({}, description="source category → another Google category id")
    exclude: dict[str, str] = Field({}, description="source category → why its products are left out")
    accept_above: float | None = Field(None, description="accept every top suggestion whose "
                                       "confidence is at least this (in [0, 1])")
    exclude_rest: str | None = Field(None, description="exclude every category still unreviewed, "
                                     "with this reason")

    @field_validator("accept_above")
    @classmethod
    def _in_unit_interval(cls, value: float | None) -> float | None:
        if value is not None and not 0.0 <= value <= 1.0:
            raise ValueError(f"the confidence threshold must be in [0, 1] (suggestion confidences "
                             f"are probabilities), got {value}")
        return value


def _check_decisions(decisions: ReviewDecisions, known: set[str], google: Taxonomy, where: str) -> None:
    named = list(decisions.accept) + list(decisions.set) + list(decisions.exclude)
    unknown = sorted({k for k in named if k not in known})
    if unknown:
        raise ReviewError(f"the review names source categories that {where} does not hold: "
                         f"{'; '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} (it holds "
                         f"{len(known)}, e.g. {'; '.join(sorted(known)[:3])})")
    bad = sorted({cid for cid in decisions.set.values() if cid not in google})
    if bad:
        raise ReviewError(f"the review sets category ids that are not in the taxonomy "
                         f"{google.version}: {bad}; use ids of its categories (e.g. 187 = "
                         "Apparel & Accessories > Shoes)")
    twice = sorted(set(decisions.accept) & set(decisions.exclude) | set(decisions.set) & set(decisions.exclude))
    if twice:
        raise ReviewError(f"the review both maps and excludes {twice}")


def review_mapping(suggestions: str, decisions: ReviewDecisions, google: Taxonomy,
                   adapter: str | None = None) -> tuple[dict, dict]:
    """Apply ``decisions`` to a suggested mapping table; ``(reviewed table, counts)``.

    Entries accepted or set become ``accepted: true`` mappings, excluded ones ``excluded`` entries
    with their reason; the rest stay ``accepted: false`` (a build refuses them until reviewed).

    Args:
        suggestions: the suggested table (``mapping.yaml`` of suggest-mapping, or its folder).
        adapter: the platform's adapter (name or file) to check the export against; default the
            one the suggestions name.

    Raises:
        StaleSuggestions: the export's source categories changed since the suggestions.
        MissingCategoryColumn: the export has no category column.
        ValueError: an unknown source category or category id, or a category both mapped and
            excluded.
    """
    uri = suggestions if suggestions.endswith((".yaml", ".yml")) else storage.join(suggestions, "mapping.yaml")
    doc = read_mapping(uri)
    suggested = dict(doc.get("suggested") or {})
    if not suggested:
        raise ReviewError(f"{uri} holds no suggestions (no `suggested` header): review files made "
                         "by `prodcat catalog suggest-mapping`")
    source = adapter or suggested.get("adapter")
    if source:
        check_fresh(suggested, source_categories(load_adapter(source)), uri)
    entries = {**{k: ("map", v) for k, v in (doc.get("mappings") or {}).items()},
               **{k: ("exclude", v) for k, v in (doc.get("excluded") or {}).items()}}
    _check_decisions(decisions, set(entries), google, uri)
    mappings, excluded = {}, {}
    counts: Counter = Counter()
    for key, (kind, entry) in entries.items():
        entry = dict(entry)
        how = None
        if key in decisions.exclude:
            excluded[key] = {"reason": decisions.exclude[key], "accepted": True}
            counts["excluded"] += 1
            continue
        if key in decisions.set:
            cid = int(decisions.set[key])
            entry.update(category_id=cid, path=google.path_of_id(cid))
            how = "set by the reviewer"
        elif kind == "map" and key in decisions.accept:
            how = "suggestion accepted by the reviewer"
        elif (kind == "map" and decisions.accept_above is not None
              and float(entry.get("confidence") or 0.0) >= decisions.accept_above):
            how = f"suggestion accepted: confidence {entry.get('confidence')} >= {decisions.accept_above}"
        if how:
            entry.update(accepted=True, reviewed=how)
            mappings[key] = entry
            counts["accepted"] += 1
        elif decisions.exclude_rest:
            excluded[key] = {"reason": decisions.exclude_rest, "accepted": True,
                             "suggested_category_id": entry.get("category_id")}
            counts["excluded"] += 1
        else:
            (mappings if kind == "map" else excluded)[key] = entry
            counts["unreviewed"] += 1
    out = {k: v for k, v in doc.items() if k not in ("mappings", "excluded")}
    out["suggested"] = {**suggested, "reviewed": {k: int(v) for k, v in counts.items()}}
    out["mappings"], out["excluded"] = mappings, excluded
    return out, {k: int(counts[k]) for k in ("accepted", "excluded", "unreviewed")}


def load_decisions(path: str | None, overrides: dict) -> ReviewDecisions:
    """Decisions from a YAML/JSON file (the review page's download) merged with flag values.

    Raises:
        prodcat.core.config.ConfigError, ValueError: on unknown fields or a threshold outside [0, 1].
    """
    data = read_mapping(path) if path else {}
    for key, value in overrides.items():
        if value is None or value == [] or value == {}:
            continue
        if isinstance(value, list):
            data[key] = list(data.get(key) or []) + value
        elif isinstance(value, dict):
            data[key] = {**(data.get(key) or {}), **value}
        else:
            data[key] = value
    from pydantic import ValidationError

    try:
        return ReviewDecisions.model_validate(json.loads(json.dumps(data)))
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise ReviewError(f"the review's decisions{f' ({path})' if path else ''} are not valid: "
                          f"{problems}") from None
