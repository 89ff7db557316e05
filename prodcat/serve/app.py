"""The Ray Serve application: a FastAPI ingress over two stage deployments, composed by handles.

    POST /v1/categorize?mode=cascade|text|multimodal   a batch of products → per-product answers
         [&abstain=0.95]                               partial paths for a target precision per level
    GET  /v1/taxonomy                                  the label taxonomy (ids, names, parents,
                                                       earlier versions' id maps)
    GET  /v1/model                                     model versions, encoder fingerprints, tau
    GET  /healthz                                      200 when both stages answer
    GET  /openapi.json, /docs                          the schema

``TextStage`` (stage 1: text encoder + text-only head) answers every product; products whose
calibrated confidence is below tau go on to ``MultimodalStage`` (image and, when configured, joint
encoders + fusion head). Both batch requests with ``@serve.batch`` and autoscale on
``target_ongoing_requests``; the multimodal stage's ``num_gpus`` comes from the args. The routing
rule is :func:`prodcat.cascade.route`. Overload is shed with 503, the API's JSON error body and
``Retry-After``: the ingress admits ``ingress.max_admitted`` categorize requests at once per replica
and refuses the rest itself (:mod:`prodcat.serve.guard`, before Serve's proxy queue fills), a stage
queue that is full raises ``BackPressureError``, and a request past ``limits.request_timeout_s``
(image fetches, decoding and both stages together) is answered with 503 ``timeout``. A product
whose prediction fails gets its own error; the batch it was in is answered. Optional API-key
authentication: ``auth`` (:class:`prodcat.serve.schemas.AuthConfig`).

Start it with ``serve deploy serve/config.yaml`` (on a running cluster), ``serve run
serve/config.yaml``, or ``prodcat serve`` (local). The application builder is :func:`build_app`.
"""

# no `from __future__ import annotations`: FastAPI must resolve the route annotations at runtime

import asyncio
import time
from typing import Any

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle

from prodcat.cascade.abstain import stop_level
from prodcat.cascade.policy import route
from prodcat.cascade.spec import CascadeSpec, load_taxonomy_of, resolve_cascade
from prodcat.core.config import flatten_dotted, load_config
from prodcat.models.files import CONFIG, read_json
from prodcat.serve import guard
from prodcat.serve.inputs import Gates, PreparedProduct, ProductProblem, prepare
from prodcat.serve.schemas import (
    AppArgs,
    Autoscaling,
    CategorizeRequest,
    CategorizeResponse,
    ErrorResponse,
    Mode,
    PredictionOut,
    StageDeployment,
)
from prodcat.serve.settings import locate
from prodcat.serve.telemetry import ServiceMetrics, record_status

api = FastAPI(title="prodcat", version="1", summary="Hierarchical product categorization: a text "
              "stage, then a multimodal stage for the products it is unsure about.")

_ERRORS = {status: {"model": ErrorResponse} for status in (400, 413, 422, 503)}


# ---------------------------------------------------------------------- request-level errors
def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    """A request-level error body (:class:`ErrorResponse`)."""
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    """Malformed JSON → 400; JSON of the wrong shape (types, unknown fields) → 422."""
    errors = err.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        detail = next(e for e in errors if e.get("type") == "json_invalid")
        record_status(400)
        return error_response(400, "malformed_json", f"request body is not valid JSON: "
                              f"{detail.get('ctx', {}).get('error', detail.get('msg'))}")
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:10])
    record_status(422)
    return error_response(422, "invalid_request", problems)


_BODY_LIMIT = {"max_bytes": AppArgs().limits.max_request_bytes}  # set by Ingress.__init__


class BodyLimit:
    """ASGI middleware: 413 for a request body above ``limits.max_request_bytes`` (declared or
    streamed). The limit is read per request, set by the replica's :class:`Ingress`."""

    def __init__(self, app) -> None:
        self.app = app

    @property
    def max_bytes(self) -> int:
        return _BODY_LIMIT["max_bytes"]

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._reject(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope, receive, send):
        record_status(413)
        response = error_response(413, "request_too_large",
                                  f"request body is larger than {self.max_bytes} bytes")
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


api.add_middleware(BodyLimit)
api.add_middleware(guard.Admission)      # added later = runs earlier: auth, admission, body limit
api.add_middleware(guard.ApiKeyAuth)


# ---------------------------------------------------------------------- stages
def _in_replica() -> bool:
    """True inside a Serve replica (False in local testing mode, which has no replica context)."""
    from ray.serve.exceptions import RayServeException

    try:
        serve.get_replica_context()
    except (RayServeException, RuntimeError):
        return False
    return True


class _Stage:
    """One cascade stage in a replica: a :class:`prodcat.cascade.stage.StageRunner` behind a batch queue."""

    stage_name = ""

    def __init__(self, checkpoint: str, temperature: float, deployment: dict,
                 confidence_mode: str = "path", image_limits: dict | None = None) -> None:
        from prodcat.cascade.stage import StageRunner  # lazy: only stage replicas load torch

        settings = StageDeployment.model_validate(deployment)
        self.runner = StageRunner(checkpoint, self.stage_name, temperature=temperature,
                                  device=settings.device, confidence_mode=confidence_mode,
                                  num_threads=settings.torch_threads, image_limits=image_limits)
        self._predict_batch.set_max_batch_size(settings.max_batch_size)
        self._predict_batch.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)
        self._batching = _in_replica()

    async def predict(self, item: dict) -> dict:
        """One product dict (title, description, image_bytes, optional stage-1 ``features``) →
        its result dict. Concurrent calls are batched by ``@serve.batch``."""
        if self._batching:
            return await self._predict_batch(item)
        # Ray 2.60's _local_testing_mode sets no replica context, which @serve.batch needs
        return (await asyncio.to_thread(self.runner.predict_items, [item]))[0]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.01)
    async def _predict_batch(self, items: list[dict]) -> list[dict]:
        """A batch of product dicts → one result dict each (a product whose prediction fails
        gets ``{"error": ...}``, never an exception for the whole batch). The model runs in a
        worker thread so the replica keeps accepting (and batching) requests meanwhile."""
        return await asyncio.to_thread(self.runner.predict_items, items)

    def info(self) -> dict:
        """Version, encoder fingerprints, temperature (for ``GET /v1/model``)."""
        return self.runner.info()


@serve.deployment(name="TextStage", ray_actor_options={"num_cpus": 0.25})
class TextStage(_Stage):
    """Stage 1: the light text model."""

    stage_name = "text"


@serve.deployment(name="MultimodalStage", ray_actor_options={"num_cpus": 0.25})
class MultimodalStage(_Stage):
    """Stage 2: the multimodal model (GPU when ``num_gpus`` > 0)."""

    stage_name = "multimodal"


# ---------------------------------------------------------------------- ingress
# @serve.deployment pickles the class by value when it is decorated: helpers its methods use must
# be defined above it, and module state must be reached through the imported module.
def _json_float(value: float) -> float | str:
    return "inf" if value == float("inf") else value


async def _gather_isolated(calls: list) -> list[dict]:
    """Await stage calls; a call that fails becomes that product's ``{"error": ...}`` (a full
    stage queue, ``BackPressureError``, is re-raised: the whole request is then answered 503)."""
    from ray.serve.exceptions import BackPressureError

    out = await asyncio.gather(*calls, return_exceptions=True)
    for r in out:
        if isinstance(r, BackPressureError):
            raise r
    return [{"error": f"stage failed: {type(r).__name__}: {r}"} if isinstance(r, BaseException)
            else r for r in out]


@serve.deployment(name="CategorizeIngress", ray_actor_options={"num_cpus": 0.1})
@serve.ingress(api)
class Ingress:
    """HTTP front: validates, calls the stages through their handles, routes, merges."""

    def __init__(self, text: DeploymentHandle, multimodal: DeploymentHandle, args: dict,
                 cascade: dict) -> None:

        self.text, self.multimodal = text, multimodal
        self.args = AppArgs.model_validate(args)
        from prodcat.serve import app as module  # lazy: the replica's own copy of this module

        module._BODY_LIMIT["max_bytes"] = self.args.limits.max_request_bytes  # read by BodyLimit
        guard.configure(guard.read_api_key(self.args.auth.api_key_env, self.args.auth.api_key_file),
                        self.args.ingress.max_admitted, self.args.ingress.retry_after_s)
        self.spec = CascadeSpec(**cascade)
        self.taxonomy = load_taxonomy_of(self.spec.text_model, self.spec.multimodal_model)
        features = read_json(self.spec.multimodal_model, CONFIG).get("features", {})
        self.gates = Gates(asyncio.Semaphore(self.args.fetch.max_in_flight),
                           asyncio.Semaphore(self.args.limits.max_decodes_in_flight),
                           tuple(sorted({int(f["image_size"]) for f in features.values()
                                         if f.get("image_size")})))
        self._model_info: dict | None = None
        self.metrics = ServiceMetrics()

    # -- the pipeline (also called directly through a handle, e.g. in local testing mode) ------
    async def categorize(self, payload: dict, mode: Mode = "cascade", abstain: float | None = None) -> dict:
        """Categorize ``payload`` (a :class:`CategorizeRequest` as a dict); ``abstain``: a target
        precision per level for partial paths (None: the deployment's ``abstain`` setting).

        Returns:
            ``{"status": int, "body": CategorizeResponse or ErrorResponse as a dict}``.
        """
        from pydantic import ValidationError

        try:
            request = CategorizeRequest.model_validate(payload)
        except ValidationError as err:
            return {"status": 422, "body": {"error": {"code": "invalid_request", "message": str(err)}}}
        status, body = await self._run(request, mode, abstain)
        return {"status": status, "body": body}

    async def _run(self, request: CategorizeRequest, mode: Mode,
                   abstain: float | None = None) -> tuple[int, dict]:
        started = time.perf_counter()
        status, body, prepared = await self._answer(request, mode, abstain)
        self.metrics.request(status, mode, body.get("predictions", []),
                             [p for p in prepared if isinstance(p, ProductProblem)],
                             (time.perf_counter() - started) * 1000)
        return status, body

    def _abstain(self, target: float | None) -> dict | None:
        """``{stage: thresholds [L]}`` for a target precision (None: the deployment's default;
        None again: full paths).

        Raises:
            ValueError: a target outside [0, 1] or a cascade without fitted thresholds.
        """
        target = self.args.abstain.target_precision if target is None else target
        if target is None:
            return None
        return {"target": float(target), **{stage: self.spec.abstain_thresholds(stage, target)
                                            for stage in ("text", "multimodal")}}

    async def _answer(self, request: CategorizeRequest, mode: Mode,
                      abstain: float | None = None) -> tuple[int, dict, list]:
        """``(status, body, prepared products)`` of one request."""
        from ray.serve.exceptions import BackPressureError

        started = time.perf_counter()
        limits = self.args.limits
        try:
            stops = self._abstain(abstain)
        except ValueError as err:
            return 422, {"error": {"code": "invalid_abstain", "message": str(err)}}, []
        if len(request.products) > limits.max_products:
            return 413, {"error": {"code": "too_many_products", "message":
                                   f"{len(request.products)} products; the limit is {limits.max_products}"}}, []
        if not request.products:
            return 422, {"error": {"code": "no_products", "message": "products is empty"}}, []
        threshold = None if mode != "cascade" else self.spec.threshold
        prepared: list = []            # what a 503 reports when the deadline hits during fetching
        try:
            async with asyncio.timeout(limits.request_timeout_s):   # fetches, decoding, stages
                prepared = await asyncio.gather(*[prepare(i, p, limits, self.args.fetch, self.gates)
                                                  for i, p in enumerate(request.products)])
                ok = [p for p in prepared if isinstance(p, PreparedProduct)]
                results, escalated = await self._stages(ok, mode, threshold)
        except BackPressureError as err:
            return 503, {"error": {"code": "overloaded", "message": f"the service is at capacity, "
                                   f"retry later ({err})"}}, prepared
        except TimeoutError:
            return 503, {"error": {"code": "timeout", "message": f"not answered within "
                                   f"{limits.request_timeout_s:g} s; retry later"}}, prepared
        predictions = [self._prediction(p, results.get(p.index), mode, stops) for p in prepared]
        statuses = {p.status for p in predictions}
        status = 200 if 200 in statuses else (statuses.pop() if len(statuses) == 1 else 422)
        body = CategorizeResponse(predictions=predictions, mode=mode, threshold=threshold,
                                  escalated=escalated, abstain=stops and stops["target"],
                                  elapsed_ms=(time.perf_counter() - started) * 1000)
        return status, body.model_dump(mode="json"), prepared

    async def _stages(self, ok: list, mode: Mode, threshold: float | None) -> tuple[dict, int]:
        """Stage 1 for every product (unless ``mode`` is multimodal), the routing rule, stage 2
        for the escalated ones (every one in multimodal mode). ``({index: result}, escalated)``."""

        results: dict[int, dict] = {}
        if mode in ("cascade", "text"):
            with self.metrics.timed("text"):
                first = await _gather_isolated([
                    self._call(self.text, "text", p.as_item(with_image=False)) for p in ok])
            results = {p.index: r for p, r in zip(ok, first)}
        if mode == "text":
            return results, 0
        answered = [p for p in ok if not results.get(p.index, {}).get("error")]
        todo = ok if mode == "multimodal" else [
            p for p, up in zip(answered, route([results[p.index]["confidence"] for p in answered],
                                               threshold)) if up]
        if mode == "cascade":
            self.metrics.routed(kept=len(answered) - len(todo), escalated=len(todo))
        with self.metrics.timed("multimodal" if todo else ""):
            second = await _gather_isolated([
                self._call(self.multimodal, "multimodal", self._stage2_item(p, results.get(p.index)))
                for p in todo])
        for p, r in zip(todo, second):
            r["text_confidence"] = results.get(p.index, {}).get("confidence")
            results[p.index] = r
        return results, len(todo)

    async def _call(self, stage: DeploymentHandle, name: str, item: dict, attempts: int = 3) -> dict:
        """``stage.predict(item)``, sent again (up to ``attempts`` times in all) when the replica
        it went to died meanwhile: prediction has no side effects, and Serve routes the next try
        to a live replica. Other errors, and the last try's, propagate."""
        from ray.exceptions import ActorDiedError, ActorUnavailableError

        for attempt in range(attempts):
            try:
                return await stage.predict.remote(item)
            except (ActorDiedError, ActorUnavailableError):
                if attempt == attempts - 1:
                    raise
                self.metrics.retried(name)
                await asyncio.sleep(0.1 * (attempt + 1))

    @staticmethod
    def _stage2_item(product, first: dict | None) -> dict:
        item = product.as_item(with_image=True)
        if first and first.get("features"):
            item["features"] = first["features"]       # stage-1 vectors the stage-2 model reuses
        return item

    def _prediction(self, product, result: dict | None, mode: Mode, stops: dict | None = None) -> PredictionOut:

        pid = product.id
        if isinstance(product, ProductProblem):
            return PredictionOut(id=pid, index=product.index, status=product.status,
                                 error={"code": product.code, "message": product.message})
        if result is None or result.get("error"):
            message = (result or {}).get("error") or "no result"
            return PredictionOut(id=pid, index=product.index, status=422,
                                 error={"code": "prediction_failed", "message": message})
        path, category_id, category_path, stopped, reason = (
            result["path"], result["category_id"], result["category_path"], None, None)
        if stops is not None:                      # partial path: the stage's own thresholds
            depth, reason = stop_level([lv["confidence"] for lv in path], stops[result["stage"]])
            path, stopped = path[:depth], depth - 1
            category_id = path[-1]["id"] if path else None
            category_path = " > ".join(lv["name"] for lv in path) if path else None
        return PredictionOut(
            id=pid, index=product.index, status=200, category_id=category_id,
            category_path=category_path, path=path, stopped_at_level=stopped, stop_reason=reason,
            confidence=result["confidence"], stage=result["stage"],
            text_confidence=result.get("text_confidence", result["confidence"]
                                       if result["stage"] == "text" else None),
            model_version=result["model_version"], image_status=result.get("image_status"))

    # -- HTTP routes -------------------------------------------------------------------------
    @api.post("/v1/categorize", response_model=CategorizeResponse, responses=_ERRORS,
              summary="Categorize a batch of products")
    async def categorize_http(self, body: CategorizeRequest,
                              mode: Mode = Query("cascade", description="cascade (default), text "
                                                 "(stage 1 only) or multimodal (stage 2 only)"),
                              abstain: float | None = Query(
                                  None, ge=0, le=1, description="partial paths: a target precision "
                                  "per level in [0, 1] (e.g. 0.95); each answer stops at the deepest "
                                  "level whose calibrated confidence reaches the threshold chosen "
                                  "for it on the calibration split (`stopped_at_level`, "
                                  "`stop_reason`); 0 keeps full paths; default: the deployment's "
                                  "`abstain.target_precision` (null: full paths)")):
        status, content = await self._run(body, mode, abstain)
        headers = {"Retry-After": str(self.args.ingress.retry_after_s)} if status == 503 else None
        return JSONResponse(content, status_code=status, headers=headers)

    @api.get("/v1/taxonomy", summary="The label taxonomy")
    async def taxonomy_http(self) -> dict:
        tax = self.taxonomy
        nodes = [{"id": int(tax.ids[n]), "name": tax.names[n], "level": len(tax.path_nodes(n)) - 1,
                  "parent_id": int(tax.ids[tax.parent[n]]) if tax.parent[n] > 0 else None,
                  "path": tax.path(n)}
                 for n in range(1, len(tax)) if not tax.virtual[n]]
        # lineage: per earlier version (e.g. before `prodcat recategorize apply` extended it),
        # its category id → the id here, so predictions stored under it can be mapped
        lineage = {v: {str(a): b for a, b in sorted(m.items())} for v, m in tax.lineage.items()}
        return {"version": tax.version, "levels": tax.num_levels, "categories": nodes,
                "lineage": lineage}

    @api.get("/v1/model", summary="Model versions, encoder fingerprints and the threshold")
    async def model_http(self) -> dict:
        if self._model_info is None:
            text, multimodal = await asyncio.gather(self.text.info.remote(),
                                                    self.multimodal.info.remote())
            self._model_info = {
                "text_stage": text, "multimodal_stage": multimodal,
                "threshold": _json_float(self.spec.threshold),
                "confidence_mode": self.spec.confidence_mode, "goal": self.spec.goal,
                "validation": self.spec.validation, "taxonomy_version": self.taxonomy.version,
                "limits": self.args.limits.model_dump()}
        return self._model_info

    @api.get("/healthz", summary="Liveness and readiness")
    async def healthz(self):
        try:
            async with asyncio.timeout(5):
                await asyncio.gather(self.text.info.remote(), self.multimodal.info.remote())
        except Exception as err:  # any stage failure means "not ready"
            return error_response(503, "not_ready", f"a stage is not answering: {type(err).__name__}")
        return {"status": "ok"}


# ---------------------------------------------------------------------- builder
def _stage_options(s: StageDeployment) -> dict[str, Any]:
    return {"ray_actor_options": {"num_cpus": s.num_cpus, "num_gpus": s.num_gpus},
            "autoscaling_config": {"min_replicas": s.min_replicas, "max_replicas": s.max_replicas,
                                   "target_ongoing_requests": s.target_ongoing_requests,
                                   **Autoscaling.ray_options(s)},
            "max_ongoing_requests": s.max_ongoing_requests,
            "max_queued_requests": s.max_queued_requests}


def build_app(args: dict | None = None):
    """Application builder (``import_path: serve.app:build_app``; ``args`` = :class:`AppArgs`).

    Raises:
        prodcat.core.config.ConfigError: for invalid args (names the field).
        FileNotFoundError: when the cascade or a checkpoint is missing.
        ValueError: when the two checkpoints use different taxonomies.
    """

    cfg = load_config(AppArgs, None, flatten_dotted(args or {}))
    spec = resolve_cascade(*(locate(p) for p in (cfg.cascade, cfg.text_model, cfg.multimodal_model)),
                           cfg.threshold)
    load_taxonomy_of(spec.text_model, spec.multimodal_model)  # fail at build time, not per request
    for stage in ("text", "multimodal"):                       # a default target needs thresholds
        spec.abstain_thresholds(stage, cfg.abstain.target_precision)
    image_limits = {"max_bytes": cfg.limits.max_image_bytes, "max_pixels": cfg.limits.max_image_pixels}
    text = TextStage.options(**_stage_options(cfg.text_stage)).bind(
        spec.text_model, spec.text_temperature, cfg.text_stage.model_dump(), spec.confidence_mode,
        image_limits)
    multimodal = MultimodalStage.options(**_stage_options(cfg.multimodal_stage)).bind(
        spec.multimodal_model, spec.multimodal_temperature, cfg.multimodal_stage.model_dump(),
        spec.confidence_mode, image_limits)
    ingress = cfg.ingress
    api.middleware_stack = None  # built lazily per process; a built one (local mode) won't pickle
    return Ingress.options(
        ray_actor_options={"num_cpus": ingress.num_cpus},
        autoscaling_config={"min_replicas": ingress.min_replicas, "max_replicas": ingress.max_replicas,
                            "target_ongoing_requests": ingress.target_ongoing_requests,
                            **Autoscaling.ray_options(ingress)},
        max_ongoing_requests=ingress.max_ongoing_requests,
        max_queued_requests=ingress.max_queued_requests,
        backpressure_config={"retry_after_s": ingress.retry_after_s},  # the proxy's backstop 503
    ).bind(text, multimodal, cfg.model_dump(mode="json"), spec.__dict__)
