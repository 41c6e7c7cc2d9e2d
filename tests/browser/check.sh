#!/usr/bin/env bash
# Browser tests of the web client: headless Chromium drives two users through nginx in front of
# three cluster nodes, plus the development sign-in on an embedded-default node.
#
#   bash tests/browser/check.sh        (from anywhere; KEEP_WORK=1 keeps the node logs)
#
# Installs what is missing: Debian's `chromium` (apt), the client's and the test's npm packages
# (`npm ci` from web/package-lock.json and tests/browser/package-lock.json), and builds web/dist.
# Starts on free loopback ports (tests/ops/lib.sh): redis-server, three nodes in cluster mode on
# one SQLite file serving web/dist, nginx from deploy/nginx/chat-lb.conf.template, and one
# embedded-default node. The development sign-in is refused in cluster mode, so the two cluster
# users get their tokens from `jobsphere-chat token` with the nodes' secret, handed to the page
# as `#token=...` (the same way you open the client with a token from your auth service).
# Screenshots of every step: target/browser-artifacts/ (BROWSER_ARTIFACTS to change it).
# Last line: `N passed, M failed`; exit 1 on any failure.
# shellcheck disable=SC2317  # functions called through check/tally
set -uo pipefail
# shellcheck source=tests/ops/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/../ops/lib.sh"
cd "$ROOT" || exit 1
BROWSER_DIR="$ROOT/tests/browser"
ARTIFACTS="${BROWSER_ARTIFACTS:-$ROOT/target/browser-artifacts}"

need_chromium() {
    command -v chromium >/dev/null && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    { $sudo apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core; } >/dev/null 2>&1
    command -v chromium >/dev/null || { echo "could not install chromium" >&2; return 1; }
}

# npm ci only when the lock file changed since the last install (the stamp is inside
# node_modules, which is not committed).
npm_ci() {
    local dir="$1" stamp="$1/node_modules/.lock-installed"
    if [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; then return 0; fi
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) || return 1
    cp "$dir/package-lock.json" "$stamp"
}

build_web() {
    npm_ci "$ROOT/web" && npm_ci "$BROWSER_DIR" && (cd "$ROOT/web" && npm run --silent build >/dev/null)
}

check "tools (chromium, redis-server, nginx, node binary)" need_tools redis nginx chat
check "chromium from Debian" need_chromium
check "web client built (npm ci + vite build) and puppeteer-core installed" build_web
[ "$FAILED" -eq 0 ] || summary
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"

read -r RP H1 H2 H3 M1 M2 M3 LBP SP SMP < <(free_ports 10)
# A small message budget so the test meets the rate limit on purpose.
NODE_ENV_EXTRA=("CHAT_WEB_DIR=$ROOT/web/dist" RATE_LIMIT_MESSAGES=6 RATE_LIMIT_WINDOW_SECS=4
    RATE_LIMIT_CONNECTS=100000 CHAT_DRAIN_DELAY_SECS=0 CHAT_SHUTDOWN_GRACE_SECS=5)
check "redis-server on 127.0.0.1:$RP" start_redis "$RP"
if start_node br-n1 "$H1" "$M1" >"$WORK/start.out" 2>&1 && start_node br-n2 "$H2" "$M2" >>"$WORK/start.out" 2>&1 &&
    start_node br-n3 "$H3" "$M3" >>"$WORK/start.out" 2>&1; then
    pass "3 cluster nodes ready (:$H1, :$H2, :$H3)"
else
    fail "3 cluster nodes ready" "$WORK/start.out"
    summary
fi

LBDIR="$WORK/nginx"
mkdir -p "$LBDIR"
chmod 755 "$WORK" "$LBDIR" # nginx workers run unprivileged when nginx runs as root
start_nginx() {
    python3 tests/deploy/render_nginx.py --listen "127.0.0.1:$LBP" \
        --upstream "127.0.0.1:$H1" --upstream "127.0.0.1:$H2" --upstream "127.0.0.1:$H3" \
        --runtime-dir "$LBDIR" --access-log off -o "$LBDIR/nginx.conf" || return 1
    "$NGINX" -e stderr -p "$LBDIR" -c "$LBDIR/nginx.conf" -g 'daemon off;' >>"$WORK/nginx.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$LBP/readyz" 10
}
check "nginx on 127.0.0.1:$LBP in front of the 3 nodes" start_nginx

# The embedded default: no Redis, no JWT_SECRET, its own data dir (the generated dev secret).
start_solo() {
    mkdir -p "$WORK/solo"
    env -u REDIS_URL -u MONGODB_URI -u JWT_SECRET -u JWT_PUBLIC_KEY_FILE \
        CHAT_ADDR="127.0.0.1:$SP" CHAT_METRICS_ADDR="127.0.0.1:$SMP" CHAT_DATA_DIR="$WORK/solo" \
        CHAT_WEB_DIR="$ROOT/web/dist" NODE_ID=solo RUST_LOG=warn "$CHAT_BIN" >>"$WORK/solo.log" 2>&1 &
    PIDS+=("$!")
    wait_http "http://127.0.0.1:$SP/readyz" 30
}
check "embedded-default node on 127.0.0.1:$SP" start_solo
[ "$FAILED" -eq 0 ] || summary

# The REST side of the development sign-in, before the browser uses it.
dev_sign_in_rules() {
    local body code
    body='{"userId":"dave","name":"Dave","role":"contractor"}'
    code=$(curl -s -o "$WORK/dev.json" -w '%{http_code}' -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$SP/api/dev/sign-in")
    [ "$code" = 200 ] || { echo "embedded node answered $code: $(cat "$WORK/dev.json")"; return 1; }
    python3 - "$WORK/dev.json" "http://127.0.0.1:$SP" <<'PY' || return 1
import json, sys, urllib.request
d = json.load(open(sys.argv[1]))["data"]
assert d["user"] == {"_id": "dave", "name": "Dave", "role": "contractor"}, d
req = urllib.request.Request(sys.argv[2] + "/api/chat/conversations", headers={"Authorization": "Bearer " + d["token"]})
assert json.load(urllib.request.urlopen(req))["status"] == "success"
PY
    code=$(curl -s -o "$WORK/dev.json" -w '%{http_code}' -H 'content-type: application/json' -d "$body" "http://127.0.0.1:$LBP/api/dev/sign-in")
    [ "$code" = 403 ] && grep -q '"code":"forbidden"' "$WORK/dev.json" || { echo "cluster answered $code: $(cat "$WORK/dev.json")"; return 1; }
    curl -s "http://127.0.0.1:$LBP/api/dev/sign-in" | grep -q '"enabled":false' || { echo "cluster reports the sign-in enabled"; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' -d '{"userId":"bad id!"}' "http://127.0.0.1:$SP/api/dev/sign-in")
    [ "$code" = 400 ] || { echo "a bad user id got $code"; return 1; }
}
check "development sign-in: 200 + a working token on the embedded node, 403 in cluster mode, 400 for a bad id" dev_sign_in_rules

serves_client() {
    curl -sf "http://127.0.0.1:$LBP/" | grep -q '<div id="app">' || { echo "no client at /"; return 1; }
    curl -sf "http://127.0.0.1:$LBP/some/client/path" | grep -q '<div id="app">' || { echo "no index.html fallback"; return 1; }
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$LBP/api/nope")" = 404 ] || { echo "unknown /api path is not a 404"; return 1; }
}
check "the nodes serve web/dist at / (index.html for client paths, JSON 404 under /api/)" serves_client

SUFFIX=$(od -An -N3 -tx1 /dev/urandom | tr -d ' \n')
ALICE_ID="alice-$SUFFIX"
BOB_ID="bob-$SUFFIX"
mint() {
    env CHAT_DATA_DIR="$WORK/data" JWT_SECRET="$JWT_SECRET" RUST_LOG=error "$CHAT_BIN" token --user "$1" --name "$2" \
        --role "$3" --ttl 1h 2>>"$WORK/token.log"
}
ALICE_TOKEN=$(mint "$ALICE_ID" "Alice Martin" customer) && BOB_TOKEN=$(mint "$BOB_ID" "Bob Builder" contractor) &&
    pass "tokens for Alice and Bob (jobsphere-chat token)" || fail "tokens" "$WORK/token.log"

rm -rf "$ARTIFACTS"
run_browser() {
    SOLO_URL="http://127.0.0.1:$SP" LB_URL="http://127.0.0.1:$LBP" \
        NODE_METRICS="http://127.0.0.1:$M1,http://127.0.0.1:$M2,http://127.0.0.1:$M3" \
        ALICE_ID="$ALICE_ID" BOB_ID="$BOB_ID" ALICE_TOKEN="$ALICE_TOKEN" BOB_TOKEN="$BOB_TOKEN" \
        ARTIFACTS="$ARTIFACTS" timeout 300 node "$BROWSER_DIR/chat.mjs"
}
tally browser run_browser
info "screenshots in $ARTIFACTS"
summary
