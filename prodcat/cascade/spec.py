"""The deployed cascade: ``cascade.json`` names the two checkpoints, their temperatures and τ.

Written by ``prodcat cascade fit`` (a self-contained folder: the two checkpoints inside it,
named relative to ``cascade.json``) and ``prodcat cascade export``; read by ``prodcat serve`` (the
Serve application) and ``prodcat score`` (bulk scoring), from any directory, node or ``s3://``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from prodcat.core import storage
from prodcat.core.taxonomy import Taxonomy
from prodcat.models.files import CALIBRATION, CONFIG, DEFAULT_CALIBRATION, TAXONOMY, read_json

# ---------------------------------------------------------------------- the cascade spec
FORMAT = "prodcat-cascade/2"
CASCADE_FILE = "cascade.json"
#: the spec's checkpoint fields; a self-contained folder keeps each in a sub-folder of this name
CHECKPOINTS = ("text_model", "multimodal_model")


@dataclass
class CascadeSpec:
    """The cascade as deployed: which two checkpoints, their temperatures, and tau.

    Stored as ``cascade.json`` (next to the report and the curve). ``threshold`` is compared with
    the stage-1 path confidence after temperature scaling by ``text_temperature``. In memory
    ``text_model`` and ``multimodal_model`` are usable URIs (absolute path or ``s3://``); in the
    file they are relative to the file's folder when the checkpoints lie inside it (a
    self-contained folder, see :mod:`prodcat.cascade.bundle`), else absolute.
    """

    text_model: str
    multimodal_model: str
    threshold: float
    text_temperature: float = 1.0
    multimodal_temperature: float = 1.0
    confidence_mode: str = "path"
    goal: dict = field(default_factory=dict)
    validation: dict = field(default_factory=dict)
    #: per stage (``text``, ``multimodal``) the abstention thresholds fitted on the calibration
    #: split for a grid of target precisions (:func:`prodcat.cascade.abstain.fit_table`); empty in
    #: a cascade fitted before abstention existed
    abstain: dict = field(default_factory=dict)

    def abstain_thresholds(self, stage: str, target: float | None) -> list[float | None] | None:
        """The per-level thresholds ``[L]`` of ``stage`` for a target precision (None: None,
        full paths).

        Raises:
            ValueError: a target outside [0, 1], or a cascade without fitted thresholds (the
                message says how to fit them).
        """
        from prodcat.cascade.abstain import check_target, thresholds_for

        if target is None:
            return None
        check_target(target)
        table = self.abstain.get(stage)
        if not table:
            raise ValueError(f"this cascade has no abstention thresholds for its {stage} stage (it "
                             "was fitted before partial paths existed); rerun `prodcat cascade fit` "
                             "to fit them on the calibration split")
        return thresholds_for(table, target)

    def to_json(self) -> str:
        data = {"format": FORMAT, **asdict(self)}
        data["threshold"] = "inf" if math.isinf(self.threshold) else self.threshold
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> "CascadeSpec":
        data = json.loads(text)
        data.pop("format", None)
        data["threshold"] = float(data["threshold"])
        return cls(**data)


def cascade_file(uri: str) -> str:
    """``uri`` itself when it names a ``.json`` file, else ``<uri>/cascade.json``."""
    return uri if str(uri).endswith(".json") else storage.join(uri, CASCADE_FILE)


def read_cascade(uri: str) -> CascadeSpec:
    """A ``cascade.json`` (or a folder holding one), local or ``s3://``, with its checkpoint
    references resolved against the file's own folder, so a copied folder works wherever it is.

    Files written before format 2 named checkpoints relative to the directory the fit ran in
    (``runs/sample/train/text/model``); for those, the folders above the cascade are tried too
    (the run folder copied whole still works) and ``prodcat cascade export`` rewrites them.

    Raises:
        FileNotFoundError: no cascade file at ``uri``, or a checkpoint it names is missing (the
            message names the cascade, the reference and where it was looked for).
    """
    path = storage.absolute(cascade_file(uri))
    data = json.loads(storage.read_text(path))
    spec = CascadeSpec.from_json(json.dumps(data))
    base = storage.parent(path)
    for name in CHECKPOINTS:
        ref = getattr(spec, name)
        setattr(spec, name, _locate_checkpoint(path, base, ref, legacy=data.get("format") != FORMAT))
    return spec


def _locate_checkpoint(cascade: str, base: str, ref: str, legacy: bool) -> str:
    """The URI of checkpoint ``ref`` named in the cascade file ``cascade`` (folder ``base``)."""
    uri = storage.resolve_ref(base, ref)
    if not legacy or uri == ref or storage.exists(storage.join(uri, CONFIG)):
        return uri
    tried = [uri]
    for folder in _ancestors(base):
        candidate = storage.resolve_ref(folder, ref)
        if storage.exists(storage.join(candidate, CONFIG)):
            return candidate
        tried.append(candidate)
    raise FileNotFoundError(
        f"{cascade} names checkpoint {ref!r}, relative to the folder its fit ran in (a cascade.json "
        f"from before {FORMAT}); not found at {', '.join(tried[:3])}{' ...' if len(tried) > 3 else ''}. "
        "Run `prodcat cascade export <cascade> <new folder>` where the checkpoints exist to make "
        "a self-contained copy")


def _ancestors(folder: str):
    """The folders above ``folder``, nearest first (up to ``/`` or the bucket)."""
    while not (storage.is_remote(folder) and folder.count("/") <= 2):
        up = storage.parent(folder)
        if up == folder:
            return
        yield up
        folder = up


def write_cascade(spec: CascadeSpec, folder: str) -> str:
    """Write ``<folder>/cascade.json``; returns its URI.

    Checkpoints inside ``folder`` are written relative to it (the folder can then be copied or
    uploaded as a whole); others by absolute path or URI.
    """
    uri = storage.join(folder, CASCADE_FILE)
    stored = CascadeSpec(**asdict(spec))
    for name in CHECKPOINTS:
        ref = getattr(spec, name)
        setattr(stored, name, storage.relative_ref(folder, ref) or storage.absolute(ref))
    storage.write_text(uri, stored.to_json())
    return uri


def resolve_cascade(cascade: str | None = None, text_model: str | None = None,
                    multimodal_model: str | None = None, threshold: float | None = None) -> CascadeSpec:
    """The cascade to run: ``cascade.json`` with explicit overrides, or two checkpoints.

    Without a cascade file, temperatures and tau come from the text checkpoint's
    ``calibration.json`` (its ``threshold``), the multimodal one's temperature from its own, and
    each stage's abstention thresholds from its ``calibration.json`` (``abstain``) when it has them.

    Raises:
        ValueError: when neither a cascade nor both checkpoints are given.
    """

    if cascade:
        spec = read_cascade(cascade)
    elif text_model and multimodal_model:
        text_cal = read_json(text_model, CALIBRATION, DEFAULT_CALIBRATION)
        mm_cal = read_json(multimodal_model, CALIBRATION, DEFAULT_CALIBRATION)
        spec = CascadeSpec(storage.absolute(text_model), storage.absolute(multimodal_model),
                           float(text_cal["threshold"]),
                           float(text_cal["temperature"]), float(mm_cal["temperature"]),
                           goal={"kind": "from calibration.json"},
                           abstain={stage: cal["abstain"] for stage, cal in
                                    (("text", text_cal), ("multimodal", mm_cal)) if cal.get("abstain")})
    else:
        raise ValueError("give a cascade (cascade.json from `prodcat cascade fit`) or both "
                         "text_model and multimodal_model checkpoints")
    if text_model:
        spec.text_model = storage.absolute(text_model)
    if multimodal_model:
        spec.multimodal_model = storage.absolute(multimodal_model)
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
