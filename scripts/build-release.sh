#!/usr/bin/env bash
# Release build of every binary, gathered in target/dist/: what an operator installs.
#
# The CNI binaries a runtime executes (bridge, host-local, flannel, and cnitool beside them) are
# static executables, as upstream ships its Go plugins: they run on any node whatever its libc
# (kube-flannel-style installers copy them out of a container image onto the host). They are
# built for musl with the `cni` profile (opt-level "s"): a plugin process's memory is mostly
# its own binary's mapped pages, so a small binary is a small process, and a musl process
# starts without glibc's start-up work (~0.3 ms less per process here). Measured with
# `weft-bench plugins`: peak RSS of a bridge ADD 1.6 MB (glibc static, opt-level 3: 2.8 MB),
# ADD time no worse. Where the musl target cannot be installed, they are linked statically
# against glibc instead. flanneld and the tools are ordinary dynamic release builds (they unwind
# on panic; the CNI binaries abort: see the profiles in Cargo.toml).
# Repeated runs rebuild nothing that has not changed.
# Usage: scripts/build-release.sh [--cni-only]   (--cni-only: only the CNI binaries)
set -euo pipefail
cd "$(dirname "$0")/.."

# Package and binary of every static CNI binary.
cni_bins=(weft-bridge:bridge weft-host-local:host-local weft-flannel:flannel weft-cnitool:cnitool)
other_bins=(flanneld weft weft-lab weft-bench)
dist=target/dist
mkdir -p "$dist"

if [ "${1:-}" != "--cni-only" ]; then
  exclude=()
  for pb in "${cni_bins[@]}"; do
    exclude+=(--exclude "${pb%%:*}")
  done
  cargo build --release --workspace --bins "${exclude[@]}"
  for b in "${other_bins[@]}"; do
    install -m 0755 "target/release/$b" "$dist/$b"
  done
fi

musl=x86_64-unknown-linux-musl
if [ "$(uname -m)" = x86_64 ] && [ -d "$(rustc --print sysroot)/lib/rustlib/$musl/lib" ]; then
  packages=()
  for pb in "${cni_bins[@]}"; do
    packages+=(-p "${pb%%:*}")
  done
  cargo build --profile cni --target "$musl" "${packages[@]}"
  out="target/$musl/cni"
else
  echo "build-release: no $musl target; linking the CNI binaries statically against glibc" >&2
  # crt-static is given to the final link only (`cargo rustc`), never to proc-macros or build
  # scripts, which cannot be static.
  link=()
  case "$(rustc -vV | sed -n 's/^host: //p')" in
    *-linux-gnu*) link=(-C target-feature=+crt-static) ;;
  esac
  for pb in "${cni_bins[@]}"; do
    cargo rustc --profile cni -p "${pb%%:*}" --bin "${pb##*:}" -- "${link[@]}"
  done
  out=target/cni
fi
for pb in "${cni_bins[@]}"; do
  install -m 0755 "$out/${pb##*:}" "$dist/${pb##*:}"
done
