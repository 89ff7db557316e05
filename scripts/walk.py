"""Walk a command through the code: which prodcat modules and functions it runs, by package.

    .venv/bin/python scripts/walk.py                 # both commands, a table on the terminal
    .venv/bin/python scripts/walk.py --json walk.json --list

Builds the tiny cascade of the tests (``tests/fixtures/cascade.py``: tiny encoders, two
checkpoints, a catalogue and a store; no network, nothing from ../shared) in a temporary folder,
then runs ``prodcat score`` (the Ray Data job on the tiny catalogue) and ``prodcat cascade fit``
through :func:`prodcat.cli.main` with a profiler that records every function defined under
``prodcat/`` that the driver process enters (comprehensions, module and class bodies, and the argument
parser, ``prodcat.cli.build_parser`` with every subcommand's ``configure``, left out). The
Ray Data actors of ``prodcat score`` run in worker processes and are not traced here: their path
(``StageActor.__call__`` → ``StageRunner.predict_batch`` → encoders, head) is the same code
:func:`prodcat.cascade.stage.StageRunner` runs in the driver during ``cascade fit``.

Prints per command: modules, functions, and both per ``prodcat`` package.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = str(ROOT / "prodcat")


def trace(run) -> dict[str, set[str]]:
    """``{module: {qualified function names}}`` of the prodcat functions ``run()`` enters."""
    seen: dict[str, set[str]] = defaultdict(set)
    parsing = []                     # inside build_parser: every subcommand's configure(), skipped

    def profile(frame, event, arg):
        code = frame.f_code
        if code.co_name == "build_parser" and code.co_filename.startswith(PACKAGE):
            if event == "call":
                parsing.append(True)
            elif event == "return":
                parsing.pop()
        if event != "call" or parsing:
            return
        if not code.co_filename.startswith(PACKAGE) or code.co_name.startswith("<"):
            return
        if not code.co_flags & inspect.CO_NEWLOCALS:    # a class body, run once on import
            return
        module = (Path(code.co_filename).relative_to(ROOT).with_suffix("").as_posix()
                  .replace("/", ".").removesuffix(".__init__"))
        seen[module].add(code.co_qualname)

    sys.setprofile(profile)
    threading.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return dict(seen)


def summary(seen: dict[str, set[str]]) -> dict:
    packages: dict[str, dict[str, int]] = defaultdict(lambda: {"modules": 0, "functions": 0})
    for module, functions in seen.items():
        package = ".".join(module.split(".")[:2])
        packages[package]["modules"] += 1
        packages[package]["functions"] += len(functions)
    return {"modules": len(seen), "functions": sum(len(f) for f in seen.values()),
            "packages": dict(sorted(packages.items())),
            "by_module": {m: sorted(f) for m, f in sorted(seen.items())}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--list", action="store_true", help="print every function, by module")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    import ray

    from prodcat.cli import main as prodcat
    from tests.fixtures.cascade import build_tiny_cascade

    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        cascade = build_tiny_cascade(Path(tmp) / "cascade")
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        commands = {
            "prodcat score": ["score", "--model", cascade["cascade"], "--input",
                              cascade["products_uri"], "--output", f"{tmp}/pred",
                              "--evaluate", cascade["products_uri"],
                              "--set", "text_num_cpus=0.5", "--set", "multimodal_num_cpus=0.5"],
            "prodcat cascade fit": ["cascade", "fit", "--text-model", cascade["text_model"],
                                    "--multimodal-model", cascade["multimodal_model"],
                                    "--products", cascade["products_uri"],
                                    "--embeddings", cascade["embeddings"], "--output", f"{tmp}/fit",
                                    "--set", "cost_sample=16", "--set", "calib_split=train"],
        }
        for name, argv_ in commands.items():
            status = []
            result[name] = summary(trace(lambda: status.append(prodcat(argv_))))
            result[name]["exit_status"] = status[0] if status else None
        ray.shutdown()
    for name, r in result.items():
        print(f"{name}: {r['modules']} modules, {r['functions']} functions (exit {r['exit_status']})")
        for package, n in r["packages"].items():
            print(f"  {package:24s} {n['modules']:3d} modules {n['functions']:4d} functions")
        if args.list:
            for module, functions in r["by_module"].items():
                print(f"    {module}: {', '.join(functions)}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
