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
# The toolchain: Debian's own rustc is too old for the dependencies (Rust >= 1.87 is needed), so
# a missing toolchain comes from rustup (Debian packages it from trixie on).
if ! command -v cargo >/dev/null 2>&1; then
  export PATH="${HOME:-/root}/.cargo/bin:$PATH"
fi
if ! command -v cargo >/dev/null 2>&1; then
  if ! command -v rustup >/dev/null 2>&1; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends rustup >/dev/null 2>&1 || {
      echo "install-deps: no Rust toolchain and no rustup package; install rustup (Rust >= 1.87) first" >&2
      exit 1
    }
  fi
  rustup toolchain install stable --profile minimal -c clippy,rustfmt >/dev/null
  rustup default stable >/dev/null
fi
if command -v rustup >/dev/null 2>&1; then
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
  # The static CNI binaries are built for musl (scripts/build-release.sh falls back to a static
  # glibc link when this target cannot be installed).
  if [ "$(uname -m)" = x86_64 ]; then
    rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
  fi
fi
