# Shared helpers for the load-test scripts. Loopback traffic only.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
# SHORTD=/path/to/shortd measures another build (e.g. the previous one)
# as it is; otherwise the scripts build and use this checkout's.
SHORTD_GIVEN=${SHORTD:+yes}
SHORTD="${SHORTD:-$ROOT/target/release/shortd}"

need() {
  # need COMMAND PACKAGE: install a Debian package when a command is missing.
  command -v "$1" >/dev/null 2>&1 && return 0
  echo "installing $2 ..." >&2
  if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null
  else sudo apt-get update -qq >/dev/null && sudo apt-get install -y -qq "$2" >/dev/null; fi
}

need_oha() {
  command -v oha >/dev/null 2>&1 && return 0
  [ -x "$HOME/.cargo/bin/oha" ] && { export PATH="$HOME/.cargo/bin:$PATH"; return 0; }
  echo "installing oha with cargo (a few minutes) ..." >&2
  cargo install --locked oha >/dev/null 2>&1
  export PATH="$HOME/.cargo/bin:$PATH"
}

build_shortd() {
  [ -n "$SHORTD_GIVEN" ] && return 0
  (cd "$ROOT" && cargo build --release --quiet && cargo build --release --quiet --example fixed_rate)
}

# scratch NAME: sets WORK to a new directory under target/tmp; on exit the
# server whose pid is in PID (if any) is killed and WORK removed.
scratch() {
  mkdir -p "$ROOT/target/tmp"
  WORK=$(mktemp -d -p "$ROOT/target/tmp" "$1.XXXXXX")
  PID=
  trap '[ -n "$PID" ] && kill -9 $PID 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT
}

# cluster_scratch: sets WORK to a new temporary directory and PIDS to an
# empty list; on exit every process in PIDS is killed and WORK removed.
cluster_scratch() {
  WORK=$(mktemp -d)
  PIDS=()
  trap 'for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"' EXIT
}

# listed_links PORT: how many links the node on PORT lists (its own
# replicas, on a cluster node), page by page.
listed_links() {
  python3 - "$1" <<'PY'
import json, sys, urllib.request
n, cursor = 0, ""
while True:
    page = json.load(urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/api/v1/links?limit=1000&cursor={cursor}"))
    n += len(page["links"])
    cursor = page.get("next_cursor")
    if not cursor:
        break
print(n)
PY
}

# import_links N BIN DIR: N links (gen-links.py N 60 k: aliases k0, k1, ...)
# imported by BIN into the new data directory DIR.
import_links() {
  python3 "$HERE/gen-links.py" "$1" 60 k > "$3.jsonl"
  "$2" import --data-dir "$3" "$3.jsonl" > /dev/null
  rm "$3.jsonl"
}

# drop_page_cache DIR: DIR's files out of the page cache, as memory
# pressure would (posix_fadvise DONTNEED; pages a process has mapped and
# touched stay).
drop_page_cache() {
  python3 -c 'import os, sys
for name in os.listdir(sys.argv[1]):
    fd = os.open(os.path.join(sys.argv[1], name), os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_http() {
  # wait_http URL: poll until the server answers, at most 10 s.
  for _ in $(seq 100); do curl -fs -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "server at $1 did not come up" >&2; return 1
}

# CPU ticks (user+system) a process has used so far.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

# run_wrk OUTFILE ARGS...: wrk pinned to CPU 1.
run_wrk() { local out=$1; shift; taskset -c 1 wrk "$@" > "$out" 2>&1; }

# Requests per second and total requests from a wrk report.
wrk_rps() { awk '/Requests\/sec/ {print $2}' "$1"; }
wrk_total() { awk '/requests in/ {print $1}' "$1"; }
wrk_errors() { awk '/Non-2xx|Socket errors/ {print}' "$1" | tr '\n' ' '; }

median() { sort -g | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }

start_shortd() {
  # start_shortd PORT DATADIR ARGS...: shortd pinned to CPU 0; sets SHORTD_PID.
  local port=$1 dir=$2; shift 2
  # SHORTD_WRAP: a command (array) to run it under, such as env.
  ${SHORTD_WRAP[@]+"${SHORTD_WRAP[@]}"} taskset -c 0 "$SHORTD" serve --listen "127.0.0.1:$port" --data-dir "$dir" --log-level warn "$@" &
  SHORTD_PID=$!
  wait_http "http://127.0.0.1:$port/healthz"
}

create_link() {
  # create_link PORT URL: prints the new code.
  curl -fs -X POST "http://127.0.0.1:$1/api/v1/links" -H 'content-type: application/json' \
    -d "{\"url\":\"$2\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])'
}
