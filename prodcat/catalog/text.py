"""Text cleaning: HTML tags and entities out, whitespace normalised, length capped.

The cleaned text goes into ``title`` / ``description``; the raw text is kept beside it in
``title_raw`` / ``description_raw`` so nothing is silently dropped.
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

_BLOCK_TAGS = {"br", "p", "div", "li", "ul", "ol", "tr", "td", "h1", "h2", "h3", "h4", "strong"}
_SPACE = re.compile(r"\s+")


class _TextExtractor(HTMLParser):
    """Collects text content; block-level tags become spaces so words do not run together."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def clean_text(raw: str | None, max_chars: int) -> str | None:
    """Plain text from ``raw`` (HTML tags and entities removed, whitespace collapsed), cut to
    ``max_chars`` at a word boundary when possible. ``None`` or blank input gives ``None``."""
    if raw is None:
        return None
    text = str(raw)
    if "<" in text or "&" in text:
        parser = _TextExtractor()
        parser.feed(text)
        parser.close()
        text = html.unescape("".join(parser.parts))  # entities double-escaped in some exports
    text = _SPACE.sub(" ", text).strip()
    if not text:
        return None
    if len(text) > max_chars:
        cut = text[:max_chars]
        space = cut.rfind(" ")
        text = cut[:space] if space > max_chars * 0.8 else cut
    return text
