"""The one report-writing helper: Markdown tables, number formatting, PNG figures.

Every stage writes a Markdown report next to its machine-readable JSON (catalogue build,
evaluation, cascade, sweeps, the main job); they all build their tables and plots here, so a
number looks the same everywhere and every PNG is written the same way (matplotlib's Agg
backend, local path or ``s3://``).

    lines = ["# Evaluation", "", markdown_table(["model", "hF"], [["tfidf", 0.9134]])]
    fig, ax = figure(figsize=(6, 4)); ax.plot(...); save_png(fig, "runs/x/plot.png")
"""

from __future__ import annotations

import io
import math
from typing import Any, Iterable, Sequence

from prodcat.core import storage


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: ints with thousands separators, floats to ``digits`` decimals (very small
    ones in ``g`` notation), NaN/None empty as ``-``, ``|`` escaped, lists as ``a, b``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") in "iu"):
        return f"{int(value):,}"
    if isinstance(value, float) or hasattr(value, "dtype"):
        value = float(value)
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value != 0 and abs(value) < 10 ** -digits:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt(v, digits) for v in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], digits: int = 3) -> str:
    """A GitHub Markdown table; cells go through :func:`fmt` unless they are already strings.

    Raises:
        ValueError: when a row has another number of cells than ``headers``.
    """
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows:
        row = list(row)
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells for {len(headers)} headers: {row}")
        cells = [c.replace("|", "\\|") if isinstance(c, str) else fmt(c, digits) for c in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def figure(nrows: int = 1, ncols: int = 1, **kwargs):
    """``(fig, axes)`` from ``matplotlib.pyplot.subplots`` on the Agg backend (no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(nrows, ncols, **kwargs)


def png_bytes(fig, dpi: int = 110) -> bytes:
    """The figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def save_png(fig, uri: str, dpi: int = 110) -> str:
    """Write the figure as a PNG to ``uri`` (local path or ``s3://``), close it; returns ``uri``."""
    storage.write_bytes(uri, png_bytes(fig, dpi))
    return uri


def replace_section(markdown: str, heading: str, section: str) -> str:
    """``markdown`` with the ``## `` section that starts with ``heading`` (up to the next ``## ``
    heading) removed and ``section`` appended at the end; a document without that section simply
    gets it appended. Benchmarks use it to keep one current section each in a README.

    >>> replace_section("# B\\n\\n## A\\nold\\n\\n## C\\nc\\n", "## A", "## A\\nnew\\n")
    '# B\\n\\n## C\\nc\\n\\n## A\\nnew\\n'
    """
    if heading in markdown:
        head, _, rest = markdown.partition(heading)
        nxt = rest.find("\n## ")
        markdown = head + (rest[nxt + 1:] if nxt >= 0 else "")
    return markdown.rstrip() + "\n\n" + section
