"""Ray Train's fixed cost per run, with Ray's defaults against ``scripts/env.sh``'s two settings
(``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=0.5``, ``RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0``), in one run.

    python benchmarks/train_startup.py --out /tmp/train-startup [--runs 3 --rounds 2]

Each arm is a fresh process with its own local Ray instance (2 CPUs) and the arm's environment;
it fine-tunes a tiny BERT built from a config (``tests.fixtures.models.build_tiny_bert``; no hub)
on 129 synthetic products, one epoch, one worker, ``--runs`` times into new outputs, and times
``TorchTrainer.fit()`` (seconds; the epoch itself is under a second, so this is start-up and
shutdown). The arms alternate for ``--rounds`` rounds (defaults, settings, defaults, ...), so a
machine that speeds up or slows down touches both. Writes ``<out>/train_startup.json`` (every
``fit()`` time per arm, their medians, the ratio settings / defaults) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ARMS = {"defaults": {}, "settings": {"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.5",
                                     "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}}


def one_arm(root: Path, runs: int) -> list[float]:
    """In this process: ``runs`` tiny fine-tunings; returns each ``fit()``'s seconds."""
    import ray

    from prodcat.core import storage
    from prodcat.core.config import load_config
    from prodcat.train.finetune import finetune
    from prodcat.train.finetune_config import FinetuneConfig
    from tests.fixtures.models import build_tiny_bert
    from tests.fixtures.synthetic import synthetic_products

    module = sys.modules["prodcat.train.finetune"]   # the package re-exports the function's name
    seconds: list[float] = []
    build = module.build_trainer

    def timed(*args, **kwargs):
        trainer = build(*args, **kwargs)
        fit = trainer.fit

        def timed_fit():
            start = time.perf_counter()
            result = fit()
            seconds.append(round(time.perf_counter() - start, 2))
            return result
        trainer.fit = timed_fit
        return trainer

    module.build_trainer = timed
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=600 * 1024**2, log_to_driver=False)
    base = build_tiny_bert(root / "bert")
    products, taxonomy = synthetic_products(240, platforms=("alpha", "beta", "gamma"))
    storage.write_table(products, str(root / "cat/products.parquet"))
    storage.write_text(str(root / "cat/taxonomy.json"), taxonomy.to_json())
    for i in range(runs):
        finetune(load_config(FinetuneConfig, None, [
            f"encoder.weights={base}", "encoder.max_tokens=32", "encoder.batch_size=16",
            f"data.products={root}/cat/products.parquet", "data.platforms=[alpha,beta]",
            "optim.epochs=1", "optim.batch_size=16", "scaling.cpus_per_worker=1",
            "scaling.torch_threads=1", f"output={root}/out{i}"]), progress=None)
    ray.shutdown()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for train_startup.json")
    parser.add_argument("--runs", type=int, default=3, help="fine-tunings per arm and round")
    parser.add_argument("--rounds", type=int, default=2, help="times each arm runs, alternating")
    parser.add_argument("--arm", help=argparse.SUPPRESS)          # the child process's own arm
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.arm:
        with tempfile.TemporaryDirectory() as root:
            print(json.dumps(one_arm(Path(root), args.runs)))
        return 0
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for r in range(args.rounds):
        for arm, env in ARMS.items():
            child_env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_TRAIN_")}
            child_env.update(env, PYTHONPATH=str(REPO))
            done = subprocess.run([sys.executable, __file__, "--out", str(out), "--runs", str(args.runs),
                                   "--arm", arm], env=child_env, capture_output=True, text=True, cwd=REPO)
            if done.returncode:
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"arm {arm} failed ({done.returncode})")
            times[arm] += json.loads(done.stdout.strip().splitlines()[-1])
            print(f"[train_startup] round {r + 1}/{args.rounds} {arm}: {times[arm][-args.runs:]}", flush=True)
    medians = {arm: round(statistics.median(t), 2) for arm, t in times.items()}
    result = {"fit_seconds": times, "median_fit_seconds": medians,
              "ratio_settings_over_defaults": round(medians["settings"] / medians["defaults"], 3),
              "settings": ARMS["settings"], "runs": args.runs, "rounds": args.rounds}
    (out / "train_startup.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
