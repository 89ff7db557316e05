"""The Serve ingress's guards without Ray: API-key authentication and admission control as ASGI
middleware (on a small FastAPI app through Starlette's test client), and the one decode of an
image (size check from the header before any pixel is decoded, only the documented formats)."""

from __future__ import annotations

import asyncio
import io
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI

from prodcat.embed.imaging import ImageDecodeError
from prodcat.serve import guard
from prodcat.serve.inputs import IMAGE_STATUS, Gates, PreparedProduct, decode_pixels, prepare
from prodcat.serve.schemas import AppArgs, IngressDeployment, Limits, ProductIn

pytestmark = pytest.mark.unit


@pytest.fixture
def client():
    """A FastAPI app with the ingress's middleware (settings reset afterwards)."""
    app = FastAPI()

    @app.post("/v1/categorize")
    async def categorize():
        return {"ok": True}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    app.add_middleware(guard.Admission)
    app.add_middleware(guard.ApiKeyAuth)
    # Served over real HTTP on loopback (uvicorn on a free port, in a thread), as the ingress is:
    # starlette's in-process TestClient is deprecated and skips the HTTP layer.
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):                                          # up to 5 s to bind
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started, "uvicorn did not start on loopback"
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
        yield http
    server.should_exit = True
    thread.join(timeout=10)
    guard.configure(None, None)


def test_api_key_from_env_or_file(tmp_path, monkeypatch):
    assert guard.read_api_key(None, None) is None                 # off by default
    monkeypatch.setenv("PRODCAT_TEST_KEY", " s3cret \n")
    assert guard.read_api_key("PRODCAT_TEST_KEY", None) == "s3cret"
    key_file = tmp_path / "key"
    key_file.write_text("from-file\nignored\n")
    assert guard.read_api_key(None, str(key_file)) == "from-file"
    with pytest.raises(ValueError, match="empty"):                # a named but empty source
        guard.read_api_key("PRODCAT_NO_SUCH_VARIABLE", None)
    with pytest.raises(ValueError, match="does not exist"):
        guard.read_api_key(None, str(tmp_path / "missing"))


def test_api_key_required_when_configured(client):
    assert client.post("/v1/categorize").status_code == 200       # no key configured: open
    guard.configure("s3cret", None)
    r = client.post("/v1/categorize")
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert client.post("/v1/categorize", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert client.post("/v1/categorize", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.post("/v1/categorize", headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.get("/healthz").status_code == 200              # probes stay open


def test_admission_refuses_beyond_the_limit_in_json(client):
    guard.configure(None, 0, retry_after_s=3)                     # nothing admitted
    r = client.post("/v1/categorize")
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "overloaded"
    assert client.get("/healthz").status_code == 200              # only categorize is counted
    guard.configure(None, 1)
    assert client.post("/v1/categorize").status_code == 200
    assert guard.SETTINGS["in_flight"] == 0                       # released after each request


def test_ingress_must_accept_more_than_it_admits():
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        IngressDeployment(max_admitted=16, max_ongoing_requests=16)
    assert AppArgs().auth.api_key_env is None and AppArgs().auth.api_key_file is None


# ---------------------------------------------------------------------- images: decoded once
def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height and whose data is one tiny (wrong) row."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4))
            + chunk(b"IEND", b""))


def _encoded(fmt: str, size=(640, 480)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format=fmt)
    return buf.getvalue()


def test_pixel_count_is_checked_from_the_header_before_decoding():
    """Our own limit, below PIL's bomb limit (89 MP): a header claiming 8,000 x 8,000 (64 MP) is
    refused at 40 MP before any pixel is decoded (its data holds a single tiny row, so a decode
    would fail differently), and the same image passes the header check under a higher limit."""
    bomb = _png_header(8_000, 8_000)                              # 64 megapixels, 80 bytes
    with pytest.raises(ImageDecodeError) as err:
        decode_pixels(bomb, Limits(max_image_pixels=40_000_000), (32,))
    assert err.value.reason == "image_too_many_pixels" and "40" in str(err.value)
    assert IMAGE_STATUS[err.value.reason] == 413
    with pytest.raises(ImageDecodeError) as err:                  # past the header: truncated data
        decode_pixels(bomb, Limits(max_image_pixels=80_000_000), (32,))
    assert err.value.reason != "image_too_many_pixels"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP"])
def test_documented_formats_decode_straight_to_the_input_sizes(fmt):
    pixels = decode_pixels(_encoded(fmt), Limits(), (32, 64))
    assert {s: p.shape for s, p in pixels.items()} == {32: (32, 32, 3), 64: (64, 64, 3)}
    assert pixels[32].dtype == np.uint8 and pixels[32][16, 16, 0] > 150      # red survives


def test_tiff_is_refused_with_415():
    with pytest.raises(ImageDecodeError) as err:
        decode_pixels(_encoded("TIFF"), Limits(), (32,))
    assert err.value.reason == "image_unsupported_format" and "TIFF" in str(err.value)
    assert IMAGE_STATUS[err.value.reason] == 415


def test_prepare_passes_decoded_pixels_not_bytes():
    import base64

    gates = Gates(asyncio.Semaphore(2), asyncio.Semaphore(2), (32,))
    product = ProductIn(title="red boots", image_base64=base64.b64encode(_encoded("JPEG")).decode())
    prepared = asyncio.run(prepare(0, product, Limits(), AppArgs().fetch, gates))
    assert isinstance(prepared, PreparedProduct) and prepared.image_status == "ok"
    item = prepared.as_item(with_image=True)
    assert item["image_pixels"][32].shape == (32, 32, 3) and "image_bytes" not in item
    assert "image_pixels" not in prepared.as_item(with_image=False)
