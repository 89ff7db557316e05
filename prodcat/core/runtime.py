"""Starting or joining Ray, and choosing the torch device: one place, so every entry point behaves
the same.

No import of this module starts anything; :func:`ensure_ray` does, when an entry point calls it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from prodcat.core import console


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               object_store_memory: int | None = None, log_dir: str | Path | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local one.

    A local instance gets ``include_dashboard=False`` and, unless given, a 2 GiB object store
    so several pipelines fit on a small machine. Worker output stays in Ray's session folder and
    the driver's Ray logging goes to ``<log_dir>/ray.log`` unless ``--verbose``
    (:mod:`prodcat.core.console`). A no-op when Ray is already initialised (tests start one per
    session), except that the log file is (re)attached.
    """
    import ray

    log_dir = log_dir or console.log_dir()
    console.route_ray_logs(log_dir)
    if not ray.is_initialized():
        address = address or os.environ.get("RAY_ADDRESS")
        quiet = {"log_to_driver": console.verbose()}
        if address:
            ray.init(address=address, **quiet)
        else:
            ray.init(num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=object_store_memory or 2 * 1024**3, **quiet)
        if not console.verbose():
            where = "on the head node" if address else _session_logs()
            console.say(f"[ray] {'joined ' + address if address else 'started a local Ray instance'}"
                        f"; Ray's logs: {where}"
                        + (f" and {Path(log_dir) / 'ray.log'}" if log_dir else "")
                        + " (--verbose shows them here)")


def _session_logs() -> str:
    """Where a local Ray instance keeps its logs (Ray's documented ``session_latest`` link)."""
    return str(Path(tempfile.gettempdir()) / "ray" / "session_latest" / "logs")


def torch_device(preference: str = "auto") -> str:
    """``"cuda"`` when asked for or available under ``"auto"``, else ``"cpu"``.

    Raises:
        RuntimeError: when ``"cuda"`` is asked for and no GPU is visible.
    """
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was requested but no GPU is visible; use device=auto or cpu")
    return preference
