#!/usr/bin/env bash
# Every tests/ops check, one after the other (each starts and stops its own processes on free
# loopback ports):
#   metrics_cluster.sh  3 nodes + Redis + Prometheus: the documented metrics, cardinality, every
#                       dashboard/alert query in full mode
#   lb_cluster.sh       3 nodes behind nginx (the deploy template): websocket, polling, rolling
#                       restart with the official socket.io-client
#   storm.sh            300 clients from one address through nginx survive a rolling restart
#                       with a connection budget below one node's sockets (no 429, no one stuck)
#   otlp_trace.sh       OTLP/HTTP export: handler, store and Redis spans
#
#   bash tests/ops/check.sh [metrics_cluster lb_cluster storm otlp_trace]
#
# Prints every check of every script, then `N passed, M failed` over all of them; exit 1 when
# any script failed. Environment: see tests/ops/lib.sh (CHAT_BIN, TOOLS_DIR, KEEP_WORK).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")" || exit 1

passed=0
failed=0
rc_all=0
scripts=("$@")
[ ${#scripts[@]} -gt 0 ] || scripts=(metrics_cluster lb_cluster storm otlp_trace)
out="$(mktemp)"
trap 'rm -f "$out"' EXIT
for s in "${scripts[@]}"; do
    echo "==> tests/ops/${s%.sh}.sh"
    bash "./${s%.sh}.sh" | tee "$out"
    rc=${PIPESTATUS[0]}
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
    if [[ "$last" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        passed=$((passed + BASH_REMATCH[1]))
        failed=$((failed + BASH_REMATCH[2]))
    fi
    if [ "$rc" -ne 0 ]; then
        rc_all=1
        [[ "$last" =~ ^[0-9]+\ passed ]] || failed=$((failed + 1)) # died without a summary
    fi
done
echo "$passed passed, $failed failed"
exit "$rc_all"
