#!/usr/bin/env bash
# Installs everything a fresh Debian machine lacks to build, test, benchmark and demo weft.
# A fresh machine needs only root and, optionally, a Rust toolchain (>= 1.87): a missing one is
# installed with Debian's rustup package. scripts/check-fresh-machine.sh proves this list in a
# minimal Debian root (debootstrap --variant=minbase), so nothing may rely on what a developer's
# machine happens to have.
set -euo pipefail

# One package a line, with the reason it is needed. Installed with --no-install-recommends, so a
# package that is only a "Recommends" of another must be listed itself (libprotobuf-dev is).
packages=(
  ca-certificates               # cargo's HTTPS to crates.io verifies against the system CA store
  gcc                           # rustc links through `cc`
  libc6-dev                     # the C runtime objects and libc that rustc links against
  protobuf-compiler             # protoc, run by etcd-client's build script
  libprotobuf-dev               # google/protobuf/*.proto, imported by etcd's .proto files (a Recommends of protobuf-compiler)
  etcd-server                   # etcd for flanneld's tests, the lab and the demo
  etcd-client                   # etcdctl, for the lab's etcd checks and the by-hand benchmark baselines
  containernetworking-plugins   # the reference Go plugins (/usr/lib/cni) for interop tests and benchmarks
  iproute2                      # ip and bridge: namespaces, veth and reading kernel state back in tests
  iptables                      # iptables(-nft) masquerade layout: tests and the reference plugins
  nftables                      # nft: the nftables masquerade and macspoofchk layouts
  iperf3                        # TCP throughput across the overlay in lab tests and benchmarks
  iputils-ping                  # ping between pods in tests and the demo
  tcpdump                       # packet captures in tests
  jq                            # JSON handling in the fake plugins of cnitool's tests
  procps                        # pgrep/ps used by the lab's process checks
)
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
  # clippy and rustfmt: scripts/test.sh checks lints and formatting. (A toolchain shared
  # read-only, as check-fresh-machine.sh shares the host's, cannot take components: it keeps its own.)
  rustup component add clippy rustfmt >/dev/null 2>&1 || true
  # The static CNI binaries are built for musl (scripts/build-release.sh falls back to a static
  # glibc link when this target cannot be installed).
  if [ "$(uname -m)" = x86_64 ]; then
    rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 || true
  fi
fi
