#!/usr/bin/env bash
# Traces over OTLP from a real node.
#
#   bash tests/ops/otlp_trace.sh        (from anywhere; KEEP_WORK=1 keeps the logs)
#
# Starts on free loopback ports: a tiny OTLP/HTTP receiver (tests/ops/otlp_receiver.py, decodes
# protobuf with the `opentelemetry-proto` package from a venv in $TOOLS_DIR/otlp-venv),
# redis-server, and one jobsphere-chat node in cluster mode with
# OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:PORT (its exporter posts http/protobuf to
# {endpoint}/v1/traces). tests/ops/otlp_client.cjs sends one message over Socket.IO and one over
# REST (with a W3C traceparent); then SIGTERM, which flushes the batch exporter. Checks
# (tests/ops/otlp_assert.py): the socket_event and http_request handler spans each with a child
# `store` span, the traceparent continued, the resource attributes, and Redis command spans
# under each handler span (a FAIL when missing).
# Last line: `N passed, M failed`; exit 1 on any failure.
# SC2016: bash -c snippets get their values as "$1".. on purpose; SC2317: functions called
# indirectly (check/tally) and after `summary`.
# shellcheck disable=SC2016,SC2317
set -uo pipefail
# shellcheck source=tests/ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$ROOT" || exit 1

VENV="$TOOLS_DIR/otlp-venv"
otlp_venv() {
    if ! "$VENV/bin/python" -c 'import opentelemetry.proto.collector.trace.v1.trace_service_pb2' 2>/dev/null; then
        python3 -m venv "$VENV" && "$VENV/bin/pip" install -q opentelemetry-proto
    fi
}
check "tools (redis-server, node + socket.io-client, node binary)" need_tools redis node chat
check "venv with opentelemetry-proto ($VENV)" otlp_venv
[ "$FAILED" -eq 0 ] || summary

read -r RP HP MP OP < <(free_ports 4)
"$VENV/bin/python" "$OPS_DIR/otlp_receiver.py" --port "$OP" --out "$WORK/spans.jsonl" >"$WORK/receiver.log" 2>&1 &
PIDS+=("$!")
check "OTLP receiver on 127.0.0.1:$OP" bash -c "for _ in \$(seq 100); do grep -q 'otlp receiver' '$WORK/receiver.log' && exit 0; sleep 0.1; done; cat '$WORK/receiver.log'; exit 1"
check "redis-server on 127.0.0.1:$RP" start_redis "$RP"

# RUST_LOG=info: the EnvFilter is global, so it also decides which spans reach the exporter
# (at `warn` the info-level handler and store spans would not exist).
NODE_RUST_LOG=info
NODE_ENV_EXTRA=("OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OP" CHAT_DRAIN_DELAY_SECS=0 CHAT_SHUTDOWN_GRACE_SECS=10)
check "node otlp-n1 ready (cluster mode, OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$OP)" start_node otlp-n1 "$HP" "$MP"
[ "$FAILED" -eq 0 ] || summary

SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ALICE=$(token "otlp-alice-$SUFFIX")
token "otlp-bob-$SUFFIX" >/dev/null
TRACE_ID=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
PARENT_ID=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
check "one message over Socket.IO and one over REST (with a traceparent)" bash -c '
    node "$1/otlp_client.cjs" --node "$2" --alice "$3" --bob-id "$4" --trace-id "$5" --parent-id "$6" >"$7"
    rc=$?; cat "$7"; exit $rc' _ "$OPS_DIR" "http://127.0.0.1:$HP" "$ALICE" "otlp-bob-$SUFFIX" "$TRACE_ID" "$PARENT_ID" "$WORK/client.json"

stop_node otlp-n1 20 2>"$WORK/stop.out"
if [ "$STOP_RC" = 0 ]; then pass "SIGTERM: the node exits 0 (${STOP_SECS} s), flushing its spans"; else
    echo "exit status $STOP_RC" >>"$WORK/stop.out"
    tail -n 20 "$WORK/otlp-n1.log" >>"$WORK/stop.out"
    fail "SIGTERM: the node exits 0, flushing its spans" "$WORK/stop.out"
fi
grep -i 'flushing traces failed\|otlp\|opentelemetry' "$WORK/otlp-n1.log" | grep -iv 'listening' | head -n 5 | sed 's/^/info node log: /'

tally spans "$VENV/bin/python" "$OPS_DIR/otlp_assert.py" --spans "$WORK/spans.jsonl" --client "$WORK/client.json" \
    --node-id otlp-n1

summary
