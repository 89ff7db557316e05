"""Actor pools that fit the cluster: GPU fractions from the encoders' measured cost, and
autoscaling pool sizes.

With ``num_gpus: auto``, the encoders share ``auto_gpus`` (default one GPU) in proportion to
their ``gpu_cost`` (µs of GPU time per product of their forward, measured by
``benchmarks/embed_gpu.py``): one actor of each fits on one GPU, and since each encoder holds
the share of the GPU its work needs, pools that grow to ``max_pool_size`` spread over many GPUs
without one encoder starving another. On a cluster without GPUs, ``auto`` is 0: the encoders
run on CPUs.
"""

from __future__ import annotations

import math
from typing import Mapping

from prodcat.embed.encoders.config import EncoderBase

#: Ray schedules GPU fractions to 1e-4; shares are rounded down to this step so they sum to at most
#: ``auto_gpus``
GPU_STEP = 0.01


def gpu_fractions(encoders: Mapping[str, EncoderBase], auto_gpus: float = 1.0,
                  cluster_gpus: float = 0.0) -> dict[str, float]:
    """Encoder name → GPUs Ray reserves per actor.

    Explicit ``num_gpus`` values are kept; ``auto`` encoders get ``auto_gpus × gpu_cost / Σ
    gpu_cost`` (rounded down to 0.01, at least 0.01) when ``cluster_gpus`` > 0, else 0.
    """
    out = {name: float(enc.num_gpus) for name, enc in encoders.items() if enc.num_gpus != "auto"}
    auto = {name: float(enc.gpu_cost) for name, enc in encoders.items() if enc.num_gpus == "auto"}
    total = sum(auto.values())
    for name, cost in auto.items():
        share = math.floor(auto_gpus * cost / total / GPU_STEP + 1e-9) * GPU_STEP
        out[name] = round(max(GPU_STEP, share), 4) if cluster_gpus > 0 else 0.0
    return out


def pool_strategy(enc: EncoderBase, num_gpus: float):
    """``ActorPoolStrategy`` for one encoder: ``pool_size`` actors, autoscaling up to
    ``max_pool_size``; a GPU actor takes two calls at once, so Ray Data batches the next
    input while the forward runs (the forward itself still runs one at a time)."""
    from ray.data import ActorPoolStrategy  # lazy: Ray only where a pipeline is built

    return ActorPoolStrategy(min_size=enc.pool_size, max_size=enc.max_pool_size or enc.pool_size,
                             max_concurrent_calls_per_actor=2 if num_gpus > 0 else None)


def describe_pools(encoders: Mapping[str, EncoderBase], gpus: Mapping[str, float]) -> str:
    """One line: per encoder its pool size (min–max), CPUs or GPUs and memory per actor, and the
    precision it computes in when not float32 (on CPUs as this node's CPU decides:
    :func:`prodcat.core.runtime.precision_note`)."""
    from prodcat.core.runtime import precision_note

    parts = []
    for name, enc in encoders.items():
        size = (f"{enc.pool_size}" if not enc.max_pool_size or enc.max_pool_size == enc.pool_size
                else f"{enc.pool_size}–{enc.max_pool_size}")
        memory = f", {enc.memory_gib:g} GiB" if enc.memory_gib else ""
        note = precision_note("cuda" if gpus[name] else "cpu", enc.precision)
        memory += f", {note}" if note else ""
        parts.append(f"{name} {size} actor(s) × {gpus[name]:g} GPU{memory}" if gpus[name]
                     else f"{name} {size} actor(s) × {enc.num_cpus:g} CPU{memory}")
    return ", ".join(parts)
