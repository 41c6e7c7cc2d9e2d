#!/usr/bin/env bash
# SC2016: the bash -c snippets get their values as "$1"/"$2" on purpose; SC2317: trap handler.
# shellcheck disable=SC2016,SC2317
# Checks the observability artifacts that need no running chat server:
#   deploy/prometheus/alerts.yml       promtool check rules + unit tests + conventions
#   deploy/prometheus/alerts.test.yml  covers every alert with a firing case
#   deploy/prometheus/prometheus.yml   promtool check config
#   deploy/grafana/jobsphere-chat.json structure, variables, and every query evaluated by a
#                                      throwaway Prometheus (loopback, free port) that scrapes
#                                      two fake nodes (tests/prometheus/fake_exporter.py)
#
# Usage (from anywhere): tests/prometheus/check.sh
# Prints one line per check and finally `N passed, M failed`; exits non-zero on any failure.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1

PASSED=0
FAILED=0
WORK="$(mktemp -d)"
PROM_PID=""
EXPORTER_PID=""

cleanup() {
    local pid
    for pid in $PROM_PID $EXPORTER_PID; do
        kill "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# check NAME CMD...: runs CMD, shows its output only when it fails.
check() {
    local name="$1"
    shift
    if "$@" >"$WORK/out" 2>&1; then
        PASSED=$((PASSED + 1))
        echo "ok   $name"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL $name"
        sed 's/^/     | /' "$WORK/out"
    fi
}

summary() {
    echo "$PASSED passed, $FAILED failed"
    [ "$FAILED" -eq 0 ]
    exit $?
}

# ----------------------------------------------------------------------------- tools
check "install prometheus + promtool (scripts/tools/prometheus.sh)" scripts/tools/prometheus.sh
if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then
    summary
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
    check "install PyYAML" python3 -m pip install -q pyyaml
fi

# ----------------------------------------------------------------------------- rules
check "promtool check rules deploy/prometheus/alerts.yml" \
    promtool check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" \
    promtool test rules deploy/prometheus/alerts.test.yml
check "promtool check config deploy/prometheus/prometheus.yml" \
    promtool check config deploy/prometheus/prometheus.yml

check "alert conventions (for, severity, summary/description/runbook_url to docs/runbooks, namespace+job) and test coverage" python3 - <<'PY'
import pathlib, re, sys, yaml

rules = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
tests = yaml.safe_load(open("deploy/prometheus/alerts.test.yml"))
errors = []
alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
names = [r["alert"] for r in alerts]
for dup in sorted({n for n in names if names.count(n) > 1}):
    errors.append(f"{dup}: defined twice")
for r in alerts:
    n = r["alert"]
    if "for" not in r:
        errors.append(f"{n}: no `for:`")
    if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
        errors.append(f"{n}: severity must be critical, warning or info")
    for a in ("summary", "description", "runbook_url"):
        if not r.get("annotations", {}).get(a):
            errors.append(f"{n}: no `{a}` annotation")
    if "runbook" in r.get("annotations", {}):
        errors.append(f"{n}: `runbook` annotation (tools read `runbook_url`)")
    # runbook_url names a section of a real file in docs/runbooks/.
    url = r.get("annotations", {}).get("runbook_url", "")
    m = re.search(r"/docs/runbooks/([a-z0-9-]+\.md)#([a-z0-9-]+)$", url)
    if not m:
        errors.append(f"{n}: runbook_url {url!r} is not .../docs/runbooks/FILE.md#anchor")
    else:
        doc = pathlib.Path("docs/runbooks") / m.group(1)
        anchors = set()
        if doc.exists():
            for line in doc.read_text().splitlines():
                if line.startswith("#"):
                    # GitHub's anchors: lower case, spaces to dashes, punctuation dropped.
                    t = line.lstrip("#").strip().lower()
                    anchors.add(re.sub(r"[^a-z0-9 -]", "", t).replace(" ", "-"))
        if not doc.exists():
            errors.append(f"{n}: {doc} does not exist")
        elif m.group(2) not in anchors:
            errors.append(f"{n}: {doc} has no section #{m.group(2)}")
    # Multi-release safety: aggregations keep namespace and job.
    for by in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", str(r["expr"])):
        grouping = {x.strip() for x in by.split(",")}
        if "job" in grouping and "namespace" not in grouping:
            errors.append(f"{n}: aggregates by job without namespace: ({by})")

firing, quiet = set(), set()
for t in tests["tests"]:
    for case in t.get("alert_rule_test", []):
        (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
for n in names:
    if n not in firing:
        errors.append(f"{n}: no firing case in alerts.test.yml")
for n in sorted((firing | quiet) - set(names)):
    errors.append(f"{n}: tested but not defined")
print(f"{len(names)} alerts, {len(quiet & set(names))} with a not-firing case")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY

# ----------------------------------------------------------------------------- dashboard
check "dashboard structure (JSON, uid, variables, ids, targets, units, layout)" python3 - <<'PY'
import json, re, sys

path = "deploy/grafana/jobsphere-chat.json"
errors = []
try:
    d = json.load(open(path))
except ValueError as e:
    print(f"{path}: invalid JSON: {e}")
    sys.exit(1)

def want(cond, msg):
    if not cond:
        errors.append(msg)

want(d.get("uid") == "jobsphere-chat", "uid must be jobsphere-chat")
want("__inputs" not in d, "no __inputs (the datasource comes from the variable)")
want(isinstance(d.get("schemaVersion"), int) and d["schemaVersion"] >= 36, "schemaVersion >= 36 (Grafana 10+)")
want(d.get("title"), "no title")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
ds = variables.get("datasource", {})
want(ds.get("type") == "datasource" and ds.get("query") == "prometheus", "variable `datasource` of type datasource/prometheus")
def query_of(v):
    q = v.get("query")
    return q.get("query") if isinstance(q, dict) else q
want([v.get("name") for v in d.get("templating", {}).get("list", [])] == ["datasource", "namespace", "job", "node"],
     "variables in order: datasource, namespace, job (release), node")
for name, q in (
    ("namespace", "label_values(chat_node_info, namespace)"),
    ("job", 'label_values(chat_node_info{namespace=~"$namespace"}, job)'),
    ("node", 'label_values(chat_node_info{namespace=~"$namespace",job=~"$job"}, node)'),
):
    v = variables.get(name, {})
    want(v.get("type") == "query" and query_of(v) == q, f"variable `{name}` = {q}")
    want(v.get("multi") is True and v.get("includeAll") is True, f"variable `{name}` multi + include All")
    # `.*` (not Grafana's list of values) so that series without the label (local runs without
    # Kubernetes have no `namespace`) still match.
    want(v.get("allValue") == ".*", f"variable `{name}` allValue .*")
    want(v.get("datasource", {}).get("uid") == "${datasource}", f"variable `{name}` uses ${{datasource}}")

def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels") or [])

panels = list(walk(d.get("panels", [])))
ids = [p.get("id") for p in panels]
want(all(isinstance(i, int) for i in ids), "every panel has an integer id")
dups = sorted({i for i in ids if ids.count(i) > 1 and i is not None})
want(not dups, f"duplicate panel ids: {dups}")
cells = {}
n_targets = 0
for p in panels:
    title = p.get("title") or f"panel {p.get('id')}"
    g = p.get("gridPos") or {}
    want(all(k in g for k in "hwxy"), f"{title}: gridPos incomplete")
    if all(k in g for k in "hwxy"):
        want(g["x"] + g["w"] <= 24, f"{title}: wider than the grid")
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                want((x, y) not in cells, f"{title}: overlaps {cells.get((x, y))}")
                cells.setdefault((x, y), title)
    if p.get("type") == "row":
        continue
    want(p.get("type") in ("timeseries", "stat"), f"{title}: type {p.get('type')} (timeseries or stat expected)")
    want(p.get("datasource", {}).get("uid") == "${datasource}", f"{title}: datasource must be ${{datasource}}")
    want(p.get("fieldConfig", {}).get("defaults", {}).get("unit"), f"{title}: no unit")
    targets = p.get("targets") or []
    want(targets, f"{title}: no targets")
    refs = [t.get("refId") for t in targets]
    want(len(set(refs)) == len(refs), f"{title}: duplicate refIds")
    for t in targets:
        n_targets += 1
        expr = t.get("expr")
        if not expr:
            errors.append(f"{title} [{t.get('refId')}]: target without expr")
            continue
        scope = 'namespace=~"$namespace",job=~"$job"'
        want(scope in expr, f"{title} [{t.get('refId')}]: not filtered with {scope}")
        # Recording rules (level:metric:operation) are per release; everything else per node too.
        if not re.search(r"\b[a-z_]+:[a-z_]+:[a-z0-9_]+\{", expr):
            want('node=~"$node"' in expr, f"{title} [{t.get('refId')}]: not filtered with node=~\"$node\"")
            for sel in re.findall(r"\b((?:chat|process)_[a-z_]+)\{([^}]*)\}", expr):
                want(scope in sel[1], f"{title} [{t.get('refId')}]: {sel[0]} not scoped to $namespace/$job")
        for fn, rng in re.findall(r"\b(rate|irate|increase)\(\s*[^\[\)]*\[([^\]]+)\]", expr):
            want(rng == "$__rate_interval", f"{title} [{t.get('refId')}]: {fn}() over [{rng}] instead of [$__rate_interval]")
units = {p["fieldConfig"]["defaults"].get("unit") for p in panels if p.get("type") != "row"}
for u in ("s", "reqps", "bytes", "percentunit", "Bps"):
    want(u in units, f"no panel with unit {u}")
slo = [p for p in panels for t in p.get("targets") or [] if "job:chat_message_latency_slow:" in t.get("expr", "")]
want(len(slo) >= 3, "SLO panels from the recording rules (job:chat_message_latency_slow:*)")
metrics = " ".join(t.get("expr", "") for p in panels for t in p.get("targets") or [])
for name in ("chat_socket_transport_connections", "chat_users_online", "chat_network_received_bytes_total",
             "chat_network_sent_bytes_total", "chat_engineio_errors_total", "chat_redis_pubsub_lag_seconds_bucket",
             "chat_redis_pubsub_probes_lost_total", "chat_tokio_worker_busy_ratio", "chat_tokio_global_queue_depth"):
    want(name in metrics, f"no panel shows {name}")
print(f"{len(panels)} panels, {n_targets} queries")
for e in errors:
    print(e)
sys.exit(1 if errors else 0)
PY

# ----------------------------------------------------------------------------- queries
# A throwaway Prometheus (fresh TSDB in a temp dir, loopback, free port) evaluates every dashboard
# and rule expression: a parse or type error is an error status even without data. It loads
# alerts.yml, so a rule file the server itself rejects fails here too, and it scrapes two fake
# nodes (fake_exporter.py: the metric contract of docs/operations.md) every second, so that the full mode
# can require every dashboard query to return data.
read -r PORT NODE1 NODE2 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
cat >"$WORK/prometheus.yml" <<CONFIG
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - $ROOT/deploy/prometheus/alerts.yml
scrape_configs:
  - job_name: jobsphere-chat
    static_configs:
      - targets: ["127.0.0.1:$NODE1", "127.0.0.1:$NODE2"]
CONFIG
python3 tests/prometheus/fake_exporter.py --lifetime 600 \
    --node "chat-1=127.0.0.1:$NODE1" --node "chat-2=127.0.0.1:$NODE2" >"$WORK/exporter.log" 2>&1 &
EXPORTER_PID=$!
prometheus --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
    --web.listen-address="127.0.0.1:$PORT" --log.level=warn >"$WORK/prometheus.log" 2>&1 &
PROM_PID=$!
URL="http://127.0.0.1:$PORT"

check "throwaway Prometheus on $URL starts and loads alerts.yml" python3 - "$URL" <<'PY'
import json, sys, time, urllib.request
url, err = sys.argv[1], "no rules loaded"
deadline = time.time() + 60
while time.time() < deadline:
    try:
        urllib.request.urlopen(url + "/-/ready", timeout=2)
        groups = json.load(urllib.request.urlopen(url + "/api/v1/rules", timeout=5))["data"]["groups"]
        n = sum(len(g["rules"]) for g in groups)
        if n:
            print(f"{len(groups)} groups, {n} rules loaded")
            sys.exit(0)
    except Exception as e:
        err = e
    time.sleep(0.3)
print(f"not ready after 60s: {err}")
sys.exit(1)
PY
if ! kill -0 "$PROM_PID" 2>/dev/null; then
    sed 's/^/     | /' "$WORK/prometheus.log"
fi

check "every dashboard and rule expression evaluates (dashboard_queries.py --syntax-only)" \
    python3 tests/prometheus/dashboard_queries.py --prometheus "$URL" --syntax-only --quiet

# Full mode against the fake nodes, retried while the first scrapes and rule evaluations land
# (rates need two samples).
check "every dashboard query and alert selector has data from the fake nodes (full mode)" bash -c '
    for _ in $(seq 40); do
        python3 tests/prometheus/dashboard_queries.py --prometheus "$1" --quiet >"$2/full.out" && exit 0
        sleep 0.5
    done
    cat "$2/full.out"; exit 1' _ "$URL" "$WORK"

# The checker itself must catch what it is there to catch.
cat >"$WORK/broken.json" <<'JSON'
{"panels": [{"id": 1, "title": "broken", "type": "timeseries", "targets": [
  {"refId": "A", "expr": "rate(chat_messages_total{node=~\"$node\"})"},
  {"refId": "B", "expr": "sum(chat_socket_connections{node=~\"$node\"}"}]}]}
JSON
check "dashboard_queries.py fails on a type error and a parse error" bash -c '
    out=$(python3 tests/prometheus/dashboard_queries.py --prometheus "$1" --syntax-only --dashboard "$2" --rules /dev/null)
    rc=$?; echo "$out"
    [ "$rc" -eq 1 ] && [ "$(grep -c "^FAIL" <<<"$out")" -eq 2 ]' _ "$URL" "$WORK/broken.json"
check "dashboard_queries.py full mode fails on empty results (\$node matching nothing)" bash -c '
    python3 tests/prometheus/dashboard_queries.py --prometheus "$1" --quiet --node-regex no-such-node >"$2/empty.out"
    rc=$?; tail -n 1 "$2/empty.out"; [ "$rc" -eq 1 ]' _ "$URL" "$WORK"
check "dashboard_queries.py --allow-empty-regex excuses empty results" \
    python3 tests/prometheus/dashboard_queries.py --prometheus "$URL" --quiet --node-regex no-such-node \
    --allow-empty-regex '.*'

summary
