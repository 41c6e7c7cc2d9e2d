#!/usr/bin/env bash
# Keeps the chart's copies of the monitoring files identical to their sources in deploy/:
#   deploy/prometheus/alerts.yml          -> helm/jobsphere-chat/files/alerts.yml
#   deploy/grafana/jobsphere-chat.json    -> helm/jobsphere-chat/files/jobsphere-chat.json
# (Helm can only read files inside the chart, hence the copies.)
#
#   bash tests/deploy/sync-files.sh           copy the sources over the chart files
#   bash tests/deploy/sync-files.sh --check   exit 1 if any copy differs (sources that do not
#                                             exist yet are reported and skipped)
# After copying, re-render k8s/ if the defaults use the files (they do not: the PrometheusRule and
# dashboard are off by default).
set -euo pipefail
cd "$(dirname "$0")/../.."

PAIRS=(
  "deploy/prometheus/alerts.yml:helm/jobsphere-chat/files/alerts.yml"
  "deploy/grafana/jobsphere-chat.json:helm/jobsphere-chat/files/jobsphere-chat.json"
)

mode="${1:-copy}"
case "$mode" in copy | --check) ;; *) echo "usage: $0 [--check]" >&2; exit 2 ;; esac

status=0
for pair in "${PAIRS[@]}"; do
  src="${pair%%:*}" dst="${pair#*:}"
  if [ ! -f "$src" ]; then
    echo "skip: $src does not exist (yet)"
    continue
  fi
  if cmp -s "$src" "$dst"; then
    [ "$mode" = --check ] || echo "same: $dst"
    continue
  fi
  if [ "$mode" = --check ]; then
    echo "DIFFERS: $dst is not a copy of $src (run: bash tests/deploy/sync-files.sh)"
    status=1
  else
    cp "$src" "$dst"
    echo "copied: $src -> $dst"
  fi
done
exit "$status"
