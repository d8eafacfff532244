#!/usr/bin/env bash
# Start time with a cold page cache: DIR's files dropped from the page cache
# (as memory pressure would), then `serve` until the first /healthz answers.
# usage: loadtest/cold-start.sh DIR [RUNS] (default 3); SHORTD=bin for another build
source "$(dirname "$0")/lib.sh"
DIR=$1
RUNS=${2:-3}
build_shortd
for _ in $(seq "$RUNS"); do
  drop_page_cache "$DIR"
  PORT=$(free_port)
  T0=$(date +%s.%N)
  "$SHORTD" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR" --log-level warn --workers 1 > /dev/null 2>&1 &
  PID=$!
  until curl -fs -o /dev/null "http://127.0.0.1:$PORT/healthz"; do sleep 0.002; done
  T1=$(date +%s.%N)
  kill "$PID"; wait "$PID" || true
  echo "cold start to first /healthz: $(echo "$T1 - $T0" | bc) s"
done
