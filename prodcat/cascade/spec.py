"""The deployed cascade: ``cascade.json`` names the two checkpoints, their temperatures and τ.

Written by ``prodcat cascade fit``, read by ``prodcat serve`` (the Serve application) and
``prodcat score`` (bulk scoring).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prodcat.core import storage
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.checkpoint import CALIBRATION, DEFAULT_CALIBRATION, TAXONOMY, read_json


# ---------------------------------------------------------------------- the cascade spec
@dataclass
class CascadeSpec:
    """The cascade as deployed: which two checkpoints, their temperatures, and tau.

    Stored as ``cascade.json`` (next to the report and the curve). ``threshold`` is compared with
    the stage-1 path confidence after temperature scaling by ``text_temperature``.
    """

    text_model: str
    multimodal_model: str
    threshold: float
    text_temperature: float = 1.0
    multimodal_temperature: float = 1.0
    confidence_mode: str = "path"
    goal: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)

    def to_json(self) -> str:
        data = asdict(self)
        data["threshold"] = "inf" if math.isinf(self.threshold) else self.threshold
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CascadeSpec":
        data = json.loads(text)
        data["threshold"] = float(data["threshold"])
        return cls(**data)


CASCADE_FILE = "cascade.json"


# ---------------------------------------------------------------------- the cascade spec
def read_cascade(uri: str) -> CascadeSpec:
    """A ``cascade.json`` (or a folder holding one); relative checkpoint paths are resolved
    against its folder.

    Raises:
        FileNotFoundError: when there is no cascade file at ``uri``.
    """
    path = uri if uri.endswith(".json") else storage.join(uri, CASCADE_FILE)
    spec = CascadeSpec.from_json(storage.read_text(path))
    base = path.rsplit("/", 1)[0] if "/" in path else "."
    for name in ("text_model", "multimodal_model"):
        value = getattr(spec, name)
        if not (storage.is_remote(value) or Path(value).is_absolute() or Path(value).exists()):
            setattr(spec, name, storage.join(base, value))
    return spec


def write_cascade(spec: CascadeSpec, folder: str) -> str:
    """Write ``<folder>/cascade.json``; returns its URI."""
    uri = storage.join(folder, CASCADE_FILE)
    storage.write_text(uri, spec.to_json())
    return uri


def resolve_cascade(cascade: str | None = None, text_model: str | None = None,
                    multimodal_model: str | None = None, threshold: float | None = None) -> CascadeSpec:
    """The cascade to run: ``cascade.json`` with explicit overrides, or two checkpoints.

    Without a cascade file, temperatures and tau come from the text checkpoint's
    ``calibration.json`` (its ``threshold``), the multimodal one's temperature from its own.

    Raises:
        ValueError: when neither a cascade nor both checkpoints are given.
    """

    if cascade:
        spec = read_cascade(cascade)
    elif text_model and multimodal_model:
        text_cal = read_json(text_model, CALIBRATION, DEFAULT_CALIBRATION)
        mm_cal = read_json(multimodal_model, CALIBRATION, DEFAULT_CALIBRATION)
        spec = CascadeSpec(text_model, multimodal_model, float(text_cal["threshold"]),
                           float(text_cal["temperature"]), float(mm_cal["temperature"]),
                           goal={"kind": "from calibration.json"})
    else:
        raise ValueError("give a cascade (cascade.json from `prodcat cascade fit`) or both "
                         "text_model and multimodal_model checkpoints")
    if text_model:
        spec.text_model = text_model
    if multimodal_model:
        spec.multimodal_model = multimodal_model
    if threshold is not None:
        spec.threshold = float(threshold)
    return spec


def load_taxonomy_of(*checkpoints: str) -> Taxonomy:
    """The taxonomy shared by ``checkpoints`` (read from their ``taxonomy.json``).

    Raises:
        ValueError: when two checkpoints were trained on different taxonomies.
    """

    texts = {uri: storage.read_text(storage.join(uri, TAXONOMY)) for uri in checkpoints}
    first = next(iter(texts.values()))
    differing = [uri for uri, text in texts.items() if text != first]
    if differing:
        raise ValueError(f"checkpoints {list(texts)} use different taxonomies; the cascade needs "
                         "both stages trained on the same taxonomy.json")
    return Taxonomy.from_json(first)
