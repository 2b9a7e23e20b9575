#!/usr/bin/env bash
# Benchmark: our bridge + host-local (+ ipMasq) against Debian's reference plugins, side by
# side in one run, in namespaces the benchmark creates and removes. Prints a markdown table.
# Usage: sudo scripts/bench-plugins.sh [weft-bench plugins options, e.g. --sequential 100]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
bash scripts/build-release.sh
exec target/dist/weft-bench plugins --ours target/dist "$@"
