"""Safe image decoding: every bad-image case maps to its reason code, never to a crash."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest

from prodcat.embed.imaging import (
    REASONS,
    ImageDecodeError,
    ImageLimits,
    decode_batch,
    decode_image,
    load_image,
    load_pixels,
    to_square,
)

pytestmark = pytest.mark.unit


def _encoded(size=(60, 80), fmt="JPEG", mode="RGB", colour=(200, 30, 30, 255)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new(mode, size, colour[: len(mode)]).save(buf, format=fmt)
    return buf.getvalue()


def _png_with_header_size(width: int, height: int) -> bytes:
    """A valid 1×1 PNG whose IHDR claims ``width × height`` (a decompression bomb header)."""
    data = bytearray(_encoded((1, 1), "PNG"))
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    data[ihdr:ihdr + 8] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[12:ihdr + 13])) & 0xFFFFFFFF
    data[ihdr + 13:ihdr + 17] = struct.pack(">I", crc)
    return bytes(data)


@pytest.fixture
def files(tmp_path):
    paths = {
        "ok_jpeg": _encoded(),
        "ok_png": _encoded((40, 20), "PNG"),
        "truncated": _encoded((64, 64))[:300],
        "not_image": b"<html>404 not found</html>",
        "empty": b"",
        "bomb": _png_with_header_size(100_000, 100_000),
    }
    out = {}
    for name, data in paths.items():
        (tmp_path / name).write_bytes(data)
        out[name] = str(tmp_path / name)
    out["missing"] = str(tmp_path / "nope.jpg")
    return out


def test_good_images_decode_to_rgb(files):
    image = load_image(files["ok_jpeg"])
    assert image.mode == "RGB" and image.size == (60, 80)
    assert load_image(files["ok_png"]).size == (40, 20)


@pytest.mark.parametrize("name, reason", [
    ("missing", "image_missing"), ("truncated", "image_corrupt"), ("not_image", "image_not_image"),
    ("empty", "image_not_image"), ("bomb", "image_too_many_pixels")])
def test_bad_files_raise_their_reason(files, name, reason):
    with pytest.raises(ImageDecodeError) as err:
        load_image(files[name])
    assert err.value.reason == reason


def test_no_uri_is_no_image():
    for uri in (None, "", float("nan")):
        with pytest.raises(ImageDecodeError) as err:
            load_image(uri)
        assert err.value.reason == "no_image"


def test_limits_on_bytes_and_pixels(files):
    with pytest.raises(ImageDecodeError) as err:
        load_image(files["ok_jpeg"], ImageLimits(max_bytes=100))
    assert err.value.reason == "image_too_large"
    with pytest.raises(ImageDecodeError) as err:
        decode_image(_encoded((60, 80)), ImageLimits(max_pixels=59 * 80))
    assert err.value.reason == "image_too_many_pixels"


def test_transparency_is_composited_on_white():
    data = _encoded((10, 10), "PNG", mode="RGBA", colour=(0, 0, 0, 0))
    assert np.asarray(decode_image(data)).min() == 255


@pytest.mark.parametrize("mode", ["pad", "crop", "stretch"])
def test_to_square_shapes(mode):
    from PIL import Image

    out = to_square(Image.new("RGB", (60, 80), (10, 20, 30)), 96, mode)
    assert out.shape == (96, 96, 3) and out.dtype == np.uint8
    if mode == "pad":  # 60×80 → 72×96 centred: white columns left and right
        assert (out[:, :10] == 255).all() and (out[:, 48] == (10, 20, 30)).all()


def test_load_pixels_and_decode_batch(files):
    assert load_pixels(files["ok_jpeg"], 32).shape == (32, 32, 3)
    sources = [files["ok_jpeg"], files["missing"], None, open(files["ok_png"], "rb").read(),
               files["truncated"], files["bomb"]]
    pixels, statuses = decode_batch(sources, [16, 32])
    assert statuses == ["ok", "image_missing", "no_image", "ok", "image_corrupt",
                        "image_too_many_pixels"]
    assert pixels[16].shape == (6, 16, 16, 3) and pixels[32].shape == (6, 32, 32, 3)
    assert pixels[32][1].max() == 0 and pixels[32][0].max() > 0


def test_error_reason_is_checked():
    assert set(REASONS) >= {"no_image", "image_corrupt", "image_too_many_pixels"}
    with pytest.raises(ValueError):
        ImageDecodeError("bad_reason")
