#!/usr/bin/env bash
# Bulk import speed, restart time with a snapshot, and memory per link.
# usage: loadtest/store-bench.sh [LINKS] (default 1000000)
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
build_shortd
WORK=$(mktemp -d)
trap 'kill $SHORTD_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
python3 "$HERE/gen-links.py" "$N" > "$WORK/links.jsonl"
URL_BYTES=$(head -1 "$WORK/links.jsonl" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["url"]))')
echo "links: $N, URL bytes each: $URL_BYTES"
/usr/bin/time -f "import: %e s wall, %M KiB max RSS" "$SHORTD" import --data-dir "$WORK/data" "$WORK/links.jsonl"
du -sh "$WORK/data"
PORT=$(free_port)
T0=$(date +%s.%N)
"$SHORTD" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --log-level warn --workers 1 &
SHORTD_PID=$!
wait_http "http://127.0.0.1:$PORT/healthz"
T1=$(date +%s.%N)
echo "restart (snapshot load + replay) until /healthz answers: $(echo "$T1 - $T0" | bc) s"
# Touch nothing: the index is in anonymous memory, URLs stay in the mapped log (page cache).
grep -E "VmRSS|RssAnon|RssFile" "/proc/$SHORTD_PID/status"
ANON_KB=$(awk '/RssAnon/ {print $2}' "/proc/$SHORTD_PID/status")
# Baseline: an empty store's anonymous memory.
PORT2=$(free_port)
"$SHORTD" serve --listen "127.0.0.1:$PORT2" --data-dir "$WORK/empty" --log-level warn --workers 1 &
EMPTY_PID=$!
wait_http "http://127.0.0.1:$PORT2/healthz"
BASE_KB=$(awk '/RssAnon/ {print $2}' "/proc/$EMPTY_PID/status")
kill $EMPTY_PID
echo "anonymous memory per link beyond an empty server: $(( (ANON_KB - BASE_KB) * 1024 / N )) bytes (URLs live in the mapped log)"
