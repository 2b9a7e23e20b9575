#!/usr/bin/env bash
# The one-command demo: installs what is missing, builds every binary (release), then builds a
# lab of network namespaces (3 nodes on a private underlay, etcd, weft's flanneld on every node,
# 2 pods per node attached with weft's cnitool + flannel + bridge + host-local), pings every
# pod from every pod, prints the pass matrix and each node's lease, routes, neighbours and FDB,
# and tears everything down. Needs root; touches only namespaces it creates (prefix `wdemo`).
# Extra arguments go to `weft-lab demo` (e.g. --nodes 4 --pods 3 --etcd-members 3, or
# --backend host-gw for plain routes between the nodes instead of VXLAN, --dual-stack for IPv4
# and IPv6 with an IPv6 ping matrix too, or both for dual-stack host-gw).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/demo.sh: needs root (it creates network namespaces)" >&2
  exit 1
fi

bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
bash scripts/build-release.sh

export WEFT_BIN_DIR="$PWD/target/dist"
prefix=wdemo
# The demo tears its lab down itself (also on Ctrl-C); this catches anything a crash left.
cleanup() { "$WEFT_BIN_DIR/weft-lab" cleanup "$prefix" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$WEFT_BIN_DIR/weft-lab" demo --prefix "$prefix" "$@"
