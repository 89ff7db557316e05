"""Errors about input data that a person must act on (the CLI prints them without a traceback).

:class:`DataError` is the base: a file that cannot be read, a store in an old format. Each message
names the file and says what to do. Stages subclass it (``prodcat.embed.store.UnreadableStorePart``,
``StoreFormatError``); :class:`UnreadableFile` is the general case (a product table, a checkpoint
file). Nothing that cannot be read is skipped in silence: a command stops on these unless the user
asked to skip (``--skip-unreadable``), and then the skipped count is reported.
"""

from __future__ import annotations


class DataError(Exception):
    """An input that cannot be used; the message names it and says what to do."""


class UnreadableFile(DataError, OSError):
    """A file that exists but cannot be read or parsed (corrupt, truncated, wrong format).

    Attributes:
        uri: the file (local path or ``s3://`` URI).
    """

    def __init__(self, uri: str, detail: str, hint: str = "") -> None:
        super().__init__(f"cannot read {uri}: {detail.rstrip('. ')}" + (f". {hint}" if hint else ""))
        self.uri = uri
