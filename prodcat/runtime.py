"""Starting or joining Ray: one place, so every entry point behaves the same.

No import of this module starts anything; :func:`ensure_ray` does, when an entry point calls it.
"""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None, num_cpus: int | None = None,
               object_store_memory: int | None = None) -> None:
    """Join the Ray cluster at ``address`` (or ``$RAY_ADDRESS``), or start a local one.

    A local instance gets ``include_dashboard=False`` and, unless given, a 2 GiB object store
    so several pipelines fit on a small machine. A no-op when Ray is
    already initialised (tests start one per session).
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address)
        return
    ray.init(num_cpus=num_cpus, include_dashboard=False,
             object_store_memory=object_store_memory or 2 * 1024**3,
             log_to_driver=True)


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
