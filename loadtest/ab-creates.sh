#!/usr/bin/env bash
# Durable creates, one build against another: both servers up at once
# (pinned to CPU 0, --workers 1 --durability always), wrk -t1 -c64 with
# create.lua from CPU 1, the two taking turns. Prints each round's
# creates/s, then per build the mean group commit (creates per fdatasync)
# and the server's CPU per create over all rounds.
# usage: loadtest/ab-creates.sh ROUNDS SECONDS BIN_A BIN_B
#   SLOW_FSYNC_US=N runs both under loadtest/slow-fsync.c (N µs more per fsync).
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:?rounds}; SECS=${2:?seconds}; A=${3:?build A}; B=${4:?build B}
need wrk wrk
mkdir -p "$ROOT/target/tmp"
WORK=$(mktemp -d -p "$ROOT/target/tmp" ab-creates.XXXXXX)
PIDS=()
trap 'kill ${PIDS[@]+"${PIDS[@]}"} 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
WRAP=()
if [ -n "${SLOW_FSYNC_US:-}" ]; then
  cc -shared -fPIC -O2 -o "$WORK/slow-fsync.so" "$HERE/slow-fsync.c" -ldl
  WRAP=(env LD_PRELOAD="$WORK/slow-fsync.so" SLOW_FSYNC_US="$SLOW_FSYNC_US")
fi
PORTS=()
for bin in "$A" "$B"; do
  port=$(free_port)
  ${WRAP[@]+"${WRAP[@]}"} taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data-$port" \
    --workers 1 --durability always --log-level warn &
  PIDS+=($!); PORTS+=("$port")
  wait_http "http://127.0.0.1:$port/healthz"
done
declare -A TICKS TOTAL
for p in "${PORTS[@]}"; do TICKS[$p]=0; TOTAL[$p]=0; done
printf "%-6s %14s %14s\n" round "A creates/s" "B creates/s"
for round in $(seq "$ROUNDS"); do
  line="$round"
  for i in 0 1; do
    p=${PORTS[$i]} pid=${PIDS[$i]}
    before=$(cpu_ticks "$pid")
    run_wrk "$WORK/wrk.txt" -t1 -c64 -d"${SECS}s" -s "$HERE/create.lua" "http://127.0.0.1:$p/api/v1/links"
    after=$(cpu_ticks "$pid")
    TICKS[$p]=$((TICKS[$p] + after - before)); TOTAL[$p]=$((TOTAL[$p] + $(wrk_total "$WORK/wrk.txt")))
    line=$(printf "%s %14.0f" "$line" "$(wrk_rps "$WORK/wrk.txt")")
  done
  echo "$line"
done
for i in 0 1; do
  p=${PORTS[$i]}
  curl -s "http://127.0.0.1:$p/metrics" | awk -v name="$([ "$i" = 0 ] && echo A || echo B)" \
    -v cpu="$(awk -v t="${TICKS[$p]}" -v n="${TOTAL[$p]}" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", t * 1e6 / hz / n}')" \
    '/^shortd_store_commit_batch_size_sum/ {s=$2} /^shortd_store_commits_total/ {c=$2}
     END {printf "%s: %.1f creates per group commit, %s us of CPU per create\n", name, s / c, cpu}'
done
