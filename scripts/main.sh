#!/usr/bin/env bash
# Set up (if needed) and run the main job on the real catalogues in ../shared: catalog build →
# embeddings → training → evaluation → cascade → bulk scoring → service demo → runs/sample/report.md.
# Default: a stratified sample that finishes in 6–12 minutes on 2 cores, install included; add --full for all
# 57,291 records (→ runs/full, about 30 minutes). Extra arguments go to 'prodcat pipeline' (see its --help).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
exec .venv/bin/prodcat pipeline "$@"
