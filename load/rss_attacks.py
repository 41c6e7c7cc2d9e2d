#!/usr/bin/env python3
"""RSS of one node under each memory attack (docs/limits.md), for before/after comparisons.

  python3 load/rss_attacks.py --bin target/release/jobsphere-chat [--attack binary|sync|cache|all]

Starts the node (embedded default, a fresh data dir, free ports), runs one attack at a time
over raw Engine.IO long-polling (stdlib only: the frames a real client would never send), and
prints VmRSS from /proc/<pid>/status before, at the peak (sampled every 50 ms) and after.
Attacks:
  binary  20 sockets each announce 200 binary attachments and send 160 × 60 KB of them
          (socketioxide's defaults buffer up to 10 MB per packet for 60 s);
  sync    10 sockets × 5 syncs of 100 copies of one entry of a 50 × 4000-char conversation;
  cache   20 users × conversation lists at every `limit` 1..100 (one cached variant each).
"""

import argparse, base64, hashlib, hmac, json, os, shutil, socket, subprocess, sys, tempfile, threading, time
import urllib.request, urllib.error

SECRET = "rss-attack-secret-0123456789abcdef0123"


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def token(user):
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps({"userId": user, "name": user, "role": "customer", "exp": int(time.time()) + 3600}).encode())
    sig = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(sig)}"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def http(method, url, body=None, tok=None, ctype="application/json"):
    req = urllib.request.Request(url, data=body, method=method)
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    if body is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except Exception as e:  # a closed session, a reset: the attack goes on
        return 0, str(e).encode()


class Polling:
    """One Engine.IO v4 long-polling session with the `/` namespace joined."""

    def __init__(self, base, user):
        self.base = base
        st, b = http("GET", f"{base}/socket.io/?EIO=4&transport=polling")
        self.sid = json.loads(b[1:])["sid"]
        self.post("40" + json.dumps({"token": token(user)}))
        st, b = self.poll()

    def url(self):
        return f"{self.base}/socket.io/?EIO=4&transport=polling&sid={self.sid}"

    def post(self, *packets):
        return http("POST", self.url(), "\x1e".join(packets).encode(), ctype="text/plain;charset=UTF-8")

    def poll(self):
        return http("GET", self.url())


def sample_peak(pid, stop, out):
    peak = 0
    while not stop.is_set():
        peak = max(peak, rss_kib(pid)); time.sleep(0.05)
    out.append(peak)


def measure(pid, name, fn):
    before = rss_kib(pid)
    stop, out = threading.Event(), []
    t = threading.Thread(target=sample_peak, args=(pid, stop, out)); t.start()
    t0 = time.time(); fn(); dt = time.time() - t0
    time.sleep(1)
    stop.set(); t.join()
    after = rss_kib(pid)
    print(f"{name:7s} RSS before {before/1024:7.1f} MiB  peak {out[0]/1024:7.1f} MiB  after {after/1024:7.1f} MiB  ({dt:.1f} s)")


def parallel(n, f):
    ts = [threading.Thread(target=f, args=(i,)) for i in range(n)]
    [t.start() for t in ts]; [t.join() for t in ts]


def attack_binary(base):
    chunk = "b" + base64.b64encode(os.urandom(60 * 1024 * 3 // 4)).decode()  # ≈ 60 KB frame, 45 KB bytes
    placeholders = ",".join(json.dumps({"_placeholder": True, "num": i}) for i in range(200))

    def one(i):
        s = Polling(base, f"bin{i}")
        s.post(f'45200-["send_message",[{placeholders}]]')
        for _ in range(160):
            st, _ = s.post(chunk)
            if st != 200:
                break
    parallel(20, one)


def attack_sync(base):
    a, b = "syncer", "peer"
    st, body = http("POST", f"{base}/api/chat/conversations", json.dumps({"participantId": b}).encode(), token(a))
    conv = json.loads(body)["data"]["_id"]
    for i in range(50):
        http("POST", f"{base}/api/chat/conversations/{conv}/messages", json.dumps({"content": f"{i}" + "x" * 3990}).encode(), token(a))
    req = json.dumps(["sync", {"conversations": [{"conversationId": conv, "afterSeq": 0}] * 100}])

    def one(i):
        s = Polling(base, a)
        for k in range(5):
            s.post(f"42{k}{req}")
            s.poll()
    parallel(10, one)


def attack_cache(base):
    def one(i):
        me = f"lister{i}"
        for j in range(100):
            http("POST", f"{base}/api/chat/conversations", json.dumps({"participantId": f"p{i}x{j}"}).encode(), token(me))
        for limit in range(1, 101):
            http("GET", f"{base}/api/chat/conversations?limit={limit}", tok=token(me))
    parallel(20, one)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--attack", default="all")
    args = ap.parse_args()
    attacks = {"binary": attack_binary, "sync": attack_sync, "cache": attack_cache}
    for name in (attacks if args.attack == "all" else [args.attack]):
        d = tempfile.mkdtemp(); port, mport = free_port(), free_port()
        env = {"PATH": os.environ.get("PATH", ""), "CHAT_ADDR": f"127.0.0.1:{port}", "CHAT_METRICS_ADDR": f"127.0.0.1:{mport}",
               "CHAT_DATA_DIR": d, "JWT_SECRET": SECRET, "RUST_LOG": "error", "CHAT_SQLITE_SYNCHRONOUS": "normal",
               "RATE_LIMIT_MESSAGES": "100000", "RATE_LIMIT_CONNECTS": "100000",
               "CHAT_RATE_LIMITS": "create=100000/10s,read=100000/10s,sync=100000/10s"}
        p = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        for _ in range(200):
            if http("GET", f"{base}/readyz")[0] == 200:
                break
            time.sleep(0.05)
        try:
            measure(p.pid, name, lambda: attacks[name](base))
        finally:
            p.terminate(); p.wait(); shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
