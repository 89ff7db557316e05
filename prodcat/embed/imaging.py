"""Safe image decoding with limits, shared by the embedding pipeline and the Serve stage.

Product images come from many shops: some are missing, truncated, not images at all, or
decompression bombs (a small file that decodes to a gigapixel canvas). :func:`load_image` and
:func:`decode_image` check the byte size before reading, the pixel count from the header before
decoding, and turn every failure into :class:`ImageDecodeError` with a machine-readable
``reason`` (one of :data:`REASONS`) that the embedding store records as the image status.

Shapes: an image ready for an encoder is ``uint8 [S, S, 3]`` (RGB, S = input size in px); a
batch is ``[B, S, S, 3]``.
"""

from __future__ import annotations

import io
import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from prodcat.core import storage
from prodcat.core.config import StrictModel

#: reason codes carried by :class:`ImageDecodeError` (and stored as ``status_<image feature>``)
REASONS = (
    "no_image",               # the product names no image
    "image_missing",          # the file or object does not exist
    "image_read_error",       # the file exists but could not be read (permissions, network)
    "image_too_large",        # more bytes than ImageLimits.max_bytes
    "image_too_many_pixels",  # width × height above ImageLimits.max_pixels (decompression bomb)
    "image_not_image",        # bytes that no allowed image format recognises
    "image_unsupported_format",  # a known image format outside the allowed ones (e.g. TIFF)
    "image_corrupt",          # a recognised format that fails to decode (truncated, damaged)
)

#: formats PIL may open; others (EPS via Ghostscript, exotic plugins) are refused
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: signatures of image formats that may be refused by a narrower ``formats`` list: a refused
#: file gets ``image_unsupported_format`` (and the format's name) instead of ``image_not_image``
_SIGNATURES = ((b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"), (b"\xff\xd8\xff", "JPEG"),
               (b"\x89PNG\r\n\x1a\n", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"8BPS", "PSD"), (b"\x00\x00\x01\x00", "ICO"), (b"%!PS", "EPS"),
               (b"\x00\x00\x00\x0cjP  ", "JPEG2000"))


def sniff_format(data: bytes) -> str | None:
    """The image format named by the first bytes of ``data`` (WEBP by its RIFF header), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return next((name for magic, name in _SIGNATURES if data.startswith(magic)), None)


class ImageDecodeError(Exception):
    """An image that cannot be used; ``reason`` is one of :data:`REASONS`, ``detail`` says why."""

    def __init__(self, reason: str, detail: str = "") -> None:
        if reason not in REASONS:
            raise ValueError(f"unknown image failure reason {reason!r}; one of {REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class ImageLimits(StrictModel):
    """Limits applied before and while decoding one image."""

    max_bytes: int = Field(20 * 1024**2, gt=0, description="largest encoded file accepted, bytes")
    max_pixels: int = Field(40_000_000, gt=0, description="largest width × height accepted, px")
    resize_mode: Literal["pad", "crop", "stretch"] = Field(
        "pad", description="to a square: pad (keep all, white border), crop (centre), stretch")


def decode_image(data: bytes, limits: ImageLimits | None = None,
                 draft_size: int | None = None, formats: tuple[str, ...] = ALLOWED_FORMATS):
    """Decode encoded image bytes into an RGB ``PIL.Image``.

    The byte size is checked first, then the header alone is read (``Image.open`` is lazy) and
    width × height checked against ``limits.max_pixels`` before any pixel is decoded.
    ``draft_size`` lets JPEG decode at a reduced scale (≥ that many px on the short side, PIL's
    ``draft``), which makes large photos much cheaper when they will be shrunk anyway.
    ``formats`` are the PIL format names allowed (the HTTP API narrows them).

    Raises:
        ImageDecodeError: ``image_too_large``, ``image_not_image``, ``image_unsupported_format``,
            ``image_too_many_pixels`` or ``image_corrupt``.
    """
    from PIL import Image, UnidentifiedImageError

    limits = limits or ImageLimits()
    if len(data) > limits.max_bytes:
        raise ImageDecodeError("image_too_large", f"{len(data)} bytes > max_bytes={limits.max_bytes}")
    if not data:
        raise ImageDecodeError("image_not_image", "empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=list(formats))
    except UnidentifiedImageError:
        known = sniff_format(data)
        if known and known not in formats:
            raise ImageDecodeError("image_unsupported_format", f"{known} is not accepted; use "
                                   f"{', '.join(formats)}") from None
        raise ImageDecodeError("image_not_image", "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError("image_too_many_pixels", str(err)) from None
    except Exception as err:  # a header that parses halfway
        raise ImageDecodeError("image_corrupt", f"{type(err).__name__}: {err}") from None
    width, height = image.size
    if width * height > limits.max_pixels:
        raise ImageDecodeError("image_too_many_pixels",
                               f"{width}×{height} px > max_pixels={limits.max_pixels}")
    if width <= 0 or height <= 0:
        raise ImageDecodeError("image_corrupt", f"empty canvas {width}×{height}")
    try:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
        image.load()  # raises on truncated data (LOAD_TRUNCATED_IMAGES stays False)
        return _to_rgb(image)
    except Exception as err:
        raise ImageDecodeError("image_corrupt", f"{type(err).__name__}: {err}") from None


def _to_rgb(image):
    """RGB copy; transparency is composited on white (product photos sit on white)."""
    from PIL import Image

    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def load_image(uri: str | None, limits: ImageLimits | None = None, draft_size: int | None = None):
    """Read and decode the image at ``uri`` (local path or ``s3://``) into an RGB ``PIL.Image``.

    Raises:
        ImageDecodeError: ``no_image`` (``uri`` empty), ``image_missing``, ``image_read_error``,
            ``image_too_large`` (checked from the file size before reading when possible) and
            the reasons of :func:`decode_image`.
    """

    limits = limits or ImageLimits()
    if not isinstance(uri, str) or not uri.strip():
        raise ImageDecodeError("no_image", "the product has no image")
    try:
        fs, path = storage.filesystem(uri)
        info = fs.get_file_info(path)
        if info.type.name == "NotFound":
            raise ImageDecodeError("image_missing", f"no such file: {uri}")
        if info.size is not None and info.size > limits.max_bytes:
            raise ImageDecodeError("image_too_large",
                                   f"{info.size} bytes > max_bytes={limits.max_bytes}")
        with fs.open_input_stream(path) as f:
            data = f.read(limits.max_bytes + 1)
    except ImageDecodeError:
        raise
    except Exception as err:
        raise ImageDecodeError("image_read_error", f"{type(err).__name__}: {err}") from None
    return decode_image(data, limits, draft_size)


def to_square(image, size: int, mode: str = "pad", interpolation: str = "bicubic") -> np.ndarray:
    """Resize an RGB ``PIL.Image`` to ``uint8 [size, size, 3]``.

    ``pad`` fits the whole image and fills the border with white; ``crop`` fills the square and
    cuts the longer side centrally; ``stretch`` ignores the aspect ratio.
    """
    from PIL import Image

    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR,
                "nearest": Image.NEAREST}.get(interpolation, Image.BICUBIC)
    width, height = image.size
    if mode == "stretch":
        return np.asarray(image.resize((size, size), resample), dtype=np.uint8)
    scale = (min if mode == "pad" else max)(size / width, size / height)
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new, resample) if new != image.size else image
    if mode == "crop":
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        return np.asarray(resized.crop((left, top, left + size, top + size)), dtype=np.uint8)
    canvas = Image.new("RGB", (size, size), (255, 255, 255))
    canvas.paste(resized, ((size - new[0]) // 2, (size - new[1]) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def load_pixels(uri: str | None, size: int, limits: ImageLimits | None = None,
                interpolation: str = "bicubic") -> np.ndarray:
    """:func:`load_image` then :func:`to_square`: ``uint8 [size, size, 3]``.

    Raises:
        ImageDecodeError: as :func:`load_image`.
    """
    limits = limits or ImageLimits()
    image = load_image(uri, limits, draft_size=size)
    return to_square(image, size, limits.resize_mode, interpolation)


def decode_batch(sources: list, sizes: list[int], limits: ImageLimits | None = None,
                 interpolation: str = "bicubic") -> tuple[dict[int, np.ndarray], list[str]]:
    """Decode a batch of images once each and resize to every size in ``sizes``.

    ``sources[i]`` is a URI (local path or ``s3://``), the encoded bytes themselves, or None.
    Returns ``({size: uint8 [B, size, size, 3]}, statuses)`` where ``statuses[i]`` is ``"ok"`` or
    the failure reason; a failed image's pixels are all zero. Never raises for a bad image.
    """
    limits = limits or ImageLimits()
    pixels = {s: np.zeros((len(sources), s, s, 3), dtype=np.uint8) for s in sizes}
    statuses = []
    draft = max(sizes) if sizes else None
    for i, source in enumerate(sources):
        try:
            if isinstance(source, (bytes, bytearray, memoryview)):
                image = decode_image(bytes(source), limits, draft_size=draft)
            else:
                image = load_image(source, limits, draft_size=draft)
            for s in sizes:
                pixels[s][i] = to_square(image, s, limits.resize_mode, interpolation)
            statuses.append("ok")
        except ImageDecodeError as err:
            statuses.append(err.reason)
    return pixels, statuses
