#!/usr/bin/env bash
# Draws docs/img/dashboard.png: the panels of docs/grafana-dashboard.json,
# from /metrics scraped once a second during a short mixed load.
#
# A release shortd (--workers 1 --durability always, pinned to CPU 0, temp
# data dir) gets LINKS aliased links (d0 ..), then wrk on CPU 1 runs
# loadtest/dashboard.lua for SECONDS: redirects over those links with a Zipf
# skew, ~5 % durable creates with an Idempotency-Key, ~1 % unknown codes.
# The cache is bounded below the link count and the log uses small segments
# with frequent snapshots, so that evictions, segment rolls, snapshots and
# compaction all show up within the run.
# usage: loadtest/dashboard.sh [SECONDS] [LINKS]   (CONNS=N sets wrk's connections)
source "$(dirname "$0")/lib.sh"
SECS=${1:-20}
LINKS=${2:-400}
CONNS=${CONNS:-32}
need wrk wrk
[ -x "$SHORTD" ] || build_shortd
# plot-metrics.py installs matplotlib itself, but doing it now keeps the
# install out of the scrape window.
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --user matplotlib
OUT="$ROOT/docs/img"
mkdir -p "$OUT"

WORK=$(mktemp -d)
SHORTD_PID=
trap '[ -n "$SHORTD_PID" ] && kill "$SHORTD_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"
start_shortd "$PORT" "$WORK/data" --workers 1 --durability always \
  --cache-entries $((LINKS * 2 / 3)) --segment-bytes 65536 --snapshot-records 4000 --compact-ratio 0.3

# The links, in one batch (one disk sync).
python3 - "$LINKS" > "$WORK/links.jsonl" <<'PY'
import sys
for i in range(int(sys.argv[1])):
    print('{"url":"https://www.example.com/articles/%d","alias":"d%d"}' % (i, i))
PY
created=$(curl -fs -X POST "$BASE/api/v1/links:batch" -H 'content-type: application/x-ndjson' \
  --data-binary @"$WORK/links.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)["created"])')
echo "created $created of $LINKS links" >&2
[ "$created" = "$LINKS" ]

# Scrape from 2 s before the load until 2 s after it.
taskset -c 1 python3 "$HERE/plot-metrics.py" "$BASE" $((SECS + 4)) -o "$OUT/dashboard.png" \
  --title "shortd, 1 worker, --durability always: wrk ${CONNS} conns, Zipf over $LINKS links, ~5% creates, ~1% unknown codes (${SECS}s load)" \
  > "$WORK/summary.txt" &
PLOT_PID=$!
sleep 2
run_wrk "$WORK/wrk.txt" -t1 -c"$CONNS" -d"${SECS}s" --latency -s "$HERE/dashboard.lua" "$BASE/" -- "$LINKS" d 1.0 5 1
wait "$PLOT_PID"
if grep -q '\.lua:' "$WORK/wrk.txt"; then cat "$WORK/wrk.txt" >&2; echo "wrk could not run the script" >&2; exit 1; fi
cat "$WORK/wrk.txt"
echo
cat "$WORK/summary.txt"
echo
echo "final counters:"
curl -fs "$BASE/metrics" | grep -E '^shortd_[a-z_]+(\{[^}]*\})? ' | grep -v '_bucket' | sort
echo "wrote $OUT/dashboard.png" >&2
