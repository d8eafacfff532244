#!/usr/bin/env bash
# Hot-key throughput and latency against the number of connections.
# A release shortd (--workers 1 --durability never) on CPU 0 serves one link;
# wrk (one thread, CPU 1, --latency) runs SECONDS at each connection count,
# plain keep-alive and 16-deep pipelined (pipeline.lua). Writes
# docs/img/throughput-vs-connections.{csv,png}.
# usage: loadtest/plot-connections.sh [SECONDS]   (CONNS="1 4 16 64 256", DEPTH=16)
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

mkdir -p "$WORK/raw"
for mode in keepalive pipelined; do
  for c in $CONNS; do
    f="$WORK/raw/$mode-$c"
    before=$(cpu_ticks "$SHORTD_PID")
    if [ "$mode" = pipelined ]; then
      run_wrk "$f.txt" -t1 -c"$c" -d"${SECS}s" --latency -s "$HERE/pipeline.lua" "$URL" -- "$DEPTH"
    else
      run_wrk "$f.txt" -t1 -c"$c" -d"${SECS}s" --latency "$URL"
    fi
    after=$(cpu_ticks "$SHORTD_PID")
    echo "mode=$mode connections=$c depth=$([ "$mode" = pipelined ] && echo "$DEPTH" || echo 1) cpu_ticks=$((after - before)) clk_tck=$CLK_TCK seconds=$SECS" > "$f.meta"
    printf "%-10s %4s conns: %12s req/s %s\n" "$mode" "$c" "$(wrk_rps "$f.txt")" "$(wrk_errors "$f.txt")" >&2
  done
done

python3 "$HERE/plot-connections.py" "$WORK/raw" "$OUT/throughput-vs-connections.csv" "$OUT/throughput-vs-connections.png"
