#!/usr/bin/env bash
# GET /api/v1/links?q= (search) and ?order=newest over a large store.
# usage: loadtest/search-bench.sh [LINKS] (default 10000000)
# DATA=/path keeps the imported data directory there and reuses it on the
# next run (an import of 10 M links takes minutes).
# Each query runs 5 times; the table shows the median and the slowest
# wall time of the whole HTTP answer (curl's time_total) and what it found.
source "$(dirname "$0")/lib.sh"
N=${1:-10000000}
build_shortd
WORK=$(mktemp -d)
DATA=${DATA:-$WORK/data}
trap 'kill $SHORTD_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
if [ ! -d "$DATA" ]; then
  python3 "$HERE/gen-links.py" "$N" > "$WORK/links.jsonl"
  /usr/bin/time -f "import: %e s wall" "$SHORTD" import --data-dir "$DATA" "$WORK/links.jsonl"
  rm "$WORK/links.jsonl"
fi
du -sh "$DATA"
PORT=$(free_port)
KEY=search-bench-key
"$SHORTD" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn --api-key "$KEY" &
SHORTD_PID=$!
for _ in $(seq 600); do curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.1; done
LINKS=$(curl -fs "http://127.0.0.1:$PORT/metrics" | awk '/^shortd_links / {print $2}')
echo "links in the store: $LINKS, cores: $(nproc)"
# The first search after the start touches every mapped page once; the
# runs below find them mapped, as a running server would.
FIRST=$(curl -fs -o /dev/null -w '%{time_total}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/links?q=no-such-thing-anywhere")
echo "first search after the start (no match, pages not yet mapped in this process): $FIRST s"
echo "| query | what it asks | matches on the page | median s | slowest s |"
echo "|---|---|---|---|---|"
run() {
  local query=$1 what=$2 times=() found
  for _ in 1 2 3 4 5; do
    times+=("$(curl -fs -o "$WORK/page.json" -w '%{time_total}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/links?$query")")
  done
  found=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["links"]))' "$WORK/page.json")
  sorted=$(printf '%s\n' "${times[@]}" | sort -n)
  echo "| \`$query\` | $what | $found | $(echo "$sorted" | sed -n 3p) | $(echo "$sorted" | tail -1) |"
}
run "q=no-such-thing-anywhere" "no match: reads every record"
run "q=/$((N - 1))&order=newest" "one URL (the newest link), newest first"
run "q=/1234567&order=newest" "URLs containing /1234567: a few"
run "q=/7&order=newest&limit=50" "URLs containing /7: a page of many"
run "q=Ab&order=newest&limit=50" "codes starting Ab"
run "q=zZ9&limit=50" "codes starting zZ9, oldest first"
run "order=newest&limit=50" "the newest page, no search (what the UI opens with)"
run "limit=50" "the oldest page, no search (the list before q=)"
