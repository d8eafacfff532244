#!/usr/bin/env bash
# Redirects per second through a three-node cluster against one node, both
# on loopback, servers on CPU 0 and load on CPU 1 (so the cluster's three
# processes share one core, like the single node: the comparison is the cost
# of clustering per core, not a scale-out figure on this 2-core machine).
#
# Two workloads over LINKS links (Zipf s=1.1):
#   cached    the normal configuration: holders read their store, other
#             nodes fetch once per cache TTL
#   uncached  --cache-entries 0: every redirect reads the store, and on the
#             cluster two in three are forwarded reads from a holder (the
#             cost of a forwarded cold read)
# Each runs one wrk per node (the single node gets the same three wrk).
# usage: loadtest/cluster.sh [SECONDS] [LINKS]
source "$(dirname "$0")/lib.sh"
SECS=${1:-10}
N=${2:-10000}
need wrk wrk
build_shortd
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
python3 "$HERE/gen-links.py" "$N" 60 k > "$WORK/links.jsonl"
split -l 1000 "$WORK/links.jsonl" "$WORK/batch."

start_nodes() {
  # start_nodes COUNT EXTRA...: COUNT nodes (1: a single node without
  # clustering); sets PORTS.
  local count=$1; shift
  PORTS=()
  for i in $(seq "$count"); do
    local port; port=$(free_port); PORTS+=("$port")
    local dir="$WORK/n$i-$RANDOM"; mkdir -p "$dir"
    local cluster=()
    if [ "$count" -gt 1 ]; then
      cluster=(--node-id "n$i" --cluster-key loadtest-cluster-key)
      [ "$i" -gt 1 ] && cluster+=(--seed "127.0.0.1:${PORTS[0]}")
    fi
    taskset -c 0 "$SHORTD" serve --listen "127.0.0.1:$port" --data-dir "$dir" --log-level warn \
      --workers 1 --durability never "${cluster[@]}" "$@" &
    PIDS+=($!)
    wait_http "http://127.0.0.1:$port/healthz"
  done
  if [ "$count" -gt 1 ]; then
    for _ in $(seq 300); do
      local up=0
      for p in "${PORTS[@]}"; do
        curl -fs "http://127.0.0.1:$p/api/v1/cluster" | python3 -c "import json,sys; v=json.load(sys.stdin); sys.exit(0 if sum(m['state']=='up' for m in v['members'])==$count and not v['rebalancing'] else 1)" && up=$((up+1))
      done
      [ "$up" = "$count" ] && break
      sleep 0.1
    done
  fi
  local i=0
  for f in "$WORK"/batch.*; do
    local p=${PORTS[$((i % count))]}; i=$((i+1))
    curl -fs -X POST "http://127.0.0.1:$p/api/v1/links:batch" -H "content-type: application/json" --data-binary "@$f" -o /dev/null
  done
}

stop_nodes() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; PIDS=(); }

load() {
  # load LABEL: three wrk (one per node, or three on the single node), summed.
  local label=$1 total=0 i=0
  for p in "${PORTS[@]}" "${PORTS[@]}" "${PORTS[@]}"; do
    [ "$i" -ge 3 ] && break
    taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --latency -s "$HERE/keys.lua" "http://127.0.0.1:$p" -- "$N" zipf 1.1 k > "$WORK/wrk.$i" 2>&1 &
    i=$((i+1))
  done
  wait_wrk=$(jobs -p | tail -3); for j in $wait_wrk; do wait "$j" 2>/dev/null || true; done
  local p99s=()
  for i in 0 1 2; do
    total=$(echo "$total + $(wrk_rps "$WORK/wrk.$i")" | bc)
    p99s+=("$(awk '/ 99%/ {print $2}' "$WORK/wrk.$i")")
    [ -n "$(wrk_errors "$WORK/wrk.$i")" ] && echo "  $label wrk $i: $(wrk_errors "$WORK/wrk.$i")" >&2
  done
  printf '%-30s %12.0f   %s\n' "$label" "$total" "${p99s[*]}"
  echo "$total" > "$WORK/last"
}

printf '%-30s %12s   %s\n' "setup" "redirects/s" "p99 per wrk"
for mode in cached uncached; do
  extra=()
  [ "$mode" = uncached ] && extra=(--cache-entries 0)
  start_nodes 1 "${extra[@]}"; load "one node, $mode"; one=$(cat "$WORK/last"); stop_nodes
  start_nodes 3 "${extra[@]}"; load "three nodes, $mode"; three=$(cat "$WORK/last"); stop_nodes
  printf '%-30s %12.2f\n' "  ratio three/one ($mode)" "$(echo "$three / $one" | bc -l)"
done
