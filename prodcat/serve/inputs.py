"""Per-product input checks of the HTTP API: text limits, base64, image bytes and pixels, URLs.

Each product becomes either a :class:`PreparedProduct` (text plus the decoded image) or a
:class:`ProductProblem` with its own 4xx status, so one bad product never fails its neighbours.
Images are decoded here once, under the limits and only in the documented formats (JPEG, PNG,
WebP, GIF, BMP): the byte size first, then the header alone (width × height against
``max_image_pixels``) before any pixel is decoded, JPEG at reduced scale (PIL ``draft``), and
resized straight to the stage's input sizes. The stage replicas get those pixels
(``uint8 [S, S, 3]`` per input size S), never the file, so nothing is decoded twice and no
full-resolution image leaves this module.

Letters: S image input size of the multimodal stage's encoders (px).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from dataclasses import dataclass, field

import numpy as np

from prodcat.catalog.text import clean_text
from prodcat.embed.imaging import ImageDecodeError, ImageLimits, decode_image, to_square
from prodcat.serve.fetch import FetchConfig, FetchError, fetch_url_async
from prodcat.serve.schemas import Limits, ProductIn

#: text is cleaned (HTML out) and capped as the catalogue build does for training (AdapterConfig)
MODEL_TITLE_CHARS, MODEL_DESCRIPTION_CHARS = 256, 2000

#: image formats the API accepts (PIL names); TIFF and the rest get ``image_unsupported_format``
API_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")

#: HTTP status per image failure reason (prodcat.embed.imaging.REASONS)
IMAGE_STATUS = {"image_too_large": 413, "image_too_many_pixels": 413, "image_not_image": 422,
                "image_unsupported_format": 415, "image_corrupt": 422, "image_missing": 422,
                "image_read_error": 422}


@dataclass
class PreparedProduct:
    """A product that passed the checks; ``pixels`` holds its decoded image per input size S
    (``uint8 [S, S, 3]``), empty when it has none; ``image_status`` is ``ok`` or ``no_image``."""

    index: int
    id: str | None
    title: str
    description: str | None
    pixels: dict[int, np.ndarray] = field(default_factory=dict)
    image_status: str = "no_image"

    def as_item(self, with_image: bool) -> dict:
        """The dict a stage replica takes (``prodcat.cascade.stage.StageRunner.predict_items``)."""
        item = {"product_id": self.id or str(self.index), "title": self.title,
                "description": self.description}
        if with_image:
            item.update(image_pixels=self.pixels or None, image_status=self.image_status)
        return item


@dataclass
class ProductProblem:
    """Why a product is not categorized: a code, a message and its 4xx status."""

    index: int
    id: str | None
    code: str
    message: str
    status: int


@dataclass
class Gates:
    """Per-replica bounds on the costly parts of preparing products.

    Attributes:
        fetches: image URL fetches at once (``fetch.max_in_flight``).
        decodes: image decodes at once (``limits.max_decodes_in_flight``).
        sizes: the input sizes S the multimodal stage's image encoders take.
    """

    fetches: asyncio.Semaphore
    decodes: asyncio.Semaphore
    sizes: tuple[int, ...]


def check_text(index: int, product: ProductIn, limits: Limits) -> ProductProblem | None:
    """Title present and within limits; description within limits."""
    def problem(code: str, message: str, status: int) -> ProductProblem:
        return ProductProblem(index, product.id, code, message, status)

    if not product.title or not product.title.strip():
        return problem("title_missing", "title is empty", 422)
    if len(product.title) > limits.max_title_chars:
        return problem("title_too_long", f"title has {len(product.title)} characters; the limit "
                       f"is {limits.max_title_chars}", 413)
    if product.description and len(product.description) > limits.max_description_chars:
        return problem("description_too_long", f"description has {len(product.description)} "
                       f"characters; the limit is {limits.max_description_chars}", 413)
    if product.image_base64 is not None and product.image_url is not None:
        return problem("image_ambiguous", "give image_base64 or image_url, not both", 422)
    return None


def decode_base64(text: str, limits: Limits) -> bytes:
    """Strict base64 (standard alphabet, padding required; whitespace and a ``data:`` URI prefix
    tolerated) with the byte cap checked before decoding.

    Raises:
        ValueError: ``("image_bad_base64" | "image_too_large", message)``.
    """
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    text = "".join(text.split())
    if len(text) // 4 * 3 > limits.max_image_bytes + 3:
        raise ValueError("image_too_large", f"image is larger than {limits.max_image_bytes} bytes")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ValueError("image_bad_base64", f"image_base64 is not valid base64: {err}") from None


def decode_pixels(data: bytes, limits: Limits, sizes: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Decode once under the byte and pixel limits, in the API's formats, straight to each input
    size: ``{S: uint8 [S, S, 3]}`` (a size-64 check decode when ``sizes`` is empty).

    Raises:
        ImageDecodeError: with the reason (too large, too many pixels, unsupported format, not an
            image, corrupt).
    """
    image_limits = ImageLimits(max_bytes=limits.max_image_bytes, max_pixels=limits.max_image_pixels)
    image = decode_image(data, image_limits, draft_size=max(sizes, default=64), formats=API_FORMATS)
    return {s: to_square(image, s, image_limits.resize_mode) for s in sizes}


async def _image_bytes(product: ProductIn, limits: Limits, fetch: FetchConfig,
                       gates: Gates) -> bytes | None:
    """The product's image file: base64 decoded, or fetched under the SSRF guard and deadline.

    Raises:
        ValueError: ``(code, message, status)`` of the failure.
    """
    if product.image_base64 is not None:
        try:
            return decode_base64(product.image_base64, limits)
        except ValueError as err:
            code, message = err.args
            raise ValueError(code, message, 413 if code == "image_too_large" else 400) from None
    if product.image_url is None:
        return None
    capped = fetch.model_copy(update={"max_bytes": min(fetch.max_bytes, limits.max_image_bytes)})
    try:
        async with gates.fetches:
            return await fetch_url_async(product.image_url, capped)
    except FetchError as err:
        raise ValueError(err.reason, str(err), err.status) from None


async def prepare(index: int, product: ProductIn, limits: Limits, fetch: FetchConfig,
                  gates: Gates) -> PreparedProduct | ProductProblem:
    """All per-product checks: text, then the image (base64, or ``image_url`` fetched under the
    SSRF guard with at most ``gates.fetches`` fetches in flight), decoded once in a worker thread
    (at most ``gates.decodes`` at once)."""
    text_problem = check_text(index, product, limits)
    if text_problem:
        return text_problem

    def problem(code: str, message: str, status: int) -> ProductProblem:
        return ProductProblem(index, product.id, code, message, status)

    title = clean_text(product.title, MODEL_TITLE_CHARS)
    if title is None:
        return problem("title_missing", "title has no text once HTML is removed", 422)
    try:
        image = await _image_bytes(product, limits, fetch, gates)
    except ValueError as err:
        return problem(*err.args)
    pixels: dict[int, np.ndarray] = {}
    if image is not None:
        try:
            async with gates.decodes:
                pixels = await asyncio.to_thread(decode_pixels, image, limits, gates.sizes)
        except ImageDecodeError as err:
            return problem(err.reason, str(err), IMAGE_STATUS.get(err.reason, 422))
    description = clean_text(product.description, MODEL_DESCRIPTION_CHARS)
    return PreparedProduct(index, product.id, title, description, pixels,
                           "ok" if image is not None else "no_image")
