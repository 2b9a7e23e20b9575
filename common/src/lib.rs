//! weft-common: everything the weft binaries share.
//!
//! - [`capture`]: watching interfaces for `weft path --probe` packets (packet sockets, matcher).
//! - [`cni`]: the CNI protocol (types, versions, errors, skel, delegation).
//! - [`netns`]: opening and entering network namespaces.
//! - [`netlink`]: a blocking rtnetlink socket and typed operations.
//! - [`sysctl`], [`fs`]: sysctl access, atomic writes and file locks.
//! - [`firewall`]: masquerade rules (iptables and nftables layouts of the reference plugins).
//! - [`flannel`]: the one `subnet.env` parser/renderer.
//! - [`log`]: plugin logging to stderr.
//! - [`mac`]: MAC address text and random local MACs.
//! - [`process`]: running a system tool (the one process runner).
//! - [`json`]: JSON with sorted keys, as the Go side writes it.
//!
//! No tokio and no etcd here: plugins are short-lived processes that must start fast.
//!
//! Built for musl (the CNI binaries an operator installs, see `scripts/build-release.sh`),
//! every weft binary allocates with dlmalloc: musl's own allocator maps and unmaps a page
//! group for almost every short-lived buffer, ~150 mmap/munmap calls per bridge ADD, which
//! made an ADD slower than the glibc build; dlmalloc keeps freed memory for reuse.

pub mod capture;
pub mod cni;
pub mod firewall;
pub mod flannel;
pub mod fs;
pub mod json;
pub mod log;
pub mod mac;
pub mod netlink;
pub mod netns;
pub mod process;
pub mod sysctl;

#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;
