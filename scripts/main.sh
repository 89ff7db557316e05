#!/usr/bin/env bash
# Set up (if needed) and run the main job on the real catalogues in ../shared.
# Extra arguments go to 'prodcat catalog build'.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/prodcat catalog build --output runs/main/catalog "$@"
