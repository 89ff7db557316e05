#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite: unit tests, then integration tests that start
# one local Ray instance and an S3 server on loopback. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/python -m pytest "$@"
