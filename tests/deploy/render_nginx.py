#!/usr/bin/env python3
"""Render deploy/nginx/chat-lb.conf.template.

  # the compose config (what deploy/nginx/nginx.conf must be):
  python3 tests/deploy/render_nginx.py --compose [-o deploy/nginx/nginx.conf]
  # a local LB for tests, runnable without root:
  python3 tests/deploy/render_nginx.py --listen 127.0.0.1:18080 \
      --upstream 127.0.0.1:3001 --upstream 127.0.0.1:3002 --runtime-dir /tmp/lb -o /tmp/lb/nginx.conf
  nginx -e stderr -p /tmp/lb -c /tmp/lb/nginx.conf -g 'daemon off;'

Placeholders are replaced on non-comment lines only, so the template's header keeps naming them.
"""

import argparse
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "nginx" / "chat-lb.conf.template"

# deploy/compose.yaml: three nodes on the compose network, nginx (official image, runs as root and
# drops to its workers) listening on 80, access log to the container's stdout.
COMPOSE = {
    "listen": "80",
    "upstreams": ["chat1:3000", "chat2:3000", "chat3:3000"],
    "runtime_dir": "/tmp",  # exists in every image; nginx creates only the last path component
    "access_log": "/dev/stdout chat",
}

# No passive health marking (max_fails=0): a refused connect goes on to the next node at once
# (proxy_next_upstream), for every request. With marking, a node that failed once (while it was
# restarting) is only clear again when a request to it *completes*; a websocket completes when it
# closes, so a node reached by websockets only stays "failed", gets one new socket per
# fail_timeout, and when the next node drains nginx answers 502 "no live upstreams" to everyone.
SERVER_PARAMS = "max_fails=0"


def render(listen, upstreams, runtime_dir, access_log, template=TEMPLATE):
    if not upstreams:
        raise ValueError("at least one upstream is needed")
    if not runtime_dir.startswith("/"):
        raise ValueError("--runtime-dir must be absolute")
    runtime_dir = runtime_dir.rstrip("/") or "/"
    # @UPSTREAMS@ sits alone on its line: the first server takes its indentation, the others copy it.
    values = {
        "@LISTEN@": listen,
        "@RUNTIME_DIR@": runtime_dir,
        "@ACCESS_LOG@": access_log,
    }
    out = []
    for line in pathlib.Path(template).read_text().splitlines(keepends=True):
        if line.lstrip().startswith("#"):
            out.append(line)
            continue
        if "@UPSTREAMS@" in line:
            indent = line[: len(line) - len(line.lstrip())]
            for up in upstreams:
                out.append(f"{indent}server {up} {SERVER_PARAMS};\n")
            continue
        for key, value in values.items():
            line = line.replace(key, value)
        if any(key in line for key in values):
            raise ValueError(f"unreplaced placeholder: {line!r}")
        out.append(line)
    return "".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--compose", action="store_true", help="render the deploy/compose.yaml variant")
    ap.add_argument("--listen", help="listen argument, e.g. 127.0.0.1:18080")
    ap.add_argument("--upstream", action="append", default=[], help="HOST:PORT of a chat node (repeat)")
    ap.add_argument("--runtime-dir", help="absolute writable dir for pid and temp files")
    ap.add_argument("--access-log", default="off", help="`off` (default) or `PATH chat`")
    ap.add_argument("-o", "--output", help="write here instead of stdout")
    args = ap.parse_args(argv)

    if args.compose:
        text = render(COMPOSE["listen"], COMPOSE["upstreams"], COMPOSE["runtime_dir"], COMPOSE["access_log"])
    else:
        if not (args.listen and args.upstream and args.runtime_dir):
            ap.error("--listen, --upstream and --runtime-dir are required without --compose")
        text = render(args.listen, args.upstream, args.runtime_dir, args.access_log)

    if args.output:
        pathlib.Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
