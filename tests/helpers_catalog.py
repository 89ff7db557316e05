"""Test helpers: small slices of the real exports, written by the tests themselves."""

from __future__ import annotations

import csv
import gzip
import io
from pathlib import Path

from prodcat.catalog.adapter import load_adapter


def slice_export(platform: str, out_dir: Path, records: int = 40, gzip_it: bool = False) -> Path:
    """Copy the first ``records`` records of a platform's real export (CSV: with its header) to
    ``out_dir``, keeping the format; CSV records may span lines, so they are re-written by ``csv``."""
    config = load_adapter(platform)
    source = Path(config.export_uri())
    buf = io.StringIO()
    with gzip.open(source, "rt", encoding="utf-8", newline="") as f:
        if config.format == "csv":
            writer = csv.writer(buf)
            for i, row in enumerate(csv.reader(f)):
                writer.writerow(row)
                if i >= records:
                    break
        else:
            for i, line in enumerate(f):
                buf.write(line)
                if i + 1 >= records:
                    break
    name = source.name if gzip_it else source.name.removesuffix(".gz")
    target = out_dir / platform / name
    target.parent.mkdir(parents=True, exist_ok=True)
    data = buf.getvalue().encode("utf-8")
    target.write_bytes(gzip.compress(data) if gzip_it else data)
    return target
