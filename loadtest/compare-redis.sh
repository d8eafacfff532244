#!/usr/bin/env bash
# Durable creates against Redis with an fsync per write, on one core.
#
#   redis-server --appendonly yes --appendfsync always --save ''
#     loaded by redis-benchmark -t set -c 64 -n N -d 60 -r 100000000
#     (unique-ish keys, 60-byte values like a URL, no pipelining)
#   shortd serve --workers 1 --durability always
#     loaded by wrk -t1 -c64 -s loadtest/create.lua (a unique URL per POST)
#
# Both servers run for the whole script, pinned to CPU 0, on data
# directories under the same file system (TMPDIR, else target/tmp); the
# load generators are pinned to CPU 1 and take turns (redis first in odd
# rounds, shortd first in even ones). Prints each pair of rates, the ratio
# shortd/redis per round and its median, and each server's CPU per write:
# user+system ticks of the whole process (every thread) from
# /proc/PID/stat over the run, divided by the writes it answered. A Redis
# AOF rewrite runs in a forked child, whose CPU is not in those ticks.
#
# SLOW_FSYNC_US=N runs both servers under loadtest/slow-fsync.c, which adds
# N microseconds to every fsync: the same comparison on a slower disk.
# usage: [SLOW_FSYNC_US=N] loadtest/compare-redis.sh [ROUNDS] [SECONDS] [REDIS_REQUESTS]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-5}
SECS=${2:-10}
N=${3:-1000000}
need wrk wrk
need redis-server redis-server
need redis-benchmark redis-tools
build_shortd

BASE=${TMPDIR:-$ROOT/target/tmp}
mkdir -p "$BASE"
WORK=$(mktemp -d -p "$BASE" compare-redis.XXXXXX)
REDIS_PID='' SHORTD_PID=''
trap 'kill $SHORTD_PID $REDIS_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

SLOW=()
if [ -n "${SLOW_FSYNC_US:-}" ]; then
  cc -shared -fPIC -O2 -o "$WORK/slow-fsync.so" "$HERE/slow-fsync.c" -ldl
  SLOW=(env LD_PRELOAD="$WORK/slow-fsync.so" SLOW_FSYNC_US="$SLOW_FSYNC_US")
  echo "every fsync of both servers takes $SLOW_FSYNC_US us longer"
fi

RPORT=$(free_port)
mkdir -p "$WORK/redis"
${SLOW[@]+"${SLOW[@]}"} taskset -c 0 redis-server --bind 127.0.0.1 --port "$RPORT" --dir "$WORK/redis" --appendonly yes --appendfsync always \
  --save '' --daemonize no --logfile "$WORK/redis/redis.log" &
REDIS_PID=$!
for _ in $(seq 100); do redis-cli -p "$RPORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
[ "$(redis-cli -p "$RPORT" config get appendfsync | tail -1)" = always ] || { echo "redis is not on appendfsync always" >&2; exit 1; }

SPORT=$(free_port)
SHORTD_WRAP=(${SLOW[@]+"${SLOW[@]}"})
start_shortd "$SPORT" "$WORK/shortd" --workers 1 --durability always
curl -fs -X POST "http://127.0.0.1:$SPORT/api/v1/links" -H 'content-type: application/json' \
  -d '{"url":"https://www.example.com/load/check"}' -o /dev/null -w "shortd POST /api/v1/links -> %{http_code}\n"

cpu_per_op() { awk -v c="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {printf "%.2f", c * 1e6 / hz / n}'; }

redis_run() {
  # prints "rate cpu_us_per_write"
  local out="$WORK/redis.txt" before after
  before=$(cpu_ticks "$REDIS_PID")
  taskset -c 1 redis-benchmark -p "$RPORT" -t set -c 64 -n "$N" -d 60 -r 100000000 --csv > "$out" 2>&1
  after=$(cpu_ticks "$REDIS_PID")
  local rate; rate=$(awk -F'"' '$2 == "SET" {print $4}' "$out")
  [ -n "$rate" ] || { echo "redis-benchmark failed: $(cat "$out")" >&2; exit 1; }
  echo "$rate $(cpu_per_op $((after - before)) "$N")"
}

shortd_run() {
  # prints "rate cpu_us_per_write"
  local out="$WORK/shortd.txt" before after
  before=$(cpu_ticks "$SHORTD_PID")
  run_wrk "$out" -t1 -c64 -d"${SECS}s" -s "$HERE/create.lua" "http://127.0.0.1:$SPORT/api/v1/links"
  after=$(cpu_ticks "$SHORTD_PID")
  local errs; errs=$(wrk_errors "$out")
  [ -n "$errs" ] && echo "  shortd: $errs" >&2
  echo "$(wrk_rps "$out") $(cpu_per_op $((after - before)) "$(wrk_total "$out")")"
}

printf "%-5s %12s %12s %8s %14s %14s\n" round redis_set/s shortd_post/s ratio redis_cpu_us shortd_cpu_us
: > "$WORK/ratios"; : > "$WORK/redis-cpu"; : > "$WORK/shortd-cpu"
for round in $(seq "$ROUNDS"); do
  if [ $((round % 2)) = 1 ]; then
    read -r r_rate r_cpu < <(redis_run)
    read -r s_rate s_cpu < <(shortd_run)
  else
    read -r s_rate s_cpu < <(shortd_run)
    read -r r_rate r_cpu < <(redis_run)
  fi
  ratio=$(awk -v a="$s_rate" -v b="$r_rate" 'BEGIN {printf "%.3f", a / b}')
  echo "$ratio" >> "$WORK/ratios"; echo "$r_cpu" >> "$WORK/redis-cpu"; echo "$s_cpu" >> "$WORK/shortd-cpu"
  printf "%-5s %12.0f %12.0f %8s %14s %14s\n" "$round" "$r_rate" "$s_rate" "$ratio" "$r_cpu" "$s_cpu"
done
echo "median CPU per write: redis $(median < "$WORK/redis-cpu") us, shortd $(median < "$WORK/shortd-cpu") us"
echo "median ratio shortd/redis durable writes per second (goal >= 1.0): $(median < "$WORK/ratios")"
