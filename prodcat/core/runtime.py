"""Starting or joining Ray, and choosing the torch device: one place, so every entry point behaves
the same.

No import of this module starts anything; :func:`ensure_ray` does, when an entry point calls it.
"""

from __future__ import annotations

import os
import random
import socket
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


#: where :func:`free_port` draws from: above Ray's default worker ports (10002-19999)
FREE_PORT_FLOOR = 20000


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """The kernel's ephemeral port range, ``(low, high)`` (Linux: ``ip_local_port_range``;
    32768-60999 where it cannot be read)."""
    try:
        low, high = (int(x) for x in Path(path).read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1", tries: int = 200) -> int:
    """A TCP port nothing is bound to, for a server this process starts next (a Ray node, the
    service, a loopback S3).

    Drawn at random between :data:`FREE_PORT_FLOOR` and the start of the kernel's ephemeral range
    (:func:`ephemeral_range`), and checked by binding it on every interface and on ``host``. A
    port from ``bind(0)`` lies *in* the ephemeral range, where every outgoing connection takes its
    source port: between choosing it and a server binding it, a client socket may take it, and a
    Ray node given such a port fails to start ("The current node timed out during startup").
    Where the kernel leaves fewer than 1,000 ports below its range, ``bind(0)`` is used.

    Raises:
        RuntimeError: when none of ``tries`` draws is free.
    """
    low = ephemeral_range()[0]
    if low - FREE_PORT_FLOOR < 1000:
        with socket.socket() as s:
            s.bind((host, 0))
            return s.getsockname()[1]
    draw = random.SystemRandom()
    for _ in range(tries):
        port = draw.randrange(FREE_PORT_FLOOR, low)
        try:
            for where in ("", host):
                with socket.socket() as s:
                    s.bind((where, port))
        except OSError:
            continue
        return port
    raise RuntimeError(f"no free TCP port in {FREE_PORT_FLOOR}-{low - 1} after {tries} draws")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free TCP ports (:func:`free_port` each), for servers started together (a
    Ray node's GCS, dashboard, agents and raylet). Each :func:`free_port` draws at random and
    nothing is bound until the servers start, so two separate draws can name the same port, and a
    Ray node given one port for two components refuses to start ("trying to use a port number ...
    that is used by other components").

    Raises:
        RuntimeError: as :func:`free_port`, or when ``count`` distinct ports are not found in
            ``20 * count`` draws.
    """
    ports: list[int] = []
    for _ in range(20 * count):
        if len(ports) == count:
            break
        if (port := free_port(host)) not in ports:
            ports.append(port)
    if len(ports) < count:
        raise RuntimeError(f"found {len(ports)} distinct free TCP ports of the {count} asked for")
    return ports


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


def cpu_computes_bf16() -> bool:
    """True when this process's CPU has bfloat16 instructions (x86 AVX512-BF16 or AMX tiles), so
    oneDNN runs bf16 matmuls and convolutions natively, about twice as fast as float32 (measured
    by ``benchmarks/cpu_bf16.py``); False elsewhere (no native bf16 kernels: float32 is kept).
    Read through ``torch.cpu``'s capability checks; False when this torch has none."""
    import torch

    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def autocast(device, precision: str):
    """The autocast context for computing on ``device`` (``"cpu"``, ``"cuda[:N]"`` or a
    ``torch.device``) at ``precision`` (``fp32``, ``fp16`` or ``bf16``).

    On a GPU: ``torch.autocast("cuda")`` with float16 or bfloat16. On the CPU: bfloat16 autocast
    when ``precision`` is ``bf16`` and the CPU computes bf16 natively (:func:`cpu_computes_bf16`);
    otherwise float32 (fp16 autocast is not used on CPUs, nor bf16 without native kernels).
    Autocast runs matmuls and convolutions in the low precision and keeps softmax, layer norm,
    weights and optimizer state in float32 (PyTorch's autocast op lists). A no-op context for fp32.
    """
    import contextlib

    import torch

    kind = getattr(device, "type", str(device).split(":")[0])
    computes = compute_precision(kind, precision)
    if computes == "fp32" or kind not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.float16 if computes == "fp16" else torch.bfloat16)


def compute_precision(device: str, precision: str) -> str:
    """The precision :func:`autocast` actually computes in on ``device`` for a configured
    ``precision``: ``precision`` on a GPU, ``bf16`` on a CPU that computes it natively when asked,
    else ``fp32`` (for logs and manifests)."""
    kind = str(device).split(":")[0]
    if precision == "fp32" or kind == "cuda":
        return precision
    return "bf16" if precision == "bf16" and cpu_computes_bf16() else "fp32"


def precision_note(device: str, precision: str) -> str:
    """What a log line says of the precision on ``device`` (``"cpu"`` or ``"cuda"``) for a
    configured ``precision``: ``""`` for fp32, the precision computed (``"bf16"``, ``"fp16"``), or
    why float32 runs instead (``"fp32 (this CPU has no bf16 instructions)"``,
    ``"fp32 (fp16 runs on GPUs only)"``)."""
    computes = compute_precision(device, precision)
    if precision == "fp32":
        return ""
    if computes != "fp32":
        return computes
    return ("fp32 (this CPU has no bf16 instructions)" if precision == "bf16"
            else f"fp32 ({precision} runs on GPUs only)")
