#!/usr/bin/env python3
"""Run every PromQL expression of the Grafana dashboard and the alert rules against a Prometheus.

Two modes:

--syntax-only
    Every expression must evaluate without an error (parse errors, type errors such as a range
    vector where an instant vector is needed, many-to-many matching). An empty result is fine:
    the Prometheus may have no data at all (an empty TSDB is enough for this check).

default (full)
    Meant for a Prometheus that has scraped a running cluster that had traffic. On top of the
    syntax check:
    - every dashboard query, every variable query and every recording rule must return data;
    - an alert expression may be empty (a healthy cluster fires nothing), so instead every
      series selector inside it (e.g. `chat_db_pool_connections{state="max"}`) must match
      series, which catches misspelt metric names and labels that would keep an alert silent.
    Series that legitimately only exist after an error (chat_db_errors_total, ...) are excused
    with --allow-empty-regex (repeatable; Python `re.search` against the item's name and its
    expression), e.g.
        --allow-empty-regex 'errors_total|lagged_total|rate_limited|status=~"5\\.\\."'

Variables are substituted as Grafana would: $__rate_interval / $__interval -> --rate-interval
(default 1m), $__range -> 1h, $node -> --node-regex (default .*), $namespace and $job -> .*.

Usage (from the repo root):
    python3 tests/prometheus/dashboard_queries.py --prometheus http://127.0.0.1:9090 --syntax-only
    python3 tests/prometheus/dashboard_queries.py --prometheus http://127.0.0.1:9090 \
        --allow-empty-regex 'errors_total|lagged_total'

Prints one line per query (`ok`, `empty-allowed`, `FAIL`), then
`dashboard_queries: N ok, M failed`. Exit status: 0 all ok, 1 a query failed,
2 bad input or Prometheus unreachable.
"""

import argparse
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEFAULT_DASHBOARD = os.path.join(REPO_ROOT, "deploy", "grafana", "jobsphere-chat.json")
DEFAULT_RULES = os.path.join(REPO_ROOT, "deploy", "prometheus", "alerts.yml")


# --------------------------------------------------------------------------- collecting items

class Item:
    """One expression to run. `kind` decides what an empty result means."""

    def __init__(self, kind, name, expr):
        self.kind = kind  # dashboard | variable | record | alert | selector
        self.name = name
        self.expr = expr

    def label(self):
        return f"{self.kind}: {self.name}"


def substitute(expr, rate_interval, node_regex):
    """Replace Grafana variables; fail loudly on ones we don't know."""
    values = {
        "__rate_interval": rate_interval,
        "__interval": rate_interval,
        "__range": "1h",
        "node": node_regex,
        "namespace": ".*",
        "job": ".*",
    }

    def repl(m):
        name = m.group(1) or m.group(2)
        if name not in values:
            raise ValueError(f"unknown variable ${name} in {expr!r}")
        return values[name]

    # ${name}, ${name:format} and $name
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", repl, expr)


def walk_panels(panels):
    for panel in panels:
        yield panel
        # collapsed rows keep their panels inside
        yield from walk_panels(panel.get("panels") or [])


def dashboard_items(path, rate_interval, node_regex):
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    items = []
    for panel in walk_panels(dash.get("panels", [])):
        for target in panel.get("targets") or []:
            expr = target.get("expr")
            if not expr:
                continue  # check.sh reports targets without expr; nothing to run here
            name = f'{panel.get("title", "?")} [{target.get("refId", "?")}]'
            items.append(Item("dashboard", name, substitute(expr, rate_interval, node_regex)))
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query", "")
        query = (query or "").strip()
        m = re.fullmatch(r"label_values\((.+),\s*\w+\)", query, re.S)
        if m:
            expr = m.group(1)
        else:
            m = re.fullmatch(r"query_result\((.+)\)", query, re.S)
            if not m:
                continue  # label_values(label) or metrics(): no PromQL to run
            expr = m.group(1)
        items.append(Item("variable", var.get("name", "?"), substitute(expr, rate_interval, node_regex)))
    return items


def rule_groups(doc):
    if not isinstance(doc, dict):
        return []
    if "groups" in doc:
        return doc["groups"] or []
    spec = doc.get("spec")  # a PrometheusRule custom resource
    if isinstance(spec, dict):
        return spec.get("groups") or []
    return []


def rule_items(path, rate_interval, node_regex, check_selectors):
    import yaml  # PyYAML; tests/prometheus/check.sh installs it when missing

    with open(path, encoding="utf-8") as f:
        docs = list(yaml.safe_load_all(f))
    items = []
    for doc in docs:
        for group in rule_groups(doc):
            for rule in group.get("rules") or []:
                expr = substitute(str(rule["expr"]).strip(), rate_interval, node_regex)
                if "record" in rule:
                    items.append(Item("record", rule["record"], expr))
                    continue
                name = rule.get("alert", "?")
                items.append(Item("alert", name, expr))
                if check_selectors:
                    for sel in selectors(expr):
                        items.append(Item("selector", f"{name}: {sel}", sel))
    return items


# --------------------------------------------------------------------------- selector extraction

AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan", "atan2"} | AGGREGATIONS
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}


def _skip_string(s, i):
    quote = s[i]
    i += 1
    while i < len(s):
        if s[i] == "\\" and quote != "`":
            i += 2
            continue
        if s[i] == quote:
            return i + 1
        i += 1
    return i


def _skip_balanced(s, i, open_ch, close_ch):
    depth = 0
    while i < len(s):
        c = s[i]
        if c in "\"'`":
            i = _skip_string(s, i)
            continue
        if c == open_ch:
            depth += 1
        elif c == close_ch:
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return i


def selectors(expr):
    """Vector selectors (`name{matchers}`) in a PromQL expression, in order, without duplicates.

    A small lexer, not a parser: it skips strings, comments, range/subquery brackets, numbers,
    durations, function calls, keywords and label lists after by/without/on/ignoring/group_*.
    That is all PromQL needs to tell metric names apart from everything else.
    """
    out = []
    i, n = 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            i = _skip_string(expr, i)
        elif c == "#":
            j = expr.find("\n", i)
            i = n if j < 0 else j
        elif c == "[":
            i = _skip_balanced(expr, i, "[", "]")
        elif c.isdigit() or (c == "." and i + 1 < n and expr[i + 1].isdigit()):
            while i < n and (expr[i].isalnum() or expr[i] in "._"):
                i += 1
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            ident = expr[i:j]
            k = j
            while k < n and expr[k].isspace():
                k += 1
            nxt = expr[k] if k < n else ""
            low = ident.lower()
            if low in GROUPING:
                i = _skip_balanced(expr, k, "(", ")") if nxt == "(" else j
            elif nxt == "(" or low in KEYWORDS:
                i = j  # function call or keyword
            elif nxt == "{":
                end = _skip_balanced(expr, k, "{", "}")
                out.append(ident + expr[k:end])
                i = end
            else:
                out.append(ident)
                i = j
        elif c == "{":  # {__name__="..."} without a leading name
            end = _skip_balanced(expr, i, "{", "}")
            out.append(expr[i:end])
            i = end
        else:
            i += 1
    seen = set()
    return [s for s in out if not (s in seen or seen.add(s))]


# --------------------------------------------------------------------------- querying

def query(base, expr, at, timeout):
    params = {"query": expr}
    if at:
        params["time"] = at
    url = base.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            body = resp.read()
    except urllib.error.HTTPError as e:  # 400/422/503 carry a JSON error body
        body = e.read()
    try:
        return json.loads(body)
    except ValueError:
        return {"status": "error", "errorType": "bad_response", "error": body[:200].decode("utf-8", "replace")}


def one_line(expr):
    return " ".join(expr.split())


def describe(data):
    """(is_empty, note) for a successful query's data."""
    rtype, result = data.get("resultType"), data.get("result")
    if rtype in ("scalar", "string"):
        return False, f"{rtype} {result[1] if result else ''}"
    if not result:
        return True, "empty result"
    values = []
    for series in result:
        if "value" in series:
            values.append(series["value"][1])
        elif series.get("values"):
            values.append(series["values"][-1][1])
    nan = sum(1 for v in values if isinstance(v, str) and v.lower() == "nan")
    note = f"{len(result)} series"
    if values and nan == len(values):
        note += ", all NaN (no traffic in the window?)"
    return False, note


def wait_ready(base, seconds):
    deadline = time.monotonic() + seconds
    last = None
    while True:
        try:
            with urllib.request.urlopen(base.rstrip("/") + "/-/ready", timeout=2) as resp:
                if resp.status == 200:
                    return True
        except (urllib.error.URLError, OSError) as e:
            last = e
        if time.monotonic() >= deadline:
            print(f"dashboard_queries: Prometheus at {base} not ready after {seconds}s: {last}", file=sys.stderr)
            return False
        time.sleep(0.2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--prometheus", required=True, help="base URL, e.g. http://127.0.0.1:9090")
    ap.add_argument("--dashboard", action="append", help=f"Grafana dashboard JSON (default {os.path.relpath(DEFAULT_DASHBOARD)})")
    ap.add_argument("--rules", action="append", help=f"rule file or PrometheusRule (default {os.path.relpath(DEFAULT_RULES)})")
    ap.add_argument("--syntax-only", action="store_true", help="only fail on query errors; empty results are fine")
    ap.add_argument("--allow-empty-regex", action="append", default=[], metavar="RE",
                    help="in full mode, an empty result is fine for items whose name or expr matches RE (repeatable)")
    ap.add_argument("--rate-interval", default="1m", help="value for $__rate_interval (default 1m)")
    ap.add_argument("--node-regex", default=".*", help="value for $node (default .*)")
    ap.add_argument("--time", help="evaluation time (RFC 3339 or unix seconds; default: now)")
    ap.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="wait up to SECONDS for /-/ready first")
    ap.add_argument("--timeout", type=float, default=10, help="per-query timeout in seconds")
    ap.add_argument("--quiet", action="store_true", help="print only failures and the summary")
    args = ap.parse_args(argv)

    try:
        allow = [re.compile(r) for r in args.allow_empty_regex]
    except re.error as e:
        print(f"dashboard_queries: bad --allow-empty-regex: {e}", file=sys.stderr)
        return 2

    items = []
    try:
        for path in args.dashboard or [DEFAULT_DASHBOARD]:
            items += dashboard_items(path, args.rate_interval, args.node_regex)
        for path in args.rules or [DEFAULT_RULES]:
            items += rule_items(path, args.rate_interval, args.node_regex, not args.syntax_only)
    except (OSError, ValueError, KeyError) as e:
        print(f"dashboard_queries: cannot read inputs: {e}", file=sys.stderr)
        return 2
    if not items:
        print("dashboard_queries: no expressions found", file=sys.stderr)
        return 2

    if args.wait and not wait_ready(args.prometheus, args.wait):
        return 2

    ok = failed = 0
    for item in items:
        try:
            resp = query(args.prometheus, item.expr, args.time, args.timeout)
        except (urllib.error.URLError, OSError) as e:
            print(f"dashboard_queries: cannot reach {args.prometheus}: {e}", file=sys.stderr)
            return 2
        if resp.get("status") != "success":
            failed += 1
            print(f"FAIL {item.label()}: {resp.get('errorType', '?')}: {resp.get('error', '?')}\n     expr: {one_line(item.expr)}")
            continue
        empty, note = describe(resp.get("data", {}))
        must_have_data = not args.syntax_only and item.kind != "alert"
        if empty and must_have_data:
            if any(r.search(item.name) or r.search(item.expr) for r in allow):
                ok += 1
                if not args.quiet:
                    print(f"empty-allowed {item.label()}")
            else:
                failed += 1
                print(f"FAIL {item.label()}: empty result\n     expr: {one_line(item.expr)}")
            continue
        ok += 1
        if not args.quiet:
            print(f"ok   {item.label()} ({note})")

    print(f"dashboard_queries: {ok} ok, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
