#!/usr/bin/env bash
# The store at scale on one node: import speed, restart time, anonymous and
# mapped memory, disk per link, and hot against uniform redirects.
# usage: loadtest/store-bench.sh [LINKS] (default 1000000)
#   STORE_BENCH_DIR=dir  where the file and the data go (default a temporary
#                        directory under target/tmp; 20 M links take ~8 GB)
# Restart: a graceful stop, then `serve` until the first /healthz answers,
# median of 5. Memory: RssAnon and RssFile of the server after the restart
# and after 1000 sampled redirects. Redirects: wrk -t1 -c64 10 s on CPU 1,
# the server (--workers 1) on CPU 0; "hot" asks for one link, "uniform" for
# links drawn uniformly from all of them (mostly cache misses); then both
# again with --analytics off.
source "$(dirname "$0")/lib.sh"
N=${1:-1000000}
build_shortd
mkdir -p "$ROOT/target/tmp"
WORK=${STORE_BENCH_DIR:-$(mktemp -d -p "$ROOT/target/tmp" store-bench.XXXXXX)}
PID=
trap '[ -n "$PID" ] && kill $PID 2>/dev/null; wait 2>/dev/null; [ -z "${STORE_BENCH_DIR:-}" ] && rm -rf "$WORK"' EXIT
FILE="$WORK/links-$N.jsonl"
[ -s "$FILE" ] || python3 "$HERE/gen-links.py" "$N" 60 k > "$FILE"
DATA="$WORK/data-$N"
rm -rf "$DATA"
sync
echo "links: $N ($(du -h "$FILE" | cut -f1) of JSON lines)"
T0=$(date +%s.%N)
"$SHORTD" import --data-dir "$DATA" "$FILE"
T1=$(date +%s.%N)
echo "import: $(echo "$T1 - $T0" | bc) s wall, $(echo "$N / ($T1 - $T0)" | bc) links/s"
# The input file leaves the page cache: at 100 M links it is 8 GB, and the
# store (18 GB) needs the room to be served from memory.
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$FILE"
DISK=$(du -sb "$DATA" | cut -f1)
TABLE=$(du -cb "$DATA"/index-*.idx | tail -1 | cut -f1)
echo "disk: $((DISK / N)) bytes per link (index table $((TABLE / N)) of them)"

# start: serve in the background; STARTED is the seconds to the first /healthz.
start() {
  PORT=$(free_port)
  local t0 t1
  t0=$(date +%s.%N)
  taskset -c 0 "$SHORTD" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA" --log-level warn --workers 1 "$@" &
  PID=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.002; done
  t1=$(date +%s.%N)
  STARTED=$(echo "$t1 - $t0" | bc)
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=; }

TIMES=()
for _ in 1 2 3 4 5; do start; TIMES+=("$STARTED"); stop; done
echo "restart to first /healthz: ${TIMES[*]} s; median $(printf '%s\n' "${TIMES[@]}" | sort -n | sed -n 3p) s"

start
mem() { awk '/RssAnon|RssFile/ {printf "%s %d kB  ", $1, $2}' "/proc/$PID/status"; echo; }
echo "after the restart: $(mem)"
BAD=0
for i in $(shuf -i 0-$((N - 1)) -n 1000); do
  LOC=$(curl -s -o /dev/null -w '%{http_code} %{redirect_url}' "http://127.0.0.1:$PORT/k$i")
  case "$LOC" in "302 https://www.example.com/articles/"*"/$i") ;; *) BAD=$((BAD + 1)) ;; esac
done
echo "1000 sampled links: $BAD wrong"
ANON=$(awk '/RssAnon/ {print $2}' "/proc/$PID/status")
echo "after them: $(mem)anonymous memory per link: $((ANON * 1024 / N)) bytes"

rate() { taskset -c 1 wrk -t1 -c64 -d10s -s "$HERE/keys.lua" "http://127.0.0.1:$PORT" -- "$1" uniform | awk '/Requests\/sec/ {print $2}'; }
majflt() { awk '{print $12}' "/proc/$PID/stat"; }
HOT=$(rate 1)
F0=$(majflt)
UNIFORM=$(rate "$N")
F1=$(majflt)
echo "redirects/s: hot $HOT, uniform over $N links $UNIFORM ($(echo "scale=2; $UNIFORM / $HOT" | bc)x hot)"
echo "after the load: $(mem)major page faults in the uniform run: $((F1 - F0))"
stop
# The same without analytics: a uniform load clicks a new link almost every
# time, and each first click of a link makes its hourly rollup.
start --analytics off
HOT=$(rate 1)
UNIFORM=$(rate "$N")
echo "with --analytics off: hot $HOT, uniform $UNIFORM ($(echo "scale=2; $UNIFORM / $HOT" | bc)x hot)"
stop
