"""Request/response models of the HTTP API and the typed arguments of the Serve application.

The API models are what the OpenAPI schema (``/openapi.json``, ``/docs``) shows. Product-level
limits (text length, image bytes and pixels) are checked per product by ``serve.inputs`` so that
one bad product gets its own 4xx instead of failing the whole batch; request-level limits (number
of products, body size, JSON syntax, field types) answer for the whole request.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from prodcat.core.config import StrictModel
from prodcat.serve.fetch import FetchConfig

Mode = Literal["cascade", "text", "multimodal"]


# ---------------------------------------------------------------------- API
class ProductIn(BaseModel):
    """One product to categorize."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(None, description="caller's id, echoed back", max_length=512)
    title: str = Field(description="product title (required, non-empty)")
    description: str | None = Field(None, description="plain text or HTML description")
    image_base64: str | None = Field(None, description="image file bytes, base64 (standard "
                                     "alphabet, padding required); JPEG/PNG/WebP/GIF/BMP (other "
                                     "formats, e.g. TIFF: 415)")
    image_url: str | None = Field(None, description="http(s) URL of the image; fetched with a "
                                  "timeout and a size cap, never from private addresses")


class CategorizeRequest(BaseModel):
    """A batch of products."""

    model_config = ConfigDict(extra="forbid")

    products: list[ProductIn] = Field(description="the products, at most `limits.max_products`")


class LevelOut(BaseModel):
    """One level of the predicted path."""

    level: int = Field(description="0 = top level")
    id: int = Field(description="category id (Google Product Taxonomy)")
    name: str
    confidence: float = Field(description="calibrated probability in [0, 1] of this level's class")


class ErrorOut(BaseModel):
    """Why a product (or a request) was not categorized."""

    code: str = Field(description="machine-readable reason, e.g. image_bad_base64, url_blocked_address")
    message: str


class PredictionOut(BaseModel):
    """The answer for one product: a prediction, or an error with its own 4xx status."""

    id: str | None = Field(None, description="the product's `id` (null when none was given)")
    index: int = Field(description="position of the product in the request")
    status: int = Field(description="200, or the 4xx status of this product's error")
    category_id: int | None = None
    category_path: str | None = Field(None, description="`A > B > C`")
    path: list[LevelOut] = Field([], description="the path, top level first, with ids and confidence")
    confidence: float | None = Field(None, description="calibrated confidence of the answering "
                                     "stage's whole path, in [0, 1]")
    text_confidence: float | None = Field(None, description="stage 1's calibrated confidence, "
                                          "compared with the threshold tau")
    stage: Literal["text", "multimodal"] | None = Field(None, description="the stage that answered")
    model_version: str | None = None
    image_status: str | None = Field(None, description="ok, no_image, or why the image was not used")
    stopped_at_level: int | None = Field(None, description="partial paths (`abstain`): the last "
                                         "level kept (-1: none, then category_id is null); null "
                                         "when the full path was asked for")
    stop_reason: str | None = Field(None, description="partial paths: why the answer stopped there")
    error: ErrorOut | None = None


class CategorizeResponse(BaseModel):
    """Per-product results in request order. HTTP 200 when at least one product was categorized;
    when none was, the status is the products' common 4xx (422 when they differ)."""

    predictions: list[PredictionOut]
    mode: Mode
    threshold: float | None = Field(description="tau used for routing (null: no routing)")
    escalated: int = Field(description="products sent to the multimodal stage")
    abstain: float | None = Field(None, description="the target precision per level answers were "
                                  "stopped for (null: full paths)")
    elapsed_ms: float = Field(description="time spent in the service for this request (ms)")


class ErrorResponse(BaseModel):
    """A request-level error (malformed JSON, too many products, body too large, overload)."""

    error: ErrorOut


# ---------------------------------------------------------------------- application arguments
class Limits(StrictModel):
    """Request and product limits."""

    max_products: int = Field(64, gt=0, description="products per request (413 above)")
    max_request_bytes: int = Field(32 * 1024 * 1024, gt=0, description="request body (413 above)")
    max_title_chars: int = Field(1000, gt=0, description="title length per product")
    max_description_chars: int = Field(20000, gt=0, description="description length per product")
    max_image_bytes: int = Field(8 * 1024 * 1024, gt=0, description="decoded image file size")
    max_image_pixels: int = Field(40_000_000, gt=0, description="width x height of an image")
    request_timeout_s: float = Field(60.0, gt=0, description="a request taking longer gets 503 "
                                     "(image fetches, decoding and both stages included)")
    max_decodes_in_flight: int = Field(4, gt=0, description="image decodes at once per ingress "
                                       "replica (each at most max_image_pixels)")


class Autoscaling(StrictModel):
    """How fast a deployment follows its load (Ray Serve's ``AutoscalingConfig``; defaults are
    Ray's). Short delays suit tests and bursty traffic; long ones avoid flapping."""

    upscale_delay_s: float = Field(30.0, ge=0, description="load above target this long before adding replicas (s)")
    downscale_delay_s: float = Field(600.0, ge=0, description="load below target this long before removing replicas (s)")
    look_back_period_s: float = Field(30.0, gt=0, description="window the ongoing requests are averaged over "
                                      "(s); Ray Serve 2.60 warns at or under 10 s (its metrics_interval_s) that "
                                      "a future release will refuse it")

    def ray_options(self) -> dict:
        """These fields as Ray Serve ``autoscaling_config`` entries."""
        return {name: getattr(self, name) for name in Autoscaling.model_fields}


class StageDeployment(Autoscaling):
    """Replica resources, autoscaling and batching of one stage deployment."""

    num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per replica")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per replica (multimodal stage: 1 on a GPU node)")
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(8, gt=0, description="autoscaling target per replica")
    max_ongoing_requests: int = Field(32, gt=0, description="in flight per replica")
    max_queued_requests: int = Field(256, ge=-1, description="queued at callers before "
                                     "BackPressureError (503); -1 = unbounded")
    max_batch_size: int = Field(32, gt=0, description="@serve.batch size")
    batch_wait_timeout_s: float = Field(0.01, ge=0, description="@serve.batch wait (s)")
    torch_threads: int = Field(1, gt=0, description="torch intra-op threads per replica")
    device: str = Field("auto", description="auto, cpu or cuda")


class IngressDeployment(Autoscaling):
    """The HTTP ingress. Overload is answered here: a replica admits ``max_admitted``
    categorize requests at once and answers the rest at once with 503, the API's JSON error and
    ``Retry-After``. ``max_ongoing_requests`` must be larger, so that excess requests reach the
    replica (to be refused in JSON) instead of waiting in Serve's proxy, whose own limit
    (``max_queued_requests``, a plain-text 503) is only a backstop. Autoscaled like the stages."""

    num_cpus: float = Field(0.1, ge=0)
    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(2, ge=1)
    target_ongoing_requests: float = Field(4, gt=0)
    max_admitted: int = Field(16, gt=0, description="categorize requests processed at once per "
                              "replica; more get 503 + Retry-After (JSON)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After (s) on 503")
    max_ongoing_requests: int = Field(128, gt=0, description="requests a replica accepts at once "
                                      "(admitted + refused quickly); > max_admitted")
    max_queued_requests: int = Field(256, ge=-1, description="requests waiting in the proxy "
                                     "beyond that; more get Serve's plain-text 503 (backstop)")

    @model_validator(mode="after")
    def _refuse_in_the_replica(self) -> "IngressDeployment":
        if self.max_ongoing_requests <= self.max_admitted:
            raise ValueError(f"max_ongoing_requests ({self.max_ongoing_requests}) must be larger "
                             f"than max_admitted ({self.max_admitted}), so that overload is "
                             "answered by the ingress (JSON + Retry-After), not queued in the proxy")
        return self


class AuthConfig(StrictModel):
    """Optional API-key authentication (off when neither source is set). Clients send
    ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``; ``/healthz`` stays open for probes."""

    api_key_env: str | None = Field(None, description="environment variable holding the key "
                                    "(set it in the ingress replicas' environment)")
    api_key_file: str | None = Field(None, description="file holding the key (first line), e.g. a "
                                     "mounted Kubernetes secret")


class AbstainSettings(StrictModel):
    """Partial paths (:mod:`prodcat.cascade.abstain`): answers that stop at the deepest level the
    answering stage is sure of, for a target precision per level whose thresholds ``prodcat
    cascade fit`` chose on the calibration split. A request's ``?abstain=`` overrides it."""

    target_precision: float | None = Field(None, ge=0, le=1, description="default target precision "
                                           "per level, e.g. 0.95; null: full paths (today's answers)")


class AppArgs(StrictModel):
    """``args`` of the Serve application (``serve/config.yaml``): one source of truth."""

    cascade: str | None = Field(None, description="cascade.json (from `prodcat cascade fit`), "
                                "or a folder holding it")
    text_model: str | None = Field(None, description="stage-1 checkpoint (overrides the cascade's)")
    multimodal_model: str | None = Field(None, description="stage-2 checkpoint (overrides the cascade's)")
    threshold: float | None = Field(None, ge=0, description="tau (overrides the cascade's); "
                                    "stage-1 confidence below it escalates")
    limits: Limits = Limits()
    fetch: FetchConfig = FetchConfig()
    text_stage: StageDeployment = StageDeployment()
    multimodal_stage: StageDeployment = StageDeployment(max_batch_size=16, target_ongoing_requests=4)
    ingress: IngressDeployment = IngressDeployment()
    auth: AuthConfig = AuthConfig()
    abstain: AbstainSettings = AbstainSettings()
