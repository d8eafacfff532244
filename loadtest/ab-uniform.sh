#!/usr/bin/env bash
# Uniform redirects with analytics on, one build against another: what the
# click aggregator costs when nearly every click is a link's first in its
# hour. N links are imported once (gen-links.py N 60 k); each round copies
# that store for each build in turn, serves it (--workers 1, CPU 0) and
# runs two 8 s rounds of wrk -t1 -c64 keys.lua uniform from CPU 1. Prints
# per run: requests/s of both rounds, the requests served, the aggregator
# thread's CPU per request (/proc/PID/task/TID/stat of shortd-clicks) and
# the server's anonymous memory growth per request.
# usage: loadtest/ab-uniform.sh ROUNDS N BIN_A BIN_B
#   SERVE_ARGS="--analytics off" adds flags to both servers.
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:?rounds}; N=${2:?links}; A=${3:?build A}; B=${4:?build B}
need wrk wrk
scratch ab-uniform
import_links "$N" "$A" "$WORK/template"
anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }
aggregator_ticks() {
  for t in /proc/"$1"/task/*; do
    if grep -q shortd-clicks "$t/comm"; then awk '{print $14 + $15}' "$t/stat"; fi
  done
}
for round in $(seq "$ROUNDS"); do
  for bin in "$A" "$B"; do
    rm -rf "$WORK/data"; cp -a "$WORK/template" "$WORK/data"
    port=$(free_port)
    taskset -c 0 "$bin" serve --listen "127.0.0.1:$port" --data-dir "$WORK/data" --log-level warn --workers 1 ${SERVE_ARGS:-} &
    PID=$!
    wait_http "http://127.0.0.1:$port/healthz"
    before=$(anon_kb "$PID"); served=0; rates=""
    for _ in 1 2; do
      run_wrk "$WORK/wrk.txt" -t1 -c64 -d8s -s "$HERE/keys.lua" "http://127.0.0.1:$port" -- "$N" uniform
      rates="$rates $(wrk_rps "$WORK/wrk.txt")"; served=$((served + $(wrk_total "$WORK/wrk.txt")))
    done
    sleep 2
    ticks=$(aggregator_ticks "$PID"); after=$(anon_kb "$PID")
    printf "round %s %-40s req/s%s  served %d  aggregator %d ns/request  RssAnon +%d B/request\n" "$round" "$bin" "$rates" \
      "$served" $((ticks * 1000000000 / CLK_TCK / served)) $(((after - before) * 1024 / served))
    kill -9 "$PID"; wait "$PID" 2>/dev/null || true; PID=
  done
done
