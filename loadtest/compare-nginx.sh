#!/usr/bin/env bash
# Compares shortd with nginx answering a hard-coded `return 302` on one core.
# Both servers are pinned to CPU 0 and wrk to CPU 1; runs alternate.
# Prints every pair and the median ratios for
#   - 16-deep pipelined keep-alive, 64 connections: requests per second
#   - plain keep-alive, 64 connections: server CPU time per response
#     (from /proc/PID/stat), since one wrk thread saturates first.
# usage: loadtest/compare-nginx.sh [ROUNDS] [SECONDS]
source "$(dirname "$0")/lib.sh"
ROUNDS=${1:-5}
SECS=${2:-5}
need wrk wrk
need nginx nginx-light
build_shortd

WORK=$(mktemp -d)
trap 'kill $SHORTD_PID $NGINX_PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
TARGET="https://example.com/landing/page"

NPORT=$(free_port)
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log crit;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000000;
  keepalive_timeout 600s;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  server {
    listen 127.0.0.1:$NPORT;
    location / { return 302 $TARGET; }
  }
}
CONF
taskset -c 0 nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
NGINX_PID=$!
wait_http "http://127.0.0.1:$NPORT/x" || true
# nginx forks its worker; measure the worker's CPU.
sleep 0.3
NGINX_WORKER=$(pgrep -P "$NGINX_PID" | head -1)

SPORT=$(free_port)
start_shortd "$SPORT" "$WORK/data" --workers 1 --durability never
CODE=$(create_link "$SPORT" "$TARGET")
curl -s -o /dev/null -w "shortd GET /$CODE -> %{http_code} %{redirect_url}\n" "http://127.0.0.1:$SPORT/$CODE"
curl -s -o /dev/null -w "nginx  GET /$CODE -> %{http_code} %{redirect_url}\n" "http://127.0.0.1:$NPORT/$CODE"

measure() {
  # measure NAME PID PORT MODE: prints "rps cpu_us_per_response"
  local name=$1 pid=$2 port=$3 mode=$4 out="$WORK/$1-$4.txt"
  local args=(-t1 -c64 -d"${SECS}s")
  [ "$mode" = pipelined ] && args+=(-s "$HERE/pipeline.lua")
  local before after
  before=$(cpu_ticks "$pid")
  if [ "$mode" = pipelined ]; then
    run_wrk "$out" "${args[@]}" "http://127.0.0.1:$port/$CODE" -- 16
  else
    run_wrk "$out" "${args[@]}" "http://127.0.0.1:$port/$CODE"
  fi
  after=$(cpu_ticks "$pid")
  local total rps
  total=$(wrk_total "$out"); rps=$(wrk_rps "$out")
  local errs; errs=$(wrk_errors "$out")
  [ -n "$errs" ] && echo "  $name $mode: $errs" >&2
  awk -v r="$rps" -v t="$total" -v c=$((after - before)) -v hz="$CLK_TCK" 'BEGIN {printf "%.0f %.3f\n", r, c * 1e6 / hz / t}'
}

printf "%-5s %-10s %12s %12s %14s %14s\n" round mode nginx_rps shortd_rps nginx_cpu_us shortd_cpu_us
: > "$WORK/ratios-pipelined"; : > "$WORK/ratios-plain"
for round in $(seq "$ROUNDS"); do
  for mode in pipelined plain; do
    read -r n_rps n_cpu < <(measure nginx "$NGINX_WORKER" "$NPORT" "$mode")
    read -r s_rps s_cpu < <(measure shortd "$SHORTD_PID" "$SPORT" "$mode")
    printf "%-5s %-10s %12s %12s %14s %14s\n" "$round" "$mode" "$n_rps" "$s_rps" "$n_cpu" "$s_cpu"
    if [ "$mode" = pipelined ]; then
      awk -v a="$s_rps" -v b="$n_rps" 'BEGIN {print a / b}' >> "$WORK/ratios-pipelined"
    else
      awk -v a="$s_cpu" -v b="$n_cpu" 'BEGIN {print a / b}' >> "$WORK/ratios-plain"
    fi
  done
done
echo "median pipelined throughput ratio shortd/nginx (goal >= 1.5): $(median < "$WORK/ratios-pipelined")"
echo "median plain keep-alive CPU-per-response ratio shortd/nginx (goal <= 1.0): $(median < "$WORK/ratios-plain")"
