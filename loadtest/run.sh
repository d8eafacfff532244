#!/usr/bin/env bash
# Runs one load scenario against a release shortd on loopback and prints a
# table. The server is pinned to CPU 0 (--workers 1), the load generator to
# CPU 1.
#   hot      one viral link
#   zipf     1 M links, Zipf s=1.1
#   uniform  10 M links, uniform choice (mostly cache misses)
#   mixed    90 % redirects, 10 % creates with --durability always
#   miss     unknown codes
# usage: loadtest/run.sh SCENARIO [SECONDS]   (LINKS=N overrides the link count,
#        WARMUP=S the unmeasured warm-up of zipf and uniform, default 20)
source "$(dirname "$0")/lib.sh"
SCENARIO=${1:?usage: run.sh hot|zipf|uniform|mixed|miss [SECONDS]}
SECS=${2:-10}
need wrk wrk
need_oha
build_shortd
WORK=$(mktemp -d)
trap 'kill $SHORTD_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=$(free_port)
DURABILITY=never
[ "$SCENARIO" = mixed ] && DURABILITY=always

case "$SCENARIO" in
  zipf) N=${LINKS:-1000000} ;;
  uniform) N=${LINKS:-10000000} ;;
  *) N=0 ;;
esac
if [ "$N" -gt 0 ]; then
  echo "seeding $N links ..." >&2
  python3 "$HERE/gen-links.py" "$N" 60 k > "$WORK/links.jsonl"
  "$SHORTD" import --data-dir "$WORK/data" "$WORK/links.jsonl" >&2
  rm "$WORK/links.jsonl"
fi
start_shortd "$PORT" "$WORK/data" --workers 1 --durability "$DURABILITY" --cache-entries 1000000
BASE="http://127.0.0.1:$PORT"
CODE=$(create_link "$PORT" "https://www.example.com/landing/page")

wrk_args=()
path="/$CODE"
case "$SCENARIO" in
  hot) ;;
  zipf) wrk_args=(-s "$HERE/keys.lua"); extra=(-- "$N" zipf 1.1 k) ;;
  uniform) wrk_args=(-s "$HERE/keys.lua"); extra=(-- "$N" uniform 1 k) ;;
  mixed) wrk_args=(-s "$HERE/mixed.lua"); extra=(-- "$CODE") ;;
  miss) path="/nosuchcode"; wrk_args=(-s "$HERE/keys.lua"); extra=(-- 100000000 uniform 1 miss) ;;
  *) echo "unknown scenario $SCENARIO" >&2; exit 2 ;;
esac

report() {
  # report LABEL WRK_OUTPUT CPU_TICKS
  local rps total lat
  rps=$(wrk_rps "$2"); total=$(wrk_total "$2")
  lat=$(awk '/Latency/ {print $2 "/" $3}' "$2")
  printf "%-28s %12s %14s %16s %s\n" "$1" "$rps" "$(awk -v c="$3" -v hz="$CLK_TCK" -v t="$total" 'BEGIN {printf "%.2f", c * 1e6 / hz / t}')" "$lat" "$(wrk_errors "$2")"
}

printf "%-28s %12s %14s %16s\n" "$SCENARIO" "req/s" "cpu_us/req" "latency avg/sd"
if [ "$SCENARIO" = zipf ] || [ "$SCENARIO" = uniform ]; then
  # Steady state: the first seconds of a Zipf load touch hundreds of
  # thousands of links for the first time (store reads, cache inserts).
  echo "warming the cache for ${WARMUP:-20} s ..." >&2
  run_wrk "$WORK/warm" -t1 -c64 -d"${WARMUP:-20}s" -s "$HERE/keys.lua" "$BASE" "${extra[@]:1}"
  # The same client (wrk running keys.lua) on a single link, as the
  # baseline: the Lua script costs wrk time, so compare like with like.
  b=$(cpu_ticks "$SHORTD_PID")
  run_wrk "$WORK/base" -t1 -c64 -d"${SECS}s" -s "$HERE/keys.lua" "$BASE" -- 1 uniform 1 k
  a=$(cpu_ticks "$SHORTD_PID"); report "same client, one link" "$WORK/base" $((a - b))
  BASE_RPS=$(wrk_rps "$WORK/base")
fi
b=$(cpu_ticks "$SHORTD_PID")
run_wrk "$WORK/plain" -t1 -c64 -d"${SECS}s" "${wrk_args[@]}" "$BASE$path" "${extra[@]}"
a=$(cpu_ticks "$SHORTD_PID"); report "wrk keep-alive, 64 conns" "$WORK/plain" $((a - b))
MAX=$(wrk_rps "$WORK/plain")
if [ "$SCENARIO" = mixed ]; then
  # The same client with no creates: the pure-redirect figure to compare with.
  b=$(cpu_ticks "$SHORTD_PID")
  run_wrk "$WORK/base" -t1 -c64 -d"${SECS}s" "${wrk_args[@]}" "$BASE$path" -- "$CODE" 0
  a=$(cpu_ticks "$SHORTD_PID"); report "same client, no creates" "$WORK/base" $((a - b))
  printf "%-28s %12s\n" "redirects, mixed/pure" "$(awk -v m="$MAX" -v p="$(wrk_rps "$WORK/base")" 'BEGIN {printf "%.2f", 0.9 * m / p}')"
fi
if [ -n "${BASE_RPS:-}" ]; then
  printf "%-28s %12s\n" "ratio to one link" "$(awk -v a="$MAX" -v b="$BASE_RPS" 'BEGIN {printf "%.2f", a / b}')"
fi
if [ "$SCENARIO" = hot ] || [ "$SCENARIO" = miss ]; then
  b=$(cpu_ticks "$SHORTD_PID")
  if [ "$SCENARIO" = hot ]; then
    run_wrk "$WORK/pipe" -t1 -c64 -d"${SECS}s" -s "$HERE/pipeline.lua" "$BASE$path" -- 16
  else
    run_wrk "$WORK/pipe" -t1 -c64 -d"${SECS}s" -s "$HERE/pipeline.lua" "$BASE/nosuchcode" -- 16
  fi
  a=$(cpu_ticks "$SHORTD_PID"); report "wrk pipelined x16, 64 conns" "$WORK/pipe" $((a - b))
fi
# Latency at half the measured keep-alive rate, fixed-rate (not closed loop).
HALF=$(awk -v m="$MAX" 'BEGIN {printf "%d", m / 2}')
if [ "$SCENARIO" != mixed ]; then
  url="$BASE$path"
  oha_args=(-z "${SECS}s" -c 64 -q "$HALF" --latency-correction --no-tui --redirect 0 --output-format json -o "$WORK/oha.json")
  if [ "$SCENARIO" = zipf ] || [ "$SCENARIO" = uniform ]; then
    # 200 000 URLs drawn like keys.lua draws them, read by oha from a file
    # (oha's regex URLs cost it more time than the server spends).
    python3 - "$N" "$SCENARIO" "$BASE" > "$WORK/urls.txt" <<'PY'
import bisect, random, sys
n, mode, base = int(sys.argv[1]), sys.argv[2], sys.argv[3]
if mode == "zipf":
    cdf, total = [], 0.0
    for k in range(1, n + 1):
        total += k ** -1.1
        cdf.append(total)
    draw = lambda: (bisect.bisect_left(cdf, random.random() * total) * 7919) % n
else:
    draw = lambda: random.randrange(n)
sys.stdout.write("".join("%s/k%d\n" % (base, draw()) for _ in range(200000)))
PY
    url="$WORK/urls.txt"; oha_args+=(--urls-from-file)
  fi
  # wrk2-style fixed rate from a client light enough not to be the bottleneck
  # (oha's own ceiling on one core is below shortd's: its tail is the client's).
  fixed_target="$path"; [[ "$url" == "$WORK/urls.txt" ]] && fixed_target="@$WORK/urls.txt"
  printf "%-28s " "fixed rate $HALF req/s"
  taskset -c 1 "$ROOT/target/release/examples/fixed_rate" "127.0.0.1:$PORT" "$fixed_target" "$HALF" "$SECS" 64
  taskset -c 1 oha "${oha_args[@]}" "$url" >/dev/null 2>&1
  python3 - "$WORK/oha.json" "$HALF" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
p = d.get("latencyPercentiles", {})
ms = lambda k: "%.3f" % (1000 * (p.get(k) or float("nan")))
print("%-28s %12s   p50 %s ms, p99 %s ms, p99.9 %s ms" % ("oha at %s req/s" % sys.argv[2], "%.0f" % d["summary"]["requestsPerSec"], ms("p50"), ms("p99"), ms("p99.9")))
PY
fi
echo "server RSS: $(awk '/VmRSS/ {print $2, $3}' /proc/$SHORTD_PID/status)"
