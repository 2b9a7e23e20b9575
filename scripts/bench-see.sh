#!/usr/bin/env bash
# Benchmark: `weft path` (healthy cross-node path, median of 50) and `weft doctor` (3-node lab;
# 100 nodes = 1 real flanneld + 99 stub /debug/dataplane endpoints serving its recorded view
# rewritten per node), each beside the `ip`/`bridge`/`etcdctl` commands an operator runs by hand
# for the same answer, in the same run. Builds its own namespaces (names starting with
# $WEFT_BENCH_NS_PREFIX, default `wsdb`) and removes them. Prints a markdown table.
# Usage: sudo [WEFT_BENCH_NS_PREFIX=wsdb] scripts/bench-see.sh [--path-runs 50] [--doctor-runs 20] [--nodes 100]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/bench-see.sh: needs root (it creates network namespaces)" >&2
  exit 1
fi

bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
bash scripts/build-release.sh

export WEFT_BIN_DIR="$PWD/target/dist"
prefix="${WEFT_BENCH_NS_PREFIX:-wsdb}"
cleanup() { "$WEFT_BIN_DIR/weft-lab" cleanup "$prefix" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$WEFT_BIN_DIR/weft-bench" see --ns-prefix "$prefix" "$@"
