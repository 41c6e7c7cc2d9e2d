#!/usr/bin/env python3
"""A tiny OTLP/HTTP trace receiver for tests/ops/otlp_trace.sh.

  otlp_receiver.py --port PORT --out spans.jsonl

Accepts `POST /v1/traces` as `application/x-protobuf` (the default of the node's exporter,
opentelemetry-otlp `http-proto`) or `application/json`, gzip or not, decodes it with the
`opentelemetry-proto` package and appends one JSON line per span to --out:
  {"trace_id", "span_id", "parent_span_id", "name", "kind", "attributes": {...},
   "resource": {...}, "scope", "start", "end", "status"}
Answers an empty ExportTraceServiceResponse (200). Loopback only; runs until killed.
"""

import argparse
import gzip
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


def any_value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def attrs(kvs):
    return {kv.key: any_value(kv.value) for kv in kvs}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):  # noqa: N802 - http.server API
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if self.path.rstrip("/") != "/v1/traces":
            self._answer(404, b"", "text/plain")
            return
        req = trace_service_pb2.ExportTraceServiceRequest()
        try:
            if ctype == "application/json":
                json_format.Parse(body.decode(), req)
            else:
                req.ParseFromString(body)
        except Exception as e:  # noqa: BLE001 - a bad export is reported, not fatal
            self.server.log(json.dumps({"error": f"undecodable export ({ctype}): {e}"}))
            self._answer(400, b"", "text/plain")
            return
        n = 0
        for rs in req.resource_spans:
            resource = attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    n += 1
                    self.server.log(json.dumps({
                        "trace_id": sp.trace_id.hex(),
                        "span_id": sp.span_id.hex(),
                        "parent_span_id": sp.parent_span_id.hex(),
                        "name": sp.name,
                        "kind": sp.kind,
                        "attributes": attrs(sp.attributes),
                        "resource": resource,
                        "scope": ss.scope.name,
                        "start": sp.start_time_unix_nano,
                        "end": sp.end_time_unix_nano,
                        "status": sp.status.code,
                        "content_type": ctype,
                    }))
        self.server.log(json.dumps({"export": n, "content_type": ctype}))
        resp = trace_service_pb2.ExportTraceServiceResponse()
        if ctype == "application/json":
            self._answer(200, json_format.MessageToJson(resp).encode(), "application/json")
        else:
            self._answer(200, resp.SerializeToString(), "application/x-protobuf")

    def _answer(self, status, body, ctype):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = open(args.out, "a", encoding="utf-8")
    lock = threading.Lock()
    srv = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    srv.daemon_threads = True

    def log(line):
        with lock:
            out.write(line + "\n")
            out.flush()

    srv.log = log
    print(f"otlp receiver on 127.0.0.1:{args.port}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
