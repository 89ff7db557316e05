"""The ``prodcat`` command: one subcommand per module of this package, listed in the stage order
of :data:`prodcat.core.stages.COMMANDS` (the one definition of the order).

    prodcat catalog build   → product table          prodcat tune         → Ray Tune sweep
    prodcat embed           → embedding store        prodcat recategorize → finer subcategories
    prodcat train           → checkpoint             prodcat cascade fit  → cascade.json + report
    prodcat finetune        → a fine-tuned text encoder (a new encoder version, Ray Train)
    prodcat evaluate        → evaluation report      prodcat score        → predictions (Ray Data)
    prodcat serve           → HTTP service (Ray Serve)
    prodcat catalog suggest-mapping / review → a new platform's mapping, suggested then reviewed
    prodcat onboard measure → those suggestions and partial paths measured per LOPO fold
    prodcat pipeline        → the main job: every stage on the real catalogues, with one report

Each module defines ``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``; stage
modules are imported inside ``run`` so ``prodcat --help`` stays fast. Every subcommand takes
``--verbose`` (Ray's own log lines on the terminal; see :mod:`prodcat.core.console`). Data that
cannot be read (:class:`prodcat.core.errors.DataError`) ends the command with exit status 2 and
one line naming the file, without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys

import prodcat
from prodcat.core import console, storage
from prodcat.core.errors import DataError
from prodcat.core.stages import COMMANDS


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand module of ``prodcat.cli``."""
    parser = argparse.ArgumentParser(
        prog="prodcat", description="Multimodal hierarchical product categorization on Ray "
        "(Gross et al., arXiv 2508.20013). Run 'prodcat <command> --help' for each command.")
    parser.add_argument("--version", action="version", version=f"prodcat {prodcat.__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--verbose", action="store_true",
                        help="show Ray's own log lines and worker output on the terminal "
                        "(otherwise they go to the run folder's logs/ and Ray's session folder)")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    found = {m.name for m in pkgutil.iter_modules(__path__)}
    for name in [n for n in COMMANDS if n in found] + sorted(found - set(COMMANDS)):
        module = importlib.import_module(f"{__name__}.{name}")
        command = sub.add_parser(name.replace("_", "-"), help=module.HELP, parents=[common],
                                 description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["catalog", "build", "--help"])`` works from tests too."""
    args = build_parser().parse_args(argv)
    # the log folder and --verbose live in the environment for the command's run (Ray workers it
    # starts inherit them) and are put back after it, so that one call from a test or a notebook
    # does not route a later call's Ray log (a relative `--output s` once left s/_logs/ray.log)
    before = {name: os.environ.get(name) for name in (console.LOG_DIR_ENV, console.VERBOSE_ENV)}
    if args.verbose:
        console.set_verbose(True)
    output = getattr(args, "output", None)
    if output and not storage.is_remote(output) and not os.environ.get(console.LOG_DIR_ENV):
        # "_logs": Parquet readers (pyarrow datasets) skip "_" names, so an output folder of
        # parts (predictions, an embedding store) still reads as one table
        console.set_log_dir(os.path.join(output, "_logs"))
    try:
        return int(args._run(args) or 0)
    except DataError as err:  # a file that cannot be read: the message names it, no traceback
        print(f"prodcat {args.command}: error: {err}", file=sys.stderr)
        return 2
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


if __name__ == "__main__":
    sys.exit(main())
