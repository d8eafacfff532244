#!/usr/bin/env bash
# Restart of one node of a three-node Raft cluster (--partitions 16), this
# build against another (OLD=path to its binary), in the same run: each
# cluster takes SECONDS of durable creates (64 connections from CPU 1, the
# three nodes on CPU 0), then node 3 is restarted
#   graceful  SIGTERM, wait for its exit, start: time to the first /healthz,
#             then to its listing showing every link (its replicas caught up)
#   crash     kill -9, start: the same two times
# and its anonymous memory (RssAnon) after each start is read.
# DURABILITY (default always) is the nodes' --durability.
# usage: OLD=/path/to/old/shortd loadtest/cluster-restart.sh [SECONDS]
source "$(dirname "$0")/lib.sh"
SECS=${1:-20}
need wrk wrk
build_shortd
NEW=$SHORTD
cluster_scratch
KEY=loadtest-cluster-key

# start_node BIN I: node I of the cluster in $WORK/$TAG-nI, seeded by node 1.
start_node() {
  local bin=$1 i=$2 seed=()
  [ "$i" -gt 1 ] && seed=(--seed "127.0.0.1:${PORTS[1]}")
  taskset -c 0 "$bin" serve --listen "127.0.0.1:${PORTS[$i]}" --data-dir "$WORK/$TAG-n$i" --log-level warn \
    --workers 1 --durability "${DURABILITY:-always}" --node-id "n$i" --cluster-key "$KEY" --partitions 16 "${seed[@]}" > "$WORK/$TAG-n$i.log" 2>&1 &
  NODE[$i]=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:${PORTS[$i]}/healthz"
}

settled() {
  for i in 1 2 3; do
    curl -fs "http://127.0.0.1:${PORTS[$i]}/api/v1/cluster" | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='up' for m in v['members'])==3 and not v['rebalancing'] else 1)" || return 1
  done
}


anon_kb() { awk '/RssAnon/ {print $2}' "/proc/$1/status"; }

# restart BIN HOW (graceful|crash): sets RESULT to seconds to /healthz,
# seconds to every link listed, RssAnon in MB and the links.
restart() {
  local bin=$1 how=$2 want t0 t1 t2
  want=$(listed_links "${PORTS[1]}")
  if [ "$how" = graceful ]; then kill -TERM "${NODE[3]}"; else kill -9 "${NODE[3]}"; fi
  wait "${NODE[3]}" 2>/dev/null || true
  t0=$(date +%s.%N)
  start_node "$bin" 3
  t1=$(date +%s.%N)
  until [ "$(listed_links "${PORTS[3]}")" = "$want" ]; do sleep 0.05; done
  t2=$(date +%s.%N)
  RESULT="$(echo "$t1 - $t0" | bc) $(echo "$t2 - $t0" | bc) $(( $(anon_kb "${NODE[3]}") / 1024 )) $want"
}

# measure BIN TAG: a cluster of BIN, loaded, then node 3 restarted both ways.
measure() {
  local bin=$1; TAG=$2
  PORTS=(0 "$(free_port)" "$(free_port)" "$(free_port)")
  for i in 1 2 3; do start_node "$bin" "$i"; done
  for _ in $(seq 600); do settled && break; sleep 0.1; done
  run_wrk "$WORK/$TAG-w.txt" -t1 -c64 -d"${SECS}s" -s "$HERE/create.lua" "http://127.0.0.1:${PORTS[1]}/api/v1/links"
  echo "$TAG: $(wrk_rps "$WORK/$TAG-w.txt") creates/s $(wrk_errors "$WORK/$TAG-w.txt")"
  sleep 2
  restart "$bin" graceful; echo "$TAG graceful: $RESULT"
  restart "$bin" crash; echo "$TAG crash:    $RESULT"
  for i in 1 2 3; do kill -9 "${NODE[$i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  du -sh "$WORK/$TAG-n3" | sed "s/^/$TAG node 3 disk: /"
}

echo "columns: seconds to /healthz, seconds to every link listed, RssAnon MB, links (date $(date -u +%F))"
measure "$NEW" new
[ -n "$OLD" ] && measure "$OLD" old
