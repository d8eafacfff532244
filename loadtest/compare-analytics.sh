#!/usr/bin/env bash
# Server CPU per redirect with analytics on against the same binary with
# `--analytics off`: hot-key keep-alive redirects with browser-like headers
# (User-Agent, Referer, X-Forwarded-For from a trusted proxy; loadtest/
# browsers.lua), 64 connections, one wrk thread. Both servers run at once,
# pinned to CPU 0 with one worker; wrk is pinned to CPU 1; runs alternate
# (on/off, then off/on). CPU is user+system of the whole process from
# /proc/PID/stat, so the aggregator and writer threads count too. The
# analytics-on server has a country database (examples/country_mmdb.rs).
# usage: loadtest/compare-analytics.sh [ROUNDS] [SECONDS] [same|mixed]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-6}
SECS=${2:-5}
HEADERS=${3:-same}
need wrk wrk
build_shortd
(cd "$ROOT" && cargo build --release --quiet --example country_mmdb)

WORK=$(mktemp -d)
trap 'kill $ON_PID $OFF_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
TARGET="https://example.com/landing/page"
"$ROOT/target/release/examples/country_mmdb" "$WORK/country.mmdb"

ON_PORT=$(free_port)
start_shortd "$ON_PORT" "$WORK/on" --workers 1 --durability never --trusted-proxy 127.0.0.1 --geoip-db "$WORK/country.mmdb"
ON_PID=$SHORTD_PID
OFF_PORT=$(free_port)
start_shortd "$OFF_PORT" "$WORK/off" --workers 1 --durability never --trusted-proxy 127.0.0.1 --analytics off
OFF_PID=$SHORTD_PID
ON_CODE=$(create_link "$ON_PORT" "$TARGET")
OFF_CODE=$(create_link "$OFF_PORT" "$TARGET")

measure() {
  # measure PID PORT CODE: prints "rps cpu_us_per_response"
  local pid=$1 port=$2 code=$3 out="$WORK/run.txt"
  local before after
  before=$(cpu_ticks "$pid")
  run_wrk "$out" -t1 -c64 -d"${SECS}s" -s "$HERE/browsers.lua" "http://127.0.0.1:$port/$code" -- "$HEADERS"
  after=$(cpu_ticks "$pid")
  local errs; errs=$(wrk_errors "$out")
  [ -n "$errs" ] && echo "  $errs" >&2
  awk -v r="$(wrk_rps "$out")" -v t="$(wrk_total "$out")" -v c=$((after - before)) -v hz="$CLK_TCK" \
    'BEGIN {printf "%.0f %.3f\n", r, c * 1e6 / hz / t}'
}

printf "%-5s %12s %12s %12s %12s %8s\n" round on_rps off_rps on_cpu_us off_cpu_us ratio
: > "$WORK/ratios"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    read -r on_rps on_cpu < <(measure "$ON_PID" "$ON_PORT" "$ON_CODE")
    read -r off_rps off_cpu < <(measure "$OFF_PID" "$OFF_PORT" "$OFF_CODE")
  else
    read -r off_rps off_cpu < <(measure "$OFF_PID" "$OFF_PORT" "$OFF_CODE")
    read -r on_rps on_cpu < <(measure "$ON_PID" "$ON_PORT" "$ON_CODE")
  fi
  ratio=$(awk -v a="$on_cpu" -v b="$off_cpu" 'BEGIN {printf "%.3f", a / b}')
  echo "$ratio" >> "$WORK/ratios"
  printf "%-5s %12s %12s %12s %12s %8s\n" "$round" "$on_rps" "$off_rps" "$on_cpu" "$off_cpu" "$ratio"
done
echo "median CPU-per-redirect ratio analytics on/off, $HEADERS headers (goal <= 1.10): $(median < "$WORK/ratios")"
curl -fs "http://127.0.0.1:$ON_PORT/api/v1/links/$ON_CODE/stats" | python3 -c '
import json, sys
s = json.load(sys.stdin)
print("analytics-on server counted: clicks", s["clicks"], "bots", s["bots"], "countries", s["countries"][:3], "browsers", s["browsers"][:3])'
curl -fs "http://127.0.0.1:$ON_PORT/metrics" | grep -E "^shortd_analytics_dropped_breakdowns_total|^shortd_analytics_lag_seconds" || true
