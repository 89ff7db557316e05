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
