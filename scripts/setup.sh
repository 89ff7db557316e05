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
  .venv/bin/python -m pip install -q --upgrade pip >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
  # First the pinned set as it is (constraints.txt, no resolving: --no-deps), in two pip processes
  # at once, torch's CUDA wheels (GBs to unpack) beside everything else: one resolving pip unpacks
  # on one core (stop 54: 100-114 s; this and the resolving pass below, 76 s). Left out: the gpu
  # extra's nvidia-ml-py (not installed here). Where a pinned wheel cannot be installed, the
  # resolving install below does it; it also installs prodcat and checks the whole set.
  pinned=$(grep -vE '^nvidia-ml-py==' constraints.txt)
  big='^(torch|torchvision|triton|nvidia-[a-z0-9-]+)=='
  grep -E "$big" <<<"$pinned" >.venv/pinned-large.txt || true
  grep -vE "$big" <<<"$pinned" >.venv/pinned-rest.txt || true
  .venv/bin/python -m pip install -q --no-deps -r .venv/pinned-large.txt >.venv/pip-pinned-large.log 2>&1 &
  large=$!
  .venv/bin/python -m pip install -q --no-deps -r .venv/pinned-rest.txt >.venv/pip-pinned-rest.log 2>&1 &
  rest=$!
  for part in large rest; do
    if ! wait "${!part}"; then
      echo "[setup] installing the pinned set ($part part) failed (.venv/pip-pinned-$part.log); the resolving install takes over"
    fi
  done
  if ! .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]" >>"$log" 2>&1; then
    cat "$log" >&2
    echo "[setup] pip failed; the log above is also in $log" >&2
    exit 1
  fi
  touch "$stamp"
  echo "[setup] done (pip's log: $log)"
fi
