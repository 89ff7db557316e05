"""Training features: the embedding store joined to the product table, ready for Ray Data.

The embedding store (``docs/contracts.md``) holds ``emb_<f>`` (fixed_size_list<float32> [D_f], zeros
when the modality failed or is absent) and ``status_<f>`` per feature ``f``: the status is the only
validity signal (``ok`` = present). The product table holds
labels, splits and platforms. Because the features are precomputed, the join is a pyarrow ``take``
by ``product_id`` done once on the driver; the result goes into Ray Data as fixed-size arrays.

Letters: B products, D_f dimension of feature f, L taxonomy levels.

Columns of a feature table (:func:`join_features`):
``product_id``, ``platform``, ``split``, ``category_id`` (int64), ``node`` (int64, the label leaf),
``targets`` (fixed_size_list<int64> [L], -1 padded), per feature ``x_<f>`` (fixed_size_list<float32>
[D_f], zeros when missing) and ``present_<f>`` (bool, False when missing: zero vector, masked).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prodcat.catalog.build import check_split_version
from prodcat.core import storage
from prodcat.core.taxonomy import Taxonomy
from prodcat.embed.store import feature_matrix, read_manifest, read_trained_on, skipped_rows
from prodcat.embed.store import read_store as _read_store
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import product_text
from prodcat.train.config import TrainConfig

TARGETS = "targets"
NODE = "node"
TENSOR_PREFIX = "x_"
PRESENT_PREFIX = "present_"
TEXT = "text"   # title . description, for the lexical modality (prodcat.models.lexical)
META_COLUMNS = ("product_id", "platform", "group_id", "split", "category_id", "node", TEXT)


def read_store(uri: str, columns: list[str] | None = None,
               skip_unreadable: bool = False) -> tuple[pa.Table, dict]:
    """The embedding store at ``uri`` and its manifest (``prodcat.embed.store.read_store``).

    Raises:
        FileNotFoundError: when there is no store at ``uri``.
        prodcat.embed.store.UnreadableStorePart: a part that cannot be read (unless
            ``skip_unreadable``; then ``manifest["skipped"]`` lists it).
    """

    return _read_store(uri, columns, skip_unreadable)


def store_features(store: pa.Table) -> dict[str, int]:
    """``{feature: D_f}`` for every ``emb_<f>`` column of a store."""
    dims = {}
    for f in store.schema:
        if f.name.startswith("emb_") and pa.types.is_fixed_size_list(f.type):
            dims[f.name[len("emb_"):]] = f.type.list_size
    return dims


def fixed_list(values: np.ndarray) -> pa.FixedSizeListArray:
    """``[B, D]`` array → fixed_size_list [D] column."""
    values = np.ascontiguousarray(values)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1)), values.shape[1])


def _dense(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """A fixed_size_list column without nulls → ``[B, D]`` float32 (non-finite rows zeroed)."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    out = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    out = out.reshape(len(column), dim).copy()
    out[~np.isfinite(out).all(axis=1)] = 0.0
    return out


def join_features(products: pa.Table, store: pa.Table, features: list[str],
                  taxonomy: Taxonomy) -> pa.Table:
    """Inner-join labelled products to their store rows; see the module docstring for columns.

    Products without a store row (a partial store) or without a label are left out; a product
    whose status is not ``ok`` (or whose vector is not finite) gets a zero vector and
    ``present=False``.

    Raises:
        KeyError: when a requested feature is not in the store (the message lists the ones it has).
    """
    dims = store_features(store)
    missing = [f for f in features if f not in dims]
    if missing:
        raise KeyError(f"features {missing} are not in the embedding store; it has {sorted(dims)}")
    labelled = products.filter(pc.is_valid(products["category_id"]))
    index = pc.index_in(labelled["product_id"], value_set=store["product_id"])
    keep = pc.is_valid(index)
    labelled, index = labelled.filter(keep), index.filter(keep)
    rows = store.take(index)
    cids = labelled["category_id"].to_numpy()
    node_of = {int(c): taxonomy.label_node(int(c)) for c in np.unique(cids)}
    nodes = np.asarray([node_of[int(c)] for c in cids], np.int64)
    targets = np.stack([taxonomy.targets(n) for n in nodes]) if len(nodes) else np.zeros(
        (0, taxonomy.num_levels), np.int64)
    columns = {"product_id": labelled["product_id"], "platform": labelled["platform"],
               "group_id": labelled["group_id"], "split": labelled["split"],
               "category_id": labelled["category_id"], "node": pa.array(nodes),
               TARGETS: fixed_list(targets)}
    if "title" in labelled.column_names:  # the text the lexical modality reads
        columns[TEXT] = pa.array([product_text(a, b) for a, b in zip(
            labelled["title"].to_pylist(), labelled["description"].to_pylist())], pa.string())
    for f in features:
        x, present = feature_matrix(rows, f)            # present: status "ok" and finite
        columns[TENSOR_PREFIX + f] = fixed_list(x)
        columns[PRESENT_PREFIX + f] = pa.array(present)
    return pa.table(columns)


@dataclass
class FeatureVariant:
    """Another version of one feature, for the held-out set of one platform Q: the vectors of an
    encoder that never read Q (an inner fine-tuning, :mod:`prodcat.evaluate.finetuning`), looked up
    by product id so the table's rows can be filtered freely.

    Attributes:
        ids: ``[N]`` product ids (str) the vectors belong to, sorted.
        x: ``[N, D]`` float32 vectors, aligned with ``ids``.
        present: ``[N]`` bool (False: not embedded or failed).
        trained_on: product ids (str) whose labels this version's encoder learnt.
        version: its encoder's fingerprint (a fitted component's cache key names it).
    """

    ids: np.ndarray
    x: np.ndarray
    present: np.ndarray
    trained_on: np.ndarray
    version: str = ""


@dataclass
class FeatureTable:
    """A joined feature table plus what it was built from.

    Attributes:
        table: columns as in the module docstring.
        features: the feature names used (store columns ``emb_<f>``).
        dims: ``{f: D_f}``.
        manifest: the store manifest (encoder configs and fingerprints per feature).
        taxonomy: the taxonomy the targets index into.
        counts: where the rows came from (:func:`data_counts`): products in the catalogue,
            labelled ones, labelled ones with a store row (the rows here), store rows skipped as
            unreadable; empty when built by hand.
        trained_on: ``{feature: product ids (str)}``: the products whose labels a feature's
            encoder was trained on (a fine-tuned encoder's training rows: from the store,
            :func:`prodcat.embed.store.read_trained_on`, or an evaluation fold's own encoder,
            :func:`prodcat.evaluate.finetuning.fold_feature`); a decision-level model never
            scores a component on them when it chooses (:func:`prodcat.train.decision.heldout_sets`).
        variants: ``{feature: {platform: FeatureVariant}}``: the version of a feature the
            cross-platform held-out set of that platform reads instead (:meth:`for_heldout`), so a
            fine-tuned component is chosen on a platform its encoder never saw, as it is then
            tested; empty: every set reads the one version.
        versions: ``{feature: version}`` for features added with one (a fitted component's cache
            key names it, so two encoders' vectors are never confused).
    """

    table: pa.Table
    features: list[str]
    dims: dict[str, int]
    taxonomy: Taxonomy
    manifest: dict = field(default_factory=dict)
    counts: dict = field(default_factory=dict)
    trained_on: dict = field(default_factory=dict)
    variants: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.table.num_rows

    def where(self, mask: np.ndarray | pa.Array) -> "FeatureTable":
        """The rows where ``mask`` ([B] bool) is True."""
        return replace(self, table=self.table.filter(pa.array(np.asarray(mask, bool))))

    def rows(self, splits: list[str] | None = None, platforms: list[str] | None = None) -> "FeatureTable":
        """The rows in ``splits`` and ``platforms`` (None: all)."""
        mask = np.ones(len(self), bool)
        if splits is not None:
            mask &= np.isin(self.column("split"), splits)
        if platforms is not None:
            mask &= np.isin(self.column("platform"), platforms)
        return self.where(mask)

    def with_features(self, features: list[str]) -> "FeatureTable":
        """The same rows with only ``features`` (a subset of :attr:`features`)."""
        unknown = [f for f in features if f not in self.features]
        if unknown:
            raise KeyError(f"features {unknown} not loaded; loaded: {self.features}")
        drop = [c for f in self.features if f not in features
                for c in (TENSOR_PREFIX + f, PRESENT_PREFIX + f)]
        return replace(self, table=self.table.drop_columns(drop), features=list(features),
                       dims={f: self.dims[f] for f in features},
                       trained_on={f: v for f, v in self.trained_on.items() if f in features},
                       variants={f: v for f, v in self.variants.items() if f in features},
                       versions={f: v for f, v in self.versions.items() if f in features})

    def add_feature(self, name: str, x: np.ndarray, present: np.ndarray | None = None,
                    trained_on=None, version: str = "") -> "FeatureTable":
        """The same rows with one more feature ``name`` (``x [B, D]`` float32; ``present [B]``,
        default all present), replacing one of that name (and its variants); ``trained_on``: the
        product ids whose labels its encoder was trained on (:attr:`trained_on`), None: none;
        ``version``: its encoder's fingerprint (:attr:`versions`), also what the manifest now
        records for ``name`` (``{"fingerprint": {"key": version}}``; without it, no entry), so a
        checkpoint trained on the table never names the encoder of the vectors replaced.

        Raises:
            ValueError: when ``x`` is not ``[B, D]`` for this table's B.
        """
        x = np.asarray(x, np.float32)
        if x.ndim != 2 or len(x) != len(self):
            raise ValueError(f"feature {name!r} must be [B={len(self)}, D], got {list(x.shape)}")
        present = np.ones(len(x), bool) if present is None else np.asarray(present, bool)
        table = self.table.drop_columns([c for c in (TENSOR_PREFIX + name, PRESENT_PREFIX + name)
                                         if c in self.table.column_names])
        table = table.append_column(TENSOR_PREFIX + name, fixed_list(x))
        table = table.append_column(PRESENT_PREFIX + name, pa.array(present))
        features = [f for f in self.features if f != name] + [name]
        seen = {f: v for f, v in self.trained_on.items() if f != name}
        if trained_on is not None:
            seen[name] = np.asarray(trained_on, dtype=str)
        # the store's manifest entry of `name` described the vectors replaced here: a checkpoint
        # trained on this table records the new encoder's fingerprint, or none, never the old one
        recorded = {f: e for f, e in ((self.manifest or {}).get("features") or {}).items() if f != name}
        if version:
            recorded[name] = {"fingerprint": {"key": version}}
        manifest = {**(self.manifest or {}), "features": recorded}
        return replace(self, table=table, features=features, dims={**self.dims, name: x.shape[1]},
                       manifest=manifest,
                       trained_on=seen, variants={f: v for f, v in self.variants.items() if f != name},
                       versions={**{f: v for f, v in self.versions.items() if f != name},
                                 **({name: version} if version else {})})

    def add_variant(self, name: str, platform: str, product_ids: np.ndarray, x: np.ndarray,
                    present: np.ndarray, trained_on, version: str = "") -> "FeatureTable":
        """The same table with a version of feature ``name`` for ``platform``'s cross-platform
        held-out set (:class:`FeatureVariant`; ``x [N, D]`` for ``product_ids [N]``).

        Raises:
            KeyError: ``name`` is not a feature of the table.
            ValueError: ``x`` is not ``[N, D]`` with the feature's D.
        """
        if name not in self.features:
            raise KeyError(f"feature {name!r} not loaded; loaded: {self.features}")
        ids = np.asarray(product_ids, dtype=str)
        x = np.asarray(x, np.float32)
        if x.shape != (len(ids), self.dims[name]):
            raise ValueError(f"variant of {name!r} for {platform!r} must be [N={len(ids)}, "
                             f"D={self.dims[name]}], got {list(x.shape)}")
        order = np.argsort(ids, kind="stable")
        variant = FeatureVariant(ids[order], x[order], np.asarray(present, bool)[order],
                                 np.asarray(trained_on if trained_on is not None else [], dtype=str), version)
        variants = {**self.variants, name: {**self.variants.get(name, {}), platform: variant}}
        return replace(self, variants=variants)

    def for_heldout(self, platform: str) -> "FeatureTable":
        """The table the cross-platform held-out set of ``platform`` reads: each feature with a
        variant for ``platform`` (:attr:`variants`) swapped for it (vectors, presence, trained-on
        products, version; a row the variant lacks is absent), and no variants."""
        out = self.without_variants()
        ids = self.column("product_id").astype(str) if self.variants else None
        for name, by_platform in self.variants.items():
            v = by_platform.get(platform)
            if v is None:
                continue
            at = np.clip(np.searchsorted(v.ids, ids), 0, max(len(v.ids) - 1, 0))
            ok = (v.ids[at] == ids) & v.present[at] if len(v.ids) else np.zeros(len(ids), bool)
            x = np.zeros((len(ids), self.dims[name]), np.float32)      # zeros when missing
            x[ok] = v.x[at[ok]]
            out = out.add_feature(name, x, ok, trained_on=v.trained_on, version=v.version)
        return out

    def without_variants(self) -> "FeatureTable":
        """The same table without :attr:`variants` (what a held-out set carries)."""
        return replace(self, variants={}) if self.variants else self

    def seen_by(self, features: list[str]) -> np.ndarray:
        """``[B]`` bool: rows whose labels the encoder of any of ``features`` was trained on."""
        ids = [self.trained_on[f] for f in features if f in self.trained_on]
        if not ids:
            return np.zeros(len(self), bool)
        return np.isin(self.column("product_id").astype(str), np.concatenate(ids))

    def column(self, name: str) -> np.ndarray:
        """A scalar column as numpy."""
        return self.table[name].to_numpy(zero_copy_only=False)

    def arrays(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]:
        """``(features {f: [B, D_f] float32}, present {f: [B] bool}, targets [B, L] int64)``."""
        feats = {f: _dense(self.table[TENSOR_PREFIX + f], self.dims[f]) for f in self.features}
        present = {f: self.column(PRESENT_PREFIX + f).astype(bool) for f in self.features}
        targets = _dense_int(self.table[TARGETS], self.taxonomy.num_levels)
        return feats, present, targets

    def retarget(self, taxonomy: Taxonomy) -> "FeatureTable":
        """The rows whose category is a label of ``taxonomy`` (one of its leaves, virtual ones
        included: in an induced taxonomy every label is a leaf; e.g. the label space of a
        leave-one-platform-out fold's training platforms), with ``node`` and ``targets``
        recomputed in it; rows of other categories are left out."""
        labels = {int(c) for c in taxonomy.ids[taxonomy.leaves]}
        keep = np.asarray([int(c) in labels for c in self.column("category_id")], bool)
        rows = self.where(keep)
        nodes = np.asarray([taxonomy.label_node(int(c)) for c in rows.column("category_id")], np.int64)
        targets = (np.stack([taxonomy.targets(n) for n in nodes]) if len(nodes)
                   else np.zeros((0, taxonomy.num_levels), np.int64))
        table = rows.table.set_column(rows.table.schema.get_field_index(NODE), NODE, pa.array(nodes))
        table = table.set_column(table.schema.get_field_index(TARGETS), TARGETS, fixed_list(targets))
        return replace(self, table=table, taxonomy=taxonomy)

    def tensor_table(self) -> pa.Table:
        """Only the numeric columns a training loop needs (for ``ray.data.from_arrow``)."""
        cols = [NODE, TARGETS] + [p + f for f in self.features for p in (TENSOR_PREFIX, PRESENT_PREFIX)]
        return self.table.select(cols)


def _dense_int(column: pa.ChunkedArray, width: int) -> np.ndarray:
    column = column.combine_chunks()
    return column.flatten().to_numpy().astype(np.int64).reshape(-1, width)


def load_taxonomy(products_uri: str, taxonomy_uri: str | None = None) -> Taxonomy:
    """The taxonomy at ``taxonomy_uri`` or ``taxonomy.json`` beside the product table."""
    if taxonomy_uri is None:
        base = products_uri.rsplit("/", 1)[0] if "/" in products_uri else "."
        taxonomy_uri = storage.join(base, "taxonomy.json")
    return Taxonomy.from_json(storage.read_text(taxonomy_uri))


def load_feature_table(products_uri: str, embeddings_uri: str, features: list[str],
                       taxonomy_uri: str | None = None, skip_unreadable: bool = False) -> FeatureTable:
    """Read the product table, its taxonomy and the embedding store, and join them.

    Raises:
        FileNotFoundError: when an input is missing; KeyError: for a feature not in the store.
        prodcat.core.errors.UnreadableFile: the product table or a store part cannot be read
            (a store part is left out, and counted, with ``skip_unreadable``).
    """
    taxonomy = load_taxonomy(products_uri, taxonomy_uri)
    check_split_version(products_uri)
    products = storage.read_table(products_uri, columns=[
        "product_id", "platform", "group_id", "split", "category_id", "title", "description"])

    manifest = read_manifest(embeddings_uri) or {}
    have = set((manifest.get("features") or {}))
    features = [f for f in features if f != LEXICAL]  # computed from the text, not stored
    missing = [f for f in features if f not in have]
    if missing:
        raise KeyError(f"features {missing} are not in the embedding store {embeddings_uri}; "
                       f"it has {sorted(have)}")
    store, manifest = read_store(embeddings_uri, ["product_id"] + [
        c for f in features for c in (f"emb_{f}", f"status_{f}")], skip_unreadable)
    table = join_features(products, store, features, taxonomy)
    dims = {f: store.schema.field(f"emb_{f}").type.list_size for f in features}
    return FeatureTable(table, list(features), dims, taxonomy, manifest,
                        data_counts(products, store, table, manifest),
                        read_trained_on(embeddings_uri, list(features)))


def attach_variants(table: FeatureTable, variants: dict[str, dict[str, str]]) -> FeatureTable:
    """``table`` with each ``{feature: {platform: store}}`` of ``variants`` whose feature it reads
    attached as :class:`FeatureVariant` (every product the store holds the feature for, the
    products its encoder learnt, its fingerprint); features the table does not read are skipped.

    Raises:
        FileNotFoundError: no store at a given path. KeyError: the store lacks the feature.
        ValueError: the variant's encoder was fine-tuned on products of the platform it is for
            (it would flatter the fine-tuned component on that platform's held-out set).
    """
    from prodcat.embed.store import read_vectors

    for name, by_platform in variants.items():
        if name not in table.features:
            continue
        for q, uri in by_platform.items():
            ids, x, present = read_vectors(uri, name)
            learnt = read_trained_on(uri, [name]).get(name, np.asarray([], dtype=str))
            mine = learnt[np.isin(learnt, table.rows(platforms=[q]).column("product_id").astype(str))]
            if len(mine):
                raise ValueError(f"data.variants: the {name!r} of {uri} is for {q!r}'s held-out set, "
                                 f"but its encoder was fine-tuned on {len(mine):,} products of {q} "
                                 f"(e.g. {mine[0]}); fine-tune it with data.platforms without {q}")
            fingerprint = ((read_manifest(uri) or {}).get("features", {}).get(name, {})
                           .get("fingerprint") or {})
            version = fingerprint.get("key", "") if isinstance(fingerprint, dict) else str(fingerprint)
            table = table.add_variant(name, q, ids, x, present, learnt, version or uri)
    return table


def data_counts(products: pa.Table, store: pa.Table, joined: pa.Table, manifest: dict) -> dict:
    """How many products a run can use, against how many the catalogue has.

    Returns:
        ``catalogue_products`` (rows of the product table), ``labelled_products`` (with a
        ``category_id``), ``store_rows`` (rows read from the store), ``labelled_with_vectors``
        (labelled products with a store row: the rows of the feature table),
        ``labelled_without_vectors`` (labelled products the store lacks), ``skipped_unreadable_parts``
        and ``skipped_unreadable_rows`` (store parts left out by ``--skip-unreadable``).
    """
    labelled = int(pc.sum(pc.is_valid(products["category_id"])).as_py() or 0)
    skipped = manifest.get("skipped", [])
    return {"catalogue_products": products.num_rows, "labelled_products": labelled,
            "store_rows": store.num_rows, "labelled_with_vectors": joined.num_rows,
            "labelled_without_vectors": labelled - joined.num_rows,
            "skipped_unreadable_parts": [s["file"] for s in skipped],
            "skipped_unreadable_rows": skipped_rows(manifest)}


def describe_counts(counts: dict, used: int | None = None) -> str:
    """One line: labelled products used (``used``, default all with vectors) of the catalogue's,
    and what was skipped."""
    if not counts:
        return "feature table built by the caller"
    used = counts["labelled_with_vectors"] if used is None else used
    line = (f"{used:,} labelled products used of "
            f"{counts['labelled_products']:,} labelled ({counts['catalogue_products']:,} in the "
            f"catalogue)")
    if counts["labelled_without_vectors"]:
        line += f"; {counts['labelled_without_vectors']:,} labelled products have no store row"
    if counts["skipped_unreadable_parts"]:
        line += (f"; {counts['skipped_unreadable_rows']:,} store rows in "
                 f"{len(counts['skipped_unreadable_parts'])} unreadable part(s) skipped "
                 "(--skip-unreadable)")
    return line


def select_train_rows(table: FeatureTable, config: TrainConfig) -> FeatureTable:
    """The training rows of ``config``: the ``data.train_split`` rows of ``table``, a random
    subsample of ``data.max_train_products`` (seeded by ``optim.seed``) when set.

    Raises:
        ValueError: when no row is left (names the split, the platforms and the counts).
    """
    rows = table.rows(splits=[config.data.train_split])
    cap = config.data.max_train_products
    if cap and len(rows) > cap:
        keep = np.zeros(len(rows), bool)
        keep[np.random.default_rng(config.optim.seed).permutation(len(rows))[:cap]] = True
        rows = rows.where(keep)
    if not len(rows):
        raise ValueError(f"no training rows (split {config.data.train_split!r}, platforms "
                         f"{config.data.platforms}; {describe_counts(table.counts, len(table))}); "
                         "check the config and the store")
    return rows
