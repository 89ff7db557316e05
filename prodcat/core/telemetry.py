"""Prometheus metrics a cluster operator can watch, through Ray's own ``ray.util.metrics``.

Every process that records one (Serve replicas, the bulk-scoring and embedding drivers) hands it
to its node's Ray metrics agent; Prometheus scrapes each node at Ray's metrics export port
(``ray start --metrics-export-port``; KubeRay sets 8080), where the names below appear with
Ray's ``ray_`` prefix (counters also get ``_total``). ``cluster/grafana-dashboard.json`` plots them.

| metric | kind | tags | what |
|---|---|---|---|
| ``prodcat_serve_requests`` | counter | ``status``, ``mode`` | HTTP requests answered, by status code |
| ``prodcat_serve_products`` | counter | ``stage`` | products answered by the text / multimodal stage, or ``error`` |
| ``prodcat_serve_routed`` | counter | ``route`` | cascade mode: products ``kept`` by stage 1 or ``escalated`` |
| ``prodcat_serve_escalation_rate`` | gauge | | escalated / seen by stage 1 since the replica started, in [0, 1] |
| ``prodcat_serve_latency_ms`` | histogram | ``stage`` | ms per request (``request``) and per stage call (``text``, ``multimodal``) |
| ``prodcat_serve_fetch_failures`` | counter | ``reason`` | image URLs not fetched (``url_timeout``, ``url_blocked_address``, ...) |
| ``prodcat_serve_stage_retries`` | counter | ``stage`` | stage calls sent again because their replica died |
| ``prodcat_score_rows`` | counter | ``outcome``, ``stage`` | bulk-scoring rows written (``predicted`` / ``error``) |
| ``prodcat_score_row_errors`` | counter | ``reason`` | bulk-scoring rows written with an error, by its code |
| ``prodcat_score_progress`` | gauge | ``run`` | share of the job's rows written, in [0, 1] |
| ``prodcat_embed_products`` | counter | | products written to an embedding store |
| ``prodcat_embed_failures`` | counter | ``feature``, ``reason`` | modalities not encoded (``no_image``, ``image_corrupt``, ...) |
| ``prodcat_embed_progress`` | gauge | ``run`` | share of the run's products written, in [0, 1] |

Outside Ray (unit tests, Serve's local testing mode) recording is a no-op. Metric objects are
made once per process, on first use.
"""

from __future__ import annotations

from typing import Any

LATENCY_BOUNDARIES_MS = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]

#: name → (kind, description, tag keys)
METRICS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "prodcat_serve_requests": ("counter", "HTTP requests answered by the cascade service, by status code",
                               ("status", "mode")),
    "prodcat_serve_products": ("counter", "products answered, by the stage that answered (or error)",
                               ("stage",)),
    "prodcat_serve_routed": ("counter", "cascade mode: products kept by stage 1 or escalated to stage 2",
                             ("route",)),
    "prodcat_serve_escalation_rate": ("gauge", "escalated / seen by stage 1 since the replica started",
                                      ()),
    "prodcat_serve_latency_ms": ("histogram", "latency in ms per request and per stage call", ("stage",)),
    "prodcat_serve_fetch_failures": ("counter", "image URLs that could not be fetched, by reason",
                                     ("reason",)),
    "prodcat_serve_stage_retries": ("counter", "stage calls sent again because their replica died",
                                    ("stage",)),
    "prodcat_score_rows": ("counter", "bulk-scoring rows written, predicted or with an error",
                           ("outcome", "stage")),
    "prodcat_score_row_errors": ("counter", "bulk-scoring rows written with an error, by reason",
                                 ("reason",)),
    "prodcat_score_progress": ("gauge", "share of a bulk-scoring job's rows written", ("run",)),
    "prodcat_embed_products": ("counter", "products written to an embedding store", ()),
    "prodcat_embed_failures": ("counter", "modalities not encoded, by feature and reason",
                               ("feature", "reason")),
    "prodcat_embed_progress": ("gauge", "share of an embedding run's products written", ("run",)),
}

_made: dict[str, Any] = {}


def _metric(name: str):
    """The process's metric object for ``name``, or None outside Ray."""
    import ray

    if not ray.is_initialized():
        return None
    if name not in _made:
        from ray.util import metrics

        kind, description, tags = METRICS[name]
        if kind == "counter":
            _made[name] = metrics.Counter(name, description, tag_keys=tags)
        elif kind == "gauge":
            _made[name] = metrics.Gauge(name, description, tag_keys=tags)
        else:
            _made[name] = metrics.Histogram(name, description, boundaries=LATENCY_BOUNDARIES_MS,
                                            tag_keys=tags)
    return _made[name]


def _tags(tags: dict[str, Any]) -> dict[str, str] | None:
    return {k: str(v) for k, v in tags.items()} or None


def inc(name: str, value: float = 1.0, **tags: Any) -> None:
    """Add ``value`` (> 0) to the counter ``name`` (a key of :data:`METRICS`)."""
    metric = _metric(name)
    if metric is not None and value > 0:
        metric.inc(value, tags=_tags(tags))


def set_gauge(name: str, value: float, **tags: Any) -> None:
    """Set the gauge ``name``."""
    metric = _metric(name)
    if metric is not None:
        metric.set(float(value), tags=_tags(tags))


def observe(name: str, value: float, **tags: Any) -> None:
    """Record one value (ms) in the histogram ``name``."""
    metric = _metric(name)
    if metric is not None:
        metric.observe(float(value), tags=_tags(tags))
