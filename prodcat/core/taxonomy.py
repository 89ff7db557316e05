"""The hierarchy as one object: integer nodes, a parent array, per-level index maps, child masks.

Nothing else in prodcat parses category paths: adapters hand raw source paths to the mapping
tables, and everything downstream works with node indices or Google category ids.

Letters used in shapes: N nodes, L levels, C_l classes (nodes) at level l.

Terms:
- *node*: an integer index ``0..N-1`` into this taxonomy's arrays; node 0 is the explicit root.
- *category id*: the external id of a node (the Google Product Taxonomy id); the root has id 0.
- *level*: depth minus one, so top-level categories are level 0 and a product's label path has one
  class per level down to its leaf; deeper levels are padded with ``-1`` (ignored in losses).
- *virtual node*: when a category is both a label and the parent of other used categories (the
  product is "a shoe" while others are "boots"), the induced taxonomy gives it a virtual child with
  the same category id, so that every label is a leaf and a prediction can stop at any depth
  (hiclass pads such paths by repeating the parent; this is the same idea with an explicit node).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from prodcat.core.paths import taxonomy_file

SEPARATOR = " > "
ROOT_NAME = "<root>"
#: Category ids from this value up are nodes prodcat added to a taxonomy (:meth:`Taxonomy.extend`,
#: e.g. subcategories accepted by ``prodcat recategorize apply``). The Google Product Taxonomy's
#: ids are all far below it (the largest in 2021-09-21 is 543,703), so added ids never collide.
EXTENSION_ID_BASE = 1_000_000_000


@dataclass(frozen=True, eq=False)
class Taxonomy:
    """A rooted category tree.

    Attributes:
        ids: ``[N]`` int64 category id per node (root 0; a virtual node repeats its parent's id).
        names: ``N`` names, the last segment of each node's path.
        parent: ``[N]`` int64 parent node per node, ``-1`` for the root; parents precede children.
        virtual: ``[N]`` bool, True for virtual "the parent itself" leaves.
        version: a free-form version tag (for Google: ``google-2021-09-21``; an extension adds
            ``+ext-<hash>``).
        lineage: for each earlier version this one was derived from (:meth:`extend`), the map
            ``{category id there: category id here}`` (empty for a taxonomy made from scratch);
            see :meth:`map_from`.
    """

    ids: np.ndarray
    names: tuple[str, ...]
    parent: np.ndarray
    virtual: np.ndarray
    version: str = "unversioned"
    lineage: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.names)
        if not (len(self.ids) == len(self.parent) == len(self.virtual) == n) or n == 0:
            raise ValueError("ids, names, parent and virtual must have the same non-zero length")
        if self.parent[0] != -1:
            raise ValueError("node 0 must be the root (parent -1)")
        if np.any(self.parent[1:] < 0) or np.any(self.parent[1:] >= np.arange(1, n)):
            raise ValueError("every non-root node needs a parent that precedes it")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_paths(cls, items: Iterable[tuple[int, str]], version: str = "unversioned") -> "Taxonomy":
        """Build from ``(category_id, "A > B > C")`` pairs; every parent path must be listed.

        Raises:
            ValueError: on a duplicate id or path, a missing parent path, or id 0 (reserved).
        """
        rows = sorted(((tuple(p.split(SEPARATOR)), int(i)) for i, p in items), key=lambda r: len(r[0]))
        node_of_path: dict[tuple[str, ...], int] = {(): 0}
        ids, names, parent = [0], [ROOT_NAME], [-1]
        seen_ids = {0}
        for segments, cid in rows:
            if cid in seen_ids:
                raise ValueError(f"category id {cid} is reserved or listed twice")
            if segments in node_of_path:
                raise ValueError(f"path {SEPARATOR.join(segments)!r} is listed twice")
            if segments[:-1] not in node_of_path:
                raise ValueError(f"parent of {SEPARATOR.join(segments)!r} is not listed")
            node_of_path[segments] = len(ids)
            seen_ids.add(cid)
            ids.append(cid)
            names.append(segments[-1])
            parent.append(node_of_path[segments[:-1]])
        return cls(np.asarray(ids, np.int64), tuple(names), np.asarray(parent, np.int64),
                   np.zeros(len(ids), bool), version)

    @classmethod
    def from_google(cls, path: str | Path) -> "Taxonomy":
        """Parse the Google Product Taxonomy file (``ID - A > B > C`` lines after a version header).

        Raises:
            ValueError: on a line that is not ``<int> - <path>``, naming the line number.
        """
        version = "google"
        items = []
        for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                version = "google-" + line.split(":", 1)[-1].strip()
                continue
            cid, sep, category = line.partition(" - ")
            if not sep or not cid.strip().isdigit():
                raise ValueError(f"{path}:{lineno}: expected 'ID - A > B', got {line!r}")
            items.append((int(cid), category.strip()))
        return cls.from_paths(items, version=version)

    def induced(self, category_ids: Iterable[int], max_depth: int | None = None) -> "Taxonomy":
        """The sub-tree spanned by ``category_ids`` and their ancestors, truncated to ``max_depth``.

        Each id is first truncated to its ancestor at ``max_depth`` (see :meth:`truncate`). A used
        category that also has used descendants gets a virtual child so every label is a leaf.

        Raises:
            KeyError: for an id that is not in this taxonomy.
        """
        used = {self.truncate(c, max_depth) for c in category_ids}
        keep: set[int] = set()
        for cid in used:
            keep.update(self.path_nodes(self.node(cid)))
        order = sorted(keep)  # parents precede children in self, so they do in the sub-tree too
        new_index = {old: new for new, old in enumerate([0] + order)}
        ids = [0] + [int(self.ids[o]) for o in order]
        names = [ROOT_NAME] + [self.names[o] for o in order]
        parent = [-1] + [new_index[int(self.parent[o])] for o in order]
        virtual = [False] * len(ids)
        has_child = set(parent[1:])
        for cid in sorted(used):
            node = new_index[self.node(cid)]
            if node in has_child:
                ids.append(cid)
                names.append(names[node])
                parent.append(node)
                virtual.append(True)
        return Taxonomy(np.asarray(ids, np.int64), tuple(names), np.asarray(parent, np.int64),
                        np.asarray(virtual, bool), self.version)

    # ------------------------------------------------------------------ lookups
    def __len__(self) -> int:
        return len(self.names)

    def node(self, category_id: int) -> int:
        """The node of a category id (the real node, never its virtual child).

        Raises:
            KeyError: when the id is not in this taxonomy.
        """
        index = self._lookup("node_of_id", lambda: {
            int(c): n for n, c in enumerate(self.ids) if not self.virtual[n]})
        try:
            return index[int(category_id)]
        except KeyError:
            raise KeyError(f"category id {category_id} is not in taxonomy {self.version}") from None

    def label_node(self, category_id: int) -> int:
        """The leaf a product labelled ``category_id`` is trained on (the virtual child if any)."""
        node = self.node(category_id)
        virtual_child = self._lookup("virtual_child", lambda: {
            int(self.parent[n]): n for n in np.flatnonzero(self.virtual)})
        return virtual_child.get(node, node)

    def id_for_path(self, path: str) -> int:
        """The category id of a ``" > "``-joined path.

        Raises:
            KeyError: when the path is not in this taxonomy.
        """
        index = self._lookup("id_of_path", lambda: {
            self.path(n): int(self.ids[n]) for n in range(1, len(self)) if not self.virtual[n]})
        try:
            return index[path.strip()]
        except KeyError:
            raise KeyError(f"path {path!r} is not in taxonomy {self.version}") from None

    def __contains__(self, category_id: object) -> bool:
        try:
            self.node(int(category_id))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            return False
        return True

    def path_nodes(self, node: int) -> list[int]:
        """Nodes from the top level down to ``node`` (root excluded; virtual nodes included)."""
        out = []
        while node > 0:
            out.append(node)
            node = int(self.parent[node])
        return out[::-1]

    def path(self, node: int) -> str:
        """The ``" > "``-joined path of a node; a virtual node reads as its parent."""
        return SEPARATOR.join(self.names[n] for n in self.path_nodes(node) if not self.virtual[n])

    def path_of_id(self, category_id: int) -> str:
        """The path of a category id (raises ``KeyError`` when unknown)."""
        return self.path(self.node(category_id))

    def depth_of_id(self, category_id: int) -> int:
        """Depth of a category (top level = 1)."""
        return len(self.path_nodes(self.node(category_id)))

    def truncate(self, category_id: int, max_depth: int | None) -> int:
        """The ancestor of ``category_id`` at ``max_depth`` (itself when not deeper)."""
        nodes = self.path_nodes(self.node(category_id))
        if max_depth is not None and len(nodes) > max_depth:
            return int(self.ids[nodes[max_depth - 1]])
        return int(category_id)

    # ------------------------------------------------------------------ versions
    def extend(self, children: Sequence[tuple[int, str]], version: str | None = None) -> "Taxonomy":
        """A new version with ``children`` (``(parent category id, name)`` pairs) added as nodes.

        Every existing node keeps its index, category id and class index at its level (new nodes
        are appended), so a model's old class indices still name the same categories. New nodes get ids from
        :data:`EXTENSION_ID_BASE` up (above any id already used), in the order given. A parent
        that was a leaf (a label) also gets a virtual child, so products and predictions that
        stay at the parent ("a shoe of no accepted subtype") remain valid labels. The result's
        :attr:`lineage` maps every id of this version (and of the versions this one came from)
        to its id in the new version.

        Args:
            children: ``(parent_id, name)``; ``parent_id`` a real (non-virtual) node of this
                taxonomy, ``name`` a non-empty segment without ``" > "``.
            version: the new version tag; default ``<this version>+ext-<8 hex digits of the
                sha256 of the children>``.

        Raises:
            KeyError: for an unknown parent id.
            ValueError: for an empty or duplicate name under one parent (existing children
                included), a name containing the separator, or no children.
        """
        if not children:
            raise ValueError("extend needs at least one (parent_id, name) child")
        taken = {(int(self.parent[n]), self.names[n].casefold()) for n in range(1, len(self))
                 if not self.virtual[n]}
        ids, names = list(self.ids.tolist()), list(self.names)
        parent, virtual = list(self.parent.tolist()), list(self.virtual.tolist())
        next_id = max(EXTENSION_ID_BASE, int(self.ids.max()) + 1)
        was_leaf = set(self.leaves.tolist())
        new_parents: list[int] = []
        for parent_id, name in children:
            node, name = self.node(parent_id), str(name).strip()
            if not name or SEPARATOR.strip() in name:
                raise ValueError(f"invalid name {name!r} under {self.path(node)!r}: it must be "
                                 f"non-empty and must not contain {SEPARATOR.strip()!r}")
            if (node, name.casefold()) in taken:
                raise ValueError(f"{self.path(node)!r} already has a child named {name!r}")
            taken.add((node, name.casefold()))
            ids.append(next_id)
            names.append(name)
            parent.append(node)
            virtual.append(False)
            next_id += 1
            if node in was_leaf and node not in new_parents:
                new_parents.append(node)
        for node in new_parents:  # a former leaf stays a label: its "itself" virtual child
            ids.append(int(self.ids[node]))
            names.append(self.names[node])
            parent.append(node)
            virtual.append(True)
        if version is None:
            digest = hashlib.sha256(json.dumps(
                [[int(p), str(n).strip()] for p, n in children]).encode()).hexdigest()[:8]
            version = f"{self.version}+ext-{digest}"
        same = {int(c): int(c) for n, c in enumerate(self.ids) if n and not self.virtual[n]}
        lineage = {v: dict(m) for v, m in self.lineage.items()}  # ids persist: maps carry over
        lineage[self.version] = same
        return Taxonomy(np.asarray(ids, np.int64), tuple(names), np.asarray(parent, np.int64),
                        np.asarray(virtual, bool), version, lineage)

    def map_from(self, version: str, category_ids) -> np.ndarray:
        """Category ids of ``version`` (this one or an earlier one in :attr:`lineage`) → the ids
        of the same categories in this version: ``[B]`` int64.

        A prediction made under an earlier version (say "Shoes") maps to the same category
        here; when "Shoes" gained subcategories it is now a valid but coarser answer (the
        virtual "Shoes itself" leaf).

        Raises:
            KeyError: for a version that is neither this one nor in :attr:`lineage` (the message
                lists them), or an id that version does not have.
        """
        ids = np.asarray(category_ids, np.int64).reshape(-1)
        if version == self.version:
            for cid in np.unique(ids):
                self.node(int(cid))
            return ids
        if version not in self.lineage:
            known = ", ".join([self.version, *self.lineage])
            raise KeyError(f"taxonomy {self.version} does not descend from version {version!r}; "
                           f"it maps from: {known}")
        mapping = self.lineage[version]
        missing = sorted({int(c) for c in ids if int(c) not in mapping})
        if missing:
            raise KeyError(f"category ids {missing[:10]} are not in taxonomy version {version}")
        return np.asarray([mapping[int(c)] for c in ids], np.int64)

    # ------------------------------------------------------------------ levels and masks
    @property
    def depth(self) -> np.ndarray:
        """``[N]`` depth per node (root 0, top level 1)."""
        def build() -> np.ndarray:
            depth = np.zeros(len(self), np.int64)
            for n in range(1, len(self)):
                depth[n] = depth[self.parent[n]] + 1
            return depth
        return self._lookup("depth", build)

    @property
    def num_levels(self) -> int:
        """L: the number of levels (the maximum depth)."""
        return int(self.depth.max())

    @property
    def level_nodes(self) -> list[np.ndarray]:
        """Per level l, ``[C_l]`` the nodes that are its classes, in node order."""
        return self._lookup("level_nodes", lambda: [
            np.flatnonzero(self.depth == l + 1) for l in range(self.num_levels)])

    @property
    def level_sizes(self) -> list[int]:
        """``[C_0, ..., C_{L-1}]``: number of classes per level."""
        return [len(nodes) for nodes in self.level_nodes]

    @property
    def class_index(self) -> np.ndarray:
        """``[N]`` position of each node among its level's classes (root -1)."""
        def build() -> np.ndarray:
            index = np.full(len(self), -1, np.int64)
            for nodes in self.level_nodes:
                index[nodes] = np.arange(len(nodes))
            return index
        return self._lookup("class_index", build)

    @property
    def child_masks(self) -> list[np.ndarray]:
        """Per level l >= 1, ``[C_{l-1}, C_l]`` bool: True where class j of level l is a child of
        class i of level l-1. A row of all False marks a leaf: the path stops there."""
        def build() -> list[np.ndarray]:
            masks = []
            for l in range(1, self.num_levels):
                mask = np.zeros((self.level_sizes[l - 1], self.level_sizes[l]), bool)
                children = self.level_nodes[l]
                mask[self.class_index[self.parent[children]], np.arange(len(children))] = True
                masks.append(mask)
            return masks
        return self._lookup("child_masks", build)

    @property
    def leaves(self) -> np.ndarray:
        """Nodes without children (root excluded)."""
        has_child = np.zeros(len(self), bool)
        has_child[self.parent[1:]] = True
        return np.flatnonzero(~has_child[1:]) + 1

    def targets(self, node: int) -> np.ndarray:
        """``[L]`` class index per level on the path to ``node``; ``-1`` below its depth."""
        out = np.full(self.num_levels, -1, np.int64)
        for level, n in enumerate(self.path_nodes(node)):
            out[level] = self.class_index[n]
        return out

    def decode(self, level_classes: Sequence[int]) -> int:
        """The node reached by per-level class indices (stopping at the first ``-1``).

        Raises:
            ValueError: when a class is not a child of the previous level's class.
        """
        node = 0
        for level, cls in enumerate(level_classes):
            if cls < 0:
                break
            child = int(self.level_nodes[level][cls])
            if self.parent[child] != node:
                raise ValueError(f"class {cls} at level {level} is not a child of node {node}")
            node = child
        return node

    def is_valid_path(self, level_classes: Sequence[int]) -> bool:
        """True when the classes form a parent→child chain ending at a leaf, padded with -1."""
        try:
            node = self.decode(level_classes)
        except (ValueError, IndexError):
            return False
        depth = len(self.path_nodes(node))
        return node != 0 and node in set(self.leaves.tolist()) and all(
            c < 0 for c in list(level_classes)[depth:])

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> str:
        """Serialise to JSON (round-trips through :meth:`from_json`)."""
        nodes = [{"node": n, "id": int(self.ids[n]), "name": self.names[n],
                  "parent": int(self.parent[n]), "virtual": bool(self.virtual[n])}
                 for n in range(len(self))]
        data: dict = {"version": self.version, "nodes": nodes}
        if self.lineage:  # {earlier version: [[id there, id here], ...]}
            data["lineage"] = {v: sorted([int(a), int(b)] for a, b in m.items())
                               for v, m in self.lineage.items()}
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "Taxonomy":
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        nodes = sorted(data["nodes"], key=lambda d: d["node"])
        lineage = {v: {int(a): int(b) for a, b in pairs}
                   for v, pairs in (data.get("lineage") or {}).items()}
        return cls(np.asarray([d["id"] for d in nodes], np.int64), tuple(d["name"] for d in nodes),
                   np.asarray([d["parent"] for d in nodes], np.int64),
                   np.asarray([d["virtual"] for d in nodes], bool), data.get("version", "unversioned"),
                   lineage)

    def _lookup(self, key: str, build):  # lazily built derived state; the arrays never change
        if key not in self._cache:
            self._cache[key] = build()
        return self._cache[key]


def load_google_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """The full Google Product Taxonomy from ``path`` or the shared folder (5,594 categories)."""

    return Taxonomy.from_google(path or taxonomy_file())
