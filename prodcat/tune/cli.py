"""Run a Ray Tune sweep over the training config (ASHA on validation hF), or resume one.

  python -m prodcat.tune --space tune/spaces/fusion.yaml --name fusion             # → runs/tune/fusion
  python -m prodcat.tune --space tune/spaces/fusion.yaml --name fusion --resume    # after an interruption
  python -m prodcat.tune --space tune/spaces/smoke.yaml --dry-run                  # check the space only
  python -m prodcat.tune --name fusion --report          # rewrite the report from the saved results
  python -m prodcat.tune --space tune/spaces/fusion.yaml --storage s3://bucket/tune --name fusion \\
      --max-concurrent 8 --gpus-per-trial 1 --num-samples 64                # on a GPU cluster
  ray job submit --working-dir . -- python -m prodcat.tune --space tune/spaces/fusion.yaml \\
      --storage s3://bucket/tune --name fusion --set data.products=s3://... --resume

Prints one line per trial that ends (its values, validation hF, why it ended: ASHA, early stopping,
completed, error), the progress with an ETA and the best trial so far; Ray Tune's own status tables
go to <storage>/<name>/logs/tune.log (--verbose shows them on the terminal instead).
'ray job stop' (SIGTERM) stops a sweep like Ctrl+C: Tune saves its state, --resume continues it.
Each trial is the TorchTrainer of 'prodcat train' built from the base config plus the sampled
values. Writes <storage>/<name>/report/: trials.csv, trials.md (every trial sorted by hF with its
config), trials.png, best_config.yaml (for 'prodcat train --config'), evaluate_best.yaml (for
'prodcat evaluate --config') and summary.json (trials, ASHA stops, wall time, best).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from prodcat.core import storage
from prodcat.core.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``python -m prodcat.tune`` (``prodcat tune`` takes the same arguments)."""
    parser = argparse.ArgumentParser(prog="python -m prodcat.tune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    configure(parser)
    parser.add_argument("--verbose", action="store_true", help="Ray Tune's status tables and Ray's "
                        "own log lines on the terminal (otherwise in the sweep's logs/ folder)")
    return parser


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the sweep's arguments to ``parser``."""
    parser.add_argument("--space", help="search space YAML (tune/spaces/*.yaml); optional with "
                        "--resume, which reads the saved one")
    parser.add_argument("--base-config", help="TrainConfig YAML the space overrides (default: the "
                        "space's base_config, else TrainConfig defaults)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a base TrainConfig field, e.g. --set data.max_train_products=5000")
    parser.add_argument("--storage", default="runs/tune",
                        help="parent folder of the sweep, local or s3:// (default runs/tune)")
    parser.add_argument("--name", default="sweep", help="sweep name: <storage>/<name> (default sweep)")
    parser.add_argument("--resume", action="store_true",
                        help="continue an interrupted sweep (Tuner.restore); starts it if absent")
    parser.add_argument("--num-samples", type=int, help="samples of the space (sweep.num_samples)")
    parser.add_argument("--max-concurrent", type=int, help="trials at once (sweep.max_concurrent_trials)")
    parser.add_argument("--cpus-per-trial", type=float, help="CPUs of a trial's workers (sweep.cpus_per_trial)")
    parser.add_argument("--gpus-per-trial", type=int,
                        help="GPUs per trial, one per worker (sweep.gpus_per_trial)")
    parser.add_argument("--grace-period", type=int, help="ASHA: epochs before a trial can be stopped")
    parser.add_argument("--time-budget-s", type=float,
                        help="stop the whole sweep after this many seconds (sweep.time_budget_s)")
    parser.add_argument("--address", help="Ray cluster to join (default $RAY_ADDRESS, else a local Ray)")
    parser.add_argument("--report", action="store_true",
                        help="only rewrite <storage>/<name>/report from the saved results")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the space and print the resolved sweep, run nothing")
    parser.add_argument("--quiet", action="store_true",
                        help="no Ray Tune status tables at all (not even in logs/tune.log)")


def _settings(args: argparse.Namespace) -> dict:
    settings = {"num_samples": args.num_samples, "max_concurrent_trials": args.max_concurrent,
                "cpus_per_trial": args.cpus_per_trial, "gpus_per_trial": args.gpus_per_trial,
                "time_budget_s": args.time_budget_s}
    if args.grace_period is not None:
        settings["asha"] = {"grace_period": args.grace_period}
    return settings


def main(argv: list[str] | None = None) -> int:
    """Entry point; ``main([...])`` works from tests."""
    from prodcat.core import console

    args = build_parser().parse_args(argv)
    if args.verbose:
        console.set_verbose(True)
    return run(args)


def run(args: argparse.Namespace) -> int:
    """Run, resume, check or report a sweep as ``args`` say; returns the exit code."""
    # lazy: the sweep imports Ray Tune and the trainer; the parser alone stays fast
    from prodcat.core.runtime import ensure_ray
    from prodcat.tune.sweep import build_spec, load_spec, report_sweep, run_sweep

    try:
        if args.space is None or args.report:
            uri = storage.join(args.storage if storage.is_remote(args.storage)
                               else _abspath(args.storage), args.name)
            spec = load_spec(uri) if args.resume or args.report else None
            if spec is None:
                raise ConfigError("--space is required (only --resume or --report of an "
                                  f"existing sweep can do without it; none at {uri})")
        else:
            spec = build_spec(args.space, args.name, args.storage, args.base_config, args.set,
                              _settings(args))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps({"experiment": spec.uri, "settings": spec.settings.model_dump(),
                          "params": {k: {p.kind: p.args} for k, p in spec.space.params.items()},
                          "trials": spec.settings.num_samples * spec.space.num_grid_points()},
                         indent=2))
        return 0
    if args.report:
        summary = report_sweep(spec)
        print(json.dumps({k: summary.get(k) for k in ("experiment", "trials", "stops", "best")},
                         default=str))
        return 0
    if args.address:
        ensure_ray(args.address)
    stop_on_sigterm()
    try:
        run_sweep(spec, resume=args.resume, verbose=0 if args.quiet else 1)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0  # the closing lines name the report, its summary.json and the best trial


def stop_on_sigterm() -> None:
    """Make SIGTERM (what ``ray job stop`` and Kubernetes send) stop the sweep the way Ctrl+C
    does: Ray Tune saves the experiment state one last time, so ``--resume`` continues it."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))


def _abspath(path: str) -> str:
    return os.path.abspath(path)


if __name__ == "__main__":
    sys.exit(main())
