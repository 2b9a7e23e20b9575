//! The kernel side of flanneld, behind one trait so the daemon can be tested without root.
//!
//! The daemon decides (pure: lease diff → [`NetOp`]s, see `vxlan::plan`), the dataplane does.
//! The real implementation uses rtnetlink, batched on one socket; the fake one records
//! operations and holds an in-memory kernel state for tests.
//!
//! - [`plan`]: pure peer → [`NetOp`] planning (add/change, remove, reconcile against a dump).
//! - [`own`]: the ownership rule (pure): which kernel entries are flanneld's to change.
//! - [`netlink`]: [`netlink::NetlinkDataplane`], the rtnetlink implementation.
//! - [`fake`]: [`fake::FakeDataplane`], the in-memory kernel for tests without root, and
//!   [`fake::SharedFake`], the handle the daemon tests drive it through.
//! - [`view`]: [`view::DataplaneView`], a node's kernel state as JSON for `/debug/dataplane`
//!   (collected by [`netlink::collect_view`]).
//! - [`firewall`]: the masquerade/forward rules (nftables or iptables layout) and drift check.

use std::net::{IpAddr, Ipv4Addr};

pub mod fake;
pub mod firewall;
pub mod lookup;
pub mod netlink;
pub mod own;
pub mod plan;
pub mod view;

use ipnetwork::{IpNetwork, Ipv4Network};

/// A MAC address.
pub type Mac = [u8; 6];

/// Desired VXLAN device (docs/flannel.md §8.1): `flannel.<VNI>` over the IPv4 underlay, or
/// (dual stack, §8.1–8.4) `flannel-v6.<VNI>` over the IPv6 underlay. The family of `address`
/// says which; `local` and `network` are of the same family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanSpec {
    /// `flannel.<vni>` or `flannel-v6.<vni>`.
    pub name: String,
    pub vni: u32,
    /// UDP port; 0 = do not send the attribute (kernel default 8472).
    pub port: u16,
    pub gbp: bool,
    pub learning: bool,
    /// Published public address (`PublicIP`, or `PublicIPv6` for `flannel-v6`), used as
    /// `local` (`IFLA_VXLAN_LOCAL` / `IFLA_VXLAN_LOCAL6`).
    pub local: IpAddr,
    /// ifindex of the external (underlay) interface.
    pub underlay_index: u32,
    /// Device MTU (underlay MTU − 50, − 70 over IPv6, unless configured; §8.4).
    pub mtu: u32,
    /// The address to put on the device: `<own subnet network address>/32` (`/128`).
    pub address: IpNetwork,
    /// The cluster network: other addresses inside it are removed from the device.
    pub network: IpNetwork,
}

impl VxlanSpec {
    /// The `flannel-v6.<VNI>` device (IPv6 underlay and address).
    pub fn is_v6(&self) -> bool {
        self.address.is_ipv6()
    }
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
    /// Like [`NetOp::AddRoute`], but create+exclusive: when any route holds the destination
    /// (the kernel's replace key: main table, prefix, tos 0, no metric) nothing changes and the
    /// op is reported in [`ApplyReport::exists`]. For routes believed absent, so that a route
    /// flanneld did not make is never overwritten without first looking at it.
    CreateRoute {
        dst: IpNetwork,
        gw: IpAddr,
        onlink: bool,
    },
}

/// The main routing table (`RT_TABLE_MAIN`).
pub const RT_TABLE_MAIN: u32 = 254;
/// `RTPROT_BOOT`: the protocol of every route flanneld adds (upstream's netlink default, and
/// iproute2's when `proto` is not given).
pub const RTPROT_BOOT: u8 = 3;
/// `RTN_UNICAST`.
pub const RTN_UNICAST: u8 = 1;
/// `RTN_LOCAL`: a local address (local table).
pub const RTN_LOCAL: u8 = 2;
/// The local routing table (`RT_TABLE_LOCAL`), where the kernel keeps one `local` route per
/// address of the host.
pub const RT_TABLE_LOCAL: u32 = 255;
/// `RT_SCOPE_UNIVERSE`.
pub const RT_SCOPE_UNIVERSE: u8 = 0;

/// A permanent or dynamic neighbour entry (family inet/inet6) as dumped, on any device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelNeigh {
    pub ifindex: u32,
    pub ip: IpAddr,
    pub mac: Mac,
    /// NUD_PERMANENT (what flanneld sets).
    pub permanent: bool,
}

/// An FDB entry (family bridge) with a destination address, as dumped, on any device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelFdb {
    pub ifindex: u32,
    pub mac: Mac,
    pub dst: IpAddr,
    /// NUD_PERMANENT.
    pub permanent: bool,
    /// NTF_SELF: the device's own forwarding table (what flanneld sets), not a bridge master's.
    pub self_: bool,
}

/// An IPv4 route as dumped, of any table, protocol, type or device.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelRoute {
    pub dst: IpNetwork,
    /// `RTA_GATEWAY`; `None` for a device route, a multipath route or a non-unicast type.
    pub gw: Option<IpAddr>,
    /// `RTA_OIF`.
    pub oif: Option<u32>,
    pub table: u32,
    pub protocol: u8,
    /// `RTN_*` (`RTN_UNICAST`, `RTN_BLACKHOLE`, …).
    pub kind: u8,
    pub scope: u8,
    pub tos: u8,
    /// `RTA_PRIORITY` (`metric`), 0 when absent.
    pub metric: u32,
    /// `RTNH_F_ONLINK`.
    pub onlink: bool,
    /// Has `RTA_MULTIPATH` next hops.
    pub multipath: bool,
}

/// The metric the kernel gives an IPv6 route added without one (`IP6_RT_PRIO_USER`); an IPv4
/// route without one has metric 0.
pub const IP6_RT_PRIO_USER: u32 = 1024;

/// The metric a route to `dst` added without `RTA_PRIORITY` has in the kernel: 0 for IPv4,
/// [`IP6_RT_PRIO_USER`] for IPv6. It is part of the kernel's replace key.
pub fn default_metric(dst: &IpNetwork) -> u32 {
    if dst.is_ipv6() {
        IP6_RT_PRIO_USER
    } else {
        0
    }
}

impl NetOp {
    /// The op addresses the IPv6 side (`flannel-v6.<VNI>`): every op of `flannel.<VNI>` is
    /// IPv4 (neighbour address, FDB destination, route destination), every op of
    /// `flannel-v6.<VNI>` IPv6.
    pub fn is_v6(&self) -> bool {
        match self {
            NetOp::AddNeigh { ip, .. } | NetOp::DelNeigh { ip, .. } => ip.is_ipv6(),
            NetOp::AddFdb { dst, .. } | NetOp::DelFdb { dst, .. } => dst.is_ipv6(),
            NetOp::AddRoute { dst, .. } | NetOp::DelRoute { dst, .. } | NetOp::CreateRoute { dst, .. } => {
                dst.is_ipv6()
            }
        }
    }
}

impl KernelRoute {
    /// An answer of [`Dataplane::route_to`] says `dst` is on-link on `oif`: a unicast route
    /// without a gateway through that interface (host-gw's same-L2-segment test, as
    /// [`KernelState::is_onlink_on`] answers it from a dump).
    pub fn reaches_onlink(&self, oif: u32) -> bool {
        self.kind == RTN_UNICAST && self.gw.is_none() && !self.multipath && self.oif == Some(oif)
    }

    /// The route flanneld's [`NetOp::AddRoute`] creates, as the kernel reports it: main table,
    /// protocol boot, unicast, scope universe, no metric given (so the family's
    /// [`default_metric`]); with `onlink` on `device` (output
    /// `oif`), otherwise (DirectRouting) on whatever device the kernel resolved (`oif`).
    pub fn made(dst: IpNetwork, gw: IpAddr, onlink: bool, oif: Option<u32>) -> KernelRoute {
        KernelRoute {
            dst,
            gw: Some(gw),
            oif,
            table: RT_TABLE_MAIN,
            protocol: RTPROT_BOOT,
            kind: RTN_UNICAST,
            scope: RT_SCOPE_UNIVERSE,
            tos: 0,
            metric: default_metric(&dst),
            onlink,
            multipath: false,
        }
    }
}

impl KernelState {
    /// DirectRouting's on-link test for `dst`, answered from the routes (a dump) instead of one
    /// `RTM_GETROUTE` per peer: the main-table route the kernel would pick (longest prefix,
    /// then lowest metric; tos 0) is a unicast route without a gateway. Upstream asks the
    /// kernel (`netlink.RouteGet`) and takes one route with no gateway as on-link; policy
    /// routing rules, which a lookup would follow, are not considered here. For an IPv6 `dst`
    /// (a peer's PublicIPv6) the IPv6 routes answer (a dump holds them once `flannel-v6`
    /// exists, or with host-gw).
    pub fn is_onlink(&self, dst: IpAddr) -> bool {
        lookup::RouteLookup::new(self).is_onlink(dst)
    }

    /// host-gw's test that `dst` (a peer's PublicIP or PublicIPv6) is on the same L2 segment
    /// through the external interface `oif`: the main-table route the kernel would pick (as in
    /// [`KernelState::is_onlink`]) is a unicast route without a gateway on that interface.
    /// For many questions about one dump, index it once with [`lookup::RouteLookup`].
    pub fn is_onlink_on(&self, dst: IpAddr, oif: u32) -> bool {
        lookup::RouteLookup::new(self).is_onlink_on(dst, oif)
    }

    /// The main-table route (tos 0) the kernel would pick for `dst`: longest prefix, then
    /// lowest metric.
    pub fn best_route(&self, dst: IpAddr) -> Option<&KernelRoute> {
        lookup::RouteLookup::new(self).best_route(dst)
    }

    /// `ip` is a local address of the interface `oif` (a `local` route in the local table),
    /// host-gw's check that the published PublicIP is the interface's own address, not one
    /// behind NAT (upstream `pkg/backend/hostgw/hostgw.go` `New`).
    pub fn is_local_on(&self, ip: Ipv4Addr, oif: u32) -> bool {
        self.routes.iter().any(|r| {
            r.table == RT_TABLE_LOCAL
                && r.kind == RTN_LOCAL
                && r.oif == Some(oif)
                && r.dst == IpNetwork::V4(Ipv4Network::from(ip))
        })
    }
}

impl std::fmt::Display for KernelRoute {
    /// In `ip route` words: `10.5.7.0/24 via 198.18.0.11 dev #2 proto static table 254`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.kind != RTN_UNICAST {
            write!(f, "type {} ", self.kind)?;
        }
        write!(f, "{}", self.dst)?;
        if let Some(gw) = self.gw {
            write!(f, " via {gw}")?;
        }
        if let Some(oif) = self.oif {
            write!(f, " dev #{oif}")?;
        }
        match self.protocol {
            2 => write!(f, " proto kernel")?,
            RTPROT_BOOT => write!(f, " proto boot")?,
            4 => write!(f, " proto static")?,
            p => write!(f, " proto {p}")?,
        }
        if self.metric != 0 {
            write!(f, " metric {}", self.metric)?;
        }
        if self.onlink {
            write!(f, " onlink")?;
        }
        write!(f, " table {}", self.table)
    }
}

/// What a dump found (for reconciliation): every neighbour, FDB entry with a destination and
/// IPv4 route of the namespace (and, once there is a `flannel-v6` device, every IPv6
/// neighbour and route), whoever made it; [`own::Ownership`] decides what is flanneld's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelState {
    /// ifindex of the VXLAN device when the dump was made.
    pub device: u32,
    /// ifindex of the `flannel-v6` device when the dump was made (0: none).
    pub device_v6: u32,
    pub neighs: Vec<KernelNeigh>,
    pub fdb: Vec<KernelFdb>,
    pub routes: Vec<KernelRoute>,
}

impl KernelState {
    /// The entries of one address family only (neighbour address, FDB destination, route
    /// destination), with that family's device as [`KernelState::device`]: what
    /// [`plan::plan_reconcile`] and [`plan::plan_guard`] take for one device.
    pub fn family(&self, v6: bool) -> KernelState {
        KernelState {
            device: if v6 { self.device_v6 } else { self.device },
            device_v6: self.device_v6,
            neighs: self.neighs.iter().filter(|n| n.ip.is_ipv6() == v6).cloned().collect(),
            fdb: self.fdb.iter().filter(|e| e.dst.is_ipv6() == v6).cloned().collect(),
            routes: self.routes.iter().filter(|r| r.dst.is_ipv6() == v6).cloned().collect(),
        }
    }
}

/// Result of applying a batch: how many succeeded, and the failures with their op.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: usize,
    pub failed: Vec<(NetOp, String)>,
    /// The socket overran (ENOBUFS): the kernel may have applied more than reported; the
    /// caller must re-read and reconcile.
    pub overrun: bool,
    /// [`NetOp::CreateRoute`]s that found a route at their destination (EEXIST) and changed
    /// nothing: the caller looks at the kernel's routes before deciding anything.
    pub exists: Vec<NetOp>,
}

/// Errors of the dataplane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("netlink {op} on {object}: {message}")]
    Netlink { op: &'static str, object: String, message: String, errno: Option<nix::errno::Errno> },
    #[error("{0}")]
    Other(String),
}

/// The seam between the daemon and the kernel. Implementations must be idempotent:
/// adding an existing entry and deleting a missing one succeed.
#[allow(async_fn_in_trait)]
pub trait Dataplane {
    /// Creates or adopts the VXLAN device (recreating an incompatible one, reusing the
    /// previous MAC when `mac_hint` is given so peers need no update), sets its address, up.
    /// A spec of the IPv6 family ([`VxlanSpec::is_v6`]) is the second device, `flannel-v6`:
    /// from then on the IPv6 ops of [`Dataplane::apply`] go to it (the IPv4 ones to the
    /// first) and [`Dataplane::dump`] also reads IPv6 neighbours and routes.
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError>;
    /// Applies `ops` in order (batched; a failure of one op does not stop the others).
    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError>;
    /// Reads every neighbour, FDB entry (with a destination) and IPv4 route of the namespace;
    /// with a `flannel-v6` device also every IPv6 neighbour and route, and with host-gw
    /// ([`Dataplane::ensure_no_device`]) every IPv6 route (its dual-stack peer routes and the
    /// on-link routes of the external interface).
    async fn dump(&mut self) -> Result<KernelState, DataplaneError>;
    /// Like [`Dataplane::dump`], routes only (neighbours and FDB left empty).
    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError>;
    /// The route the kernel picks for `dst` (one `RTM_GETROUTE`, what upstream's
    /// `netlink.RouteGet` sends; policy rules are followed): its gateway, device, table and
    /// type as [`KernelRoute`] (`dst` a host prefix). `None` when the kernel has no route to it
    /// (ENETUNREACH, EHOSTUNREACH, …). host-gw asks this per new peer instead of reading a
    /// full route dump.
    async fn route_to(&mut self, dst: IpAddr) -> Result<Option<KernelRoute>, DataplaneError>;
    /// `--ip-blackhole-route`: adds `blackhole <dst>` to the main table unless a blackhole route
    /// for exactly `dst` is there, as upstream does (an exclusive add: it fails with EEXIST when
    /// another route of that prefix and metric exists, e.g. the bridge's `dev cni0` route).
    /// `Ok(true)` when it was added.
    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError>;
    /// host-gw (no VXLAN device): deletes every VXLAN link named `flannel.<N>` or
    /// `flannel-v6.<N>` (what a vxlan run of flanneld left; their neighbours, FDB entries and
    /// routes go with them) and returns their names; from then on [`Dataplane::apply`] and
    /// [`Dataplane::dump`] work without a device ([`KernelState::device`] 0), for plain routes
    /// `dst via gw` only, of both families (host-gw dual stack: `S6 via P6`), and dumps read
    /// the IPv6 routes too. `underlay_index` is the external interface.
    async fn ensure_no_device(&mut self, underlay_index: u32) -> Result<Vec<String>, DataplaneError>;
    /// Whether every VXLAN device of the last [`Dataplane::ensure_device`] calls is there and
    /// administratively up (one `RTM_GETLINK` each): `false` after an `ip link set flannel.1
    /// down` (or a deleted device), so the caller ensures the devices again, which sets them
    /// up. `true` without devices (before the first ensure, host-gw).
    async fn devices_up(&mut self) -> Result<bool, DataplaneError>;
}

/// A link name flanneld's VXLAN backend uses: `flannel.<digits>` or `flannel-v6.<digits>`.
pub fn is_flannel_vxlan_name(name: &str) -> bool {
    let rest = name.strip_prefix("flannel-v6.").or_else(|| name.strip_prefix("flannel."));
    rest.is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::{is_flannel_vxlan_name, KernelRoute, KernelState};

    #[test]
    fn onlink_answers_from_the_routes_of_the_address_family() {
        let net = |s: &str| s.parse().unwrap();
        let connected = |dst: &str, metric: u32| KernelRoute {
            gw: None,
            protocol: 2,
            scope: 253,
            metric,
            ..KernelRoute::made(net(dst), "::".parse().unwrap(), false, Some(2))
        };
        let k = KernelState {
            routes: vec![
                connected("2001:2::/64", 256),
                KernelRoute {
                    metric: 1024,
                    ..KernelRoute::made(net("::/0"), "fe80::1".parse().unwrap(), false, Some(2))
                },
                // An IPv4 on-link default answers nothing for IPv6.
                connected("0.0.0.0/0", 0),
            ],
            ..KernelState::default()
        };
        assert!(k.is_onlink("2001:2::3".parse().unwrap()));
        assert!(k.is_onlink_on("2001:2::3".parse().unwrap(), 2));
        assert!(!k.is_onlink("2001:db8::1".parse().unwrap()), "via the IPv6 default gateway");
        assert!(k.is_onlink("203.0.113.1".parse().unwrap()));
    }

    #[test]
    fn flannel_vxlan_names() {
        for yes in ["flannel.1", "flannel.4096", "flannel-v6.1"] {
            assert!(is_flannel_vxlan_name(yes), "{yes}");
        }
        for no in ["flannel.", "flannel.x", "flannel0", "cni0", "flannel-v6.", "xflannel.1", "flannel.1a"] {
            assert!(!is_flannel_vxlan_name(no), "{no}");
        }
    }
}
