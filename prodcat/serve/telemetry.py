"""What the cascade service records per request for Prometheus (:mod:`prodcat.core.telemetry`):
requests by status code, products by answering stage, the escalation rate, latency per stage and
image-fetch failures by reason. One :class:`ServiceMetrics` per ingress replica."""

from __future__ import annotations

import time
from contextlib import contextmanager

from prodcat.core.telemetry import inc, observe, set_gauge


def record_status(status: int, mode: str = "") -> None:
    """One answered request (also the ones rejected before the pipeline: 400, 413, 422)."""
    inc("prodcat_serve_requests", status=status, mode=mode or "none")


class ServiceMetrics:
    """Per-replica recorder; the escalation rate is this replica's since it started."""

    def __init__(self) -> None:
        self.seen_by_text = 0
        self.escalated = 0

    @contextmanager
    def timed(self, stage: str):
        """Observe the wall time of the block (ms) as ``prodcat_serve_latency_ms{stage}``
        (nothing when ``stage`` is empty: no call was made)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            if stage:
                observe("prodcat_serve_latency_ms", 1000 * (time.perf_counter() - start), stage=stage)

    def retried(self, stage: str) -> None:
        """A stage call sent again because its replica died."""
        inc("prodcat_serve_stage_retries", stage=stage)

    def routed(self, kept: int, escalated: int) -> None:
        """Stage 1's routing decision for ``kept + escalated`` products (cascade mode)."""
        inc("prodcat_serve_routed", kept, route="kept")
        inc("prodcat_serve_routed", escalated, route="escalated")
        self.seen_by_text += kept + escalated
        self.escalated += escalated
        if self.seen_by_text:
            set_gauge("prodcat_serve_escalation_rate", self.escalated / self.seen_by_text)

    def request(self, status: int, mode: str, predictions: list[dict], problems: list,
                elapsed_ms: float) -> None:
        """A request through the pipeline: its status, each product's outcome (``predictions``
        as in the response body) and the image URLs that failed (problems whose code starts
        with ``url_``)."""
        record_status(status, mode)
        observe("prodcat_serve_latency_ms", elapsed_ms, stage="request")
        for p in predictions:
            inc("prodcat_serve_products", stage=p.get("stage") or "error")
        for problem in problems:
            if problem.code.startswith("url_"):
                inc("prodcat_serve_fetch_failures", reason=problem.code)
