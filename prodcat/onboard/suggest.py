"""Mapping suggestions for an unmapped platform (``prodcat catalog suggest-mapping``).

The export is read through the platform's adapter without a mapping
(:func:`prodcat.catalog.review.read_unmapped`), at most ``max_per_category`` products per source
category are categorized by bulk scoring on Ray (:func:`prodcat.score.score`, the cascade or one
checkpoint), and each source category gets its top-k Google categories by the products' votes:

- ``share``: the share of the category's scored products whose answer is that Google category;
- ``mean_confidence``: their mean calibrated path confidence (the model's own probability that the
  whole path is right);
- ``name_similarity``: the cosine of the source path's name and the Google path's name, both
  embedded by the model's text encoder (evidence for a person; not in the confidence);
- ``confidence`` of the suggestion: ``votes / (scored + 1) x mean_confidence``, the share (shrunk
  when few products were scored) times how sure the model was of them: in [0, 1].

The top-k candidates are the categories most products voted for; ``ranking`` orders them by those
votes or (``names``, the default) by the similarity of their names to the source category's: the
ranking chosen on the leave-one-platform-out folds (:mod:`prodcat.onboard.measure` chooses it for
each held-out platform on the other platforms; ``docs/notes/issue-20.md``).

Output folder: ``mapping.yaml`` (the format of ``prodcat/catalog/mappings/*.yaml``, every entry
``accepted: false``, with a fingerprint of the export's source categories), ``suggestions.parquet``
(:data:`SUGGESTION_SCHEMA`), ``review.html`` (:mod:`prodcat.onboard.page`), ``summary.json`` and the
bulk-scoring ``predictions/``.

Letters: N source categories, K suggestions per category, D text embedding dimension.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import pyarrow as pa

from prodcat.cascade.spec import CASCADE_FILE, read_cascade
from prodcat.catalog.adapter import load_adapter
from prodcat.catalog.review import categories_fingerprint, read_unmapped, write_suggested_mapping
from prodcat.core import storage
from prodcat.core.console import say
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.files import CONFIG, TAXONOMY, read_json
from prodcat.onboard.config import ScoringSettings, SuggestConfig
from prodcat.score import ScoreConfig, score
from prodcat.score.parts import read_predictions

SUGGESTION_SCHEMA = pa.schema([
    pa.field("platform", pa.string(), nullable=False),
    pa.field("source_category", pa.string(), nullable=False),
    pa.field("rank", pa.int32(), nullable=False),               # 1 = the suggestion
    pa.field("suggested_category_id", pa.int64(), nullable=False),
    pa.field("share", pa.float64(), nullable=False),            # of the category's scored products
    pa.field("confidence", pa.float64(), nullable=False),       # of the suggestion, in [0, 1]
    pa.field("suggested_path", pa.string()),
    pa.field("votes", pa.int64()),
    pa.field("scored", pa.int64()),                             # products of the category scored
    pa.field("products", pa.int64()),                           # products of the category in the export
    pa.field("mean_confidence", pa.float64()),                  # mean calibrated path confidence
    pa.field("name_similarity", pa.float64()),                  # cosine of the two paths' names
])


@dataclass
class Candidate:
    """One suggested Google category for a source category."""

    rank: int
    category_id: int
    path: str
    votes: int
    share: float
    mean_confidence: float
    confidence: float
    name_similarity: float | None = None

    def record(self) -> dict:
        return {"rank": self.rank, "category_id": self.category_id, "path": self.path,
                "share": round(self.share, 4), "mean_confidence": round(self.mean_confidence, 4),
                "name_similarity": None if self.name_similarity is None else round(self.name_similarity, 4),
                "confidence": round(self.confidence, 4), "votes": self.votes}


@dataclass
class CategorySuggestion:
    """A source category, its products and its candidates (best first)."""

    source_category: str
    products: int
    scored: int
    candidates: list[Candidate] = field(default_factory=list)
    examples: list[dict] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    @property
    def confidence(self) -> float:
        return self.candidates[0].confidence if self.candidates else 0.0


def suggestion_confidence(votes: int, scored: int, mean_confidence: float) -> float:
    """``votes / (scored + 1) x mean_confidence``: in [0, 1], low when few products were scored."""
    return float(votes / (scored + 1) * mean_confidence) if scored else 0.0


def vote(source: list[str], category_ids: list[int | None], confidence: list[float],
         taxonomy: Taxonomy, top_k: int = 3) -> dict[str, list[Candidate]]:
    """Per source category its ``top_k`` candidates by the votes of its scored products.

    Args:
        source: ``[B]`` each product's source category.
        category_ids: ``[B]`` the Google category each product was categorized as (None: not
            scored, an error).
        confidence: ``[B]`` the answers' calibrated path confidences in [0, 1].
        taxonomy: where the candidates' paths come from.

    Ties in votes go to the higher mean confidence, then the smaller id.
    """
    votes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    scored: Counter = Counter()
    for src, cid, conf in zip(source, category_ids, confidence):
        if cid is None:
            continue
        scored[src] += 1
        votes[src][int(cid)].append(float(conf))
    out: dict[str, list[Candidate]] = {}
    for src, by_id in votes.items():
        n = scored[src]
        ranked = sorted(by_id.items(), key=lambda kv: (-len(kv[1]), -float(np.mean(kv[1])), kv[0]))
        out[src] = [Candidate(rank, cid, taxonomy.path_of_id(cid) if cid in taxonomy else str(cid),
                              len(confs), len(confs) / n, float(np.mean(confs)),
                              suggestion_confidence(len(confs), n, float(np.mean(confs))))
                    for rank, (cid, confs) in enumerate(ranked[:top_k], start=1)]
    return out


def sample_rows(rows: list[dict], per_category: int | None, seed: str,
                stored: set[str] | None = None) -> list[dict]:
    """At most ``per_category`` rows per source category, chosen by a hash of ``product_id``
    (rows in ``stored`` first: their vectors are reused)."""
    if per_category is None:
        return list(rows)
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["source_category"]].append(row)
    kept = []
    for members in groups.values():
        members.sort(key=lambda r: (stored is not None and r["product_id"] not in stored,
                                    hashlib.sha1(f"{seed}:suggest:{r['product_id']}".encode()).digest()))
        kept += members[:per_category]
    return sorted(kept, key=lambda r: r["product_id"])


# ------------------------------------------------------------------------------ the model
@dataclass
class ModelRef:
    """What ``--model`` names: a cascade or one checkpoint, as bulk scoring takes it."""

    uri: str
    kind: str                     # "cascade" or "checkpoint"
    text_checkpoint: str          # where the text encoder (for names) and the taxonomy come from

    def score_fields(self, mode: str) -> dict:
        if self.kind == "cascade":
            return {"model": self.uri, "mode": mode}
        return {"text_model": self.uri, "multimodal_model": self.uri, "mode": "text"}


def resolve_model(uri: str) -> ModelRef:
    """A cascade (``cascade.json`` or its folder) or a checkpoint folder (``config.json``).

    Raises:
        FileNotFoundError: neither is there.
    """
    if uri.endswith(".json") or storage.exists(storage.join(uri, CASCADE_FILE)):
        spec = read_cascade(uri)
        return ModelRef(uri, "cascade", spec.text_model)
    if storage.exists(storage.join(uri, CONFIG)):
        return ModelRef(storage.absolute(uri), "checkpoint", storage.absolute(uri))
    raise FileNotFoundError(f"{uri} is neither a cascade (cascade.json from `prodcat cascade fit`) "
                            "nor a checkpoint folder (config.json from `prodcat train`)")


def name_similarity(checkpoint: str, sources: list[str], targets: list[str]) -> np.ndarray | None:
    """``[P]`` cosine of ``sources[i]`` with ``targets[i]`` (category paths), both embedded by the
    checkpoint's text encoder (``" > "`` read as ``" / "``); None when it has no text encoder."""
    from prodcat.cascade.stage import encoder_configs
    from prodcat.embed.encoders import build_encoder

    features = read_json(checkpoint, CONFIG).get("features", {})
    text = {f: info for f, info in features.items() if info.get("encoder") and info.get("config")
            and info["config"].get("family") in ("text", "joint")}
    if not text or not sources:
        return None
    configs, _ = encoder_configs({f: text[f] for f in list(text)[:1]}, checkpoint, "cpu")
    encoder = build_encoder(next(iter(configs.values())))
    unique = sorted(set(sources) | set(targets))
    emb = encoder.encode_texts([u.replace(" > ", " / ") for u in unique])
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    index = {u: i for i, u in enumerate(unique)}
    return np.asarray([float(emb[index[s]] @ emb[index[t]]) for s, t in zip(sources, targets)])


# ------------------------------------------------------------------------------ the run
def score_products(rows: list[dict], model: ModelRef, output: str, mode: str,
                   features_from: str | None, scoring: ScoringSettings,
                   log: Callable[[str], None] = say) -> pa.Table:
    """Bulk-score ``rows`` (product dicts) into ``<output>/predictions``; the predictions with
    each row's ``source_category`` and path confidence, in the rows' order."""
    table = pa.table({k: pa.array([r.get(k) for r in rows], pa.string())
                      for k in ("product_id", "title", "description", "image_uri")})
    input_uri = storage.join(output, "_input", "products.parquet")
    storage.write_table(table, input_uri)
    config = ScoreConfig(**model.score_fields(mode), input=input_uri,
                         output=storage.join(output, "predictions"), features_from=features_from,
                         text_batch_size=scoring.batch_size, multimodal_batch_size=scoring.batch_size,
                         text_pool_size=scoring.pool_size, multimodal_pool_size=scoring.pool_size,
                         text_num_cpus=scoring.num_cpus, multimodal_num_cpus=scoring.num_cpus,
                         device=scoring.device)
    score(config, overwrite=True, log=log)
    pred = read_predictions(config.output)
    order = {pid: i for i, pid in enumerate(pred["product_id"].to_pylist())}
    pred = pred.take(pa.array([order[r["product_id"]] for r in rows]))
    conf = [float(np.prod(c)) if c else 0.0 for c in pred["level_confidence"].to_pylist()]
    return (pred.append_column("source_category", pa.array([r["source_category"] for r in rows]))
            .append_column("path_confidence", pa.array(conf, pa.float64())))


def build_suggestions(rows: list[dict], pred: pa.Table, counts: Counter, taxonomy: Taxonomy,
                      model: ModelRef, top_k: int, examples: int) -> list[CategorySuggestion]:
    """Per source category of the export (``counts``): candidates, name similarity, examples."""
    ids = pred["category_id"].to_pylist()
    errors = pred["error"].to_pylist()
    cands = vote(pred["source_category"].to_pylist(), [None if e else c for c, e in zip(ids, errors)],
                 pred["path_confidence"].to_pylist(), taxonomy, top_k)
    pairs = [(src, c.path) for src, cs in cands.items() for c in cs]
    sims = name_similarity(model.text_checkpoint, [p[0] for p in pairs], [p[1] for p in pairs])
    if sims is not None:
        for (src, _), sim, c in zip(pairs, sims, [c for cs in cands.values() for c in cs]):
            c.name_similarity = float(sim)
    paths = pred["category_path"].to_pylist()
    by_src: dict[str, list[int]] = defaultdict(list)
    for i, src in enumerate(pred["source_category"].to_pylist()):
        by_src[src].append(i)
    out = []
    for src, n in sorted(counts.items()):
        mine = by_src.get(src, [])
        item = CategorySuggestion(src, n, sum(1 for i in mine if not errors[i] and ids[i] is not None),
                                  cands.get(src, []))
        item.errors.update(str(errors[i]).split(":", 1)[0] for i in mine if errors[i])
        item.examples = [{"title": rows[i]["title"], "image_uri": rows[i].get("image_uri"),
                          "answer": paths[i], "product_id": rows[i]["product_id"]}
                         for i in mine[:examples]]
        out.append(item)
    return out


def suggestion_table(platform: str, items: list[CategorySuggestion]) -> pa.Table:
    """``suggestions.parquet``: one row per (source category, rank)."""
    rows = [{"platform": platform, "source_category": s.source_category, "rank": c.rank,
             "suggested_category_id": c.category_id, "share": c.share, "confidence": c.confidence,
             "suggested_path": c.path, "votes": c.votes, "scored": s.scored, "products": s.products,
             "mean_confidence": c.mean_confidence, "name_similarity": c.name_similarity}
            for s in items for c in s.candidates]
    return pa.Table.from_pylist(rows, schema=SUGGESTION_SCHEMA)


def mapping_document(platform: str, items: list[CategorySuggestion], header: dict,
                     taxonomy_version: str) -> dict:
    """The suggested mapping table (every entry ``accepted: false``)."""
    mappings, excluded = {}, {}
    for s in items:
        if s.candidates:
            top = s.candidates[0]
            mappings[s.source_category] = {
                "category_id": top.category_id, "path": top.path, "accepted": False,
                "confidence": round(top.confidence, 4), "products": s.products, "scored": s.scored,
                "suggestions": [c.record() for c in s.candidates],
                "examples": [e["title"] for e in s.examples]}
        else:
            reason = ", ".join(f"{k} {v}" for k, v in s.errors.items()) or "no product was scored"
            excluded[s.source_category] = {
                "reason": f"no suggestion: none of its {s.products} products could be categorized "
                f"({reason})", "accepted": False, "products": s.products}
    return {"platform": platform, "taxonomy": taxonomy_version, "suggested": header,
            "mappings": mappings, "excluded": excluded}


RANKINGS = ("votes", "names")


def rank(items: list[CategorySuggestion], ranking: str) -> list[CategorySuggestion]:
    """The suggestions ordered by ``ranking``: ``votes`` (the share of the category's products,
    then their confidence) or ``names`` (the same top-k candidates, ordered by the similarity of
    their names to the source category's; votes break ties, and without a text encoder the
    order stays the votes'). Copies; ``rank`` renumbered.

    Raises:
        ValueError: for an unknown ranking.
    """
    if ranking not in RANKINGS:
        raise ValueError(f"unknown ranking {ranking!r}; choose one of {', '.join(RANKINGS)}")
    out = []
    for item in items:
        cands = list(item.candidates)
        if ranking == "names" and all(c.name_similarity is not None for c in cands):
            cands.sort(key=lambda c: (-c.name_similarity, c.rank))
        cands = [replace(c, rank=r) for r, c in enumerate(cands, start=1)]
        out.append(replace(item, candidates=cands))
    return out


def suggest_items(rows: list[dict], counts: Counter, model: ModelRef, output: str, mode: str = "cascade",
                  features_from: str | None = None, scoring: ScoringSettings | None = None,
                  top_k: int = 3, examples: int = 4,
                  log: Callable[[str], None] = say) -> tuple[list[CategorySuggestion], Taxonomy]:
    """Score ``rows`` (bulk scoring into ``<output>/predictions``) and build the suggestions of
    every source category of ``counts`` in the votes' order; ``(items, the model's taxonomy)``.

    Raises:
        FileNotFoundError, ValueError: from bulk scoring (a missing model, input or store).
    """
    taxonomy = Taxonomy.from_json(storage.read_text(storage.join(model.text_checkpoint, TAXONOMY)))
    pred = score_products(rows, model, output, mode, features_from, scoring or ScoringSettings(), log)
    return build_suggestions(rows, pred, counts, taxonomy, model, top_k, examples), taxonomy


def write_suggestions(items: list[CategorySuggestion], counts: Counter, platform: str, adapter_ref: str,
                      model: ModelRef, output: str, scored: int, taxonomy_version: str,
                      ranking: str, page: bool = True, log: Callable[[str], None] = say) -> dict:
    """Write ``mapping.yaml``, ``suggestions.parquet``, ``review.html`` and ``summary.json`` of
    ``items`` (already ranked) into ``output``; returns the summary."""
    from prodcat.onboard.page import write_review_page

    header = {"platform": platform, "adapter": adapter_ref,
              "fingerprint": categories_fingerprint(counts), "source_categories": sorted(counts),
              "products": int(sum(counts.values())), "scored": int(scored), "model": model.uri,
              "ranking": ranking, "made": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    doc = mapping_document(platform, items, header, taxonomy_version.split("+")[0])
    write_suggested_mapping(storage.join(output, "mapping.yaml"), doc)
    storage.write_table(suggestion_table(platform, items), storage.join(output, "suggestions.parquet"))
    if page:
        write_review_page(storage.join(output, "review.html"), platform, items, header)
    confident = [s.confidence for s in items if s.candidates]
    summary = {"platform": platform, "adapter": adapter_ref, "model": model.uri, "ranking": ranking,
               "source_categories": len(items), "with_suggestion": len(confident),
               "products": header["products"], "scored": int(scored),
               "median_confidence": float(np.median(confident)) if confident else None,
               "fingerprint": header["fingerprint"],
               "files": ["mapping.yaml", "suggestions.parquet", "summary.json", "predictions/"]
               + (["review.html"] if page else [])}
    storage.write_text(storage.join(output, "summary.json"), json.dumps(summary, indent=2))
    log(f"[suggest] {platform}: {len(items)} source categories, {len(confident)} with a suggestion "
        f"(median confidence {summary['median_confidence'] or 0:.2f}) from {scored:,} scored "
        f"products, ranked by {ranking} → {output}")
    return summary


def suggest(rows: list[dict], counts: Counter, platform: str, adapter_ref: str, model: ModelRef,
            output: str, mode: str = "cascade", features_from: str | None = None,
            scoring: ScoringSettings | None = None, top_k: int = 3, examples: int = 4,
            ranking: str = "names", page: bool = True, log: Callable[[str], None] = say) -> dict:
    """Suggestions for already-read (and sampled) ``rows`` of one platform whose export holds the
    source categories ``counts`` (:func:`suggest_items`, :func:`rank`, :func:`write_suggestions`);
    returns the summary.

    Raises:
        FileNotFoundError, ValueError: from bulk scoring (a missing model, input or store).
    """
    start = time.perf_counter()
    items, taxonomy = suggest_items(rows, counts, model, output, mode, features_from, scoring, top_k,
                                    examples, log)
    summary = write_suggestions(rank(items, ranking), counts, platform, adapter_ref, model, output,
                                len(rows), taxonomy.version, ranking, page, log)
    summary["seconds"] = round(time.perf_counter() - start, 1)
    storage.write_text(storage.join(output, "summary.json"), json.dumps(summary, indent=2))
    return summary


def suggest_mapping(config: SuggestConfig, log: Callable[[str], None] = say) -> dict:
    """``prodcat catalog suggest-mapping``: read ``config.adapter``'s export unmapped, sample,
    score, suggest, write (see the module docstring); returns the summary.

    Raises:
        prodcat.catalog.review.MissingCategoryColumn: the export has no category column.
        FileNotFoundError: a missing export, model or store.
    """
    adapter = load_adapter(config.adapter).model_copy(update={"mapping": None})
    rows, rejects = read_unmapped(adapter)
    counts = Counter(r["source_category"] for r in rows)
    stored = _stored_ids(config.features_from) if config.features_from else None
    sample = sample_rows(rows, config.max_per_category, config.seed, stored)
    log(f"[suggest] {adapter.platform}: {len(rows):,} products in {len(counts)} source categories "
        f"({len(rejects):,} records rejected); scoring {len(sample):,} (at most "
        f"{config.max_per_category} per category)")
    ref = config.adapter if not storage.exists(config.adapter) else storage.absolute(config.adapter)
    return suggest(sample, counts, adapter.platform, ref, resolve_model(config.model), config.output,
                   config.mode, config.features_from, config.scoring, config.top_k, config.examples,
                   config.ranking, config.page, log)


def _stored_ids(store: str) -> set[str]:
    from prodcat.embed.store import read_store

    return set(read_store(store, ["product_id"])[0]["product_id"].to_pylist())
