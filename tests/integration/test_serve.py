"""The Serve application on a tiny real cascade: local testing mode (no cluster), then a running
Serve instance on 127.0.0.1 exercised over real HTTP — answers, every error case, the SSRF guard,
and load shedding with 503. Serve is shut down at the end of the module."""

from __future__ import annotations

import base64
import concurrent.futures as cf
import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from prodcat.pipeline.demo import free_port, wait_healthy

pytestmark = pytest.mark.integration




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
            path = images / self.path.lstrip("/")
            if self.path == "/redirect-to-metadata":
                self.send_response(302)
                self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
                self.end_headers()
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
    # a tight ingress (2 in flight, 2 queued) so that overload is easy to provoke; the other
    # tests send one request at a time
    tight = _args(cascade, ingress={"max_ongoing_requests": 2, "max_queued_requests": 2})
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


def test_overload_sheds_with_503(service, cascade):
    products = [{"title": f"classic red boots {i}", "description": "warm " * 50} for i in range(8)]

    def call(_):
        try:
            return requests.post(f"{service}/v1/categorize?mode=multimodal",
                                 json={"products": products}, timeout=120).status_code
        except requests.RequestException as err:
            return type(err).__name__

    with cf.ThreadPoolExecutor(24) as pool:
        codes = list(pool.map(call, range(48)))
    assert set(codes) <= {200, 503}, codes                  # never a 500, never a crash
    assert codes.count(503) > 0 and codes.count(200) > 0
    assert requests.get(f"{service}/healthz", timeout=10).status_code == 200


# ---------------------------------------------------------------------- local testing mode
def test_local_testing_mode(cascade):
    """The same application with no cluster: deployments run in this process."""
    from ray import serve

    from prodcat.serve.app import build_app

    handle = serve.run(build_app(_args(cascade)), name="local", _local_testing_mode=True)
    result = handle.categorize.remote({"products": _products(cascade, 4)}).result()
    assert result["status"] == 200
    preds = result["body"]["predictions"]
    assert [p["id"] for p in preds] == [r["product_id"] for r in cascade["products"].to_pylist()[:4]]
    assert all(p["stage"] in ("text", "multimodal") and p["path"] for p in preds)
    bad = handle.categorize.remote({"products": [{"title": ""}]}).result()
    assert bad["status"] == 422 and bad["body"]["predictions"][0]["error"]["code"] == "title_missing"
    assert handle.categorize.remote({"items": []}).result()["status"] == 422
