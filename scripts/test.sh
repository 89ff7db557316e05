#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: the layers contract (import-linter) and the
# linter first, then unit tests, then integration tests that start one local Ray instance and an
# S3 server on loopback. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
.venv/bin/lint-imports --no-cache
.venv/bin/ruff check prodcat tests benchmarks
exec .venv/bin/python -m pytest "$@"
