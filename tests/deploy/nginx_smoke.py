#!/usr/bin/env python3
"""Run deploy/nginx/chat-lb.conf.template for real in front of two stub HTTP backends.

  nginx_smoke.py [--nginx PATH]

Renders the template (tests/deploy/render_nginx.py) with free loopback ports and a temp runtime
dir, runs `nginx -t`, starts nginx in the foreground and checks what the chat cluster relies on:
REST and direct websockets spread over the nodes, long-polling sticky to one node, websocket
upgrade and forwarding headers passed on, the 64 KiB body limit, failover when a node is gone.
The backends answer every request with JSON naming themselves and echoing the request headers.
Only loopback addresses are used; everything is stopped at the end.

Prints `PASS name` / `FAIL name: why`; exit 1 on any failure.
"""

import argparse
import http.client
import json
import os
import pathlib
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import render_nginx  # noqa: E402
from checks import Checks  # noqa: E402


class Echo(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        if self.server.stopped:
            # A dead node: drop kept-alive connections too, without an answer.
            self.close_connection = True
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        body = json.dumps({
            "backend": self.server.name,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_length": length,
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(port, path, method="GET", headers=None, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def backend_of(port, path, **kw):
    status, data = request(port, path, **kw)
    assert status == 200, f"{path}: HTTP {status}"
    return json.loads(data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    args = ap.parse_args()
    c = Checks("nginx")

    runtime = pathlib.Path(tempfile.mkdtemp(prefix="chat-lb-"))
    os.chmod(runtime, 0o755)  # nginx workers drop to `nobody` when started as root
    backends = []
    for name in ("node-a", "node-b"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
        srv.name = name
        srv.stopped = False
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        backends.append(srv)
    lb_port = free_port()
    conf = runtime / "nginx.conf"
    conf.write_text(render_nginx.render(
        listen=f"127.0.0.1:{lb_port}",
        upstreams=[f"127.0.0.1:{b.server_address[1]}" for b in backends],
        runtime_dir=str(runtime),
        access_log="off",
    ))
    base = [args.nginx, "-e", "stderr", "-p", str(runtime), "-c", str(conf)]
    proc = None
    try:
        def c_syntax():
            r = subprocess.run(base + ["-t", "-q"], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr.strip()

        c.check("nginx -t accepts the rendered template", c_syntax)
        if c.failed:
            return 1

        proc = subprocess.Popen(base + ["-g", "daemon off;"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while True:
            try:
                if request(lb_port, "/lb-health")[0] == 200:
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                err = proc.stderr.read().decode() if proc.poll() is not None else "timeout"
                print(f"FAIL nginx: start: {err.strip()}")
                return 1
            time.sleep(0.05)
        print("PASS nginx: starts without root paths and answers /lb-health")

        def c_rest_spread():
            seen = {backend_of(lb_port, f"/api/chat/conversations?i={i}")["backend"] for i in range(40)}
            assert seen == {"node-a", "node-b"}, f"REST reached only {seen}"

        c.check("REST requests spread over all nodes", c_rest_spread)

        def c_ws_spread():
            seen = {backend_of(lb_port, f"/socket.io/?EIO=4&transport=websocket&i={i}")["backend"] for i in range(40)}
            assert seen == {"node-a", "node-b"}, f"direct websockets reached only {seen}"

        c.check("direct websocket handshakes (no sid) spread over all nodes", c_ws_spread)

        def c_polling_sticky():
            paths = ["/socket.io/?EIO=4&transport=polling&t=1"]
            paths += [f"/socket.io/?EIO=4&transport=polling&sid=s{i}&t={i}" for i in range(15)]
            paths += [f"/socket.io/?EIO=4&transport=websocket&sid=s{i}" for i in range(5)]
            seen = {backend_of(lb_port, p)["backend"] for p in paths}
            assert len(seen) == 1, f"one polling client reached {seen}"

        c.check("long-polling session (handshake, polls, upgrade with sid) sticks to one node", c_polling_sticky)

        def c_headers():
            h = backend_of(lb_port, "/socket.io/?EIO=4&transport=websocket",
                           headers={"Upgrade": "websocket", "Connection": "Upgrade", "Host": "chat.test"})["headers"]
            assert h.get("upgrade") == "websocket", f"Upgrade: {h.get('upgrade')}"
            assert h.get("connection", "").lower() == "upgrade", f"Connection: {h.get('connection')}"
            assert h.get("host") == "chat.test", f"Host: {h.get('host')}"
            assert "127.0.0.1" in h.get("x-forwarded-for", ""), f"X-Forwarded-For: {h.get('x-forwarded-for')}"
            assert h.get("x-forwarded-proto") == "http" and h.get("x-real-ip") == "127.0.0.1"
            h = backend_of(lb_port, "/api/chat/unread", headers={"X-Forwarded-For": "203.0.113.7"})["headers"]
            assert h["x-forwarded-for"] == "203.0.113.7, 127.0.0.1", h["x-forwarded-for"]
            assert "upgrade" not in h and h.get("connection", "") in ("", "keep-alive"), h.get("connection")

        c.check("websocket Upgrade/Connection and X-Forwarded-* reach the node", c_headers)

        def c_body_limit():
            ok = backend_of(lb_port, "/socket.io/?EIO=4&transport=polling&sid=x", method="POST", body=b"4" * 65536,
                            headers={"Content-Type": "text/plain"})
            assert ok["body_length"] == 65536
            status, _ = request(lb_port, "/api/chat/conversations", method="POST", body=b"x" * (100 * 1024))
            assert status == 413, f"100 KiB body: HTTP {status}"

        c.check("64 KiB bodies pass, 100 KiB bodies get 413", c_body_limit)

        def c_failover():
            sticky = backend_of(lb_port, "/socket.io/?EIO=4&transport=polling")["backend"]
            victim = next(b for b in backends if b.name == sticky)
            victim.stopped = True
            victim.shutdown()
            victim.server_close()
            for i in range(10):
                got = backend_of(lb_port, f"/socket.io/?EIO=4&transport=polling&sid=z&t={i}")["backend"]
                assert got != sticky, "request went to the stopped node"

        c.check("a stopped node's clients are re-hashed to a live node", c_failover)
    finally:
        if proc and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for b in backends:
            try:
                b.shutdown()
                b.server_close()
            except Exception:
                pass
        shutil.rmtree(runtime, ignore_errors=True)
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
