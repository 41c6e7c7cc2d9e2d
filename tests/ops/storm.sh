#!/usr/bin/env bash
# Rolling-restart storm: several hundred clients from one address survive a rolling restart
# without tripping the connection throttle.
#
#   bash tests/ops/storm.sh        (from anywhere; KEEP_WORK=1 keeps the logs)
#   STORM_CLIENTS=300 (default)
#
# Starts on free loopback ports: redis-server, three jobsphere-chat nodes (cluster mode, one
# SQLite file) and nginx rendered from deploy/nginx/chat-lb.conf.template (as lb_cluster.sh).
# The connection budget is per client address and set BELOW one node's share of the sockets
# (60 per second, while each node holds about 100 and, after the first rolls, up to ~230): a
# drain that closed a node's sockets all at once would have them refused (HTTP 429). The nodes
# trust nginx (CHAT_TRUSTED_PROXIES), so the key is the client's address, 127.0.0.1 for all.
# tests/ops/storm_clients.cjs connects the clients (official socket.io-client, default
# reconnection, websocket, token in the `auth` payload, so keyed by address) through nginx.
# Then each node in turn: SIGTERM, wait for its exit, start it again on the same ports, and wait
# until every client reports connected again (deadline, no sleeps). Checks:
#  - every client reconnects by itself after each roll: none stuck, none gave up, and exactly
#    the sockets the restarted node held had to reconnect;
#  - no handshake was refused: chat_rate_limited_total{kind="connection"} == 0 on every node
#    (scraped before each node is stopped and at the end) and no 429 in nginx's access log;
#  - a message sent after each roll reaches every socket of its recipient (and the sender's
#    other sockets) exactly once;
#  - control: 100 simultaneous handshakes from the same address do get 429s (counted by the
#    nodes and in nginx's log), so the zero above is the drain's doing, not a budget that
#    cannot bite;
#  - no node panicked, no 5xx from nginx.
# Prints the resident memory (VmRSS) of every node before and after the clients connected.
# Last line: `N passed, M failed`; exit 1 on any failure.
# SC2016: bash -c snippets get their values as "$1".. on purpose; SC2317: functions called
# indirectly (check/tally) and after `summary`.
# shellcheck disable=SC2016,SC2317
set -uo pipefail
# shellcheck source=tests/ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

CLIENTS="${STORM_CLIENTS:-300}"
USERS=30
# The connection budget per address: 60 per second (a burst of 60, then one every 1/60 s).
CONNECTS=60
CONNECT_WINDOW=1
# The drain, scaled down: 1 s not-ready, then the node's sockets closed one after the other over
# 5 s, i.e. at most ~60/s for the ~300 sockets one node can hold at worst: within the budget.
DRAIN_DELAY=1
CLOSE_WINDOW="${STORM_CLOSE_WINDOW:-5}" # STORM_CLOSE_WINDOW=0: all at once (the control case)
GRACE=10

check "tools (redis-server, nginx, node + socket.io-client, node binary)" need_tools redis nginx node chat
[ "$FAILED" -eq 0 ] || summary
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

read -r RP H1 H2 H3 M1 M2 M3 LBP < <(free_ports 8)
NODES=(st-n1 st-n2 st-n3)
NODE_ENV_EXTRA=(
    "RATE_LIMIT_CONNECTS=$CONNECTS" "RATE_LIMIT_CONNECT_WINDOW_SECS=$CONNECT_WINDOW"
    CHAT_TRUSTED_PROXIES=127.0.0.1/32
    "CHAT_DRAIN_DELAY_SECS=$DRAIN_DELAY" "CHAT_DRAIN_CLOSE_WINDOW_SECS=$CLOSE_WINDOW"
    "CHAT_SHUTDOWN_GRACE_SECS=$GRACE"
)
check "redis-server on 127.0.0.1:$RP" start_redis "$RP"
if start_nodes st "$H1" "$M1" "$H2" "$M2" "$H3" "$M3"; then
    pass "3 nodes ready (st-n1 :$H1, st-n2 :$H2, st-n3 :$H3), connection budget $CONNECTS per ${CONNECT_WINDOW}s per address"
else
    fail "3 nodes ready" "$WORK/start.out"
    summary
fi

LBDIR="$WORK/nginx"
check "nginx from deploy/nginx/chat-lb.conf.template on 127.0.0.1:$LBP, 3 upstreams" \
    start_lb "$NGINX" "$LBP" "$LBDIR" "$H1" "$H2" "$H3"
[ "$FAILED" -eq 0 ] || summary

SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
mint_tokens() {
    local i tok sep=""
    {
        printf '{"users": {'
        for i in $(seq 0 $((USERS - 1))); do
            printf '%s"u%d": "st-u%d-%s"' "$sep" "$i" "$i" "$SUFFIX"
            sep=", "
        done
        printf '}, "tokens": {'
        sep=""
        for i in $(seq 0 $((USERS - 1))); do
            tok=$(token "st-u$i-$SUFFIX") || return 1
            printf '%s"u%d": "%s"' "$sep" "$i" "$tok"
            sep=", "
        done
        printf '}}\n'
    } >"$WORK/tokens.json"
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/tokens.json"
}
check "$USERS users' tokens minted with \`jobsphere-chat token\`" mint_tokens
[ "$FAILED" -eq 0 ] || summary

# ----------------------------------------------------------------------------- helpers
# rss_kib NAME: the node's VmRSS in KiB.
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/${NODE_PID[$1]}/status" 2>/dev/null; }
mib() { awk "BEGIN {printf \"%.1f\", $1 / 1024}"; }

# metric NAME SERIES_REGEX: the sum of a node's samples of chat_rate_limited_total matching
# the regex; fails when the node did not answer or has no such series.
scrape() { curl -s -m 5 "http://127.0.0.1:${NODE_MPORT[$1]}/metrics" >"$WORK/scrape.$1" && [ -s "$WORK/scrape.$1" ]; }
series() {
    awk -v re="$2" '$0 !~ /^#/ && $1 ~ re {s += $NF; n++} END {if (n == 0) exit 1; print s}' "$WORK/scrape.$1"
}
conn_limited() { series "$1" '^chat_rate_limited_total[{].*kind="connection"'; }
sockets_of() { series "$1" '^chat_socket_connections([{]|$)'; }

# throttled_seen NAME: records the node's connection-throttle count (before it is stopped and at
# the end); a node that cannot be scraped counts as a failure.
declare -A LIMITED=()
throttled_seen() {
    local v
    if scrape "$1" && v=$(conn_limited "$1"); then
        LIMITED[$1]=$((${LIMITED[$1]:-0} + ${v%.*}))
        return 0
    fi
    LIMITED[$1]="unscraped"
    return 1
}

GATES="$WORK/gates"
mkdir -p "$GATES"
declare -A RSS0=()
for n in "${NODES[@]}"; do RSS0[$n]=$(rss_kib "$n"); done

node "$OPS_DIR/storm_clients.cjs" --lb "http://127.0.0.1:$LBP" \
    --metrics "http://127.0.0.1:$M1,http://127.0.0.1:$M2,http://127.0.0.1:$M3" \
    --tokens "$WORK/tokens.json" --gates "$GATES" --clients "$CLIENTS" >"$WORK/clients.out" 2>&1 &
CLIENTS_PID=$!
PIDS+=("$CLIENTS_PID")

# await_gate NAME SECONDS: until the client script prints `gate NAME` (or exits).
await_gate() {
    local deadline=$(($(date +%s) + $2))
    while [ "$(date +%s)" -lt "$deadline" ]; do
        grep -qx "gate $1" "$WORK/clients.out" && return 0
        kill -0 "$CLIENTS_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# ----------------------------------------------------------------------------- storm
: >"$WORK/roll.out"
if await_gate ready 90; then
    for n in "${NODES[@]}"; do
        rss=$(rss_kib "$n")
        scrape "$n" && s=$(sockets_of "$n") || s="?"
        info "RSS $n: $(mib "${RSS0[$n]}") MiB idle -> $(mib "$rss") MiB with ${s%.*} of $CLIENTS sockets" \
            "($(awk "BEGIN {d = $rss - ${RSS0[$n]}; printf \"%+.1f\", ($s > 0 ? d / $s : 0)}") KiB per socket)"
    done
    T0=$(date +%s)
    k=0
    for n in "${NODES[@]}"; do
        k=$((k + 1))
        throttled_seen "$n" || fail "$n: /metrics scraped before its SIGTERM"
        if stop_node "$n" $((GRACE + 10)) 2>>"$WORK/roll.out" && [ "$STOP_RC" = 0 ]; then
            pass "$n: SIGTERM -> exit 0 after ${STOP_SECS} s (drain delay ${DRAIN_DELAY} s, close window ${CLOSE_WINDOW} s)"
        else
            fail "$n: SIGTERM -> exit 0 within the grace period (exit $STOP_RC after ${STOP_SECS:-?} s)" "$WORK/roll.out"
        fi
        wait_port_free "${NODE_PORT[$n]}" 10
        if start_node "$n" "${NODE_PORT[$n]}" "${NODE_MPORT[$n]}" >>"$WORK/roll.out" 2>&1; then
            pass "$n restarted on the same ports and ready"
        else
            fail "$n restarted on the same ports and ready" "$WORK/roll.out"
        fi
        touch "$GATES/rolled-$k"
        await_gate "settled-$k" 60 || {
            fail "roll $k: the clients settled after $n's restart (no \`gate settled-$k\`)"
            break
        }
    done
    info "rolling restart of 3 nodes with $CLIENTS clients took $(($(date +%s) - T0)) s"
    for n in "${NODES[@]}"; do
        rss=$(rss_kib "$n")
        scrape "$n" && s=$(sockets_of "$n") || s="?"
        info "RSS $n after the roll (restarted): $(mib "$rss") MiB with ${s%.*} sockets"
    done
fi
touch "$GATES/done"
wait "$CLIENTS_PID"
CLIENTS_RC=$?
grep -v '^gate ' "$WORK/clients.out" >"$WORK/clients.report"
tally clients bash -c 'cat "$1"; exit "$2"' _ "$WORK/clients.report" "$CLIENTS_RC"

# ----------------------------------------------------------------------------- throttle
limited_ok=1
for n in "${NODES[@]}"; do
    throttled_seen "$n" || limited_ok=0
    [ "${LIMITED[$n]}" = 0 ] || limited_ok=0
done
summary_limited="$(for n in "${NODES[@]}"; do printf '%s=%s ' "$n" "${LIMITED[$n]}"; done)"
if [ "$limited_ok" = 1 ]; then
    pass "no handshake throttled: chat_rate_limited_total{kind=\"connection\"} is 0 on every node (${summary_limited% })"
else
    fail "no handshake throttled: chat_rate_limited_total{kind=\"connection\"} is 0 on every node (${summary_limited% })"
fi
handshakes_429() { awk '$0 ~ /"GET \/socket\.io\// && $0 ~ /" 429 /' "$LBDIR/access.log" | wc -l; }
hs=$(awk '$0 ~ /"GET \/socket\.io\/[^ ]*transport=websocket/' "$LBDIR/access.log" | wc -l)
n429=$(handshakes_429)
if [ "$hs" -ge "$CLIENTS" ] && [ "$n429" -eq 0 ]; then
    pass "no HTTP 429 at any handshake in nginx's access log ($hs websocket handshakes logged)"
else
    awk '$0 ~ /" 429 /' "$LBDIR/access.log" | head -n 10 >"$WORK/429.out"
    fail "no HTTP 429 at any handshake in nginx's access log ($hs websocket handshakes logged, $n429 answered 429)" "$WORK/429.out"
fi

# Control: the same budget refuses a burst the size of a node's sockets, as a drain that closed
# them all at once would cause.
control() {
    python3 - "http://127.0.0.1:$LBP/socket.io/?EIO=4&transport=polling" 100 <<'PY'
import concurrent.futures, sys, urllib.error, urllib.request
url, n = sys.argv[1], int(sys.argv[2])
def get(_):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except Exception as e:
        return str(e)
with concurrent.futures.ThreadPoolExecutor(n) as ex:
    codes = list(ex.map(get, range(n)))
print(" ".join(f"{c}:{codes.count(c)}" for c in sorted(set(codes), key=str)))
PY
}
codes=$(control)
sum_after=0
for n in "${NODES[@]}"; do
    scrape "$n" && v=$(conn_limited "$n") && sum_after=$((sum_after + ${v%.*}))
done
if [[ " $codes" == *" 429:"* ]] && [ "$sum_after" -gt 0 ] && [ "$(handshakes_429)" -gt 0 ]; then
    pass "control: 100 simultaneous handshakes from the same address get 429s (status:count $codes; nodes counted $sum_after, nginx logged $(handshakes_429))"
else
    fail "control: 100 simultaneous handshakes from the same address get 429s (status:count $codes; nodes counted $sum_after, nginx logged $(handshakes_429))"
fi

# ----------------------------------------------------------------------------- logs
if grep -qi 'panicked' "$WORK"/st-n*.log; then
    grep -i -A5 'panicked' "$WORK"/st-n*.log >"$WORK/panics.out"
    fail "no node panicked" "$WORK/panics.out"
else
    pass "no node panicked"
fi
# (into a file first: `awk | grep -q` under pipefail fails when grep stops reading early)
awk '$0 ~ /" 5[0-9][0-9] / && $0 !~ /readyz/' "$LBDIR/access.log" >"$WORK/5xx.all"
if [ -s "$WORK/5xx.all" ]; then
    head -n 20 "$WORK/5xx.all" >"$WORK/5xx.out"
    fail "no 5xx answered by nginx to a client ($(wc -l <"$WORK/5xx.all") of them)" "$WORK/5xx.out"
else
    pass "no 5xx answered by nginx to a client ($(wc -l <"$LBDIR/access.log") requests)"
fi

summary
