"""Per-product input checks of the HTTP API: text limits, base64, image bytes and pixels, URLs.

Each product becomes either a :class:`PreparedProduct` (text plus validated image bytes) or a
:class:`ProductProblem` with its own 4xx status, so one bad product never fails its neighbours.
Images are decoded here once, under the limits, to refuse corrupt files and decompression bombs
before they reach a model replica.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from prodcat.catalog.text import clean_text
from prodcat.embed.imaging import ImageDecodeError, ImageLimits, decode_image
from prodcat.serve.fetch import FetchConfig, FetchError, fetch_url
from prodcat.serve.schemas import Limits, ProductIn

#: text is cleaned (HTML out) and capped as the catalogue build does for training (AdapterConfig)
MODEL_TITLE_CHARS, MODEL_DESCRIPTION_CHARS = 256, 2000

#: HTTP status per image failure reason (prodcat.embed.imaging.REASONS)
IMAGE_STATUS = {"image_too_large": 413, "image_too_many_pixels": 413, "image_not_image": 422,
                "image_corrupt": 422, "image_missing": 422, "image_read_error": 422}


@dataclass
class PreparedProduct:
    """A product that passed the checks; ``image`` holds validated image file bytes or None."""

    index: int
    id: str | None
    title: str
    description: str | None
    image: bytes | None

    def as_item(self, with_image: bool) -> dict:
        """The dict a stage replica takes (``prodcat.cascade.stage.StageRunner`` batch row)."""
        return {"product_id": self.id or str(self.index), "title": self.title,
                "description": self.description, "image_bytes": self.image if with_image else None}


@dataclass
class ProductProblem:
    """Why a product is not categorized: a code, a message and its 4xx status."""

    index: int
    id: str | None
    code: str
    message: str
    status: int


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


def check_image(data: bytes, limits: Limits) -> None:
    """Decode once under the byte and pixel limits.

    Raises:
        ImageDecodeError: with the reason (too large, too many pixels, not an image, corrupt).
    """
    decode_image(data, ImageLimits(max_bytes=limits.max_image_bytes,
                                   max_pixels=limits.max_image_pixels))


def prepare(index: int, product: ProductIn, limits: Limits,
            fetch: FetchConfig) -> PreparedProduct | ProductProblem:
    """All per-product checks; fetches ``image_url`` under the SSRF guard (blocking: call it
    from a worker thread in async code)."""
    text_problem = check_text(index, product, limits)
    if text_problem:
        return text_problem

    def problem(code: str, message: str, status: int) -> ProductProblem:
        return ProductProblem(index, product.id, code, message, status)

    image = None
    if product.image_base64 is not None:
        try:
            image = decode_base64(product.image_base64, limits)
        except ValueError as err:
            code, message = err.args
            return problem(code, message, 413 if code == "image_too_large" else 400)
    elif product.image_url is not None:
        capped = fetch.model_copy(update={"max_bytes": min(fetch.max_bytes, limits.max_image_bytes)})
        try:
            image = fetch_url(product.image_url, capped)
        except FetchError as err:
            return problem(err.reason, str(err), err.status)
    if image is not None:
        try:
            check_image(image, limits)
        except ImageDecodeError as err:
            return problem(err.reason, str(err), IMAGE_STATUS.get(err.reason, 422))
    title = clean_text(product.title, MODEL_TITLE_CHARS)
    if title is None:
        return problem("title_missing", "title has no text once HTML is removed", 422)
    description = clean_text(product.description, MODEL_DESCRIPTION_CHARS)
    return PreparedProduct(index, product.id, title, description, image)
