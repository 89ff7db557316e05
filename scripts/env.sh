# Sourced by the scripts: Ray settings for small machines and CI (see DESIGN.md).
export RAY_USAGE_STATS_ENABLED=0
export RAY_DATA_DISABLE_PROGRESS_BARS=${RAY_DATA_DISABLE_PROGRESS_BARS:-1}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# Ray's socket paths must stay under 107 bytes: keep TMPDIR short.
_tmp=${TMPDIR:-}
if [ -z "$_tmp" ] || [ "${#_tmp}" -gt 20 ]; then
  export TMPDIR=/tmp/pc$$
  mkdir -p "$TMPDIR"
fi
unset _tmp
