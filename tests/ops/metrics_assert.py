#!/usr/bin/env python3
"""Checks the /metrics output of running chat nodes against the metric contract (the Metrics
table of docs/operations.md).

  metrics_assert.py --metrics http://127.0.0.1:9101 [--metrics ...] --tokens tokens.json \
      [--node-id n1 ...]

- every metric name of the contract appears on at least one node, with the label names listed
  there (`chat_events_total{event}` must have series with an `event` label); in cluster mode
  (unless --embedded) the targeted fan-out's series too: `chat_redis_pubsub_received_total`
  counted the cross-node traffic on every node, `chat_fanout_dropped_total` has exactly its
  reasons and nothing failed to decode;
- the latencies are histograms (`# TYPE x histogram`, `_bucket` series incl. `le="0.1"`, the SLO
  boundary alerts.yml relies on, plus `_sum`/`_count`), never summaries (`quantile`);
- every chat_* series carries `node` = the node's NODE_ID;
- cardinality: no label value holds a 24-hex id (conversation/message ids) or a user id from
  tokens.json, `route` values are route templates or `unmatched`, `event` values are known
  event names or `unknown`, and each node exposes a bounded number of series.

Prints `ok NAME` / `FAIL NAME` (details indented) / `info ...`; exit 1 on any failure.
"""

import argparse
import json
import os
import re
import sys
import urllib.request

# The metric contract: the Metrics table of docs/operations.md, with the label names each series
# must carry.
CONTRACT = {
    "chat_socket_connections": [],
    "chat_socket_connects_total": [],
    "chat_socket_disconnects_total": ["reason"],
    "chat_connection_errors_total": ["reason"],
    "chat_messages_total": ["type"],
    "chat_events_total": ["event"],
    "chat_event_errors_total": ["event", "code"],
    "chat_message_latency_seconds": [],
    "chat_event_duration_seconds": ["event"],
    "chat_db_query_duration_seconds": ["op"],
    "chat_db_errors_total": ["op"],
    "chat_db_pool_connections": ["state"],
    "chat_redis_command_duration_seconds": ["op"],
    "chat_redis_errors_total": ["op"],
    "chat_cache_requests_total": ["cache", "result"],
    "chat_http_requests_total": ["method", "route", "status"],
    "chat_http_request_duration_seconds": ["method", "route"],
    "chat_rate_limited_total": ["kind"],
    "chat_http_connections_closed_total": ["reason"],
    "chat_sessions_expired_total": [],
    "chat_node_info": ["node", "version"],
    "process_cpu_seconds_total": [],
    "process_resident_memory_bytes": [],
}
# Not in §8 but selected by deploy/prometheus/alerts.yml and the dashboard.
EXTRA = {"chat_ready": []}
# Cluster mode with the targeted fan-out (the default with REDIS_URL), as documented in the
# Metrics table of docs/operations.md: required unless --embedded.
CLUSTER = {
    "chat_redis_pubsub_received_total": [],
    "chat_fanout_dropped_total": ["reason"],
    "chat_redis_pubsub_lagged_total": [],
}
# `chat_fanout_dropped_total{reason}`: the reasons of src/coord/fanout/targeted.rs (all at 0 at start).
FANOUT_DROP_REASONS = {"lagged", "decode", "emit", "subscriptions_full"}
# Series that only exist after a failure: checked only when --require-failure-series lists them.
# None any more: the node creates every failure counter at 0 for its known labels when it starts,
# so they are required like every other series.
FAILURE_ONLY = set()

EVENTS = {
    "join_conversation", "leave_conversation", "send_message", "typing_start", "typing_stop",
    "mark_as_read", "mark_as_delivered", "get_online_status", "sync", "unknown",
    # Fan-out failures are counted as event errors of the server event that failed.
    "new_message", "message_delivered", "user_typing", "messages_read", "messages_delivered",
    "user_status", "error",
}
# `chat_rate_limited_total{kind}`: the budgets and caps of src/limits (all created at 0).
RATE_LIMIT_KINDS = {
    "message", "connection", "typing", "receipt", "presence", "sync", "join", "create", "read",
    "in_flight", "sockets_per_user",
}
MAX_SERIES_PER_NODE = 3000

LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
HEX24 = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{24}(?![0-9a-fA-F])")

failures = 0


def report(name, ok, detail=None):
    global failures
    if ok:
        print(f"ok   {name}")
    else:
        failures += 1
        print(f"FAIL {name}")
        if detail:
            for line in str(detail).splitlines()[:40]:
                print(f"     {line}")
    return ok


def parse(text):
    """-> (samples [(name, {labels}, value)], types {name: type})"""
    samples, types = [], {}
    for line in text.splitlines():
        if not line.strip():
            continue
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) >= 4:
                types[parts[2]] = parts[3]
            continue
        if line.startswith("#"):
            continue
        m = LINE.match(line.strip())
        if not m:
            raise ValueError(f"unparsable exposition line: {line!r}")
        labels = dict(LABEL.findall(m.group(2) or ""))
        samples.append((m.group(1), labels, m.group(3)))
    return samples, types


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--metrics", action="append", required=True, help="base URL of a node's metrics port")
    ap.add_argument("--node-id", action="append", default=[], help="NODE_ID of each --metrics, same order")
    ap.add_argument("--tokens", help="tokens.json with {users: {name: id}}: ids that must not be label values")
    ap.add_argument("--embedded", action="store_true",
                    help="the nodes run without Redis: the cluster-only series are not required")
    ap.add_argument("--require-failure-series", default="",
                    help="comma-separated failure-only metrics that must exist too (the caller produced them)")
    args = ap.parse_args()

    contract = dict(CONTRACT)
    contract.update(EXTRA)
    if not args.embedded:
        contract.update(CLUSTER)
    required_failure = {x for x in args.require_failure_series.split(",") if x}

    nodes = []
    for i, base in enumerate(args.metrics):
        url = base.rstrip("/") + "/metrics"
        try:
            text = urllib.request.urlopen(url, timeout=10).read().decode()
            samples, types = parse(text)
        except Exception as e:  # noqa: BLE001 - report any failure to read
            report(f"{url} readable and valid exposition text", False, e)
            continue
        nodes.append((base, args.node_id[i] if i < len(args.node_id) else None, samples, types))
    if not nodes:
        return 1

    all_samples = [(n, l, v, base) for base, _, s, _ in nodes for (n, l, v) in s]
    all_types = {}
    for _, _, _, t in nodes:
        all_types.update(t)

    def series_of(metric):
        names = {metric, metric + "_bucket", metric + "_sum", metric + "_count", metric + "_total"}
        return [(n, l) for n, l, _, _ in all_samples if n in names]

    # ---------------------------------------------------------------- names and labels
    for metric, labels in sorted(contract.items()):
        if metric in FAILURE_ONLY and metric not in required_failure:
            found = bool(series_of(metric))
            print(f"info {metric}: {'present' if found else 'absent'} (exists only after a failure; not required here)")
            continue
        series = series_of(metric)
        if not report(f"{metric} exposed by at least one node", bool(series)):
            continue
        for label in labels:
            have = any(label in l for _, l in series)
            report(f"{metric} has the `{label}` label", have, {tuple(sorted(l)) for _, l in series})

    # ---------------------------------------------------------------- histograms
    histograms = sorted(m for m in contract if m.endswith("_seconds"))
    for h in histograms:
        if not series_of(h):
            continue
        t = all_types.get(h)
        buckets = [l for n, l, _, _ in all_samples if n == h + "_bucket"]
        le01 = [l for l in buckets if l.get("le") in ("0.1", "0.10", "1e-1")]
        inf = [l for l in buckets if l.get("le") == "+Inf"]
        sums = [1 for n, _, _, _ in all_samples if n == h + "_sum"]
        counts = [1 for n, _, _, _ in all_samples if n == h + "_count"]
        quantiles = [l for n, l, _, _ in all_samples if n == h and "quantile" in l]
        report(f"{h} is a histogram with le=\"0.1\" and +Inf buckets, _sum and _count",
               t == "histogram" and le01 and inf and sums and counts and not quantiles,
               f"type={t} buckets={len(buckets)} le0.1={len(le01)} +Inf={len(inf)} sum={len(sums)} "
               f"count={len(counts)} quantile-series={len(quantiles)}")
        # le="0.1" on every bucketed series (each label combination), not only on some.
        combos = {tuple(sorted((k, v) for k, v in l.items() if k != "le")) for l in buckets}
        with01 = {tuple(sorted((k, v) for k, v in l.items() if k != "le")) for l in le01}
        report(f"{h}: every series ({len(combos)}) has an le=\"0.1\" bucket", combos == with01,
               sorted(combos - with01)[:5])

    # ---------------------------------------------------------------- node label
    for base, node_id, samples, _ in nodes:
        chat = [(n, l) for n, l, _ in samples if n.startswith("chat_")]
        wrong = [(n, l.get("node")) for n, l in chat if node_id and l.get("node") != node_id]
        report(f"{base}: every chat_* series has node=\"{node_id}\"", chat and not wrong, wrong[:5])

    # ---------------------------------------------------------------- cardinality
    ids = []
    if args.tokens:
        ids = [v for v in json.load(open(args.tokens))["users"].values() if v]
    leaks = []
    routes, events = set(), set()
    for n, l, _, base in all_samples:
        for k, v in l.items():
            if HEX24.search(v):
                leaks.append(f"{base} {n} {k}={v!r}: a 24-hex id")
            for uid in ids:
                if uid in v:
                    leaks.append(f"{base} {n} {k}={v!r}: user id {uid}")
        if "route" in l:
            routes.add(l["route"])
        if "event" in l and n.startswith("chat_event"):
            events.add(l["event"])
    report("no label value holds a 24-hex id or a user id", not leaks, "\n".join(sorted(set(leaks))[:20]))
    bad_routes = sorted(r for r in routes if r != "unmatched" and not r.startswith("/"))
    bad_routes += sorted(r for r in routes if r.startswith("/") and re.search(r"/[0-9a-f]{8,}|/\d+(/|$)", r))
    report(f"route label values are templates or `unmatched` ({len(routes)}: {', '.join(sorted(routes))})",
           not bad_routes, bad_routes)
    report(f"event label values are known events or `unknown` ({', '.join(sorted(events))})",
           events <= EVENTS, sorted(events - EVENTS))
    kinds = {l.get("kind") for _, _, samples, _ in nodes for n, l, _ in samples if n == "chat_rate_limited_total"}
    report(f"chat_rate_limited_total has every kind and no other ({', '.join(sorted(k or '' for k in kinds))})",
           kinds == RATE_LIMIT_KINDS, {"missing": sorted(RATE_LIMIT_KINDS - kinds), "unknown": sorted(k or "" for k in kinds - RATE_LIMIT_KINDS)})
    if not args.embedded:
        for base, _, samples, _ in nodes:
            reasons = {l.get("reason") for n, l, _ in samples if n == "chat_fanout_dropped_total"}
            report(f"{base}: chat_fanout_dropped_total has every reason and no other ({', '.join(sorted(r or '' for r in reasons))})",
                   reasons == FANOUT_DROP_REASONS,
                   {"missing": sorted(FANOUT_DROP_REASONS - reasons), "unknown": sorted(r or "" for r in reasons - FANOUT_DROP_REASONS)})
            # Nobody else publishes on the user channels: every message received decodes.
            decode = sum(float(v) for n, l, v in samples if n == "chat_fanout_dropped_total" and l.get("reason") == "decode")
            report(f"{base}: no targeted fan-out message failed to decode ({decode:g})", decode == 0)
            # Every node held sockets that received messages from other nodes' senders.
            received = sum(float(v) for n, _, v in samples if n == "chat_redis_pubsub_received_total")
            report(f"{base}: chat_redis_pubsub_received_total counted the cross-node traffic ({received:g} > 0)", received > 0)
    for base, _, samples, _ in nodes:
        report(f"{base}: {len(samples)} series (bound {MAX_SERIES_PER_NODE})", len(samples) <= MAX_SERIES_PER_NODE)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
