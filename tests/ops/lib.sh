# shellcheck shell=bash
# Shared helpers of the tests/ops/*.sh integration checks: real redis-server, real
# jobsphere-chat node processes, Prometheus, nginx, all on free loopback ports, stopped on exit.
#
# Source it after `set -uo pipefail`:  . "$(dirname "$0")/lib.sh"
#
# Environment:
#   CHAT_BIN   node binary to run (default: `cargo build --bin jobsphere-chat`, then
#              target/debug/jobsphere-chat)
#   TOOLS_DIR  cache of installed tools (default ~/.cache/jobsphere-tools); the official
#              socket.io-client from npm goes to $TOOLS_DIR/node
#   KEEP_WORK=1  keep the temp dir (logs of every process) after the run
#
# Output convention: one `ok   NAME` / `FAIL NAME` line per check (details of a failure
# indented below it), `info ...` lines for findings that are not failures, and finally
# `N passed, M failed`; the script exits non-zero on any failure.

# shellcheck disable=SC2034  # ROOT/OPS_DIR/JWT_SECRET are used by the sourcing scripts
OPS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$OPS_DIR/../.." && pwd)"
TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}"
export TOOLS_DIR

PASSED=0
FAILED=0
WORK="$(mktemp -d "${TMPDIR:-/tmp}/jobsphere-ops.XXXXXX")"
PIDS=()                      # every background process this script started
declare -A NODE_PID=()       # node name -> pid
declare -A NODE_PORT=()      # node name -> HTTP port
declare -A NODE_MPORT=()     # node name -> metrics port
declare -a NODE_ENV_EXTRA=() # extra VAR=value for every node started after it is set
JWT_SECRET="ops-check-secret-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
REDIS_PREFIX="ops-$$"
START_TIME=$(date +%s)

ops_cleanup() {
    local pid
    # Children first (nodes, nginx, Prometheus, client scripts), Redis last: SIGTERM, then
    # SIGKILL whatever is still there after 10 s. Only the pids this script started.
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    if [ "${KEEP_WORK:-0}" = 1 ]; then
        echo "info work dir kept: $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap ops_cleanup EXIT
trap 'exit 130' INT TERM

pass() {
    PASSED=$((PASSED + 1))
    echo "ok   $1"
}

# fail NAME [FILE]: counts a failure and shows FILE (indented) when given.
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then sed -e 's/^/     | /' "$2" | tail -n 80; fi
}

info() { echo "info $*"; }

# check NAME CMD...: one check; passes when CMD exits 0 (output shown only on failure).
check() {
    local name="$1"
    shift
    if "$@" >"$WORK/check.out" 2>&1; then pass "$name"; else fail "$name" "$WORK/check.out"; fi
}

# tally NAME CMD...: CMD prints `ok   x` / `FAIL x` / `info x` lines (details indented);
# each ok/FAIL line is one check. A non-zero exit without a FAIL line is a failure too, and so
# is a run that printed no ok/FAIL line at all.
tally() {
    local name="$1" rc p f
    shift
    "$@" >"$WORK/tally.out" 2>&1
    rc=$?
    p=$(grep -c '^ok ' "$WORK/tally.out")
    f=$(grep -c '^FAIL' "$WORK/tally.out")
    PASSED=$((PASSED + p))
    FAILED=$((FAILED + f))
    sed -e '/^\(ok \|FAIL\|info\)/!s/^/     | /' "$WORK/tally.out" | sed -e "s/^\(ok  \|FAIL\|info\) /\1 [$name] /"
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        fail "$name: exited $rc without reporting a failure"
    fi
    # A helper that checked nothing proved nothing (it crashed early, or its input was empty).
    if [ "$((p + f))" -eq 0 ]; then
        fail "$name: reported no checks at all" "$WORK/tally.out"
    fi
}

summary() {
    echo "# $(basename "$0"): $(($(date +%s) - START_TIME)) s"
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# free_ports N: prints N distinct free loopback ports.
free_ports() {
    python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(*[s.getsockname()[1] for s in socks])
PY
}

# wait_http URL SECONDS [STATUS]: until URL answers STATUS (default 200).
wait_http() {
    local url="$1" secs="$2" want="${3:-200}" deadline code
    deadline=$(($(date +%s) + secs))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        code=$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$url" 2>/dev/null)
        [ "$code" = "$want" ] && return 0
        sleep 0.1
    done
    echo "wait_http: $url did not answer $want within ${secs}s (last: ${code:-none})" >&2
    return 1
}

# start_lb NGINX PORT DIR UPSTREAM_PORT...: nginx from deploy/nginx/chat-lb.conf.template
# (tests/deploy/render_nginx.py) on 127.0.0.1:PORT in front of the local UPSTREAM_PORTs, its
# runtime files and `DIR/access.log` (format `chat`) in DIR, its log in $WORK/nginx.log;
# `nginx -t` first, then in the foreground until /lb-health and /readyz answer 200.
start_lb() {
    local nginx="$1" port="$2" dir="$3" ups=() p
    shift 3
    for p in "$@"; do ups+=(--upstream "127.0.0.1:$p"); done
    mkdir -p "$dir"
    chmod 755 "$WORK" "$dir" # workers drop to an unprivileged user when nginx runs as root
    python3 "$ROOT/tests/deploy/render_nginx.py" --listen "127.0.0.1:$port" "${ups[@]}" \
        --runtime-dir "$dir" --access-log "$dir/access.log chat" -o "$dir/nginx.conf" || return 1
    "$nginx" -e stderr -p "$dir" -c "$dir/nginx.conf" -t -q || return 1
    "$nginx" -e stderr -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >>"$WORK/nginx.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$port/lb-health" 10 && wait_http "http://127.0.0.1:$port/readyz" 10
}

# wait_port_free PORT SECONDS
wait_port_free() {
    local deadline=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        python3 -c "import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', $1))" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

# ----------------------------------------------------------------------------- tools

need_tools() {
    local t
    for t in "$@"; do
        case "$t" in
            redis) command -v redis-server >/dev/null || bash "$ROOT/scripts/tools/redis.sh" >/dev/null ;;
            prometheus) bash "$ROOT/scripts/tools/prometheus.sh" >/dev/null ;;
            nginx)
                # Debian's nginx, as tests/deploy/check.sh installs it: policy-rc.d keeps the
                # packaged service from starting (it would take port 80).
                if ! command -v nginx >/dev/null && [ ! -x /usr/sbin/nginx ]; then
                    local sudo="" own=0 policy=/usr/sbin/policy-rc.d
                    [ "$(id -u)" -ne 0 ] && sudo=sudo
                    if [ ! -e "$policy" ]; then
                        $sudo sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && own=1
                    fi
                    { $sudo apt-get update -qq &&
                        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends nginx; } >/dev/null 2>&1
                    [ "$own" = 1 ] && $sudo rm -f "$policy"
                    [ -x /usr/sbin/nginx ] || { echo "could not install nginx" >&2; return 1; }
                fi
                ;;
            yaml) python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml ;;
            node)
                command -v node >/dev/null || { echo "node (v18+) is required" >&2; return 1; }
                # The official JS client, pinned to the v4 line (the server speaks Socket.IO v5 / EIO 4).
                if [ ! -f "$TOOLS_DIR/node/node_modules/socket.io-client/package.json" ]; then
                    mkdir -p "$TOOLS_DIR/node"
                    [ -f "$TOOLS_DIR/node/package.json" ] || echo '{"name":"jobsphere-ops-tools","private":true}' >"$TOOLS_DIR/node/package.json"
                    (cd "$TOOLS_DIR/node" && npm install --silent --no-audit --no-fund socket.io-client@4) >/dev/null 2>&1 ||
                        { echo "npm install socket.io-client failed" >&2; return 1; }
                fi
                export NODE_PATH="$TOOLS_DIR/node/node_modules"
                ;;
            chat)
                if [ -z "${CHAT_BIN:-}" ]; then
                    (cd "$ROOT" && cargo build --quiet --bin jobsphere-chat) || return 1
                    CHAT_BIN="$ROOT/target/debug/jobsphere-chat"
                fi
                [ -x "$CHAT_BIN" ] || { echo "no node binary at $CHAT_BIN" >&2; return 1; }
                ;;
        esac
    done
}

# ----------------------------------------------------------------------------- services

REDIS_PID=""
REDIS_PORT=""

# start_redis PORT
start_redis() {
    REDIS_PORT="$1"
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK/redis" \
        >>"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    local _
    for _ in $(seq 100); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && return 0
        sleep 0.1
    done
    echo "redis-server did not answer on $REDIS_PORT" >&2
    return 1
}

stop_redis() {
    [ -n "$REDIS_PID" ] || return 0
    kill -KILL "$REDIS_PID" 2>/dev/null
    wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=""
}

# node_env NAME: the environment of node NAME (cluster mode on the script's Redis).
node_env() {
    local name="$1"
    echo "CHAT_ADDR=127.0.0.1:${NODE_PORT[$name]}"
    echo "CHAT_METRICS_ADDR=127.0.0.1:${NODE_MPORT[$name]}"
    echo "CHAT_DATA_DIR=$WORK/data"
    echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT"
    echo "CHAT_REDIS_PREFIX=$REDIS_PREFIX"
    echo "JWT_SECRET=$JWT_SECRET"
    echo "NODE_ID=$name"
    echo "RUST_LOG=${NODE_RUST_LOG:-warn}"
    printf '%s\n' "${NODE_ENV_EXTRA[@]}"
}

# start_nodes PREFIX H1 M1 H2 M2 H3 M3: nodes PREFIX-n1..3 on those HTTP/metrics ports, one
# after the other; their output goes to $WORK/start.out. Fails at the first that does not start.
start_nodes() {
    local prefix="$1"
    shift
    : >"$WORK/start.out"
    start_node "$prefix-n1" "$1" "$2" >>"$WORK/start.out" 2>&1 &&
        start_node "$prefix-n2" "$3" "$4" >>"$WORK/start.out" 2>&1 &&
        start_node "$prefix-n3" "$5" "$6" >>"$WORK/start.out" 2>&1
}

# start_node NAME PORT METRICS_PORT: spawns the node (log in $WORK/NAME.log), waits for /readyz.
start_node() {
    local name="$1"
    NODE_PORT[$name]="$2"
    NODE_MPORT[$name]="$3"
    mkdir -p "$WORK/data"
    local -a envs
    mapfile -t envs < <(node_env "$name")
    env "${envs[@]}" "$CHAT_BIN" >>"$WORK/$name.log" 2>&1 &
    NODE_PID[$name]=$!
    PIDS+=("${NODE_PID[$name]}")
    wait_http "http://127.0.0.1:$2/readyz" 30 || { tail -n 20 "$WORK/$name.log" >&2; return 1; }
}

# stop_node NAME [SECONDS]: SIGTERM, waits (default 30 s) for the exit. Sets STOP_RC (the exit
# status) and STOP_SECS; returns 1 when the node had to be killed. Call it in this shell (not
# in $(...)): only the parent shell can `wait` for the node's exit status.
STOP_RC=""
STOP_SECS=""
stop_node() {
    local name="$1" secs="${2:-30}" pid="${NODE_PID[$1]}" t0
    t0=$(date +%s%N)
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq $((secs * 10))); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "node $name still running ${secs}s after SIGTERM: killed" >&2
        kill -KILL "$pid"
        wait "$pid" 2>/dev/null
        STOP_RC=killed
        return 1
    fi
    wait "$pid" 2>/dev/null
    STOP_RC=$?
    STOP_SECS=$(awk "BEGIN {printf \"%.1f\", ($(date +%s%N) - $t0) / 1e9}")
    return 0
}

# token USER: a JWT for USER signed with the nodes' secret (`jobsphere-chat token`, which also
# registers the user in the shared store).
token() {
    env CHAT_DATA_DIR="$WORK/data" JWT_SECRET="$JWT_SECRET" RUST_LOG=error "$CHAT_BIN" token --user "$1" \
        --name "Ops $1" --role "${2:-customer}" --ttl 2h 2>>"$WORK/token.log"
}
