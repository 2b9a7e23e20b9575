#!/usr/bin/env bash
# Benchmark: our flanneld with N synthetic peer leases in a private etcd (inside a namespace
# the benchmark creates and removes). Prints a markdown table.
# Usage: sudo scripts/bench-flanneld.sh [--peers 1000,5000] [--samples 100] [--backend vxlan|host-gw]
#        [--dual-stack] (either backend: IPv4 + IPv6 leases, routes of both families, IPv6 underlay in
#        2001:2::/48) [--runs 3] (runs per peer count; medians shown) [--netns-prefix wbf]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
bash scripts/build-release.sh
exec target/dist/weft-bench flanneld --flanneld target/dist/flanneld "$@"
