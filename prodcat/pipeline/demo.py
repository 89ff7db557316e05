"""Start the cascade service on the running Ray instance, categorize real products over HTTP,
stop it. Used by the main job (``prodcat pipeline``) to show the service working end to end; the
service is the same application ``prodcat serve`` runs (``serve/config.yaml``)."""

from __future__ import annotations

import time
from typing import Callable

from prodcat.core.console import say
from prodcat.core.runtime import free_port
from prodcat.serve.app import build_app
from prodcat.serve.settings import app_args, load_serve_config


def serve_demo(cascade_uri: str, products: list[dict], log: Callable[[str], None] = say,
               port: int | None = None, timeout_s: float = 180.0) -> dict:
    """Deploy, send ``products`` (``{"request": ProductIn dict, "true_path": str}``) in one
    ``POST /v1/categorize`` and each alone, read ``/v1/model``, shut Serve down.

    Returns the responses, per-request latency (ms) and the service's model info.

    Raises:
        TimeoutError: when ``/healthz`` does not answer within ``timeout_s`` seconds.
    """
    import httpx
    from ray import serve

    config = load_serve_config(None)
    app = build_app(app_args(config, [f"cascade={cascade_uri}"]))
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(app, name="prodcat", route_prefix="/")
        wait_healthy(url, timeout_s)
        log(f"[serve] service up at {url}; sending {len(products)} real products")
        with httpx.Client(base_url=url, timeout=120) as client:
            t0 = time.perf_counter()
            batch = client.post("/v1/categorize", json={"products": [p["request"] for p in products]})
            batch_ms = (time.perf_counter() - t0) * 1000
            singles = []
            for p in products:
                t0 = time.perf_counter()
                r = client.post("/v1/categorize", json={"products": [p["request"]]})
                singles.append({"status": r.status_code, "ms": round((time.perf_counter() - t0) * 1000, 1)})
            model = client.get("/v1/model").json()
            # the same batch with partial paths at a target precision of 0.95 per level
            partial = client.post("/v1/categorize", params={"abstain": 0.95},
                                  json={"products": [p["request"] for p in products]})
        body = batch.json()
        partial_rows = (partial.json().get("predictions", []) if partial.status_code == 200
                        else [{}] * len(products))
        rows = []
        for p, pred, single, part in zip(products, body.get("predictions", []), singles, partial_rows):
            rows.append({"id": p["request"].get("id"), "title": p["request"]["title"],
                         "has_image": "image_base64" in p["request"], "true_path": p["true_path"],
                         "predicted_path": pred.get("category_path"), "stage": pred.get("stage"),
                         "confidence": pred.get("confidence"), "status": pred.get("status"),
                         "single_request_ms": single["ms"],
                         "partial_path": part.get("category_path"),
                         "stopped_at_level": part.get("stopped_at_level"),
                         "stop_reason": part.get("stop_reason")})
        for row in rows:
            log(f"[serve] {row['title'][:50]!r:52} → {row['predicted_path']} ({row['stage']}, "
                f"{row['confidence'] and round(row['confidence'], 2)})")
        return {"url": url, "batch_status": batch.status_code, "batch_ms": round(batch_ms, 1),
                "rows": rows, "model": model,
                "abstain": {"target": 0.95, "status": partial.status_code,
                            "error": None if partial.status_code == 200 else partial.json()}}
    finally:
        serve.shutdown()
        log("[serve] service stopped")


def wait_healthy(url: str, timeout_s: float) -> None:
    """Poll ``<url>/healthz`` every 0.5 s until it answers 200.

    Raises:
        TimeoutError: when it does not within ``timeout_s`` seconds.
    """
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"the service at {url} did not become healthy in {timeout_s} s")
