#!/usr/bin/env bash
# Create .venv (Python 3.11) and install prodcat with the pinned, resolved dependency set.
# Idempotent: a second run only re-checks. torch/torchvision come from the machine's wheel cache.
# pip's own output goes to .venv/pip-install.log (shown in full if the install fails).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.prodcat-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ constraints.txt -nt "$stamp" ]; then
  echo "[setup] installing prodcat and its pinned dependencies into .venv (a few minutes the first time)"
  log=.venv/pip-install.log
  if ! { .venv/bin/python -m pip install -q --upgrade pip &&
         .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "[setup] pip failed; the log above is also in $log" >&2
    exit 1
  fi
  touch "$stamp"
  echo "[setup] done (pip's log: $log)"
fi
