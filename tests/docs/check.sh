#!/usr/bin/env bash
# Keeps docs/ and the README true to the code:
#   - docs/openapi.json equals what `jobsphere-chat openapi` generates from the handlers;
#   - docs/asyncapi.yaml passes the AsyncAPI parser (@asyncapi/parser, from the lock file) and
#     names exactly the events of src/realtime/events.rs, as does docs/events.md;
#   - docs/operations.md names every environment variable of src/config.rs;
#   - the README's `helm install` command renders with `helm template` against the chart;
#   - the README, docs/ and the web client point at nothing outside the repository, and
#     their relative links resolve.
#
#   bash tests/docs/check.sh     (CHAT_BIN=path/to/jobsphere-chat to skip the cargo build)
#
# Last line: `N passed, M failed`; exit 1 on any failure.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
ROOT="$PWD"
TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}"
export TOOLS_DIR
PASSED=0
FAILED=0
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

pass() { PASSED=$((PASSED + 1)); echo "ok   $1"; }
fail() {
    FAILED=$((FAILED + 1))
    echo "FAIL $1"
    if [ -n "${2:-}" ] && [ -s "$2" ]; then sed -e 's/^/     | /' "$2" | head -n 60; fi
}
check() {
    local name="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then pass "$name"; else fail "$name" "$WORK/out"; fi
}

# ----------------------------------------------------------------------------- OpenAPI
openapi_matches() {
    local bin="${CHAT_BIN:-}"
    if [ -z "$bin" ]; then
        cargo build --quiet --bin jobsphere-chat || return 1
        bin="$ROOT/target/debug/jobsphere-chat"
    fi
    "$bin" openapi >"$WORK/openapi.json" || return 1
    if ! cmp -s "$WORK/openapi.json" docs/openapi.json; then
        echo "docs/openapi.json is not what the code generates; regenerate it with"
        echo "  cargo run --quiet -- openapi > docs/openapi.json"
        diff -u docs/openapi.json "$WORK/openapi.json" | head -n 40
        return 1
    fi
    python3 - "$WORK/openapi.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["openapi"].startswith("3.1"), d["openapi"]
need = ["/api/chat/conversations", "/api/chat/conversations/{id}/messages", "/api/chat/conversations/{id}/read",
        "/api/chat/unread", "/api/chat/users/status", "/api/dev/sign-in", "/api/openapi.json", "/healthz", "/readyz"]
missing = [p for p in need if p not in d["paths"]]
assert not missing, f"paths missing from the document: {missing}"
PY
}
check "docs/openapi.json is what the code generates (OpenAPI 3.1, every route)" openapi_matches

# ----------------------------------------------------------------------------- AsyncAPI
asyncapi() {
    local dir="$ROOT/tests/docs" stamp="$ROOT/tests/docs/node_modules/.lock-installed"
    if ! { [ -f "$stamp" ] && cmp -s "$dir/package-lock.json" "$stamp"; }; then
        (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error) >"$WORK/npm.log" 2>&1 ||
            { echo "FAIL npm ci in tests/docs"; sed 's/^/     | /' "$WORK/npm.log"; return 1; }
        cp "$dir/package-lock.json" "$stamp"
    fi
    timeout 120 node "$dir/asyncapi.mjs"
}
asyncapi >"$WORK/asyncapi.out" 2>&1
rc=$?
cat "$WORK/asyncapi.out"
PASSED=$((PASSED + $(grep -c '^ok ' "$WORK/asyncapi.out")))
FAILED=$((FAILED + $(grep -c '^FAIL' "$WORK/asyncapi.out")))
if [ "$rc" -ne 0 ] && ! grep -q '^FAIL' "$WORK/asyncapi.out"; then fail "AsyncAPI checks exited $rc"; fi

# ----------------------------------------------------------------------------- configuration
config_documented() {
    local var missing=0
    for var in $(grep -o 'env = "[A-Z_]*"' src/config.rs | cut -d'"' -f2 | sort -u); do
        grep -q "\`$var\`" docs/operations.md || { echo "$var (src/config.rs) is not in docs/operations.md"; missing=1; }
    done
    return $missing
}
check "docs/operations.md names every variable of src/config.rs" config_documented

# ----------------------------------------------------------------------------- README helm
readme_helm() {
    local helm
    helm="$(bash scripts/tools/helm.sh)" || return 1
    # The README's command, exactly as written (continuation lines joined), install -> template.
    python3 - README.md >"$WORK/helm.cmd" <<'PY' || return 1
import re, sys
text = open(sys.argv[1]).read()
m = re.search(r"^[ \t]*(helm install (?:.*\\\n)*.*)$", text, re.M)
if not m:
    sys.exit("no `helm install` command in the README")
cmd = re.sub(r"\\\n\s*", " ", m.group(1)).strip()
print(cmd.replace("helm install", "helm template", 1))
PY
    echo "rendering: $(cat "$WORK/helm.cmd")"
    HELM="$helm" bash -c 'set -euo pipefail; eval "${HELM} ${1#helm }"' _ "$(cat "$WORK/helm.cmd")" >"$WORK/rendered.yaml" || return 1
    python3 - "$WORK/rendered.yaml" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
ing = [d for d in docs if d["kind"] == "Ingress"]
assert ing, "no Ingress rendered"
hosts = [r.get("host") for r in ing[0]["spec"]["rules"]]
assert hosts == ["chat.example.com"], f"Ingress hosts {hosts}"
dep = [d for d in docs if d["kind"] == "Deployment"][0]
image = dep["spec"]["template"]["spec"]["containers"][0]["image"]
assert image == "registry.example.com/jobsphere-chat:0.1.0", image
PY
}
python3 -c 'import yaml' 2>/dev/null || python3 -m pip install -q pyyaml >/dev/null 2>&1
check "the README's helm install command renders (helm template), host and image as written" readme_helm

# ----------------------------------------------------------------------------- references
self_contained() {
    local bad=0 files
    files=$(git ls-files | grep -v -e 'package-lock.json$' -e '^tests/docs/check.sh$' -e '^Cargo.lock$' -e '^tests/fixtures/')
    # shellcheck disable=SC2086
    # Names of the team's working notes beside a checkout, which a clone does not have; spelled
    # in pieces so that this file does not name them itself.
    local outside="\\.\\./sha""red|/work/|DES""IGN\\.md|DES""IGN §|NOTES-socket""ioxide|STY""LE\\.md|[Ii]ss""ue #?[0-9]"
    if grep -n -E "$outside" $files; then
        echo "^ references to files outside the repository"
        bad=1
    fi
    python3 - README.md docs/*.md <<'PY' || bad=1
import os, re, sys
bad = False
for f in sys.argv[1:]:
    text = re.sub(r"```.*?```", "", open(f).read(), flags=re.S)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = os.path.normpath(os.path.join(os.path.dirname(f), target.split("#")[0]))
        if not path.startswith("..") and os.path.exists(path):
            continue
        print(f"{f}: link to {target} does not resolve inside the repository")
        bad = True
sys.exit(1 if bad else 0)
PY
    return $bad
}
check "no tracked file refers to anything outside the repository (or to a tracker issue); links resolve" self_contained

echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
