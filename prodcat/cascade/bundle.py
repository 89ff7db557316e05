"""A self-contained cascade folder: ``cascade.json`` with both checkpoints inside it, and, when
asked, the encoder weights too, so the folder works wherever it is copied (another directory, a
``ray job submit`` working directory, another machine, ``s3://``).

Layout (every reference relative to the file that makes it)::

    <folder>/cascade.json              "text_model": "text_model", "multimodal_model": ...
    <folder>/text_model/               config.json, taxonomy.json, model.safetensors,
    <folder>/multimodal_model/         metrics.json, calibration.json, lexical.{json,safetensors}
                                       when the model reads the lexical feature (inference files only)
    <folder>/encoders/<name>-<key>/    with --include-weights: each encoder's weights; the bundled
                                       checkpoints' config.json name them "../encoders/<name>-<key>"
    <folder>/cascade_report.{md,json}, cascade_curve.png   (copied when the source has them)

``prodcat cascade fit`` writes the first three itself; ``prodcat cascade export`` makes the whole
folder from any cascade (also one from before cascade format 2, whose checkpoint paths were
relative to the directory the fit ran in).
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Callable

from prodcat.cascade.spec import CHECKPOINTS, CascadeSpec, cascade_file, read_cascade, write_cascade
from prodcat.core import storage
from prodcat.core.console import say
from prodcat.embed.encoders.fingerprint import resolve_weights
from prodcat.models import lexical
from prodcat.models.checkpoint import CALIBRATION, CONFIG, METRICS, TAXONOMY, WEIGHTS
from prodcat.models.decision import COMPONENTS as DECISION_COMPONENTS

#: the files of a checkpoint that inference reads (training state is left behind); the lexical
#: model's two files exist only in checkpoints that read the lexical feature, ``components.safetensors``
#: only in decision-level fusion checkpoints (``model.safetensors`` only in neural ones)
INFERENCE_FILES = frozenset({CONFIG, TAXONOMY, WEIGHTS, METRICS, CALIBRATION, lexical.WEIGHTS,
                             lexical.SETTINGS, DECISION_COMPONENTS})
REPORT_FILES = frozenset({"cascade_report.md", "cascade_report.json", "cascade_curve.png"})
ENCODERS_DIR = "encoders"


def bundle_checkpoints(spec: CascadeSpec, folder: str) -> CascadeSpec:
    """Copy both checkpoints' inference files into ``<folder>/text_model`` and
    ``<folder>/multimodal_model``; returns the spec pointing at the copies (a checkpoint already
    there is left as it is)."""
    moved = {}
    for name in CHECKPOINTS:
        src, dst = storage.absolute(getattr(spec, name)), storage.absolute(storage.join(folder, name))
        if src != dst:
            storage.copy_tree(src, dst, names=set(INFERENCE_FILES))
        moved[name] = dst
    return replace(spec, **moved)


def bundle_weights(folder: str) -> dict[str, str]:
    """Copy every encoder's weights named by the bundled checkpoints into
    ``<folder>/encoders/<encoder>-<fingerprint key>/`` and rewrite those checkpoints' ``config.json``
    to name them relative to themselves. Returns ``{encoder folder: the reference it replaced}``.

    Raises:
        FileNotFoundError: weights that cannot be found here (the message says how to fix it).
    """
    copied: dict[str, str] = {}
    for name in CHECKPOINTS:
        config_uri = storage.join(folder, name, CONFIG)
        config = json.loads(storage.read_text(config_uri))
        for info in config.get("features", {}).values():
            settings = info.get("config") or {}
            ref = settings.get("weights")
            if not ref or ref.startswith("../"):
                continue
            target = f"{info.get('encoder', 'encoder')}-{info['fingerprint']['key']}"
            if target not in copied:
                _copy_weights(ref, storage.join(folder, ENCODERS_DIR, target))
                copied[target] = ref
            settings["weights"] = f"../{ENCODERS_DIR}/{target}"
        storage.write_text(config_uri, json.dumps(config, indent=2, sort_keys=True))
    return copied


def _copy_weights(ref: str, dst: str) -> None:
    local = resolve_weights(ref)
    if local.is_file():
        storage.write_bytes(storage.join(dst, local.name), local.read_bytes())
    else:
        storage.copy_tree(str(local), dst)


def export_cascade(src: str, dst: str, include_weights: bool = False, overwrite: bool = False,
                   log: Callable[[str], None] = say) -> dict:
    """Write a self-contained copy of the cascade at ``src`` to the folder ``dst`` (local or
    ``s3://``). Returns ``{"cascade", "files", "bytes", "weights"}``.

    Raises:
        FileNotFoundError: the cascade, a checkpoint or (with ``include_weights``) weights missing.
        FileExistsError: ``dst`` already holds a cascade and ``overwrite`` is False.
    """
    spec = read_cascade(src)
    if storage.exists(cascade_file(dst)) and not overwrite:
        raise FileExistsError(f"{dst} already holds a cascade.json; choose another folder or "
                              "pass --overwrite")
    spec = bundle_checkpoints(spec, dst)
    weights = bundle_weights(dst) if include_weights else {}
    src_folder = storage.parent(storage.absolute(cascade_file(src)))
    for name in sorted(REPORT_FILES):
        if storage.exists(storage.join(src_folder, name)):
            storage.write_bytes(storage.join(dst, name), storage.read_bytes(storage.join(src_folder, name)))
    uri = write_cascade(spec, dst)
    files = storage.list_files_recursive(dst)
    size = sum(n for _, n in files)
    log(f"[cascade] exported {src} → {dst}: {len(files)} files, {size / 2**20:.1f} MiB"
        + (f", encoder weights {', '.join(f'{v} → {ENCODERS_DIR}/{k}' for k, v in weights.items())}"
           if weights else "; encoder weights stay referenced as in the checkpoints"))
    return {"cascade": uri, "files": len(files), "bytes": size, "weights": weights}
