"""A checkpoint folder's file names and its JSON reader, without torch.

What reads a checkpoint's JSON files only (the service's ingress, a cascade's ``cascade.json``
resolution, bundling) imports this module, so it never loads torch;
:mod:`prodcat.models.checkpoint` loads the weights.
"""

from __future__ import annotations

import json
from typing import Any

from prodcat.core import storage
from prodcat.core.errors import UnreadableFile

FORMAT = "prodcat-checkpoint/1"
#: a decision-level fusion checkpoint (:mod:`prodcat.models.decision`): ``components.safetensors``
#: holds its weights instead of ``model.safetensors``
DECISION_FORMAT, COMPONENTS = "prodcat-decision/1", "components.safetensors"
CONFIG, TAXONOMY, WEIGHTS, METRICS, CALIBRATION = (
    "config.json", "taxonomy.json", "model.safetensors", "metrics.json", "calibration.json")
OPTIMIZER, OPTIMIZER_META, TRAIN_STATE = "optimizer.safetensors", "optimizer.json", "train_state.json"
DEFAULT_CALIBRATION = {"temperature": 1.0, "threshold": 0.5}


def read_json(uri: str, name: str, default: Any = None) -> Any:
    """One JSON file of a checkpoint (``default`` when absent and a default is given).

    Raises:
        UnreadableFile: when the file exists but is not valid JSON (names the file).
        FileNotFoundError: when it is absent and no default is given.
    """
    path = storage.join(uri, name)
    if default is not None and not storage.exists(path):
        return default
    try:
        return json.loads(storage.read_text(path))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UnreadableFile(path, f"not valid JSON ({err})") from None


def weights_file(uri: str) -> str:
    """The weights file of the checkpoint at ``uri``: ``components.safetensors`` for a
    decision-level fusion checkpoint, else ``model.safetensors``.

    Raises:
        FileNotFoundError: no ``config.json`` at ``uri``.
    """
    return COMPONENTS if read_json(uri, CONFIG).get("format") == DECISION_FORMAT else WEIGHTS


def checkpoint_version(uri: str) -> str:
    """The model version of the checkpoint at ``uri``: the first 12 hex digits of the sha256 of
    its weights file (what ``LoadedModel.version`` and ``DecisionModel.version`` hold)."""
    import hashlib

    return hashlib.sha256(storage.read_bytes(storage.join(uri, weights_file(uri)))).hexdigest()[:12]
