#!/usr/bin/env bash
# Holds the server to docs/openapi.yaml with schemathesis (a schema-driven
# fuzzer): starts shortd on a loopback port with a fresh data directory and an
# API key, runs every schemathesis check against it, stops it.
#
# usage: loadtest/schemathesis.sh [MAX_EXAMPLES] [MAX_SECONDS]
#   MAX_EXAMPLES  test cases per operation and phase (default 100)
#   MAX_SECONDS   time budget for the whole run (default 240)
# Extra schemathesis options can be passed in ST_ARGS, e.g.
#   ST_ARGS='--seed 1 --phases fuzzing' loadtest/schemathesis.sh
# With CLUSTER=1 it starts three clustered nodes and tests through the first,
# so most requests are forwarded to, or replicated on, the others.
#
# Installs schemathesis into target/schemathesis-venv when it is missing.
# All traffic goes to 127.0.0.1; redirects are never followed, so the random
# targets of the links it creates are never contacted.
#
# Expect one warning: "Schema validation mismatch" for GET and HEAD /{code}.
# A random code names no link, so most of those requests are answered 404;
# no schema can say which codes exist. Failures, not warnings, fail the run.
source "$(dirname "$0")/lib.sh"
MAX_EXAMPLES=${1:-100}
MAX_SECONDS=${2:-240}
VENV="$ROOT/target/schemathesis-venv"
ST="$VENV/bin/st"
SPEC="$ROOT/docs/openapi.yaml"

if [ ! -x "$ST" ]; then
  echo "installing schemathesis into $VENV ..." >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet 'schemathesis>=4.0,<5'
fi
[ -x "$SHORTD" ] || build_shortd

WORK=$(mktemp -d)
SHORTD_PID=
PEER_PIDS=()
cleanup() {
  for p in $SHORTD_PID "${PEER_PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

PORT=$(free_port)
# The public URL names a host the generated targets never use, so a target
# such as http://127.0.0.1/ counts as a foreign link, as it would in
# production.
KEY="st-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')"
CLUSTER_ARGS=()
[ -n "${CLUSTER:-}" ] && CLUSTER_ARGS=(--node-id n1 --cluster-key st-cluster-key)
"$SHORTD" serve --listen "127.0.0.1:$PORT" --data-dir "$WORK/data" --workers 1 \
  --api-key "$KEY" --public-url http://shortd.test/ --log-level warn "${CLUSTER_ARGS[@]}" 2> "$WORK/shortd.log" &
SHORTD_PID=$!
wait_http "http://127.0.0.1:$PORT/healthz"
if [ -n "${CLUSTER:-}" ]; then
  for n in 2 3; do
    p=$(free_port)
    "$SHORTD" serve --listen "127.0.0.1:$p" --data-dir "$WORK/data$n" --workers 1 --api-key "$KEY" \
      --public-url http://shortd.test/ --log-level warn --node-id "n$n" --cluster-key st-cluster-key \
      --seed "127.0.0.1:$PORT" 2> "$WORK/shortd$n.log" &
    PEER_PIDS+=($!)
  done
  for _ in $(seq 300); do
    curl -fs -H "authorization: Bearer $KEY" "http://127.0.0.1:$PORT/api/v1/cluster" \
      | python3 -c 'import json,sys; v=json.load(sys.stdin); sys.exit(0 if sum(m["state"]=="up" for m in v["members"])==3 else 1)' && break
    sleep 0.1
  done
fi

# 410 (a deleted, expired or used-up link) and 422 (an Idempotency-Key
# reused with another body) are documented answers to well-formed requests,
# and the fuzzer's own earlier requests can cause them.
cat > "$WORK/schemathesis.toml" <<'TOML'
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "410", "422", "429", "5xx"]
TOML

# The batch endpoint takes JSON lines; schemathesis has no serializer for
# application/x-ndjson, so send generated text as it is.
cat > "$WORK/shortd_st_hooks.py" <<'PY'
import json
import schemathesis

@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return json.dumps(value).encode("utf-8")
PY

# Run from the temporary directory, so that the caches schemathesis and
# hypothesis write (.schemathesis/, .hypothesis/) go away with it.
status=0
cd "$WORK"
PYTHONPATH="$WORK" SCHEMATHESIS_HOOKS=shortd_st_hooks \
  "$ST" --config-file "$WORK/schemathesis.toml" run "$SPEC" \
  --url "http://127.0.0.1:$PORT" \
  --checks all \
  --header "Authorization: Bearer $KEY" \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_SECONDS" \
  --max-redirects 0 \
  --workers 1 \
  --generation-database none \
  --suppress-health-check filter_too_much \
  ${ST_ARGS:-} || status=$?

if grep -q 'ERROR\|panicked' "$WORK/shortd.log"; then
  echo "--- shortd logged errors:" >&2
  grep 'ERROR\|panicked' "$WORK/shortd.log" | head -20 >&2
  status=1
fi
exit "$status"
