//! The kernel side of flanneld, behind one trait so the daemon can be tested without root.
//!
//! The daemon decides (pure: lease diff → [`NetOp`]s, see `vxlan::plan`), the dataplane does.
//! The real implementation uses rtnetlink, batched on one socket; the fake one records
//! operations and holds an in-memory kernel state for tests.
//!
//! - [`plan`]: pure peer → [`NetOp`] planning (add/change, remove, reconcile against a dump).
//! - [`netlink`]: [`netlink::NetlinkDataplane`], the rtnetlink implementation.
//! - [`fake`]: [`fake::FakeDataplane`], the in-memory implementation for daemon tests.
//! - [`view`]: [`view::DataplaneView`], a node's kernel state as JSON for `/debug/dataplane`
//!   (collected by [`netlink::collect_view`]).
//! - [`firewall`]: the masquerade/forward rules (nftables or iptables layout) and drift check.

use std::net::{IpAddr, Ipv4Addr};

pub mod fake;
pub mod firewall;
pub mod netlink;
pub mod plan;
pub mod view;

use ipnetwork::{IpNetwork, Ipv4Network};

/// A MAC address.
pub type Mac = [u8; 6];

/// Desired VXLAN device (reference/flannel.md §8.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// `flannel.<vni>`.
    pub name: String,
    pub vni: u32,
    /// UDP port; 0 = do not send the attribute (kernel default 8472).
    pub port: u16,
    pub gbp: bool,
    pub learning: bool,
    /// Published public address, used as `local`.
    pub local: Ipv4Addr,
    /// ifindex of the external (underlay) interface.
    pub underlay_index: u32,
    /// Device MTU (underlay MTU − 50 unless configured).
    pub mtu: u32,
    /// The address to put on the device: `<own subnet network address>/32`.
    pub address: Ipv4Network,
    /// The cluster network: other addresses inside it are removed from the device.
    pub network: Ipv4Network,
}

/// The device as it is after `ensure_device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub index: u32,
    pub mac: Mac,
    pub mtu: u32,
}

/// One kernel operation on the VXLAN device's neighbours, FDB or routes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetOp {
    /// Permanent neighbour `ip → mac` on the device (create+replace).
    AddNeigh {
        ip: IpAddr,
        mac: Mac,
    },
    DelNeigh {
        ip: IpAddr,
        mac: Mac,
    },
    /// FDB entry `mac dst <dst> self permanent` on the device (create+replace).
    AddFdb {
        mac: Mac,
        dst: IpAddr,
    },
    DelFdb {
        mac: Mac,
        dst: IpAddr,
    },
    /// Route `dst via gw dev <device> onlink` (create+replace); with `onlink == false`
    /// (DirectRouting) a plain `dst via gw` route without the device.
    AddRoute {
        dst: IpNetwork,
        gw: IpAddr,
        onlink: bool,
    },
    DelRoute {
        dst: IpNetwork,
        gw: IpAddr,
        onlink: bool,
    },
}

/// What the dataplane found on the device (for reconciliation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Permanent neighbours on the device.
    pub neighs: Vec<(IpAddr, Mac)>,
    /// Permanent `self` FDB entries with a destination on the device.
    pub fdb: Vec<(Mac, IpAddr)>,
    /// Routes in the main table with the device as output, plus DirectRouting routes whose
    /// gateway is a known peer (the caller filters).
    pub routes: Vec<(IpNetwork, IpAddr, bool)>,
}

/// Result of applying a batch: how many succeeded, and the failures with their op.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: usize,
    pub failed: Vec<(NetOp, String)>,
    /// The socket overran (ENOBUFS): the kernel may have applied more than reported; the
    /// caller must re-read and reconcile.
    pub overrun: bool,
}

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("netlink {op} on {object}: {message}")]
    Netlink { op: &'static str, object: String, message: String, errno: Option<i32> },
    #[error("{0}")]
    Other(String),
}

/// The seam between the daemon and the kernel. Implementations must be idempotent:
/// adding an existing entry and deleting a missing one succeed.
#[allow(async_fn_in_trait)]
pub trait Dataplane {
    /// Creates or adopts the VXLAN device (recreating an incompatible one, reusing the
    /// previous MAC when `mac_hint` is given so peers need no update), sets its address, up.
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError>;
    /// Applies `ops` in order (batched; a failure of one op does not stop the others).
    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError>;
    /// Reads the device's neighbours, FDB entries and routes.
    async fn dump(&mut self) -> Result<KernelState, DataplaneError>;
    /// Route lookup used by DirectRouting: `Some(())` when `dst` is on-link (one route, no gateway).
    async fn is_onlink(&mut self, dst: Ipv4Addr) -> Result<bool, DataplaneError>;
    /// `--ip-blackhole-route`: adds `blackhole <dst>` to the main table unless a blackhole route
    /// for exactly `dst` is there, as upstream does (an exclusive add: it fails with EEXIST when
    /// another route of that prefix and metric exists, e.g. the bridge's `dev cni0` route).
    /// `Ok(true)` when it was added.
    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError>;
}
