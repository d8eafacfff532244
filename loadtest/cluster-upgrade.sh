#!/usr/bin/env bash
# An upgrade of a three-node cluster (--partitions 1) from an older build
# (OLD=path to its binary) to this one: the old cluster takes SECONDS of
# creates, so that its group writes a snapshot in its layout; every node is
# stopped gracefully and started with this build on the same directories.
# Prints how many links each node lists before and after, node 3's snapshot
# files, and what its start said of its replica.
# usage: OLD=/path/to/old/shortd loadtest/cluster-upgrade.sh [SECONDS]
source "$(dirname "$0")/lib.sh"
SECS=${1:-8}
need wrk wrk
[ -x "${OLD:-}" ] || { echo "OLD=/path/to/an/older/shortd is needed" >&2; exit 2; }
build_shortd
cluster_scratch
KEY=loadtest-cluster-key
PORTS=(0 "$(free_port)" "$(free_port)" "$(free_port)")

start_node() { # BIN I
  local seed=()
  [ "$2" -gt 1 ] && seed=(--seed "127.0.0.1:${PORTS[1]}")
  taskset -c 0 "$1" serve --listen "127.0.0.1:${PORTS[$2]}" --data-dir "$WORK/n$2" --workers 1 --log-level info \
    --durability interval --node-id "n$2" --cluster-key "$KEY" --partitions 1 "${seed[@]}" >> "$WORK/n$2.log" 2>&1 &
  NODE[$2]=$!; PIDS+=($!)
  wait_http "http://127.0.0.1:${PORTS[$2]}/healthz"
}


for i in 1 2 3; do start_node "$OLD" "$i"; done
sleep 4
run_wrk "$WORK/w.txt" -t1 -c32 -d"${SECS}s" -s "$HERE/create.lua" "http://127.0.0.1:${PORTS[1]}/api/v1/links"
sleep 2
echo "old build lists: $(listed_links "${PORTS[1]}") $(listed_links "${PORTS[2]}") $(listed_links "${PORTS[3]}")"
ls -l "$WORK/n3/raft/" | grep snap
for i in 1 2 3; do kill -TERM "${NODE[$i]}"; done
wait "${NODE[1]}" "${NODE[2]}" "${NODE[3]}" 2>/dev/null || true
for i in 1 2 3; do start_node "$SHORTD" "$i"; done
sleep 3
echo "this build lists: $(listed_links "${PORTS[1]}") $(listed_links "${PORTS[2]}") $(listed_links "${PORTS[3]}")"
ls -l "$WORK/n3/raft/" | grep group
grep -h "replicas opened" "$WORK/n3.log" | tail -1
