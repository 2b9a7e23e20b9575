#!/usr/bin/env bash
# The fresh-machine check: does the README's set-up work on a machine that has nothing but a
# Rust toolchain? It builds a minimal Debian 12 root (debootstrap --variant=minbase bookworm,
# from the same mirror apt uses), gives it this machine's Rust toolchain read-only (registry and
# build caches stay inside the root), and inside it runs scripts/install-deps.sh, the full build
# (every binary and test, then scripts/build-release.sh) and the demo (scripts/demo.sh). A package
# that the project needs but install-deps.sh does not install makes one of these steps fail here,
# even when this machine happens to have it.
#
# Prints one line per step with its time; on a failure, the end of that step's output. Removes
# the root, its mounts, its processes (by PID) and thereby its namespaces afterwards, also on
# failure or Ctrl-C. The debootstrap download is cached as a tarball of .deb files between runs
# on the same machine (WEFT_FRESH_CACHE, default /var/cache/weft-fresh-machine); the root itself,
# and every package installed into it, is made anew each run.
#
# Usage: sudo scripts/check-fresh-machine.sh
# Environment: WEFT_FRESH_MIRROR (default http://deb.debian.org/debian), WEFT_FRESH_CACHE.
set -euo pipefail
cd "$(dirname "$0")/.."
src=$PWD

if [ "$(id -u)" -ne 0 ]; then
  echo "check-fresh-machine: needs root (chroot, mounts, network namespaces)" >&2
  exit 1
fi

suite=bookworm
mirror=${WEFT_FRESH_MIRROR:-http://deb.debian.org/debian}
cache=${WEFT_FRESH_CACHE:-/var/cache/weft-fresh-machine}
tarball=$cache/$suite-minbase-$(dpkg --print-architecture).tgz
# The toolchain shared with the root: rustup's home and the directory of its cargo/rustc proxies.
cargo_bin=$(dirname "$(command -v cargo || echo "${HOME:-/root}/.cargo/bin/cargo")")
rustup_home=${RUSTUP_HOME:-${HOME:-/root}/.rustup}

root=
logs=$(mktemp -d /tmp/weft-fresh-logs.XXXXXX)

cleanup() {
  set +e
  if [ -n "$root" ] && [ -d "$root" ]; then
    # Anything the steps left running (all of it is chrooted into the root), by PID. Network
    # namespaces made inside were mounted in the steps' private mount namespaces, so they go
    # with these processes.
    local p
    for p in /proc/[0-9]*; do
      [ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && kill -KILL "${p#/proc/}" 2>/dev/null
    done
    # The steps mount only inside their own mount namespaces; this catches any mount that
    # reached ours, deepest first, before anything is deleted.
    findmnt -rn -o TARGET | grep -F "$root" | sort -r | while read -r m; do umount -l "$m"; done
    if findmnt -rn -o TARGET | grep -qF "$root"; then
      echo "check-fresh-machine: mounts remain under $root; not deleting it" >&2
    else
      rm -rf --one-file-system "$root"
    fi
  fi
  rm -rf "$logs"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# step NAME COMMAND...: runs COMMAND with its output in a log, prints NAME, status and time.
step() {
  local name=$1 log rc=0 start end
  shift
  log="$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '-').log"
  start=$(date +%s.%N)
  # A subshell outside any `||`, so that `set -e` holds inside the step's functions.
  set +e
  (set -e; "$@") >"$log" 2>&1
  rc=$?
  set -e
  end=$(date +%s.%N)
  local secs
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')
  if [ "$rc" -eq 0 ]; then
    printf 'fresh-machine: %-46s ok      %7s s\n' "$name" "$secs"
  else
    printf 'fresh-machine: %-46s FAILED  %7s s (exit %d)\n' "$name" "$secs" "$rc"
    # cargo goes on compiling after a failed build script: its error lines first, then the end.
    echo "  error lines:"
    grep -E -m 20 '^(error|warning: build failed)|panicked|not found|No such file' "$log" | sed 's/^/    /' || true
    echo "  last lines:"
    tail -n 40 "$log" | sed 's/^/    /'
    exit 1
  fi
}

# inside COMMAND: runs a bash command line in the root, as a fresh login would see it: a
# private mount namespace with /proc, /sys, /dev and an empty /run (where `ip netns` keeps its
# mounts), the host's kernel modules and toolchain read-only, and nothing of this environment.
inside() {
  unshare --mount --propagation private --fork -- bash -euc '
    r=$1 rustup_home=$2 cargo_bin=$3 cmd=$4
    # The root is a mount point, as / is on a machine (`ip netns exec` remounts / as a slave).
    mount --bind "$r" "$r"
    mount -t proc proc "$r/proc"
    mount -t sysfs sysfs "$r/sys"
    mount --rbind /dev "$r/dev"
    mount --make-rslave "$r/dev"
    mount -t tmpfs -o mode=0755 tmpfs "$r/run"
    ro_bind() { mkdir -p "$2"; mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
    ro_bind "$rustup_home" "$r/opt/rustup"
    ro_bind "$cargo_bin" "$r/opt/cargo-bin"
    if [ -d /lib/modules ]; then ro_bind /lib/modules "$r/usr/lib/modules"; fi
    exec chroot "$r" /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 CI=true \
      PATH=/opt/cargo-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      RUSTUP_HOME=/opt/rustup CARGO_HOME=/root/.cargo \
      bash -euc "cd /src/weft && $cmd"
  ' inside "$root" "$rustup_home" "$cargo_bin" "$1"
}

host_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends debootstrap
}

make_tarball() {
  [ -s "$tarball" ] && { echo "cached: $tarball"; return 0; }
  mkdir -p "$cache"
  local work
  work=$(mktemp -d /var/tmp/weft-fresh-dl.XXXXXX)
  debootstrap --variant=minbase --make-tarball="$tarball.part" "$suite" "$work" "$mirror" || {
    rm -rf --one-file-system "$work" "$tarball.part"
    return 1
  }
  rm -rf --one-file-system "$work"
  mv "$tarball.part" "$tarball"
}

make_root() {
  debootstrap --variant=minbase --unpack-tarball="$tarball" "$suite" "$root" "$mirror"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  # This machine's trusted CAs (where its network passes HTTPS through a proxy, the proxy's CA is
  # among them) as a local CA, as a site would provision one: they take effect only once
  # install-deps.sh has installed ca-certificates, whose hook adds them to the system store.
  mkdir -p "$root/usr/local/share/ca-certificates"
  if [ -s /etc/ssl/certs/ca-certificates.crt ]; then
    cp /etc/ssl/certs/ca-certificates.crt "$root/usr/local/share/ca-certificates/host-site.crt"
  fi
  # As in any Debian chroot: package scripts must not start daemons (etcd-server's would listen
  # on this machine's loopback). A real machine's service manager is handled by install-deps.sh.
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"
  # The project as it is checked out here (tracked and new files, no build output).
  mkdir -p "$root/src/weft"
  git -C "$src" ls-files -z --cached --others --exclude-standard |
    tar -C "$src" --null --ignore-failed-read -T - -cf - | tar -C "$root/src/weft" -xf -
}

step "host: debootstrap installed" host_debootstrap
step "debootstrap download ($suite minbase)" make_tarball
root=$(mktemp -d /var/tmp/weft-fresh-root.XXXXXX)
step "minimal $suite root unpacked" make_root
step "toolchain visible in the root" inside 'cargo --version && rustc --version'
step "scripts/install-deps.sh" inside 'bash scripts/install-deps.sh'
step "cargo build --workspace --all-targets" inside 'cargo build --locked --workspace --all-targets'
step "scripts/build-release.sh" inside 'bash scripts/build-release.sh'
step "scripts/demo.sh" inside 'bash scripts/demo.sh'
echo "fresh-machine: all steps passed"
