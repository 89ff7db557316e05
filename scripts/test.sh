#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: the layers contract (import-linter) and the
# linter first, then unit and integration tests (one local Ray instance, an S3 server on
# loopback), then, in a second pytest process, tests/cluster: a multi-node Ray cluster on this
# machine (ray.cluster_utils.Cluster: node failures, Serve autoscaling, metrics) and a real
# `ray start` cluster driven with `ray job submit`. Extra arguments go to one pytest run instead
# (e.g. `bash scripts/test.sh tests/unit -x`; `bash scripts/test.sh tests/cluster`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check prodcat tests benchmarks
if [ "$#" -gt 0 ]; then
  exec .venv/bin/python -m pytest "$@"
fi
workers=${PRODCAT_TEST_WORKERS:-2}
if [ "$workers" -gt 1 ]; then
  .venv/bin/python -m pytest -n "$workers" --dist loadfile --durations=15
else
  .venv/bin/python -m pytest --durations=15
fi
exec .venv/bin/python -m pytest tests/cluster --durations=10
