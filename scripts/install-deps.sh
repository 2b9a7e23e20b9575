#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build and test weft: protoc for etcd-client,
# the reference CNI plugins and etcd for interop tests, and the network tools the tests use.
set -euo pipefail

packages=(protobuf-compiler etcd-server etcd-client containernetworking-plugins iproute2
          iptables nftables iperf3 iputils-ping tcpdump jq procps)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts an etcd service when etcd-server is installed; tests and the demo run their own
# etcd, so stop the one this script just caused (never one that was there before).
if [[ " ${missing[*]} " == *" etcd-server "* ]] && command -v systemctl >/dev/null 2>&1; then
  systemctl disable --now etcd >/dev/null 2>&1 || true
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found; install a Rust toolchain (rustup, Rust >= 1.80) first" >&2
  exit 1
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
