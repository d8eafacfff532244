#!/usr/bin/env bash
# The Raft cluster against one node, on this machine's loopback:
#   writes    durable creates (--durability always), 64 connections from
#             CPU 1 to one node; servers on CPU 0 (the cluster's three
#             processes share it, like the single node: a cost per core,
#             not a scale-out figure). Cluster at --partitions 16 and 64.
#   idle      CPU of an idle three-node cluster over 10 s (heartbeats of
#             every group), at 16 and 64 partitions.
#   failover  kill -9 of the node leading the most groups, then the time
#             until a create through another node is acknowledged.
# usage: loadtest/raft.sh [SECONDS] [FAILOVER_TRIALS]
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
TRIALS=${2:-5}
need wrk wrk
build_shortd
cluster_scratch
KEY=loadtest-cluster-key

# start_cluster COUNT PARTITIONS: sets PORTS and NODE_PIDS (COUNT 1: a single node)
start_cluster() {
  local count=$1 parts=$2
  PORTS=(); NODE_PIDS=()
  for i in $(seq "$count"); do
    local port; port=$(free_port); PORTS+=("$port")
    local dir="$WORK/n$i-$RANDOM"; mkdir -p "$dir"
    local cluster=()
    if [ "$count" -gt 1 ]; then
      cluster=(--node-id "n$i" --cluster-key "$KEY" --partitions "$parts")
      [ "$i" -gt 1 ] && cluster+=(--seed "127.0.0.1:${PORTS[0]}")
    fi
    taskset -c 0 "$SHORTD" serve --listen "127.0.0.1:$port" --data-dir "$dir" --log-level warn \
      --workers 1 --durability always "${cluster[@]}" &
    PIDS+=($!); NODE_PIDS+=($!)
    wait_http "http://127.0.0.1:$port/healthz"
  done
  [ "$count" -gt 1 ] || return 0
  for _ in $(seq 600); do
    settled=1
    for p in "${PORTS[@]}"; do
      curl -fs "http://127.0.0.1:$p/api/v1/cluster" | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='up' for m in v['members'])==$count and not v['rebalancing'] else 1)" || settled=0
    done
    [ "$settled" = 1 ] && return 0
    sleep 0.1
  done
  echo "cluster did not settle" >&2; exit 1
}

stop_all() { for p in "${NODE_PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait "${NODE_PIDS[@]}" 2>/dev/null || true; }

writes() {
  run_wrk "$WORK/w.txt" -t1 -c64 -d"${SECS}s" -s "$HERE/create.lua" "http://127.0.0.1:${PORTS[0]}/api/v1/links"
  echo "$(wrk_rps "$WORK/w.txt") $(wrk_errors "$WORK/w.txt")"
}

idle_cpu() {
  local before=0 after=0
  for p in "${NODE_PIDS[@]}"; do before=$((before + $(cpu_ticks "$p"))); done
  sleep 10
  for p in "${NODE_PIDS[@]}"; do after=$((after + $(cpu_ticks "$p"))); done
  # ticks are 1/100 s: percent of one core
  echo $(( (after - before) * 100 / 1000 ))
}

start_cluster 1 0; single=$(writes); stop_all
start_cluster 3 16; c16=$(writes); stop_all
start_cluster 3 16; idle16=$(idle_cpu); stop_all
start_cluster 3 64; c64=$(writes); stop_all
start_cluster 3 64; idle64=$(idle_cpu); stop_all
start_cluster 1 0; single2=$(writes); stop_all

echo "durable creates/s, 64 connections to one node (date $(date -u +%F)):"
echo "  single node        ${single%% *} (again at the end: ${single2%% *})"
echo "  3 nodes, P=16      $c16"
echo "  3 nodes, P=64      $c64"
echo "idle CPU of three nodes, % of one core: P=16 ${idle16}%, P=64 ${idle64}%"

echo "failover: kill -9 of the node leading most groups -> next acknowledged create through another node"
for t in $(seq "$TRIALS"); do
  start_cluster 3 16
  most=0; best=0
  for i in 0 1 2; do
    n=$(curl -fs "http://127.0.0.1:${PORTS[$i]}/api/v1/cluster" | python3 -c "import json,sys; print(json.load(sys.stdin)['leading'])")
    [ "$n" -gt "$most" ] && most=$n && best=$i
  done
  other=${PORTS[$(( (best + 1) % 3 ))]}
  kill -9 "${NODE_PIDS[$best]}"
  start=$(date +%s.%N)
  # Creates land in random partitions: ten in a row acknowledged means
  # the partitions it led have new leaders.
  ok=0
  while [ "$ok" -lt 10 ]; do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -XPOST "http://127.0.0.1:$other/api/v1/links" \
      -H 'content-type: application/json' -d "{\"url\":\"https://example.com/f/$t/$RANDOM\"}")
    if [ "$code" = 201 ]; then ok=$((ok + 1)); else ok=0; fi
  done
  end=$(date +%s.%N)
  echo "  trial $t: led $most groups, $(python3 -c "print(f'{$end - $start:.2f}')") s until ten creates in a row were acknowledged"
  stop_all
done
