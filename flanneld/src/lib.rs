//! weft-flanneld: the control plane of the `flanneld` drop-in (etcd mode, VXLAN backend).
//!
//! Decide, then do: lease records from the [`registry`] become peer [`peers::Change`]s (pure),
//! which `weft_dataplane::plan` turns into kernel operations applied by a
//! `weft_dataplane::Dataplane`. [`daemon::run`] owns all state in one loop; [`watch`] only
//! feeds it. See docs/flannel.md for the interop contract with upstream nodes.

pub mod acquire;
pub mod allocate;
pub mod capture;
pub mod cli;
pub mod daemon;
pub mod debug;
pub mod health;
pub mod iface;
pub mod lease;
mod lease_wire;
pub mod metrics;
pub mod network;
pub mod network_v6;
pub mod peers;
pub mod registry;
pub mod sdnotify;
pub mod state;
pub mod watch;
