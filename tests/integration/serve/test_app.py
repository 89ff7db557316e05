"""The Serve application on a tiny real cascade: local testing mode (no cluster), then a running
Serve instance on 127.0.0.1 exercised over real HTTP — answers, every error case, the SSRF guard,
hostile image servers (trickled headers, an endless body, redirects to private addresses, TIFF),
a schemathesis fuzz run from the service's own OpenAPI schema, and an overload burst (503 with
the JSON error and Retry-After, then recovery). Serve is shut down at the end of the module.

With ``PRODCAT_ROBUSTNESS_OUT=<file.json>`` the module writes what it measured (status codes,
seconds to answer, replica memory, fuzz counts, overload codes and recovery time) to that file.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures as cf
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from prodcat.core.runtime import free_port
from prodcat.pipeline.demo import wait_healthy

pytestmark = pytest.mark.integration

#: what the tests measured; written to $PRODCAT_ROBUSTNESS_OUT when set
FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def _write_figures():
    yield
    out = os.environ.get("PRODCAT_ROBUSTNESS_OUT")
    if out and FIGURES:
        Path(out).write_text(json.dumps(FIGURES, indent=2, default=str))


def _replica_rss_mib() -> dict[str, float]:
    """Resident memory (MiB) of this session's Serve replica processes, by deployment."""
    import psutil

    out: dict[str, float] = {}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
            if "ServeReplica:" in title:
                name = title.split("ServeReplica:", 1)[1].split()[0].split(":")[-1].split(".")[0]
                out[name] = round(out.get(name, 0.0) + proc.memory_info().rss / 2**20, 1)
        except (psutil.NoSuchProcess, psutil.AccessDenied, IndexError):
            continue
    return out


#: the loopback server's redirects to a private and to the cloud-metadata address
REDIRECTS = {"/redirect-to-private": "http://10.0.0.1/internal.png",
             "/redirect-to-metadata": "http://169.254.169.254/latest/meta-data/"}


def _tiff() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (10, 200, 10)).save(buf, format="TIFF")
    return buf.getvalue()


def _png(size=(32, 32), colour=(200, 30, 30)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def cascade(tmp_path_factory):
    from tests.fixtures.cascade import build_tiny_cascade

    return build_tiny_cascade(tmp_path_factory.mktemp("cascade"))


@pytest.fixture(scope="module")
def image_server(cascade):
    """A local HTTP server with product images (for image_url products)."""
    images = Path(cascade["image_dir"])

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):  # noqa: N802
            try:
                self._route()
            except (BrokenPipeError, ConnectionResetError):
                pass                       # the service hung up on purpose (deadline, byte cap)

        def _route(self):
            path = images / self.path.lstrip("/")
            if self.path == "/trickle-headers":      # response headers that never end
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(300):                 # bounded: 30 s at most
                    self.wfile.write(b"X-Slow: a\r\n")
                    self.wfile.flush()
                    time.sleep(0.1)
                return
            if self.path == "/endless":              # a body that never ends (no length)
                self.send_response(200)
                self.end_headers()
                for _ in range(3000):                # bounded: 30 s at most
                    self.wfile.write(b"\xff" * 1024)
                    time.sleep(0.01)
                return
            if self.path in REDIRECTS:                 # to addresses the fetcher must refuse
                self.send_response(302)
                self.send_header("Location", REDIRECTS[self.path])
                self.end_headers()
                return
            if self.path == "/image.tiff":
                body = _tiff()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            if not path.is_file():
                self.send_response(404)
                self.end_headers()
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _args(cascade, **extra) -> dict:
    args = {"cascade": cascade["cascade"],
            "limits": {"max_products": 8, "max_request_bytes": 400_000, "max_title_chars": 200,
                       "max_image_bytes": 60_000, "max_image_pixels": 250_000},
            "fetch": {"timeout_s": 2.0, "allowed_networks": ["127.0.0.1/32"]},
            "ingress": {"num_cpus": 0.05, "max_replicas": 1},
            "text_stage": {"num_cpus": 0.1, "max_replicas": 1, "device": "cpu"},
            "multimodal_stage": {"num_cpus": 0.1, "max_replicas": 1, "device": "cpu"}}
    for key, value in extra.items():
        args[key] = {**args.get(key, {}), **value} if isinstance(value, dict) else value
    return args


def _products(cascade, n: int = 6) -> list[dict]:
    out = []
    for row in cascade["products"].to_pylist()[:n]:
        item = {"id": row["product_id"], "title": row["title"], "description": row["description"]}
        if row["image_uri"]:
            item["image_base64"] = base64.b64encode(Path(row["image_uri"]).read_bytes()).decode()
        out.append(item)
    return out


# ---------------------------------------------------------------------- the deploy config
def test_serve_config_yaml_is_a_valid_deploy_config():
    """serve/config.yaml passes Serve's own schema (what `serve deploy` checks) and its args
    pass AppArgs; the import path names the builder."""
    import yaml
    from ray.serve.schema import ServeDeploySchema

    from prodcat.core.paths import REPO_ROOT
    from prodcat.serve.app import build_app
    from prodcat.serve.schemas import AppArgs

    config = yaml.safe_load((REPO_ROOT / "serve/config.yaml").read_text())
    schema = ServeDeploySchema.model_validate(config)
    app = schema.applications[0]
    assert app.import_path == "prodcat.serve.app:build_app" and callable(build_app)
    args = AppArgs.model_validate(app.args)
    assert args.ingress.max_queued_requests > 0 and args.multimodal_stage.num_gpus == 0
    assert args.text_stage.num_cpus + args.multimodal_stage.num_cpus + args.ingress.num_cpus < 1


# ---------------------------------------------------------------------- a running Serve instance
@pytest.fixture(scope="module")
def service(ray_session, cascade):
    from ray import serve

    from prodcat.serve.app import build_app

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    # a tight ingress (2 admitted at once) so that overload is easy to provoke; the other tests
    # send one request at a time
    tight = _args(cascade, ingress={"max_admitted": 2, "max_ongoing_requests": 64,
                                    "max_queued_requests": 64})
    serve.run(build_app(tight), name="prodcat", route_prefix="/")
    url = f"http://127.0.0.1:{port}"
    wait_healthy(url, timeout_s=60)
    yield url
    serve.shutdown()


def _post(url, body=None, **kwargs):
    return requests.post(f"{url}/v1/categorize", json=body, timeout=60, **kwargs)


def test_categorize_real_products_over_http(service, cascade):
    products = _products(cascade, 6)
    r = _post(service, {"products": products})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "cascade" and body["threshold"] == pytest.approx(cascade["threshold"])
    tax = cascade["taxonomy"]
    for product, pred in zip(products, body["predictions"]):
        assert pred["id"] == product["id"] and pred["status"] == 200 and pred["error"] is None
        assert pred["category_path"] == tax.path_of_id(pred["category_id"])
        assert [lv["name"] for lv in pred["path"]] == pred["category_path"].split(" > ")
        assert pred["path"][-1]["id"] == pred["category_id"]
        assert all(0.0 <= lv["confidence"] <= 1.0 for lv in pred["path"])
        assert pred["stage"] in ("text", "multimodal") and len(pred["model_version"]) == 12
        escalated = pred["text_confidence"] < cascade["threshold"]
        assert pred["stage"] == ("multimodal" if escalated else "text")
    assert body["escalated"] == sum(p["stage"] == "multimodal" for p in body["predictions"])
    for mode in ("text", "multimodal"):
        r = requests.post(f"{service}/v1/categorize?mode={mode}", json={"products": products},
                          timeout=60)
        assert r.status_code == 200 and {p["stage"] for p in r.json()["predictions"]} == {mode}


def test_metadata_endpoints(service, cascade):
    tax = requests.get(f"{service}/v1/taxonomy", timeout=10).json()
    assert tax["version"] == cascade["taxonomy"].version
    assert {c["path"] for c in tax["categories"]} >= {"Apparel > Shoes > Boots", "Home"}
    model = requests.get(f"{service}/v1/model", timeout=10).json()
    assert model["threshold"] == pytest.approx(cascade["threshold"])
    for stage in ("text_stage", "multimodal_stage"):
        assert len(model[stage]["version"]) == 12
        assert all(len(f["fingerprint"]) == 16 for f in model[stage]["features"].values())
    assert set(model["multimodal_stage"]["features"]) == {"text", "image"}
    assert requests.get(f"{service}/healthz", timeout=10).json() == {"status": "ok"}
    schema = requests.get(f"{service}/openapi.json", timeout=10).json()
    assert "/v1/categorize" in schema["paths"] and "ProductIn" in schema["components"]["schemas"]


def test_request_level_errors(service):
    r = requests.post(f"{service}/v1/categorize", data=b'{"products": [', timeout=10,
                      headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"
    r = _post(service, {"products": "not a list"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = _post(service, {"products": [{"title": "x", "colour": "red"}]})      # unknown field
    assert r.status_code == 422
    r = _post(service, {"products": [{"title": f"shirt {i}"} for i in range(9)]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_products"
    r = _post(service, {"products": [{"title": "x", "description": "y" * 500_000}]})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    r = requests.post(f"{service}/v1/categorize?mode=bogus", json={"products": [{"title": "x"}]},
                      timeout=10)
    assert r.status_code == 422
    assert _post(service, {"products": []}).status_code == 422


def test_per_product_errors(service, cascade):
    good = _products(cascade, 1)[0]
    big = _png((600, 600))                                   # 360,000 px > 250,000
    cases = [
        ({"title": "   "}, 422, "title_missing"),
        ({"title": "t" * 201}, 413, "title_too_long"),
        ({"title": "red boots", "image_base64": "@@not base64@@"}, 400, "image_bad_base64"),
        ({"title": "red boots", "image_base64": "QUJ"}, 400, "image_bad_base64"),
        ({"title": "red boots", "image_base64": base64.b64encode(b"GIF89a broken").decode()},
         422, "image_not_image"),
        ({"title": "red boots", "image_base64": base64.b64encode(b"plain text").decode()},
         422, "image_not_image"),
        ({"title": "red boots", "image_base64": base64.b64encode(_png()[:60]).decode()},
         422, "image_corrupt"),
        ({"title": "red boots", "image_base64": base64.b64encode(big).decode()},
         413, "image_too_many_pixels"),
        ({"title": "red boots", "image_base64": base64.b64encode(b"\x89PNG" + b"0" * 70_000).decode()},
         413, "image_too_large"),
        ({"title": "red boots", "image_base64": "QUJD", "image_url": "http://x/y.png"},
         422, "image_ambiguous"),
    ]
    for product, status, code in cases:
        r = _post(service, {"products": [product]})
        pred = r.json()["predictions"][0]
        assert (r.status_code, pred["status"], pred["error"]["code"]) == (status, status, code), product
    r = _post(service, {"products": [{"title": "red boots",
                                      "image_base64": base64.b64encode(_tiff()).decode()}]})
    pred = r.json()["predictions"][0]                        # only the documented formats
    assert (r.status_code, pred["error"]["code"]) == (415, "image_unsupported_format")
    # bad products never fail their neighbours: the request answers 200, each with its own status
    r = _post(service, {"products": [good] + [c[0] for c in cases[:4]]})
    assert r.status_code == 200
    assert [p["status"] for p in r.json()["predictions"]] == [200, 422, 413, 400, 400]


def test_image_urls_and_ssrf_guard(service, cascade, image_server):
    name = Path(cascade["products"]["image_uri"].to_pylist()[0]).name
    closed = free_port()
    cases = [
        ({"title": "red boots", "image_url": f"{image_server}/{name}"}, 200, None),
        ({"title": "red boots", "image_url": f"{image_server}/missing.png"}, 422, "url_http_status"),
        ({"title": "red boots", "image_url": f"http://127.0.0.1:{closed}/a.png"}, 422, "url_unreachable"),
        ({"title": "red boots", "image_url": "http://169.254.169.254/latest/meta-data/"},
         403, "url_blocked_address"),
        ({"title": "red boots", "image_url": "http://10.0.0.1/a.png"}, 403, "url_blocked_address"),
        ({"title": "red boots", "image_url": f"http://127.0.0.2:{closed}/a.png"}, 403,
         "url_blocked_address"),                            # loopback outside the allow-list
        ({"title": "red boots", "image_url": "http://[::1]/a.png"}, 403, "url_blocked_address"),
        ({"title": "red boots", "image_url": f"{image_server}/redirect-to-metadata"}, 403,
         "url_blocked_address"),
        ({"title": "red boots", "image_url": "file:///etc/passwd"}, 422, "url_scheme"),
    ]
    for product, status, code in cases:
        r = requests.post(f"{service}/v1/categorize?mode=multimodal", json={"products": [product]},
                          timeout=60)
        pred = r.json()["predictions"][0]
        assert (r.status_code, pred["status"]) == (status, status), (product, r.text)
        assert (pred["error"] or {}).get("code") == code
    r = requests.post(f"{service}/v1/categorize?mode=multimodal", timeout=60,
                      json={"products": [{"title": "red boots", "image_url": f"{image_server}/{name}"}]})
    assert r.json()["predictions"][0]["image_status"] == "ok"


def test_hostile_image_servers_get_a_4xx_in_bounded_time(service, image_server):
    """Each hostile URL is answered with its own 4xx within the fetch deadline (2 s here) plus
    the request's own work; the replicas' memory stays bounded and the service stays healthy."""
    before = _replica_rss_mib()
    cases = [("trickled headers", "/trickle-headers", 422, "url_timeout"),
             ("endless body", "/endless", 413, "url_too_large"),   # the 60 kB cap comes first
             ("redirect to a private address", "/redirect-to-private", 403, "url_blocked_address"),
             ("redirect to cloud metadata", "/redirect-to-metadata", 403, "url_blocked_address"),
             ("TIFF image", "/image.tiff", 415, "image_unsupported_format")]
    rows = []
    for name, path, status, code in cases:
        start = time.perf_counter()
        r = requests.post(f"{service}/v1/categorize?mode=multimodal", timeout=60,
                          json={"products": [{"title": "red boots", "image_url": image_server + path}]})
        seconds = time.perf_counter() - start
        pred = r.json()["predictions"][0]
        assert (r.status_code, pred["status"], pred["error"]["code"]) == (status, status, code), name
        assert seconds < 2.0 + 10.0, (name, seconds)        # the 2 s fetch deadline + slack (servers run 30 s)
        healthy = requests.get(f"{service}/healthz", timeout=10).status_code
        assert healthy == 200
        rows.append({"input": name, "status": r.status_code, "code": code,
                     "seconds": round(seconds, 2), "healthz_after": healthy})
    # six at once against an ingress admitting 2: the admitted ones time out at the deadline, the
    # rest are refused at once with the JSON 503; nothing waits longer than the deadline
    start = time.perf_counter()
    with cf.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: requests.post(
            f"{service}/v1/categorize?mode=multimodal", timeout=60,
            json={"products": [{"title": "boots", "image_url": f"{image_server}/trickle-headers"}]}
        ), range(6)))
    parallel_s = time.perf_counter() - start
    codes = [a.status_code for a in answers]
    assert set(codes) <= {422, 503} and codes.count(422) >= 2 and parallel_s < 2.0 + 10.0, codes
    assert all(a.json()["error"]["code"] == "overloaded" for a in answers if a.status_code == 503)
    after = _replica_rss_mib()
    growth = {k: round(after.get(k, 0) - v, 1) for k, v in before.items()}
    assert all(g < 300 for g in growth.values()), growth
    FIGURES["hostile_inputs"] = {"cases": rows, "parallel_trickle_codes": codes,
                                 "parallel_trickle_seconds": round(parallel_s, 2),
                                 "replica_rss_mib_before": before, "replica_rss_mib_after": after}


def test_fuzz_the_api_from_its_openapi_schema(service):
    """schemathesis generates requests for every operation of /openapi.json (bounded examples);
    the property: never a 5xx, except 503 under overload (with the JSON error body)."""
    import hypothesis
    import schemathesis
    from hypothesis import HealthCheck

    schema = schemathesis.openapi.from_url(f"{service}/openapi.json")
    counts: collections.Counter = collections.Counter()
    failures: list = []
    examples = {"POST": 60, "GET": 10}
    for result in schema.get_all_operations():
        operation = result.ok()

        @hypothesis.settings(max_examples=examples.get(operation.method.upper(), 10), deadline=None,
                             database=None, derandomize=True, suppress_health_check=list(HealthCheck))
        @hypothesis.given(case=operation.as_strategy())
        def run(case):
            response = case.call(base_url=service, timeout=60)
            counts[(operation.method.upper() + " " + operation.path, response.status_code)] += 1
            if response.status_code >= 500 and not (
                    response.status_code == 503 and "error" in response.json()):
                failures.append((operation.path, response.status_code, response.text[:200]))

        run()
    total = sum(counts.values())
    FIGURES["fuzz"] = {"examples": total, "failures": len(failures),
                       "by_operation_and_status": {f"{k[0]} -> {k[1]}": v for k, v in counts.items()}}
    assert total >= 60 and not failures, failures
    assert requests.get(f"{service}/healthz", timeout=10).status_code == 200


def test_overload_sheds_with_503_json_and_recovers(service, cascade):
    """A burst far above the ingress's admission limit: every answer is 200 or 503 with the
    API's JSON error and Retry-After; afterwards the service is healthy and answers again."""
    products = [{"title": f"classic red boots {i}", "description": "warm " * 50} for i in range(8)]

    def call(_):
        try:
            r = requests.post(f"{service}/v1/categorize?mode=multimodal",
                              json={"products": products}, timeout=120)
        except requests.RequestException as err:
            return type(err).__name__, None, None
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else None
        return r.status_code, body, r.headers.get("retry-after")

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, range(48)))
    burst_s = time.perf_counter() - start
    codes = [a[0] for a in answers]
    assert set(codes) <= {200, 503}, codes                  # never a 500, never a crash
    assert codes.count(503) > 0 and codes.count(200) > 0
    for code, body, retry_after in answers:
        if code == 503:                                      # the API's JSON error, not Serve's text
            assert body and body["error"]["code"] in ("overloaded", "timeout") and retry_after
    end = time.perf_counter()
    while True:                                              # recovery: a normal request answered
        r = requests.post(f"{service}/v1/categorize", json={"products": products[:1]}, timeout=60)
        if r.status_code == 200 or time.perf_counter() - end > 30:
            break
        time.sleep(0.05)
    recovery_s = time.perf_counter() - end
    assert r.status_code == 200 and recovery_s < 30
    assert requests.get(f"{service}/healthz", timeout=10).status_code == 200
    FIGURES["overload"] = {"requests": len(codes), "concurrency": 24,
                           "codes": dict(collections.Counter(str(c) for c in codes)),
                           "burst_seconds": round(burst_s, 2), "recovery_seconds": round(recovery_s, 3),
                           "healthz_after": 200}


def test_a_failing_product_is_its_own_error(cascade):
    """A product whose prediction raises gets {"error"}; its batch neighbours are answered."""
    from prodcat.cascade.stage import StageRunner

    runner = StageRunner(cascade["text_model"], "text", device="cpu")
    good = {"product_id": "a", "title": "red boots", "description": None}
    good["features"] = runner.predict_items([good])[0]["features"]   # reusable stage-1 vectors
    fp = runner.fingerprints["text"]
    bad = dict(good, product_id="b",                       # a stage-1 vector of the wrong size
               features={"text": {"vector": [0.0] * 3, "status": "ok", "fingerprint": fp}})
    out = runner.predict_items([good, bad, dict(good, product_id="c")])
    assert [("error" in r) for r in out] == [False, True, False]
    assert out[0]["category_id"] == out[2]["category_id"]


def test_the_same_request_with_and_without_abstention(service, cascade, tmp_path):
    """Partial paths over real HTTP: `?abstain=0.95` stops answers where the answering stage's
    thresholds (fitted on its products) say so; without it the answers are today's full paths; a
    target outside [0, 1] is a 422; a cascade without thresholds cannot default to one."""
    from ray import serve

    from prodcat.cascade.spec import write_cascade
    from prodcat.serve.app import build_app
    from tests.fixtures.cascade import with_abstention

    fitted = with_abstention(cascade, tmp_path / "cascade")
    # thresholds that stop every answer after its top level at 0.95 (fitting is tested elsewhere)
    levels = cascade["taxonomy"].num_levels
    fitted["spec"].abstain = {stage: {"targets": [0.0, 0.95], "thresholds": [[0.0] * levels,
                                                                             [0.0] + [2.0] * (levels - 1)]}
                              for stage in ("text", "multimodal")}
    write_cascade(fitted["spec"], fitted["folder"])
    serve.run(build_app({**_args(cascade), "cascade": fitted["folder"]}), name="abstain",
              route_prefix="/abstain")
    try:
        url = service + "/abstain"
        wait_healthy(url, timeout_s=60)
        body = {"products": _products(cascade, 8)}
        full = _post(url, body).json()
        partial = requests.post(f"{url}/v1/categorize", params={"abstain": 0.95}, json=body, timeout=60).json()
        assert full["abstain"] is None and partial["abstain"] == 0.95
        assert all(p["stopped_at_level"] is None for p in full["predictions"])
        for a, b in zip(full["predictions"], partial["predictions"]):
            assert b["path"] == a["path"][:1] and b["stopped_at_level"] == 0
            assert b["category_id"] == a["path"][0]["id"] and b["category_path"] == a["path"][0]["name"]
            assert b["stop_reason"].startswith("level 1: cumulative confidence")
        kept = requests.post(f"{url}/v1/categorize", params={"abstain": 0}, json=body, timeout=60).json()
        assert [p["path"] for p in kept["predictions"]] == [p["path"] for p in full["predictions"]]
        assert {p["stop_reason"] for p in kept["predictions"]} == {"complete: every level reaches its threshold"}
        bad = requests.post(f"{url}/v1/categorize", params={"abstain": 1.5}, json=body, timeout=60)
        assert bad.status_code == 422
    finally:
        serve.delete("abstain")
    with pytest.raises(ValueError, match="rerun `prodcat cascade fit`"):
        build_app(_args(cascade, abstain={"target_precision": 0.95}))


# ---------------------------------------------------------------------- local testing mode
_LOCAL_MODE = """
import json, sys
from ray import serve
from prodcat.serve.app import build_app
given = json.load(open(sys.argv[1]))
handle = serve.run(build_app(given["args"]), name="local", _local_testing_mode=True)
out = {"ok": handle.categorize.remote({"products": given["products"]}).result(),
       "bad": handle.categorize.remote({"products": [{"title": ""}]}).result(),
       "items": handle.categorize.remote({"items": []}).result()}
json.dump(out, open(sys.argv[2], "w"), default=str)
"""


def test_local_testing_mode(cascade, tmp_path):
    """The same application with no cluster: deployments run in one process. That process is a
    child of the test's: local testing mode leaves uvicorn state behind that later Serve
    deployments of the same process cannot pickle (the other Serve tests of a pytest worker)."""
    import subprocess
    import sys

    products = _products(cascade, 4)
    (tmp_path / "in.json").write_text(json.dumps({"args": _args(cascade), "products": products}))
    subprocess.run([sys.executable, "-c", _LOCAL_MODE, str(tmp_path / "in.json"), str(tmp_path / "out.json")],
                   check=True, timeout=300, cwd=tmp_path)
    out = json.loads((tmp_path / "out.json").read_text())
    result = out["ok"]
    assert result["status"] == 200
    preds = result["body"]["predictions"]
    assert [p["id"] for p in preds] == [r["product_id"] for r in cascade["products"].to_pylist()[:4]]
    assert all(p["stage"] in ("text", "multimodal") and p["path"] for p in preds)
    bad = out["bad"]
    assert bad["status"] == 422 and bad["body"]["predictions"][0]["error"]["code"] == "title_missing"
    assert out["items"]["status"] == 422
