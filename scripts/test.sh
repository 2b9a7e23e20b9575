#!/usr/bin/env bash
# The test command: installs what is missing, checks format and lints, builds every binary
# and runs every test (unit, bad input, namespace end-to-end, interop, lab). Needs root for
# the namespace tests; everything they create lives in namespaces they make and remove.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/test.sh: the namespace tests need root" >&2
  exit 1
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
# Tests locate the plugin binaries here (see tests' harness).
export WEFT_BIN_DIR="$PWD/target/debug"
# Every test removes what it made; this catches what a crashed test left: test namespaces are
# named wt*, and only those that appeared during this run are removed (the processes inside them
# ended by PID first), so a test run never touches another run's namespaces that existed before.
before=$(ip netns list | awk '{print $1}')
cleanup() {
  local ns
  for ns in $(ip netns list | awk '$1 ~ /^wt/ {print $1}'); do
    grep -qx -- "$ns" <<<"$before" && continue
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
}
trap cleanup EXIT
cargo test --workspace -- --test-threads="${WEFT_TEST_THREADS:-4}"

# What operators install: the release build, CNI binaries linked statically. The plugin
# suites (end-to-end, interop, concurrency, bad input) run again against those binaries.
bash scripts/build-release.sh --cni-only
WEFT_BIN_DIR="$PWD/target/dist" cargo test -p weft-bridge -p weft-host-local -p weft-flannel \
  -p weft-cnitool -- --test-threads="${WEFT_TEST_THREADS:-4}"
