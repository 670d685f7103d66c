#!/usr/bin/env bash
# Quantize a real-size package with all four schemes, then time their UNets side by side.
#
#   bench/quantize_real.sh [SRC] [OUT]      (defaults: /tmp/bk -> /tmp/bkq)
#
# SRC is an FP32 package, e.g. from `nanoedge export preset:bk-sdm-tiny -o /tmp/bk`; it is
# only read. The four runs share one recorded calibration set (--calibration-dir), so the
# FP32 trajectories are generated once. Each scheme's report lands in OUT/<scheme>.json and
# its log in OUT/<scheme>.log; the UNet step-time table in OUT/unet_step_time.txt.
# Knobs (environment): SIZE (512x512), STEPS (8), CAL (4 calibration prompts), EVAL (2
# held-out prompts), ATTEMPTS (2 mixed-precision attempts), SCHEMES, ROUNDS (2; 0 skips timing).
set -uo pipefail
SRC=${1:-/tmp/bk}
OUT=${2:-/tmp/bkq}
SIZE=${SIZE:-512x512}
STEPS=${STEPS:-8}
CAL=${CAL:-4}
EVAL=${EVAL:-2}
ATTEMPTS=${ATTEMPTS:-2}
ROUNDS=${ROUNDS:-2}
SCHEMES=${SCHEMES:-"int8 w8a16 dynamic weight-only"}
mkdir -p "$OUT"
for scheme in $SCHEMES; do
  echo "== $scheme $(date -u +%H:%M:%S)" >&2
  /usr/bin/time -v python -m nanoedge quantize "$SRC" -o "$OUT/$scheme" --scheme "$scheme" --overwrite --json \
    --size "$SIZE" --steps "$STEPS" --calibration-prompts "$CAL" --eval-prompts "$EVAL" --max-attempts "$ATTEMPTS" \
    --report-samples 8 --sensitivity-samples 2 --calibration-dir "$OUT/trajectories" \
    > "$OUT/$scheme.json" 2> "$OUT/$scheme.log"
  echo "   exit $? $(date -u +%H:%M:%S)" >&2
  grep -E "Maximum resident|Elapsed" "$OUT/$scheme.log" >&2
  [ -d "$OUT/$scheme" ] && python -m nanoedge info "$OUT/$scheme" > "$OUT/$scheme.info.txt"
done
[ "$ROUNDS" -gt 0 ] || exit 0
args=("fp32=$SRC")
for scheme in $SCHEMES; do [ -d "$OUT/$scheme" ] && args+=("$scheme=$OUT/$scheme"); done
python "$(dirname "$0")/unet_step_time.py" "${args[@]}" --size "$SIZE" --rounds "$ROUNDS" | tee "$OUT/unet_step_time.txt"
