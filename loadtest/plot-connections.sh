#!/usr/bin/env bash
# Hot-key throughput and latency against the number of connections.
# A release shortd (--workers 1 --durability never) on CPU 0 serves one link;
# wrk (one thread, CPU 1, --latency) runs SECONDS at each connection count,
# plain keep-alive and 16-deep pipelined (pipeline.lua). Writes
# docs/img/throughput-vs-connections.{csv,png}.
# usage: loadtest/plot-connections.sh [SECONDS]
#   CONNS="1 4 16 64 256", DEPTH=16, KEEP_RAW=DIR keeps the wrk reports.
# wrk's latency percentiles are only meaningful for plain keep-alive: with
# pipelining wrk records one latency per batch but corrects for coordinated
# omission as if every response were a request of its own, which fills the
# histogram with made-up samples (and often prints 0.00us for p90/p99). The
# CSV therefore also has round_trip_mean_ms = connections x depth / (req/s),
# the mean time a connection waits for its batch (Little's law, closed loop),
# and the plot uses that for pipelined runs.
source "$(dirname "$0")/lib.sh"
SECS=${1:-5}
CONNS=${CONNS:-"1 4 16 64 256"}
DEPTH=${DEPTH:-16}
need wrk wrk
[ -x "$SHORTD" ] || build_shortd
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --user matplotlib
OUT="$ROOT/docs/img"
mkdir -p "$OUT"

WORK=$(mktemp -d)
SHORTD_PID=
trap '[ -n "$SHORTD_PID" ] && kill "$SHORTD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(free_port)
start_shortd "$PORT" "$WORK/data" --workers 1 --durability never
CODE=$(create_link "$PORT" "https://www.example.com/landing/page")
URL="http://127.0.0.1:$PORT/$CODE"
curl -s -o /dev/null -w "GET /$CODE -> %{http_code} %{redirect_url}\n" "$URL" >&2

# "busy total" jiffies of one CPU from /proc/stat, to tell how much of each
# core went to something else (the machine may be shared).
cpu_jiffies() { awk -v c="cpu$1" '$1 == c {t = 0; for (i = 2; i <= NF; i++) t += $i; print t - $5 - $6, t}' /proc/stat; }

mkdir -p "$WORK/raw"
for mode in keepalive pipelined; do
  for c in $CONNS; do
    f="$WORK/raw/$mode-$c"
    before=$(cpu_ticks "$SHORTD_PID"); read -r b0 t0 < <(cpu_jiffies 0); read -r b1 t1 < <(cpu_jiffies 1)
    if [ "$mode" = pipelined ]; then
      run_wrk "$f.txt" -t1 -c"$c" -d"${SECS}s" --latency -s "$HERE/pipeline.lua" "$URL" -- "$DEPTH"
    else
      run_wrk "$f.txt" -t1 -c"$c" -d"${SECS}s" --latency "$URL"
    fi
    after=$(cpu_ticks "$SHORTD_PID"); read -r a0 u0 < <(cpu_jiffies 0); read -r a1 u1 < <(cpu_jiffies 1)
    echo "mode=$mode connections=$c depth=$([ "$mode" = pipelined ] && echo "$DEPTH" || echo 1)" \
      "cpu_ticks=$((after - before)) clk_tck=$CLK_TCK seconds=$SECS" \
      "cpu0_busy=$((a0 - b0)) cpu0_total=$((u0 - t0)) cpu1_busy=$((a1 - b1)) cpu1_total=$((u1 - t1))" > "$f.meta"
    printf "%-10s %4s conns: %12s req/s %s\n" "$mode" "$c" "$(wrk_rps "$f.txt")" "$(wrk_errors "$f.txt")" >&2
  done
done

[ -n "${KEEP_RAW:-}" ] && mkdir -p "$KEEP_RAW" && cp "$WORK"/raw/* "$KEEP_RAW"/
python3 "$HERE/plot-connections.py" "$WORK/raw" "$OUT/throughput-vs-connections.csv" "$OUT/throughput-vs-connections.png"
