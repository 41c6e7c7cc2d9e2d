#!/usr/bin/env bash
# The cluster behind the real nginx load balancer.
#
#   bash tests/ops/lb_cluster.sh        (from anywhere; KEEP_WORK=1 keeps the logs)
#
# Starts on free loopback ports: redis-server, three jobsphere-chat nodes (cluster mode, one
# SQLite file) and nginx rendered from deploy/nginx/chat-lb.conf.template by
# tests/deploy/render_nginx.py with the three nodes as upstreams (run as in nginx_smoke.py:
# foreground, `-e stderr`, temp runtime dir). Then tests/ops/lb_clients.cjs, with the official
# socket.io-client, through nginx only (plus two sockets straight on nodes 1 and 3):
#  (a) websocket clients: spread over the nodes, messages with acks, every socket gets each
#      new_message exactly once, across nodes;
#  (b) long-polling clients (sticky sessions) and a polling->websocket upgrade;
#  (c) a rolling restart of the three nodes (SIGTERM, wait for the exit, start again on the same
#      ports, next node as soon as the restarted one is ready, as a Deployment rollout does)
#      while a client streams messages with clientMessageId retries: every acked message in the
#      history (REST through nginx) with gap-free seq, the clients reconnect by themselves and
#      receive again; fresh clients connecting through nginx while node 2 drains get served.
# Last line: `N passed, M failed`; exit 1 on any failure.
# SC2016: bash -c snippets get their values as "$1".. on purpose; SC2317: functions called
# indirectly (check/tally) and after `summary`.
# shellcheck disable=SC2016,SC2317
set -uo pipefail
# shellcheck source=tests/ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

# Drain as in production, scaled down: readiness off for 2 s before the node stops accepting,
# then its socket transports closed one after the other over 3 s (set here rather than derived
# from the grace period, so the roll's length does not change with the default).
DRAIN_DELAY=2
CLOSE_WINDOW=3
GRACE=15

check "tools (redis-server, nginx, node + socket.io-client, node binary)" need_tools redis nginx node chat
[ "$FAILED" -eq 0 ] || summary
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

read -r RP H1 H2 H3 M1 M2 M3 LBP < <(free_ports 8)
NODE_ENV_EXTRA=(
    RATE_LIMIT_MESSAGES=100000 RATE_LIMIT_CONNECTS=100000
    "CHAT_DRAIN_DELAY_SECS=$DRAIN_DELAY" "CHAT_DRAIN_CLOSE_WINDOW_SECS=$CLOSE_WINDOW" "CHAT_SHUTDOWN_GRACE_SECS=$GRACE"
)
check "redis-server on 127.0.0.1:$RP" start_redis "$RP"
if start_nodes lb "$H1" "$M1" "$H2" "$M2" "$H3" "$M3"; then
    pass "3 nodes ready (lb-n1 :$H1, lb-n2 :$H2, lb-n3 :$H3)"
else
    fail "3 nodes ready" "$WORK/start.out"
    summary
fi

# ----------------------------------------------------------------------------- nginx
LBDIR="$WORK/nginx"
check "nginx from deploy/nginx/chat-lb.conf.template on 127.0.0.1:$LBP, 3 upstreams" \
    start_lb "$NGINX" "$LBP" "$LBDIR" "$H1" "$H2" "$H3"
[ "$FAILED" -eq 0 ] || summary

# ----------------------------------------------------------------------------- users
SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
mint_tokens() {
    local name tok
    printf '{"users": {' >"$WORK/tokens.json"
    for name in alice bob carol dave; do
        [ "$name" = alice ] || printf ', ' >>"$WORK/tokens.json"
        printf '"%s": "lb-%s-%s"' "$name" "$name" "$SUFFIX" >>"$WORK/tokens.json"
    done
    printf '}, "tokens": {' >>"$WORK/tokens.json"
    for name in alice bob carol dave; do
        tok=$(token "lb-$name-$SUFFIX") || return 1
        [ "$name" = alice ] || printf ', ' >>"$WORK/tokens.json"
        printf '"%s": "%s"' "$name" "$tok" >>"$WORK/tokens.json"
    done
    printf '}}\n' >>"$WORK/tokens.json"
    python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$WORK/tokens.json"
}
check "tokens minted with \`jobsphere-chat token\`" mint_tokens

# ----------------------------------------------------------------------------- clients
GATES="$WORK/gates"
mkdir -p "$GATES"
node "$OPS_DIR/lb_clients.cjs" --lb "http://127.0.0.1:$LBP" \
    --nodes "http://127.0.0.1:$H1,http://127.0.0.1:$H2,http://127.0.0.1:$H3" \
    --metrics "http://127.0.0.1:$M1,http://127.0.0.1:$M2,http://127.0.0.1:$M3" \
    --tokens "$WORK/tokens.json" --gates "$GATES" >"$WORK/clients.out" 2>&1 &
CLIENTS_PID=$!
PIDS+=("$CLIENTS_PID")

await_gate() {
    local _
    for _ in $(seq 1800); do
        grep -qx "gate $1" "$WORK/clients.out" && return 0
        kill -0 "$CLIENTS_PID" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

: >"$WORK/roll.out"
# `gate roll` comes once the stream has acked its first messages (the client waits for them).
if await_gate roll; then
    ROLL_T0=$(date +%s)
    for n in lb-n1 lb-n2 lb-n3; do
        if [ "$n" = lb-n2 ]; then
            # Fresh clients connect during this node's drain delay: once its /readyz says 503.
            kill -TERM "${NODE_PID[$n]}"
            if wait_http "http://127.0.0.1:${NODE_PORT[$n]}/readyz" "$DRAIN_DELAY" 503 2>>"$WORK/roll.out"; then
                pass "$n: /readyz answers 503 after SIGTERM, within its drain delay"
            else
                fail "$n: /readyz answers 503 after SIGTERM, within its drain delay" "$WORK/roll.out"
            fi
            touch "$GATES/probe"
        fi
        if stop_node "$n" $((GRACE + 10)) 2>>"$WORK/roll.out"; then
            echo "$n: SIGTERM -> exit $STOP_RC after ${STOP_SECS} s" >>"$WORK/roll.out"
        fi
        if [ "$STOP_RC" = 0 ] && [ "${STOP_SECS%.*}" -le "$GRACE" ]; then
            pass "$n exits 0 within the grace period after SIGTERM (${STOP_SECS} s, drain delay ${DRAIN_DELAY} s, close window ${CLOSE_WINDOW} s)"
        else
            fail "$n exits 0 within the grace period after SIGTERM (exit $STOP_RC after ${STOP_SECS:-?} s)" "$WORK/roll.out"
        fi
        wait_port_free "${NODE_PORT[$n]}" 10
        if start_node "$n" "${NODE_PORT[$n]}" "${NODE_MPORT[$n]}" >>"$WORK/roll.out" 2>&1; then
            pass "$n restarted on the same ports and ready"
        else
            fail "$n restarted on the same ports and ready" "$WORK/roll.out"
        fi
    done
    info "rolling restart took $(($(date +%s) - ROLL_T0)) s"
    touch "$GATES/roll"
fi
wait "$CLIENTS_PID"
CLIENTS_RC=$?
grep -v '^gate ' "$WORK/clients.out" >"$WORK/clients.report"
tally clients bash -c 'cat "$1"; exit "$2"' _ "$WORK/clients.report" "$CLIENTS_RC"

# ----------------------------------------------------------------------------- logs
if grep -qi 'panicked' "$WORK"/lb-n*.log; then
    grep -i -A5 'panicked' "$WORK"/lb-n*.log >"$WORK/panics.out"
    fail "no node panicked" "$WORK/panics.out"
else
    pass "no node panicked"
fi
# nginx: upstream errors are expected while a node is down (it retries the next one); no 5xx
# may reach a client.
if [ ! -s "$LBDIR/access.log" ]; then
    fail "no 5xx answered by nginx to a client: nginx's access log is missing or empty"
# (into a file first: `awk | grep -q` under pipefail fails when grep stops reading early, which
# passed this check whenever there were many)
elif awk '$0 ~ /" 5[0-9][0-9] / && $0 !~ /readyz/' "$LBDIR/access.log" >"$WORK/5xx.all" && [ -s "$WORK/5xx.all" ]; then
    head -n 20 "$WORK/5xx.all" >"$WORK/5xx.out"
    fail "no 5xx answered by nginx to a client ($(wc -l <"$WORK/5xx.all") of them)" "$WORK/5xx.out"
else
    pass "no 5xx answered by nginx to a client ($(wc -l <"$LBDIR/access.log") requests)"
fi

summary
