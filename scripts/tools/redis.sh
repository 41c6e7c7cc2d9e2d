#!/usr/bin/env bash
# Installs Debian's redis-server (≥ 7: the Socket.IO adapter needs sharded pub/sub) if missing.
# Tests start their own redis-server on free loopback ports; the packaged service is not used.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the package's service from starting (and taking port 6379) during the install.
policy=/usr/sbin/policy-rc.d
restore=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && restore=1
fi
apt-get update -qq
apt-get install -y -qq redis-server >/dev/null
[ -n "$restore" ] && rm -f "$policy"
redis-server --version
