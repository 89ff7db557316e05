"""The ``prodcat`` command. Each subcommand is a module in ``prodcat/commands`` that defines
``HELP`` (one line), ``configure(parser)`` and ``run(args) -> int``; heavy imports (torch, Ray)
happen inside ``run`` so ``prodcat --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import prodcat
import prodcat.commands as commands


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand found in ``prodcat.commands``."""
    parser = argparse.ArgumentParser(
        prog="prodcat", description="Multimodal hierarchical product categorization on Ray "
        "(Gross et al., arXiv 2508.20013). Run 'prodcat <command> --help' for each command.")
    parser.add_argument("--version", action="version", version=f"prodcat {prodcat.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"prodcat.commands.{info.name}")
        name = info.name.replace("_", "-")
        command = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
        module.configure(command)
        command.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``main(["catalog", "build", "--help"])`` works from tests too."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
