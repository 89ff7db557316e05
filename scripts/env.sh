# Sourced by the scripts: Ray settings for small machines and CI (see DESIGN.md).
export RAY_USAGE_STATS_ENABLED=0
export RAY_DATA_DISABLE_PROGRESS_BARS=${RAY_DATA_DISABLE_PROGRESS_BARS:-1}
# Ray Train on a small machine: the controller polls its workers every 0.5 s instead of 2 s (a run
# that has finished, or a worker that has died, is noticed sooner) and starts no preemption watcher
# (one more actor process per run, watching for spot-instance preemption notices, which a local
# instance never gets); a cluster's own environment keeps Ray's defaults. A tiny fine-tuning's
# fit(), median of 6: 15.05 s against 17.77 s (benchmarks/train_startup.py, stop 55).
export RAY_TRAIN_HEALTH_CHECK_INTERVAL_S=${RAY_TRAIN_HEALTH_CHECK_INTERVAL_S:-0.5}
export RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=${RAY_TRAIN_ENABLE_PREEMPTION_WATCHER:-0}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Ray's socket paths must stay under 107 bytes: keep TMPDIR short.
_tmp=${TMPDIR:-}
if [ -z "$_tmp" ] || [ "${#_tmp}" -gt 20 ]; then
  export TMPDIR=/tmp/pc$$
  mkdir -p "$TMPDIR"
fi
unset _tmp
