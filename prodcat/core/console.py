"""What a person sees on the terminal: prodcat's own lines, progress, and Ray kept out of the way.

prodcat prints short lines prefixed by the stage (``[embed] 1,024 / 2,937 products (35 %),
51.2 products/s, ETA 0:37``); long loops report through :class:`Progress` (a line every few
seconds with counts, rate and ETA), training one line per epoch.

Ray's own logging goes to files, not the terminal, unless ``--verbose`` is given:

- the driver's Ray loggers (``ray``, ``ray.data``, ``ray.train``, ``ray.tune``, ``ray.serve``)
  write their INFO and above to ``<log folder>/ray.log`` (the run folder's ``logs/`` when a command has a
  local output folder); only their warnings and errors reach the terminal;
- the output of Ray's worker processes (actors, tasks, Ray Train workers) stays in Ray's session
  folder (``<session>/logs``, named once at start-up) instead of being streamed to the driver.

Messages that are expected on a machine without a GPU or a dashboard are not warnings for a
prodcat user and go to the file only: Ray Data's "progress bars disabled" (prodcat prints its own
progress) and Ray's "token authentication is enabled" notice for a local instance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

VERBOSE_ENV = "PRODCAT_VERBOSE"
LOG_DIR_ENV = "PRODCAT_LOG_DIR"
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
#: message starts of Ray records that are expected here and explained above: file only
EXPECTED = ("Progress bars disabled", "Token authentication is enabled",
            "Generated new authentication token")
_FORMAT = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d -- %(message)s"


_terminal = None   # the terminal's stream while other code's print() goes to a file (prints_to)


def say(message: str) -> None:
    """Print one line for a person (stdout, flushed; the terminal also inside :func:`prints_to`)."""
    print(message, file=_terminal or sys.stdout, flush=True)


@contextlib.contextmanager
def prints_to(path: str | Path | None) -> Iterator[Path | None]:
    """Inside the block, what other code prints (Ray Tune's status tables) is appended to
    ``path`` while :func:`say` keeps writing to the terminal. With :func:`verbose`, or no
    ``path``, nothing changes. Yields the file, or None when nothing is redirected."""
    global _terminal
    if path is None or verbose() or _terminal is not None:
        yield None
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as file:
        _terminal = sys.stdout
        try:
            with contextlib.redirect_stdout(file):
                yield path
        finally:
            _terminal = None


def verbose() -> bool:
    """True when Ray's own output should reach the terminal (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0", "false")


def set_verbose(value: bool) -> None:
    """Set :func:`verbose` for this process and the Ray workers it starts (environment)."""
    os.environ[VERBOSE_ENV] = "1" if value else "0"


def log_dir() -> Path | None:
    """The folder for Ray's driver log of this command (the main job's ``<run folder>/logs``, a
    subcommand's ``<--output>/_logs``), if set."""
    value = os.environ.get(LOG_DIR_ENV)
    return Path(value) if value else None


def set_log_dir(path: str | Path) -> None:
    """Set :func:`log_dir` for this process (the CLI does, from the command's local output)."""
    os.environ[LOG_DIR_ENV] = str(path)


class _Expected(logging.Filter):
    """Drops the expected Ray messages (:data:`EXPECTED`) from terminal handlers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(EXPECTED)


def route_ray_logs(log_dir: str | Path | None) -> Path | None:
    """Send the driver's Ray log records to ``<log_dir>/ray.log`` and keep only warnings (minus
    the expected ones) on the terminal; with :func:`verbose`, leave the terminal as Ray set it.

    Call before ``ray.init`` (so its start-up notices are routed too); Ray Data configures its
    logger when first imported, so it is imported here first. Returns the log file, or None when
    ``log_dir`` is None.
    """
    import ray.data  # noqa: F401  (configures the 'ray.data' logger; must happen before we adjust it)

    path = None
    file_handler = None
    if log_dir is not None:
        path = Path(log_dir) / "ray.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(path, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if getattr(handler, "_prodcat", False):
                logger.removeHandler(handler)  # a previous run's file in this process
            elif isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler) and not verbose():
                handler.setLevel(max(handler.level, logging.WARNING))
                if not any(isinstance(f, _Expected) for f in handler.filters):
                    handler.addFilter(_Expected())
        if file_handler is not None and (name == "ray" or not logger.propagate):
            file_handler._prodcat = True  # type: ignore[attr-defined]
            logger.addHandler(file_handler)
    return path


def clock(seconds: float) -> str:
    """``m:ss`` (or ``h:mm:ss``) of a duration in seconds, for progress lines."""
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


_clock = clock


class Progress:
    """Counts, rate and ETA of a long loop, printed at most every ``every_s`` seconds.

    Example::

        progress = Progress("embed", total=2937, unit="products")
        for batch in batches:
            progress.advance(len(batch))
        progress.done()          # "[embed] 2,937 products in 0:57 (51.2 products/s)"

    Args:
        stage: the prefix shown in brackets.
        total: how many items are expected (None: unknown, no percentage or ETA).
        unit: what is counted (plural noun).
        every_s: seconds between lines (a line is also printed when ``total`` is reached).
        log: where lines go (default :func:`say`).
    """

    def __init__(self, stage: str, total: int | None, unit: str = "items", every_s: float = 5.0,
                 log: Callable[[str], None] = say) -> None:
        self.stage, self.total, self.unit, self.every_s, self.log = stage, total, unit, every_s, log
        self.count = 0
        self.start = self._last = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the progress started."""
        return time.perf_counter() - self.start

    @property
    def rate(self) -> float:
        """Items per second so far (0 before the first item)."""
        return self.count / self.elapsed if self.elapsed > 0 else 0.0

    def line(self) -> str:
        """The current progress as one line."""
        text = f"[{self.stage}] {self.count:,}"
        if self.total:
            text += f" / {self.total:,} {self.unit} ({100 * self.count / self.total:.0f} %)"
        else:
            text += f" {self.unit}"
        text += f", {self.rate:,.1f} {self.unit}/s"
        if self.total and 0 < self.count < self.total and self.rate > 0:
            text += f", ETA {clock((self.total - self.count) / self.rate)}"
        return text

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items; print a line when ``every_s`` has passed."""
        self.count += n
        now = time.perf_counter()
        if now - self._last >= self.every_s and (self.total is None or self.count < self.total):
            self._last = now
            self.log(self.line())

    def step(self, text: str) -> None:
        """Count one item and always print ``[stage] k/N text`` with the ETA (for few, slow items
        such as training runs)."""
        self.count += 1
        self._last = time.perf_counter()
        eta = ""
        if self.total and 0 < self.count < self.total:
            eta = f"; ETA {clock((self.total - self.count) * self.elapsed / self.count)}"
        of = f"/{self.total}" if self.total else ""
        self.log(f"[{self.stage}] {self.count}{of} {text}{eta}")

    def done(self, note: str = "") -> None:
        """Print the closing line: count, elapsed time and rate (plus ``note``)."""
        self.log(f"[{self.stage}] {self.count:,} {self.unit} in {clock(self.elapsed)} "
                 f"({self.rate:,.1f} {self.unit}/s)" + (f"; {note}" if note else ""))

