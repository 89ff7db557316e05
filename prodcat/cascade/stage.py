"""One cascade stage on raw products, and the cascade spec (which checkpoints, temperatures, tau).

Letters: B products in a batch, D_f dimension of feature f, L taxonomy levels.

:class:`StageRunner` is one stage: a checkpoint plus the encoders it was trained on; raw products in
(title, description, image file or bytes), predictions out. The same object runs in Serve replicas
(``prodcat/serve/app.py``), in the Ray Data actors of bulk scoring (:mod:`prodcat.score.job`) and when
``prodcat cascade fit`` times the stages: one code path for online and offline inference.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

from prodcat.cascade.abstain import stop_level
from prodcat.cascade.policy import combine_confidence
from prodcat.core import storage
from prodcat.core.metrics import valid_paths
from prodcat.core.runtime import torch_device
from prodcat.core.taxonomy import SEPARATOR, Taxonomy
from prodcat.embed.encoders import EncoderConfig
from prodcat.embed.encoders.base import IMAGE_STATUS, pixel_column
from prodcat.embed.extractor import FeatureExtractor, decode_images
from prodcat.embed.imaging import ImageLimits
from prodcat.models.checkpoint import load_checkpoint
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import product_text


# ---------------------------------------------------------------------- one stage
class StageRunner:
    """One cascade stage: a checkpoint and the encoders it was trained on (no Ray needed).

    Args:
        checkpoint: checkpoint folder (local or ``s3://``).
        stage: ``"text"`` or ``"multimodal"`` (recorded in each prediction).
        temperature: softmax temperature (> 0); None = the checkpoint's calibrated one.
        device: ``auto``, ``cpu`` or ``cuda`` (encoders and head).
        confidence_mode: how per-level confidences combine (:func:`prodcat.cascade.combine_confidence`).
        num_threads: torch intra-op threads for this process.
        image_limits: :class:`prodcat.embed.imaging.ImageLimits` fields.

    Raises:
        ValueError: when the checkpoint records no encoder configs (it cannot encode raw products).
        prodcat.embed.store.StoreMismatch: when an encoder's weights differ from the training ones.
    """

    def __init__(self, checkpoint: str, stage: str, temperature: float | None = None,
                 device: str = "auto", confidence_mode: str = "path", num_threads: int | None = None,
                 image_limits: dict | None = None, cache_dir: str | None = None) -> None:

        if num_threads:
            import torch

            torch.set_num_threads(num_threads)
        self.stage, self.confidence_mode = stage, confidence_mode
        self.device = torch_device(device)
        self.model = load_checkpoint(checkpoint, device=self.device)
        self.taxonomy = self.model.taxonomy
        self.temperature = float(temperature or self.model.calibration.get("temperature", 1.0))
        configs, expected = encoder_configs(self.model.encoders, checkpoint, self.device)
        self.extractor = FeatureExtractor(configs, image_limits=ImageLimits(**(image_limits or {})),
                                          cache_dir=cache_dir, expected=expected)
        self.fingerprints = {f: info["fingerprint"]["key"] for f, info in self.model.encoders.items()}
        self._levels = _level_table(self.taxonomy)

    def info(self) -> dict:
        """Checkpoint, version, temperature and per feature its encoder and fingerprint."""
        return {"stage": self.stage, "checkpoint": self.model.uri, "version": self.model.version,
                "temperature": self.temperature, "device": self.device,
                "features": {f: {"encoder": info.get("encoder"), "family": info.get("family"),
                                 "fingerprint": info["fingerprint"]["key"],
                                 "weights_sha256": info["fingerprint"].get("weights_sha256"),
                                 "architecture": info["fingerprint"].get("architecture")}
                             for f, info in self.model.encoders.items()},
                "metrics": {k: v for k, v in self.model.metrics.items()
                            if isinstance(v, (int, float)) and k.startswith("val_")}}

    # -- features ------------------------------------------------------------------------------
    def features(self, batch: Mapping) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """``({f: float32 [B, D_f]}, {f: status [B]})`` for this model's features.

        Vectors already in the batch (columns ``emb_<f>``, ``status_<f>``, ``fp_<f>``: from stage 1
        or an embedding store) are reused row by row where ``fp_<f>`` equals this stage's
        fingerprint (the status says whether the vector exists: a recorded failure, zero vector
        with its reason, counts as done); each encoder runs only on the rows still missing one of
        its features. Images already decoded upstream (``_pixels_<S>`` ``uint8 [B, S, S, 3]`` with
        ``_image_status``: the Serve ingress) are used as they are; otherwise ``image_uri`` /
        ``image_bytes`` are decoded here.
        """

        n = len(batch["title"])
        feats = {f: np.zeros((n, d), np.float32) for f, d in self.model.input_dims.items()}
        status = {f: np.full(n, None, object) for f in self.model.features}
        have = {f: self._reuse(batch, f, n, feats[f], status[f]) for f in self.model.features}
        work = {k: list(batch[k]) for k in ("title", "description", "image_uri", "image_bytes")
                if k in batch}
        work["product_id"] = list(batch.get("product_id", [str(i) for i in range(n)]))
        work.setdefault("description", [None] * n)
        for enc in self.extractor.encoders.values():
            mine = [f for f in enc.features if f in have]
            rows = np.flatnonzero(~np.all([have[f] for f in mine], axis=0)) if mine else np.zeros(0, int)
            if not len(rows):
                continue
            sub = {k: [v[i] for i in rows] for k, v in work.items()}
            if enc.image_size and pixel_column(enc.image_size) in batch:   # decoded upstream
                sub[pixel_column(enc.image_size)] = np.asarray(batch[pixel_column(enc.image_size)])[rows]
                sub[IMAGE_STATUS] = np.asarray(batch[IMAGE_STATUS], object)[rows]
            elif enc.image_size:
                sub.update(decode_images(sub, [enc.image_size], self.extractor.image_limits))
            out = enc.encode(sub)
            for f in mine:
                feats[f][rows] = np.asarray(out[f"emb_{f}"], np.float32)
                status[f][rows] = np.asarray(out[f"status_{f}"], object)
        if LEXICAL in feats:  # the checkpoint's own TF-IDF + linear model reads the text
            texts = [product_text(t, d) for t, d in zip(work["title"], work["description"])]
            feats[LEXICAL][:] = self.model.lexical.scores(texts)
            status[LEXICAL][:] = "ok"
        return feats, status

    def _reuse(self, batch: Mapping, f: str, n: int, into: np.ndarray, status: np.ndarray) -> np.ndarray:
        """Copy reusable vectors of feature ``f`` into ``into``/``status``; ``[B]`` bool done."""
        done = np.zeros(n, bool)
        if f"fp_{f}" not in batch or f"status_{f}" not in batch:
            return done
        mine = self.fingerprints.get(f)
        vectors = list(batch.get(f"emb_{f}", [None] * n))
        for i, (fp, st) in enumerate(zip(batch[f"fp_{f}"], batch[f"status_{f}"])):
            if fp != mine or st is None:
                continue
            if vectors[i] is not None:
                into[i] = np.asarray(vectors[i], np.float32)
            elif st == "ok":
                continue                     # "ok" without a vector: encode it again
            status[i] = str(st)
            done[i] = True
        return done

    # -- prediction ----------------------------------------------------------------------------
    def predict_batch(self, batch: Mapping, keep_features: Sequence[str] = (),
                      abstain: Sequence[float | None] | None = None) -> dict[str, list]:
        """Predict B raw products.

        Args:
            batch: equal-length columns ``title`` (non-empty), ``description`` (or None),
                optional ``image_uri`` or ``image_bytes``, optional reusable ``emb_/status_/fp_``.
            keep_features: features whose vectors to return (``emb_<f>``, ``status_<f>``,
                ``fp_<f>``) for a later stage to reuse.
            abstain: per-level thresholds ``[L]`` on the cumulative confidence
                (:func:`prodcat.cascade.abstain.thresholds_for` of a cascade's table; None entries
                are never reached): each path stops at the deepest level whose cumulative
                confidence, and every one above it, reaches its threshold. None: full paths.

        Returns:
            Columns of length B: ``path`` (the path the model output, level by level:
            ``{"level", "id", "name", "confidence"}`` per real level; with masking always a valid
            taxonomy path, without it possibly not), ``category_id`` (int, the deepest output
            node), ``category_path`` (str, the output path's names), ``level_ids`` (the category
            id output at each level), ``level_confidence`` (list of probabilities in [0, 1], one
            per real level), ``valid_path`` (bool), ``confidence`` (combined, in [0, 1]),
            ``stage``, ``model_version``, ``image_status`` (None when the stage reads no image),
            ``stopped_at_level`` (with ``abstain``: the last level kept, -1 when none is, and
            ``category_id`` None; else None) and ``stop_reason`` (why it stopped there; else None).
            With ``abstain`` the path columns hold the partial path; ``confidence`` and
            ``valid_path`` stay the full path's (``confidence`` is what the cascade routes on).
        """
        feats, status = self.features(batch)
        present = {f: status[f] == "ok" for f in feats}
        pred = self.model.predict(feats, present, temperature=self.temperature)
        classes, conf = pred["classes"], pred["level_confidence"]       # [B, L], [B, L]
        level_conf = np.where(classes >= 0, conf, np.nan)
        combined = combine_confidence(level_conf, self.confidence_mode)  # [B]
        paths = [self._path(row, conf_row) for row, conf_row in zip(classes, level_conf)]
        stops: list = [(None, None)] * len(paths)
        if abstain is not None:
            stops = [stop_level([lv["confidence"] for lv in p], abstain) for p in paths]
            paths = [p[:depth] for p, (depth, _) in zip(paths, stops)]
            stops = [(depth - 1, reason) for depth, reason in stops]
        valid = valid_paths(self.taxonomy, classes)
        image_features = [f for f, info in self.model.encoders.items() if info.get("modality") == "image"]
        out = {"category_id": [p[-1]["id"] if p else None for p in paths],
               "category_path": [SEPARATOR.join(lv["name"] for lv in p) for p in paths],
               "path": paths,
               "level_ids": [[lv["id"] for lv in p] for p in paths],
               "level_confidence": [[lv["confidence"] for lv in p] for p in paths],
               "valid_path": [bool(v) for v in valid],
               "confidence": [float(c) for c in combined],
               "stage": [self.stage] * len(combined),
               "model_version": [self.model.version] * len(combined),
               "image_status": (list(status[image_features[0]]) if image_features
                                else [None] * len(combined)),
               "stopped_at_level": [level for level, _ in stops],
               "stop_reason": [reason for _, reason in stops]}
        for f in keep_features:
            if f in feats:
                out[f"emb_{f}"] = list(feats[f])
                out[f"status_{f}"] = list(status[f])
                out[f"fp_{f}"] = [self.fingerprints[f]] * len(combined)
        return out

    def _path(self, classes: np.ndarray, level_conf: np.ndarray) -> list[dict]:
        """The real levels the model output (``classes [L]``, -1 padded), in order; a virtual leaf's
        confidence (stopping at its parent) multiplies into the level above, so the product of the
        levels is the path's."""
        levels = []
        nodes = [int(self.taxonomy.level_nodes[level][c]) for level, c in enumerate(classes) if c >= 0]
        for level, n in enumerate(nodes):
            c = float(level_conf[level]) if level < len(level_conf) and not math.isnan(level_conf[level]) else 1.0
            if self._levels["virtual"][n] and levels:
                levels[-1]["confidence"] *= c
                continue
            levels.append({"level": len(levels), "id": int(self._levels["ids"][n]),
                           "name": self._levels["names"][n], "confidence": c})
        for lv in levels:
            lv["confidence"] = round(float(lv["confidence"]), 6)
        return levels

    def predict_items(self, items: list[dict]) -> list[dict]:
        """Serve's form: product dicts (``title``, ``description``, and either ``image_pixels``
        ``{S: uint8 [S, S, 3]}`` with ``image_status``, or ``image_bytes``; optional ``features``
        ``{f: {"vector", "status", "fingerprint"}}``) → one result dict each, with ``features``
        holding this stage's text vectors for reuse.

        A batch that fails is retried product by product, so a product whose prediction raises
        gets ``{"error": "<type>: <message>"}`` and its neighbours their answers.
        """
        try:
            return self._predict_items(items)
        except Exception as err:  # noqa: BLE001 - isolate the product that fails, below
            if len(items) == 1:
                return [{"error": f"{type(err).__name__}: {err}"}]
        return [_failure(item, self._predict_items) for item in items]

    def _predict_items(self, items: list[dict]) -> list[dict]:
        batch: dict = {k: [it.get(k) for it in items]
                       for k in ("product_id", "title", "description", "image_bytes")}
        batch.update(_pixel_columns(items, self.extractor.image_sizes))
        for f in self.model.features:
            given = [(it.get("features") or {}).get(f) for it in items]
            if all(g is not None for g in given):
                batch[f"emb_{f}"] = [g["vector"] for g in given]
                batch[f"status_{f}"] = [g["status"] for g in given]
                batch[f"fp_{f}"] = [g["fingerprint"] for g in given]
        keep = [f for f, info in self.model.encoders.items() if info.get("modality") == "text"]
        cols = self.predict_batch(batch, keep_features=keep)
        results = []
        for i in range(len(items)):
            row = {k: cols[k][i] for k in ("category_id", "category_path", "path", "confidence",
                                           "stage", "model_version", "image_status")}
            row["features"] = {f: {"vector": np.asarray(cols[f"emb_{f}"][i], np.float32),
                                   "status": cols[f"status_{f}"][i], "fingerprint": cols[f"fp_{f}"][i]}
                               for f in keep}
            results.append(row)
        return results


def _failure(item: dict, predict) -> dict:
    """``predict([item])[0]``, or ``{"error": ...}`` when it raises."""
    try:
        return predict([item])[0]
    except Exception as err:  # noqa: BLE001 - one product's failure is that product's error
        return {"error": f"{type(err).__name__}: {err}"}


def _pixel_columns(items: list[dict], sizes: list[int]) -> dict:
    """``_pixels_<S>`` (``uint8 [B, S, S, 3]``, zeros where absent) and ``_image_status`` from
    items carrying ``image_pixels``; empty when none does (images, if any, are then decoded from
    ``image_bytes``)."""
    if not sizes or not any("image_pixels" in it or "image_status" in it for it in items):
        return {}
    out: dict = {IMAGE_STATUS: np.array([it.get("image_status") or "no_image" for it in items], object)}
    for s in sizes:
        arr = np.zeros((len(items), s, s, 3), np.uint8)
        for i, it in enumerate(items):
            pixels = (it.get("image_pixels") or {}).get(s)
            if pixels is not None:
                arr[i] = pixels
            elif out[IMAGE_STATUS][i] == "ok":
                out[IMAGE_STATUS][i] = "image_missing"    # decoded for other sizes only
        out[pixel_column(s)] = arr
    return out


def encoder_configs(encoders: dict, checkpoint: str, device: str) -> tuple[dict, dict]:
    """``({encoder name: EncoderConfig}, {encoder name: fingerprint key})`` from a checkpoint's
    per-feature encoder records, with ``device`` set. Weights named relative to the checkpoint
    (``../encoders/...``, as in a bundle from ``prodcat cascade export --include-weights``) are
    resolved against its folder, local or ``s3://``.

    Raises:
        ValueError: when a feature has no encoder config recorded.
    """
    from pydantic import TypeAdapter

    adapter = TypeAdapter(EncoderConfig)
    configs, expected = {}, {}
    for feature, info in encoders.items():
        if not info.get("config") or not info.get("encoder"):
            raise ValueError(f"{checkpoint}: feature {feature!r} records no encoder config, so raw "
                             "products cannot be encoded; train on a store made by `prodcat embed`")
        name = info["encoder"]
        cfg = dict(info["config"], device=device)
        if str(cfg.get("weights", "")).startswith(("./", "../")):
            cfg["weights"] = storage.resolve_ref(storage.absolute(checkpoint), cfg["weights"])
        configs[name] = adapter.validate_python(cfg)
        expected[name] = info["fingerprint"]["key"]
    return configs, expected


def _level_table(taxonomy: Taxonomy) -> dict:
    return {"ids": taxonomy.ids, "names": taxonomy.names, "virtual": taxonomy.virtual}
