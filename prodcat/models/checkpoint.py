"""Model checkpoints: a folder (local or ``s3://``) of safetensors + JSON. Never pickle.

Files (``docs/contracts.md``):
- ``config.json``: ``{"format", "train": the training config (JSON), "model": ModelConfig, "input_dims": {f: D_f},
  "features": {f: {"dim", "encoder", "fingerprint"}}, "taxonomy_version"}``
- ``taxonomy.json``: :meth:`prodcat.core.taxonomy.Taxonomy.to_json`
- ``model.safetensors``: the classifier's ``state_dict`` (tensors only)
- ``metrics.json``: metrics of the epoch this checkpoint was taken at (``val_hF``, ...)
- ``calibration.json``: ``{"temperature": float > 0, "threshold": probability in [0, 1]}``
Training checkpoints add ``optimizer.safetensors`` + ``optimizer.json`` and ``train_state.json``
so a run resumes exactly; serving ignores them.

Letters: B products, D_f dimension of feature f, L levels.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prodcat.core import storage
from prodcat.core.errors import UnreadableFile
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.classifier import HierarchicalClassifier
from prodcat.models.config import ModelConfig
from prodcat.models.decision import FORMAT as DECISION_FORMAT
from prodcat.models.decision import DecisionModel, load_decision
from prodcat.models.files import (  # noqa: F401  (re-exported: the checkpoint's file names)
    CALIBRATION,
    CONFIG,
    DEFAULT_CALIBRATION,
    FORMAT,
    METRICS,
    OPTIMIZER,
    OPTIMIZER_META,
    TAXONOMY,
    TRAIN_STATE,
    WEIGHTS,
    checkpoint_version,
    read_json,
)
from prodcat.models.lexical import FEATURE as LEXICAL
from prodcat.models.lexical import SETTINGS as LEXICAL_SETTINGS
from prodcat.models.lexical import LexicalScorer


def weights_version(weights: bytes) -> str:
    """Short model version: the first 12 hex digits of the sha256 of ``model.safetensors``."""
    return hashlib.sha256(weights).hexdigest()[:12]


def _unwrap(model):
    return getattr(model, "module", model)  # DistributedDataParallel → the model


def state_bytes(model) -> bytes:
    """The model's ``state_dict`` as safetensors bytes (copies, so shared storage is fine)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous().clone() for k, v in _unwrap(model).state_dict().items()}
    return save(state)


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=_to_builtin)


def _to_builtin(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def save_checkpoint(uri: str, *, model, model_config: ModelConfig, train_config: dict | None = None,
                    taxonomy: Taxonomy, input_dims: dict[str, int],
                    encoders: dict | None = None, metrics: dict | None = None,
                    calibration: dict | None = None, optimizer=None,
                    train_state: dict | None = None) -> str:
    """Write a checkpoint folder at ``uri`` (local path or ``s3://``); returns ``uri``.

    Args:
        model: a ``HierarchicalClassifier`` (or DDP around one).
        model_config: the classifier's hyper-parameters (what :func:`load_checkpoint` rebuilds).
        train_config: the whole training config as JSON data, recorded for provenance.
        input_dims: ``{f: D_f}`` the model was built for.
        encoders: per feature the store manifest entry (encoder config, fingerprint).
        optimizer, train_state: for resumable training checkpoints only.
    """
    features = {f: {"dim": int(d), **(encoders or {}).get(f, {})} for f, d in input_dims.items()}
    cfg = {"format": FORMAT, "train": train_config or {},
           "model": model_config.model_dump(mode="json"), "input_dims": dict(input_dims),
           "features": features, "taxonomy_version": taxonomy.version}
    storage.makedirs(uri)
    storage.write_text(storage.join(uri, CONFIG), _json(cfg))
    storage.write_text(storage.join(uri, TAXONOMY), taxonomy.to_json())
    storage.write_bytes(storage.join(uri, WEIGHTS), state_bytes(model))
    storage.write_text(storage.join(uri, METRICS), _json(metrics or {}))
    storage.write_text(storage.join(uri, CALIBRATION), _json(calibration or DEFAULT_CALIBRATION))
    if optimizer is not None:
        tensors, meta = optimizer_state(optimizer)
        from safetensors.torch import save

        storage.write_bytes(storage.join(uri, OPTIMIZER), save(tensors))
        storage.write_text(storage.join(uri, OPTIMIZER_META), _json(meta))
    if train_state is not None:
        storage.write_text(storage.join(uri, TRAIN_STATE), _json(train_state))
    return uri


def optimizer_state(optimizer) -> tuple[dict, dict]:
    """Split ``optimizer.state_dict()`` into tensors (``"<param>.<name>"``) and JSON metadata."""
    import torch

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().cpu().contiguous().clone()
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_state(optimizer, uri: str) -> None:
    """Restore an optimizer from ``optimizer.safetensors`` + ``optimizer.json`` in ``uri``."""
    from safetensors.torch import load

    tensors = load(storage.read_bytes(storage.join(uri, OPTIMIZER)))
    meta = json.loads(storage.read_text(storage.join(uri, OPTIMIZER_META)))
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def write_calibration(uri: str, temperature: float, threshold: float, details: dict | None = None) -> None:
    """Overwrite ``calibration.json`` (temperature > 0, threshold a probability in [0, 1], plus
    ``details`` such as the ECE before and after).

    Raises:
        ValueError: for a temperature <= 0 or a threshold outside [0, 1].
    """
    if not temperature > 0 or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"need temperature > 0 and 0 <= threshold <= 1, got {temperature}, {threshold}")
    storage.write_text(storage.join(uri, CALIBRATION), _json(
        {**(details or {}), "temperature": float(temperature), "threshold": float(threshold)}))


def copy_checkpoint(src: str, dst: str) -> str:
    """Copy every file of a checkpoint folder (local or ``s3://``) to ``dst``; returns ``dst``."""
    import pyarrow.fs as pafs

    fs, path = storage.filesystem(src)
    for info in fs.get_file_info(pafs.FileSelector(path, recursive=True)):
        if info.type == pafs.FileType.File:
            rel = info.path[len(path):].lstrip("/")
            storage.write_bytes(storage.join(dst, rel), storage.read_bytes(storage.join(src, rel)))
    return dst


@dataclass
class LoadedModel:
    """A checkpoint loaded for inference (CPU unless ``device`` says otherwise).

    Attributes:
        model: the ``HierarchicalClassifier`` in eval mode.
        model_config: the classifier's hyper-parameters.
        train_config: the training config recorded with it (JSON data, for provenance).
        taxonomy: its taxonomy.
        input_dims: ``{f: D_f}``; ``features`` lists them in order.
        encoders: per feature, the encoder config and fingerprint recorded at training.
        calibration: ``{"temperature", "threshold"}``.
        lexical: the TF-IDF + linear model of the ``lexical`` feature, when the model reads it.
        metrics: the metrics recorded with the checkpoint.
        version: short sha256 of ``model.safetensors``.
    """

    model: Any
    model_config: ModelConfig
    train_config: dict
    taxonomy: Taxonomy
    input_dims: dict[str, int]
    encoders: dict
    calibration: dict
    metrics: dict
    version: str
    device: str = "cpu"
    uri: str = ""
    lexical: LexicalScorer | None = None
    features: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.features = list(self.input_dims)

    def serving_logits(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
                       batch_size: int = 4096) -> tuple[list[np.ndarray], np.ndarray]:
        """``(logits, classes)``: per level ``[B, C_l]`` float32 logits masked by the model's own
        predicted parents (what serving computes; ``-inf`` where hard masking excludes a class) and
        the ``[B, L]`` output classes (-1 padded): the inputs of temperature fitting
        (:func:`prodcat.models.calibration.fit_temperature`).

        Raises:
            KeyError, ValueError: as :meth:`predict`.
        """
        n = self._check(features)
        chunks: list[list[np.ndarray]] = []
        classes = []
        for start in range(0, n, batch_size):
            x, mask = self._tensors(features, present, slice(start, start + batch_size))
            masked, chosen = _unwrap(self.model).serving(x, mask)       # one forward pass
            chunks.append([z.float().cpu().numpy() for z in masked])
            classes.append(chosen.cpu().numpy().astype(np.int64))
        if not chunks:
            return ([np.zeros((0, c), np.float32) for c in self.taxonomy.level_sizes],
                    np.zeros((0, self.taxonomy.num_levels), np.int64))
        return [np.concatenate(level) for level in zip(*chunks)], np.concatenate(classes)

    def _check(self, features: dict[str, np.ndarray]) -> int:
        """B, after checking every needed feature is there with the right dimension."""
        missing = [f for f in self.features if f not in features]
        if missing:
            raise KeyError(f"features {missing} missing; this model needs {self.features}")
        n = len(next(iter(features.values())))
        for f in self.features:
            shape = np.shape(features[f])
            if shape != (n, self.input_dims[f]):
                raise ValueError(f"feature {f!r}: expected shape [{n}, {self.input_dims[f]}], got {list(shape)}")
        return n

    def _tensors(self, features, present, sl: slice) -> tuple[dict, dict]:
        """Feature tensors (absent rows zeroed) and presence masks of rows ``sl``."""
        import torch

        mask = {f: torch.as_tensor(np.ones(len(features[f][sl]), bool) if present is None or f not in present
                                   else np.asarray(present[f][sl], bool), device=self.device)
                for f in self.features}
        x = {f: torch.as_tensor(np.asarray(features[f][sl], np.float32), device=self.device)
             * mask[f][:, None] for f in self.features}
        return x, mask

    def predict(self, features: dict[str, np.ndarray], present: dict[str, np.ndarray] | None = None,
                temperature: float | None = None, batch_size: int = 4096) -> dict[str, np.ndarray]:
        """Categorize B products.

        Args:
            features: ``{f: [B, D_f] float32}`` for every feature in :attr:`features`.
            present: ``{f: [B] bool}``; a missing entry means all present. Absent rows may hold
                anything (they are zeroed).
            temperature: softmax temperature for the confidences (> 0); default: the calibrated one.
                Classes do not depend on it.

        Returns:
            ``category_id`` [B] int64, ``category_path`` [B] str, ``node`` [B] int64,
            ``classes`` [B, L] int64 (-1 padded), ``level_confidence`` [B, L] float32 in [0, 1]
            (0 below the predicted depth).

        Raises:
            KeyError: when a feature the model needs is missing (lists the needed ones).
            ValueError: on a wrong dimension or batch size mismatch.
        """
        n = self._check(features)
        temperature = float(temperature or self.calibration.get("temperature", 1.0))
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        outs = []
        for start in range(0, n, batch_size):
            x, mask = self._tensors(features, present, slice(start, start + batch_size))
            outs.append(predict_batch(self.model, x, mask, temperature))
        merged = {k: np.concatenate([o[k] for o in outs]) for k in outs[0]} if outs else {
            "node": np.zeros(0, np.int64), "classes": np.zeros((0, self.taxonomy.num_levels), np.int64),
            "level_confidence": np.zeros((0, self.taxonomy.num_levels), np.float32)}
        merged["category_id"] = self.taxonomy.ids[merged["node"]].astype(np.int64)
        merged["category_path"] = np.asarray([self.taxonomy.path(int(v)) for v in merged["node"]], object)
        return merged


def predict_batch(model, features: dict, present: dict, temperature: float = 1.0) -> dict[str, np.ndarray]:
    """One batch through ``model.predict`` (eval mode, no gradients): numpy ``node`` [B],
    ``classes`` [B, L] (-1 padded), ``level_confidence`` [B, L] = softmax(logits / T) of the
    chosen class per level, in [0, 1]."""
    model = _unwrap(model)
    pred = model.predict(features, present, temperature=temperature)
    return {"node": pred.node.cpu().numpy().astype(np.int64),
            "classes": pred.classes.cpu().numpy().astype(np.int64),
            "level_confidence": pred.confidence.float().cpu().numpy()}


def build_model(model_config, taxonomy: Taxonomy, input_dims: dict[str, int], label_embeddings=None):
    """A fresh ``HierarchicalClassifier`` (prodcat.models) for these inputs (``label_embeddings``:
    ``[N, D]`` for a label prior; loading a checkpoint fills them from its weights)."""
    return HierarchicalClassifier(model_config, taxonomy, dict(input_dims), label_embeddings)


def load_checkpoint(uri: str, device: str = "cpu") -> "LoadedModel | DecisionModel":
    """Load a checkpoint folder for inference: a neural model (:class:`LoadedModel`) or a
    decision-level fusion model (:class:`prodcat.models.decision.DecisionModel`, the same
    interface).

    Raises:
        FileNotFoundError: when a required file is missing (names it).
        prodcat.core.errors.UnreadableFile: a damaged JSON or weights file (names it).
        ValueError: when ``config.json`` is not a prodcat checkpoint or the weights do not fit.
    """
    from safetensors.torch import load

    cfg = read_json(uri, CONFIG)
    if cfg.get("format") == DECISION_FORMAT:       # decision-level fusion: its own loader
        return load_decision(uri, cfg, device=device)
    if cfg.get("format") != FORMAT:
        raise ValueError(f"{uri}: not a {FORMAT} or {DECISION_FORMAT} checkpoint "
                         f"(format={cfg.get('format')!r})")
    model_config = ModelConfig.model_validate(cfg["model"])
    taxonomy = Taxonomy.from_json(storage.read_text(storage.join(uri, TAXONOMY)))
    weights = storage.read_bytes(storage.join(uri, WEIGHTS))
    model = build_model(model_config, taxonomy, cfg["input_dims"])
    try:
        tensors = load(weights)
    except Exception as err:  # safetensors raises its own SafetensorError for a damaged file
        raise UnreadableFile(storage.join(uri, WEIGHTS), f"{type(err).__name__}: {err}") from None
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{uri}: weights do not fit the configured model: {err}") from None
    model.to(device).eval()
    encoders = {f: {k: v for k, v in info.items() if k != "dim"} for f, info in cfg["features"].items()
                if f != LEXICAL}  # the lexical feature is computed by the checkpoint's own model
    lexical = None
    if LEXICAL in cfg["input_dims"]:
        if not LexicalScorer.exists(uri):
            raise FileNotFoundError(f"{uri}: the model reads the lexical feature but the folder has no "
                                    f"{LEXICAL_SETTINGS}; copy the whole checkpoint folder")
        lexical = LexicalScorer.load(uri)
    return LoadedModel(model=model, model_config=model_config, train_config=cfg.get("train", {}),
                       taxonomy=taxonomy, input_dims=cfg["input_dims"], encoders=encoders,
                       calibration=read_json(uri, CALIBRATION, DEFAULT_CALIBRATION),
                       metrics=read_json(uri, METRICS, {}), version=weights_version(weights),
                       device=device, uri=uri, lexical=lexical)
