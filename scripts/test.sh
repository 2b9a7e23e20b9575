#!/usr/bin/env bash
# The test command: installs what is missing, checks format and lints, builds every binary
# and runs every test (unit, bad input, namespace end-to-end, interop, lab). Needs root for
# the namespace tests; everything they create lives in namespaces they make and remove.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the namespace tests need root" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# Tests locate the plugin binaries here (see tests' harness).
export WEFT_BIN_DIR="$PWD/target/debug"
# Every test removes what it made; this catches what a crashed test left (all test namespaces
# are named wt*; the processes inside them are ended by PID).
cleanup() { "$WEFT_BIN_DIR/weft-lab" cleanup wt >/dev/null 2>&1 || true; }
trap cleanup EXIT
cargo test --workspace -- --test-threads="${WEFT_TEST_THREADS:-4}"
