"""Run a Ray Tune sweep over the training config (ASHA on validation hF), or resume one.

  prodcat tune --space tune/spaces/fusion.yaml --name fusion             # → runs/tune/fusion
  prodcat tune --space tune/spaces/fusion.yaml --name fusion --resume    # after an interruption
  prodcat tune --space tune/spaces/smoke.yaml --dry-run                  # check the space only
  prodcat tune --name fusion --report          # rewrite the report from the saved results

One line per trial that ends (values, validation hF, why it ended), progress with an ETA and the
best so far; Ray Tune's status tables go to <storage>/<name>/logs/tune.log (--verbose: here).
The same command as ``python -m prodcat.tune`` (which ``ray job submit`` can run without the
``prodcat`` script on the PATH). Writes <storage>/<name>/report/: trials.csv, trials.md,
trials.png, best_config.yaml (for 'prodcat train --config'), evaluate_best.yaml and summary.json.
"""

from __future__ import annotations

import argparse

from prodcat.tune.cli import configure as configure_sweep
from prodcat.tune.cli import run as run_sweep

HELP = "search fusion, masking and hyper-parameters with Ray Tune (ASHA), resumable"


def configure(parser: argparse.ArgumentParser) -> None:
    configure_sweep(parser)


def run(args: argparse.Namespace) -> int:
    return run_sweep(args)
