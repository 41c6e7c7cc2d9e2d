#!/usr/bin/env bash
# Installs `prometheus` and `promtool` (Debian package) when they are not on PATH yet.
#
# Idempotent: does nothing when both are present. Tests start their own Prometheus on a free
# loopback port, so the package's service must never start and grab :9090: a temporary
# policy-rc.d denies every invoke-rc.d start while apt runs, and anything the postinst may still
# have started is stopped afterwards.
#
# Usage: scripts/tools/prometheus.sh        (needs root or sudo when it has to install)
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have prometheus && have promtool; then
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if have sudo; then SUDO="sudo"; else
        echo "prometheus.sh: need root (or sudo) to apt-get install prometheus" >&2
        exit 1
    fi
fi

policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    # 101 = "action forbidden by policy": invoke-rc.d then skips starting the service.
    $SUDO sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then $SUDO rm -f "$policy"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# --no-install-recommends: the package recommends prometheus-node-exporter, which we don't need.
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# Belt and braces: if a service got started anyway (systemd host, existing policy-rc.d that
# allows it), stop and disable it so that :9090 stays free for whoever needs it.
if have systemctl && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
fi
if [ -x /etc/init.d/prometheus ]; then
    $SUDO /etc/init.d/prometheus stop >/dev/null 2>&1 || true
fi

for bin in prometheus promtool; do
    if ! have "$bin"; then
        echo "prometheus.sh: '$bin' still not on PATH after installing the prometheus package" >&2
        exit 1
    fi
done
echo "prometheus.sh: installed $(prometheus --version 2>&1 | head -n1)"
