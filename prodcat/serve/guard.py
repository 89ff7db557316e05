"""ASGI middleware in front of the API: optional API-key authentication and admission control.

Both answer in the API's JSON error body (:class:`prodcat.serve.schemas.ErrorResponse`), before
any work is done for a request:

- :class:`ApiKeyAuth`: when a key is configured (``auth.api_key_env`` / ``auth.api_key_file``),
  every route but ``/healthz`` needs ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``;
  compared in constant time (:func:`hmac.compare_digest`). Missing or wrong: 401.
- :class:`Admission`: at most ``ingress.max_admitted`` ``POST /v1/categorize`` requests are
  processed at once per replica; the rest get 503 ``overloaded`` with ``Retry-After`` at once.
  Serve's proxy would otherwise queue them and, past the ingress's ``max_queued_requests``, answer
  a plain-text 503 (Ray 2.60's ``BackpressureConfig`` sets its status and ``Retry-After``, not
  its body), so the ingress accepts more requests than it admits and refuses the excess itself.

The settings live in this module's :data:`SETTINGS`, set per replica by :func:`configure` (the
ingress's ``__init__``); the middleware classes are registered on the FastAPI app at import time.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from prodcat.serve.telemetry import record_status

#: per-process settings read by the middleware (set by :func:`configure` in each replica)
SETTINGS: dict = {"api_key": None, "max_admitted": None, "retry_after_s": 1, "in_flight": 0}

OPEN_PATHS = ("/healthz",)
ADMITTED_PATHS = ("/v1/categorize",)


def read_api_key(env: str | None, file: str | None) -> str | None:
    """The API key from the environment variable ``env`` or the file ``file`` (first line,
    stripped); None when neither is set.

    Raises:
        ValueError: a source is named but empty or missing (a misconfigured key must not turn
            authentication off silently).
    """
    if not env and not file:
        return None
    key = os.environ.get(env, "") if env else ""
    if not key and file:
        path = Path(file)
        if not path.is_file():
            raise ValueError(f"auth.api_key_file {file} does not exist")
        key = (path.read_text().splitlines() or [""])[0]
    key = key.strip()
    if not key:
        raise ValueError(f"API key source {env or file} is empty; set it or remove auth settings")
    return key


def configure(api_key: str | None, max_admitted: int | None, retry_after_s: int = 1) -> None:
    """Set this replica's key and admission limit."""
    SETTINGS.update(api_key=api_key, max_admitted=max_admitted, retry_after_s=retry_after_s,
                    in_flight=0)


async def _error(send, status: int, code: str, message: str, headers: dict | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


def _presented_key(headers: dict[bytes, bytes]) -> str:
    auth = headers.get(b"authorization", b"").decode("latin-1")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


class ApiKeyAuth:
    """401 unless the request carries the configured key (a no-op when none is configured)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        key = SETTINGS["api_key"]
        if scope["type"] != "http" or not key or scope.get("path") in OPEN_PATHS:
            return await self.app(scope, receive, send)
        given = _presented_key(dict(scope.get("headers") or []))
        if not hmac.compare_digest(given.encode(), key.encode()):
            record_status(401)
            return await _error(send, 401, "unauthorized", "missing or wrong API key (send "
                                "'Authorization: Bearer <key>' or 'X-API-Key: <key>')",
                                {"WWW-Authenticate": 'Bearer realm="prodcat"'})
        return await self.app(scope, receive, send)


class Admission:
    """503 ``overloaded`` + ``Retry-After`` for categorize requests beyond ``max_admitted``."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        limit = SETTINGS["max_admitted"]
        if scope["type"] != "http" or limit is None or scope.get("path") not in ADMITTED_PATHS:
            return await self.app(scope, receive, send)
        if SETTINGS["in_flight"] >= limit:
            record_status(503)                 # the main overload signal, on the dashboard too
            return await _error(send, 503, "overloaded", f"the service is at capacity ({limit} "
                                "requests in progress on this replica); retry later",
                                {"Retry-After": SETTINGS["retry_after_s"]})
        SETTINGS["in_flight"] += 1
        try:
            return await self.app(scope, receive, send)
        finally:
            SETTINGS["in_flight"] -= 1
