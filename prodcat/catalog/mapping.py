"""Category mapping tables: each platform's own categories → Google Product Taxonomy ids.

A table (``prodcat/catalog/mappings/<platform>.yaml``) has ``mappings`` (source path →
``category_id``, the Google ``path`` for people to read, an optional ``note``) and ``excluded``
(source path → ``reason``). The key matching the longest whole-segment prefix of a product's
source path wins, so one key can cover a sub-tree.

A table made by ``prodcat catalog suggest-mapping`` marks every entry ``accepted: false`` and
records which export it was made from (``suggested``: the platform, the adapter and a fingerprint
of the export's source categories); :func:`CategoryMapping.load` refuses entries not yet accepted,
so a build never trains on a machine's guess nobody looked at. Once reviewed (``prodcat catalog
review``, or by hand: ``accepted: true``) it is just a mapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prodcat.core.config import read_mapping
from prodcat.core.taxonomy import SEPARATOR, Taxonomy

MAPPINGS_DIR = Path(__file__).parent / "mappings"


@dataclass(frozen=True)
class Resolution:
    """Result of a lookup: exactly one of ``category_id`` / ``excluded`` / ``unmapped`` holds."""

    key: str | None               # the table key that matched
    category_id: int | None       # Google id when mapped
    excluded: str | None          # the written reason when excluded

    @property
    def unmapped(self) -> bool:
        return self.key is None


class UnreviewedMapping(ValueError):
    """A mapping table with suggested entries nobody has accepted yet (``accepted: false``)."""


class UnknownCategories(ValueError):
    """A mapping table naming category ids the taxonomy does not hold (or with wrong paths)."""


@dataclass(frozen=True)
class CategoryMapping:
    """One platform's mapping table.

    Attributes:
        suggested: for a table made by ``prodcat catalog suggest-mapping``, what it was made from
            (``platform``, ``adapter``, ``fingerprint`` of the export's source categories, ...);
            empty for a hand-made table.
    """

    platform: str
    mappings: dict[str, int]
    paths: dict[str, str]
    excluded: dict[str, str]
    suggested: dict = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path, allow_unreviewed: bool = False) -> "CategoryMapping":
        """Read a mapping YAML (local or ``s3://``).

        Raises:
            ValueError: on an entry without ``category_id`` / ``reason``, or a key in both sections.
            UnreviewedMapping: when entries are marked ``accepted: false`` (suggestions nobody
                reviewed yet), unless ``allow_unreviewed``; the message lists them and says how to
                review them.
        """
        data = read_mapping(path)
        mappings, paths, excluded = {}, {}, {}
        pending = [key for section in ("mappings", "excluded")
                   for key, entry in (data.get(section) or {}).items()
                   if isinstance(entry, dict) and entry.get("accepted", True) is False]
        if pending and not allow_unreviewed:
            shown = "; ".join(repr(k) for k in pending[:5]) + (" ..." if len(pending) > 5 else "")
            raise UnreviewedMapping(
                f"{path}: {len(pending)} of its entries are unreviewed suggestions (accepted: false), "
                f"e.g. {shown}. A build trains on its mapping, so a person must look at each first: "
                f"run `prodcat catalog review --suggestions {path} --accept-above <confidence> "
                "[--exclude-rest] --output reviewed.yaml` (or open review.html beside it), or edit the "
                "file (accepted: true, another category_id, or move the entry to `excluded` with a "
                "reason); then build with the reviewed file")
        for key, entry in (data.get("mappings") or {}).items():
            if not isinstance(entry, dict) or "category_id" not in entry:
                raise ValueError(f"{path}: mapping {key!r} needs a category_id")
            mappings[key.strip()] = int(entry["category_id"])
            paths[key.strip()] = str(entry.get("path", ""))
        for key, entry in (data.get("excluded") or {}).items():
            reason = entry.get("reason") if isinstance(entry, dict) else None
            if not reason:
                raise ValueError(f"{path}: exclusion {key!r} needs a written reason")
            excluded[key.strip()] = str(reason)
        both = set(mappings) & set(excluded)
        if both:
            raise ValueError(f"{path}: keys both mapped and excluded: {sorted(both)}")
        return cls(str(data.get("platform", Path(path).stem)), mappings, paths, excluded,
                   dict(data.get("suggested") or {}))

    @classmethod
    def for_platform(cls, platform: str) -> "CategoryMapping":
        """The table kept in the project for a built-in platform."""
        return cls.load(MAPPINGS_DIR / f"{platform}.yaml")

    def resolve(self, source_path: str) -> Resolution:
        """Longest whole-segment prefix lookup of a ``" > "``-joined source path."""
        segments = [s.strip() for s in source_path.split(SEPARATOR)]
        for end in range(len(segments), 0, -1):
            key = SEPARATOR.join(segments[:end])
            if key in self.mappings:
                return Resolution(key, self.mappings[key], None)
            if key in self.excluded:
                return Resolution(key, None, self.excluded[key])
        return Resolution(None, None, None)

    def problems(self, taxonomy: Taxonomy) -> list[str]:
        """Entries whose id is not in ``taxonomy`` or whose written path disagrees with it."""
        out = []
        for key, cid in self.mappings.items():
            if cid not in taxonomy:
                out.append(f"{self.platform}: {key!r} → {cid} is not in {taxonomy.version}")
            elif self.paths[key] and self.paths[key] != taxonomy.path_of_id(cid):
                out.append(f"{self.platform}: {key!r} → {cid} is {taxonomy.path_of_id(cid)!r}, "
                           f"the table says {self.paths[key]!r}")
        return out
