#!/usr/bin/env python3
"""Serve /metrics shaped like a jobsphere-chat node, for checking dashboards and rules offline.

Every metric name and label of docs/operations.md (Metrics) (plus chat_ready and
chat_redis_pubsub_lagged_total) is exported with the global `node` label, the way
metrics-exporter-prometheus does it: counters grow with time, histograms use the app's buckets
(0.0005 s to 10 s, `le` formatted like Rust's f64 Display: "0.1", "1", "+Inf"). Error counters
are non-zero on purpose so that every dashboard query has data.

This is a stand-in for the contract, not for the app: tests/prometheus/check.sh lets a
throwaway Prometheus scrape it and then requires every dashboard query to return data.

Usage: fake_exporter.py --node chat-1=127.0.0.1:19101 --node chat-2=127.0.0.1:19102 [--lifetime 300]
"""

import argparse
import http.server
import math
import sys
import threading
import time

BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
START = time.monotonic()


def fmt(v):
    """Rust-like f64 Display: 1.0 -> "1", 0.1 -> "0.1"."""
    if v == math.inf:
        return "+Inf"
    s = repr(float(v))
    return s[:-2] if s.endswith(".0") else s


def labels(d):
    return "{" + ",".join(f'{k}="{v}"' for k, v in d.items()) + "}"


def render(node):
    t = time.monotonic() - START + 60  # as if the node had been up for a minute
    out = []

    def gauge(name, value, **lbl):
        out.append(f"{name}{labels({'node': node, **lbl})} {fmt(value)}")

    def counter(name, per_sec, **lbl):
        gauge(name, per_sec * t, **lbl)

    def histogram(name, per_sec, typical, **lbl):
        count = per_sec * t
        for le in BUCKETS:
            # share of observations <= le for an exponential distribution with mean `typical`
            gauge(f"{name}_bucket", count * (1 - math.exp(-le / typical)), **lbl, le=fmt(le))
        gauge(f"{name}_bucket", count, **lbl, le="+Inf")
        gauge(f"{name}_sum", count * typical, **lbl)
        gauge(f"{name}_count", count, **lbl)

    gauge("chat_node_info", 1, version="0.1.0", revision="0123abc")
    for transport, n in (("websocket", 20), ("polling", 5)):
        gauge("chat_socket_transport_connections", n, transport=transport)
    gauge("chat_users_online", 18)
    counter("chat_network_received_bytes_total", 2048)
    counter("chat_network_sent_bytes_total", 8192)
    for reason in ("unknown_session", "bad_packet", "unknown_transport"):
        counter("chat_engineio_errors_total", 0.01, reason=reason)
    histogram("chat_redis_pubsub_lag_seconds", 0.2, 0.0006)
    counter("chat_redis_pubsub_probes_lost_total", 0.001)
    gauge("chat_tokio_workers", 2)
    gauge("chat_tokio_alive_tasks", 90)
    gauge("chat_tokio_global_queue_depth", 1)
    gauge("chat_tokio_worker_busy_ratio", 0.12)
    counter("chat_tokio_worker_parks_total", 40)
    gauge("chat_ready", 1)
    gauge("chat_socket_connections", 25)
    counter("chat_socket_connects_total", 0.5)
    for reason in ("transport close", "ping timeout"):
        counter("chat_socket_disconnects_total", 0.2, reason=reason)
    for reason in ("unauthorized", "rate_limited", "invalid"):
        counter("chat_connection_errors_total", 0.01, reason=reason)
    for typ, rate in (("text", 2), ("image", 0.2), ("file", 0.1), ("system", 0.05)):
        counter("chat_messages_total", rate, type=typ)
    histogram("chat_message_latency_seconds", 2.35, 0.004)
    for event in ("send_message", "join_conversation", "typing_start", "mark_as_read", "sync"):
        counter("chat_events_total", 1, event=event)
        histogram("chat_event_duration_seconds", 1, 0.005, event=event)
    for event, code in (("send_message", "validation"), ("send_message", "rate_limited"),
                        ("join_conversation", "forbidden"), ("sync", "unavailable")):
        counter("chat_event_errors_total", 0.01, event=event, code=code)
    for op in ("insert_message", "list_conversations", "list_messages", "mark_read"):
        histogram("chat_db_query_duration_seconds", 1, 0.002, op=op)
    counter("chat_db_errors_total", 0.01, op="insert_message")
    for state, n in (("idle", 6), ("active", 4), ("max", 10)):
        gauge("chat_db_pool_connections", n, state=state)
    for op in ("publish", "get", "set", "incr"):
        histogram("chat_redis_command_duration_seconds", 2, 0.0008, op=op)
    counter("chat_redis_errors_total", 0.01, op="publish")
    gauge("chat_redis_pubsub_lagged_total", 0)
    for cache in ("conversations", "unread"):
        counter("chat_cache_requests_total", 1.6, cache=cache, result="hit")
        counter("chat_cache_requests_total", 0.4, cache=cache, result="miss")
        counter("chat_cache_requests_total", 0.01, cache=cache, result="error")
    routes = ("/api/chat/conversations", "/api/chat/conversations/{id}/messages", "/api/chat/unread", "/readyz")
    for route in routes:
        for status, rate in (("200", 3), ("404", 0.1), ("500", 0.01)):
            counter("chat_http_requests_total", rate, method="GET", route=route, status=status)
        histogram("chat_http_request_duration_seconds", 3.11, 0.006, method="GET", route=route)
    for kind in ("message", "connection"):
        counter("chat_rate_limited_total", 0.05, kind=kind)
    counter("process_cpu_seconds_total", 0.2)
    gauge("process_resident_memory_bytes", 64 * 1024 * 1024)
    return "\n".join(out) + "\n"


def serve(node, addr):
    host, port = addr.rsplit(":", 1)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = render(node).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--node", action="append", required=True, metavar="NAME=HOST:PORT")
    ap.add_argument("--lifetime", type=float, default=300, help="exit after this many seconds (default 300)")
    args = ap.parse_args()
    for spec in args.node:
        name, addr = spec.split("=", 1)
        serve(name, addr)
    print("fake_exporter: serving " + ", ".join(args.node), flush=True)
    time.sleep(args.lifetime)


if __name__ == "__main__":
    sys.exit(main())
