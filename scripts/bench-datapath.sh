#!/usr/bin/env bash
# Benchmark: pod → pod TCP throughput (iperf3, 3 runs of 5 s per path, interleaved) between two
# lab nodes over weft's VXLAN (IPv4 and IPv6) and host-gw backends, beside a hand-built kernel
# VXLAN (IPv4 and IPv6, and with flanneld's --ip-masq firewall rules) and the bare underlay, in
# one run. Builds its own namespaces (prefix `wtDP` unless --prefix) and removes them, also on
# error or Ctrl-C. Prints a markdown table.
# Usage: sudo scripts/bench-datapath.sh [--runs 3] [--seconds 5] [--prefix wtDP]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "scripts/bench-datapath.sh: needs root (it creates network namespaces)" >&2
  exit 1
fi

# iperf3, etcd, iproute2, nftables/iptables and the toolchain.
bash scripts/install-deps.sh
# A toolchain rustup installed just now lives here.
export PATH="${HOME:-/root}/.cargo/bin:$PATH"
bash scripts/build-release.sh

export WEFT_BIN_DIR="$PWD/target/dist"
# Only for a run killed hard (SIGKILL): the benchmark removes its labs itself otherwise.
prefix=wtDP
prev=
for a in "$@"; do
  case "$a" in --prefix=*) prefix="${a#--prefix=}" ;; esac
  if [ "$prev" = --prefix ]; then prefix="$a"; fi
  prev="$a"
done
cleanup() { "$WEFT_BIN_DIR/weft-lab" cleanup "$prefix" >/dev/null 2>&1 || true; }
trap cleanup EXIT
"$WEFT_BIN_DIR/weft-bench" datapath "$@"
