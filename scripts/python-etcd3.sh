#!/usr/bin/env bash
# A Python with the `etcd3` client (PyPI etcd3 0.12, whose generated code needs protobuf < 4),
# for the conformance tests; cached under ~/.cache/metastore. Last line of stdout: the python.
set -euo pipefail
CACHE="${METASTORE_CACHE:-$HOME/.cache/metastore}"
venv="$CACHE/python-etcd3"
if ! "$venv/bin/python" -c "import etcd3" >/dev/null 2>&1; then
  echo "python-etcd3: installing etcd3 into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q "etcd3==0.12.0" "protobuf<4" >&2
fi
echo "$venv/bin/python"
