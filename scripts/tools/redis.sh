#!/usr/bin/env bash
# Installs what the Redis tests need, if missing: Debian's redis-server (≥ 7: the Socket.IO
# adapter needs sharded pub/sub; built with TLS), redis-sentinel (tests/it/redis_sentinel.rs),
# redis-cli from redis-tools (`--cluster create` in tests/it/redis_cluster.rs) and the openssl
# CLI (certificates of tests/it/redis_tls.rs).
# Tests start their own servers on free loopback ports; the packaged services are not used.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# Keep the packages' services from starting (and taking ports 6379/26379) during the install.
policy=/usr/sbin/policy-rc.d
restore=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && restore=1
fi
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
[ -n "$restore" ] && rm -f "$policy"
redis-server --version
