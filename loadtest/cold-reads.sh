#!/usr/bin/env bash
# A store that is not in the page cache (larger than memory, or dropped by
# memory pressure), one build against another: a hot link's rate while
# uniform requests over N links need disk reads. N links are imported once
# (gen-links.py N 60 k); for each build: serve a copy (--workers 1 on CPU 0,
# no scrub, which would read the store back in), drop the copy's files from
# the page cache (posix_fadvise DONTNEED), then run at once from CPU 1
# wrk -c16 on one link and wrk -c64 uniform over all, for SECONDS.
# usage: loadtest/cold-reads.sh N SECONDS BIN_A BIN_B
source "$(dirname "$0")/lib.sh"
N=${1:?links}; SECS=${2:?seconds}; A=${3:?build A}; B=${4:?build B}
need wrk wrk
scratch cold-reads
import_links "$N" "$A" "$WORK/template"
for bin in "$A" "$B"; do
  rm -rf "$WORK/data"; cp -a "$WORK/template" "$WORK/data"; sync
  port=$(free_port)
  taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data" --log-level warn --workers 1 --scrub-rate 0 &
  PID=$!
  wait_http "http://127.0.0.1:$port/healthz"
  curl -s -o /dev/null "http://127.0.0.1:$port/k0"
  drop_page_cache "$WORK/data"
  faults=$(awk '{print $12}' "/proc/$PID/stat")
  run_wrk "$WORK/hot.txt" -t1 -c16 -d"${SECS}s" --latency -s "$HERE/keys.lua" "http://127.0.0.1:$port" -- 1 uniform &
  hot=$!
  run_wrk "$WORK/cold.txt" -t1 -c64 -d"${SECS}s" -s "$HERE/keys.lua" "http://127.0.0.1:$port" -- "$N" uniform
  wait "$hot"
  faults=$(($(awk '{print $12}' "/proc/$PID/stat") - faults))
  cold=$(curl -s "http://127.0.0.1:$port/metrics" | awk '/^shortd_redirect_cold_loads_total/ {print $2}')
  printf "%-40s hot link %9.0f req/s (p99 %s)  uniform %7.0f req/s  major faults %d  cold loads %s\n" "$bin" \
    "$(wrk_rps "$WORK/hot.txt")" "$(awk '$1 == "99%" {print $2}' "$WORK/hot.txt")" "$(wrk_rps "$WORK/cold.txt")" "$faults" "${cold:-none}"
  kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
done
