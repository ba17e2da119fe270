#!/usr/bin/env bash
# Builds the member binary as the previous minor version says it is, for the upgrade tests
# (node/tests/versions.rs and the e2e's 0.1 → 0.2 upgrade): the same source with
# METASTORE_BUILD_VERSION set, so it reports that version, refuses the entry kinds introduced
# after it, and checks the version rules as that version. It has a target dir of its own
# (under the usual one) so the two builds never rebuild each other.
# The LAST line of stdout is the binary's path:  PREV=$(scripts/node-previous.sh | tail -1)
set -euo pipefail
cd "$(dirname "$0")/.."
PREVIOUS="${METASTORE_PREVIOUS_VERSION:-0.1.0}"
CARGO="${CARGO:-cargo}"
base="${CARGO_TARGET_DIR:-$PWD/target}"
dir="$base/previous-$PREVIOUS"
METASTORE_BUILD_VERSION="$PREVIOUS" CARGO_TARGET_DIR="$dir" $CARGO build -q -p metastore-node >&2
echo "$dir/debug/metastore-node"
