//! A node's dataplane as the kernel holds it, plus what flanneld believes it should be: the
//! JSON that flanneld serves at `GET /debug/dataplane` (with `-debug-dataplane`) and that
//! `weft doctor` / `weft path` read from every node. Read-only; it never carries etcd
//! credentials (only the own lease's key, value fields and revision).
//!
//! Schema (version 1; field names are stable, new fields may be added):
//!
//! ```text
//! {
//!   "version": 1, "collected_at": <unix s>, "hostname": "n1" | null,
//!   "flanneld": {                    // what the daemon holds; null when collected without one
//!     "version": "0.1.0", "public_ip": "198.18.0.11", "underlay_index": 2,
//!     "subnet_file": "/run/flannel/subnet.env", "network": "10.244.0.0/16" | null,
//!     "direct_routing": false,
//!     "expected_device": {"name","vni","port","local","underlay_index","mtu","gbp","learning","address"} | null,
//!     "lease": {"key","subnet","public_ip","vtep_mac","vni","etcd_revision","etcd_lease"} | null
//!   },
//!   "device":   <link> | null,         // flannel.<VNI>; null: missing
//!   "underlay": <link> | null,         // the external interface
//!   "bridge":   <link> | null,         // cni0; null: missing (no pod yet)
//!   "routes":   [{"dst","gateway","dev","oif","onlink","protocol","kind","table","scope","tos","metric","multipath"}],
//!   "neighbours": [{"ip","mac","state","permanent"}],     // on the device, every state
//!   "fdb":      [{"mac","dst","self","permanent"}],       // on the device
//!   "subnet_env": {"path","network","subnet","mtu","ipmasq","error"} | null,
//!   "sysctls":  {"ip_forward","rp_filter":{"all","default",<dev>...},"bridge_nf_call_iptables",
//!                "ipv6_forwarding"},          // net.ipv6.conf.all.forwarding; null: no IPv6
//!   "firewall": {"iptables_filter": "<iptables-save -t filter>" | null,
//!                "ip6tables_filter": "<ip6tables-save -t filter>" | null,
//!                "nft": <nft -j list ruleset> | null, "errors": [...]} | null,
//!   "underlay_neighbours": [{"ip","mac","state","permanent"}], // IPv4, on the external interface
//!   // dual stack (absent or empty otherwise); "flanneld" then also has "public_ipv6", "network_v6"
//!   "device_v6": <link> | null,      // flannel-v6.<VNI>; null: none
//!   "neighbours_v6": [...], "fdb_v6": [...],  // on flannel-v6.<VNI>
//!   "routes_v6": [...],              // through flannel-v6.<VNI> or inside the IPv6 network
//!   "errors":   ["what could not be read: why", ...]
//! }
//! <link> = {"name","index","kind","mac","mtu","up","oper_state","master","addresses":[cidr],
//!           "vxlan": {"vni","local","local6","port","underlay_index","underlay","learning","gbp"} | null}
//! ```
//!
//! `routes` holds the main-table IPv4 routes whose output device is the VXLAN device or whose
//! destination lies inside the cluster network (DirectRouting routes, the bridge's own-subnet
//! route, blackholes, routes somebody else put there). [`DataplaneView::kernel_state`] turns a
//! view into the [`KernelState`] of [`crate::Dataplane::dump`] (those routes, the device's
//! neighbours and FDB entries), so a remote reader can run [`crate::plan::plan_reconcile`] with
//! flanneld's [`crate::own::Ownership`] on it and get the ops the node's reconciler would apply.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};
use weft_common::mac::parse_mac;

use crate::{KernelFdb, KernelNeigh, KernelRoute, KernelState, VxlanSpec};

/// Current schema version.
pub const VIEW_VERSION: u32 = 1;

pub use crate::{RTPROT_BOOT as PROTO_BOOT, RT_TABLE_MAIN as TABLE_MAIN};

/// One node's dataplane. See the module documentation for the JSON schema.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataplaneView {
    pub version: u32,
    /// Unix seconds when it was collected.
    pub collected_at: u64,
    pub hostname: Option<String>,
    pub flanneld: Option<FlanneldFacts>,
    pub device: Option<LinkView>,
    pub underlay: Option<LinkView>,
    pub bridge: Option<LinkView>,
    pub routes: Vec<RouteView>,
    pub neighbours: Vec<NeighView>,
    pub fdb: Vec<FdbView>,
    pub subnet_env: Option<SubnetEnvView>,
    pub sysctls: SysctlView,
    /// The node's filter rules, read when the view is collected with
    /// [`crate::netlink::ViewInput::firewall`] (flanneld's endpoint does); `None` otherwise
    /// and in views of older flanneld versions.
    #[serde(default)]
    pub firewall: Option<FirewallView>,
    /// IPv4 neighbour (ARP) entries of the external interface, every state: with host-gw the
    /// peers' PublicIPs are resolved there (docs/flannel.md §4.2).
    #[serde(default)]
    pub underlay_neighbours: Vec<NeighView>,
    /// The IPv6 VXLAN device `flannel-v6.<VNI>` of a dual-stack node (docs/flannel.md §4.1);
    /// `None` when there is none. Its entries follow, in the shapes of the IPv4 ones.
    #[serde(default)]
    pub device_v6: Option<LinkView>,
    /// IPv6 neighbour entries on `device_v6`, every state.
    #[serde(default)]
    pub neighbours_v6: Vec<NeighView>,
    /// FDB entries on `device_v6` (destinations: the peers' `PublicIPv6`).
    #[serde(default)]
    pub fdb_v6: Vec<FdbView>,
    /// Main-table IPv6 routes through `device_v6` or inside the IPv6 network (host-gw).
    #[serde(default)]
    pub routes_v6: Vec<RouteView>,
    /// What could not be read, each naming the object and the reason.
    pub errors: Vec<String>,
}

/// The filter rules as the node's own tools print them, for a remote reader to walk the
/// FORWARD chain (`weft path`'s `remote-firewall` hop). Rule text only: no counters, no
/// credentials. Read in-process from nf_tables (`weft_common::firewall::listing`: matches weft
/// does not evaluate appear by name without their options); a family held by the legacy
/// x_tables backend comes from its `*tables-save -t filter` tool.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallView {
    /// The IPv4 `filter` table in `iptables-save -t filter`'s text; empty when there is none,
    /// `None` when it could not be read.
    pub iptables_filter: Option<String>,
    /// The IPv6 `filter` table in `ip6tables-save -t filter`'s text, the same way (`None` also
    /// in views of older flanneld versions).
    #[serde(default)]
    pub ip6tables_filter: Option<String>,
    /// The native nftables tables in `nft -j list ruleset`'s shape (iptables-nft's own tables
    /// are the two texts above); `None` when it could not be read.
    pub nft: Option<serde_json::Value>,
    /// What could not be read, and why.
    #[serde(default)]
    pub errors: Vec<String>,
}

/// What flanneld holds: its configuration as it applies to this node and its own lease.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlanneldFacts {
    /// flanneld's version.
    pub version: String,
    pub public_ip: Option<Ipv4Addr>,
    /// Dual stack: the published `PublicIPv6`.
    #[serde(default)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// Dual stack: `IPv6Network`.
    #[serde(default)]
    pub network_v6: Option<Ipv6Network>,
    /// ifindex of the external interface.
    pub underlay_index: Option<u32>,
    pub subnet_file: Option<PathBuf>,
    /// The cluster network (`<prefix>/config` `Network`); `None` before the config is read.
    pub network: Option<Ipv4Network>,
    pub direct_routing: bool,
    /// The device flanneld creates or adopts (its VXLAN attributes and MTU).
    pub expected_device: Option<DeviceSpecView>,
    pub lease: Option<LeaseView>,
}

/// The desired VXLAN device ([`VxlanSpec`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpecView {
    pub name: String,
    pub vni: u32,
    /// 0: the kernel default (8472).
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
    pub gbp: bool,
    pub learning: bool,
    pub address: Ipv4Network,
}

impl DeviceSpecView {
    /// The view of the IPv4 device `flannel.<VNI>`; `None` for a `flannel-v6` spec.
    pub fn of(s: &VxlanSpec) -> Option<Self> {
        let (IpAddr::V4(local), IpNetwork::V4(address)) = (s.local, s.address) else { return None };
        Some(DeviceSpecView {
            name: s.name.clone(),
            vni: s.vni,
            port: s.port,
            local,
            underlay_index: s.underlay_index,
            mtu: s.mtu,
            gbp: s.gbp,
            learning: s.learning,
            address,
        })
    }
}

/// The own lease as flanneld holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// Full etcd key (`<prefix>/subnets/10.244.1.0-24`).
    pub key: String,
    pub subnet: Ipv4Network,
    pub public_ip: Ipv4Addr,
    /// `VtepMAC` as published.
    pub vtep_mac: String,
    pub vni: u32,
    /// etcd revision of flanneld's last write of the key.
    pub etcd_revision: i64,
    /// etcd lease ID the key is attached to.
    pub etcd_lease: i64,
}

/// A link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    pub name: String,
    pub index: u32,
    /// `IFLA_INFO_KIND` (`vxlan`, `bridge`, `veth`); `None` for physical devices.
    pub kind: Option<String>,
    /// `aa:bb:cc:dd:ee:ff`; `None` for devices without one.
    pub mac: Option<String>,
    pub mtu: u32,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// `IFLA_OPERSTATE` as `ip link` prints it, lower case (`up`, `down`, `unknown`, ...).
    pub oper_state: String,
    /// ifindex of the master (bridge).
    pub master: Option<u32>,
    /// Addresses with prefix length (host bits kept).
    pub addresses: Vec<IpNetwork>,
    pub vxlan: Option<VxlanView>,
}

/// VXLAN attributes of a link.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanView {
    pub vni: Option<u32>,
    pub local: Option<Ipv4Addr>,
    /// `IFLA_VXLAN_LOCAL6`: the local address of an IPv6-underlay device (`flannel-v6`).
    #[serde(default)]
    pub local6: Option<std::net::Ipv6Addr>,
    /// UDP destination port as the kernel reports it (8472 when flanneld sent none).
    pub port: u16,
    /// ifindex of the lower (underlay) device; 0 when none.
    pub underlay_index: u32,
    pub underlay: Option<String>,
    pub learning: bool,
    pub gbp: bool,
}

/// A main-table IPv4 route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteView {
    pub dst: IpNetwork,
    pub gateway: Option<IpAddr>,
    /// Name of the output device, when it has one.
    pub dev: Option<String>,
    pub oif: Option<u32>,
    pub onlink: bool,
    /// `RTPROT_*` (3 = boot, flanneld's).
    pub protocol: u8,
    /// `unicast`, `blackhole`, `unreachable`, ... (`type <n>` for others)
    pub kind: String,
    pub table: u32,
    /// `RT_SCOPE_*` (0 = universe).
    #[serde(default)]
    pub scope: u8,
    #[serde(default)]
    pub tos: u8,
    /// `RTA_PRIORITY`, 0 when absent.
    #[serde(default)]
    pub metric: u32,
    /// Has `RTA_MULTIPATH` next hops.
    #[serde(default)]
    pub multipath: bool,
}

/// `RTN_*` names as `ip route` prints them.
const ROUTE_KINDS: [(u8, &str); 11] = [
    (1, "unicast"),
    (2, "local"),
    (3, "broadcast"),
    (4, "anycast"),
    (5, "multicast"),
    (6, "blackhole"),
    (7, "unreachable"),
    (8, "prohibit"),
    (9, "throw"),
    (10, "nat"),
    (11, "xresolve"),
];

/// The name of an `RTN_*` route type.
pub fn route_kind_name(kind: u8) -> String {
    ROUTE_KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map_or_else(|| format!("type {kind}"), |(_, n)| n.to_string())
}

/// The `RTN_*` code of a route type name (0 for an unknown one).
pub fn route_kind_code(name: &str) -> u8 {
    ROUTE_KINDS
        .iter()
        .find(|(_, n)| *n == name)
        .map(|(k, _)| *k)
        .or_else(|| name.strip_prefix("type ").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

impl RouteView {
    /// The route as a dump reports it.
    pub fn kernel(&self) -> KernelRoute {
        KernelRoute {
            dst: self.dst,
            gw: self.gateway,
            oif: self.oif,
            table: self.table,
            protocol: self.protocol,
            kind: route_kind_code(&self.kind),
            scope: self.scope,
            tos: self.tos,
            metric: self.metric,
            onlink: self.onlink,
            multipath: self.multipath,
        }
    }

    /// The view of a dumped route; `dev` names its output device.
    pub fn of(r: &KernelRoute, dev: Option<String>) -> RouteView {
        RouteView {
            dst: r.dst,
            gateway: r.gw,
            dev,
            oif: r.oif,
            onlink: r.onlink,
            protocol: r.protocol,
            kind: route_kind_name(r.kind),
            table: r.table,
            scope: r.scope,
            tos: r.tos,
            metric: r.metric,
            multipath: r.multipath,
        }
    }
}

/// A neighbour entry on the VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeighView {
    pub ip: IpAddr,
    pub mac: Option<String>,
    /// `NUD_*` names joined by `,` (`permanent`, `permanent,noarp`, `failed`, ...).
    pub state: String,
    pub permanent: bool,
}

/// An FDB entry on the VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FdbView {
    pub mac: String,
    /// Remote VTEP (the peer's PublicIP); `None` for entries without one.
    pub dst: Option<IpAddr>,
    /// `NTF_SELF`: an entry of the VXLAN device itself (what flanneld programs).
    #[serde(rename = "self")]
    pub self_: bool,
    pub permanent: bool,
}

/// subnet.env as found on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetEnvView {
    pub path: PathBuf,
    pub network: Vec<IpNetwork>,
    /// `FLANNEL_SUBNET` as written (first host address + prefix).
    pub subnet: Option<IpNetwork>,
    pub mtu: Option<u32>,
    pub ipmasq: Option<bool>,
    /// Why it could not be read or parsed.
    pub error: Option<String>,
}

/// The sysctls that decide forwarding (values as read from `/proc/sys`, `None` when absent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysctlView {
    pub ip_forward: Option<u8>,
    /// `net.ipv4.conf.<name>.rp_filter` for `all`, `default` and each device of the view.
    pub rp_filter: BTreeMap<String, u8>,
    /// `net.bridge.bridge-nf-call-iptables`; `None` when br_netfilter is not loaded.
    pub bridge_nf_call_iptables: Option<u8>,
    /// `net.ipv6.conf.all.forwarding`, the one switch the kernel's `ip6_forward`
    /// (net/ipv6/ip6_output.c) checks; `None` without IPv6 (and in views of older flanneld
    /// versions).
    #[serde(default)]
    pub ipv6_forwarding: Option<u8>,
}

impl SysctlView {
    /// The kernel's effective `rp_filter` for `dev`: the maximum of `all` and the device's.
    pub fn rp_filter_effective(&self, dev: &str) -> Option<u8> {
        match (self.rp_filter.get("all"), self.rp_filter.get(dev)) {
            (Some(a), Some(d)) => Some(*a.max(d)),
            (a, d) => a.or(d).copied(),
        }
    }
}

impl DataplaneView {
    /// The cluster network: flanneld's, else subnet.env's first IPv4 `FLANNEL_NETWORK`.
    pub fn network(&self) -> Option<Ipv4Network> {
        self.flanneld.as_ref().and_then(|f| f.network).or_else(|| {
            self.subnet_env.as_ref()?.network.iter().find_map(|n| match n {
                IpNetwork::V4(v4) => Some(*v4),
                IpNetwork::V6(_) => None,
            })
        })
    }

    /// The node's kernel as [`crate::Dataplane::dump`] reports it, as far as the view holds it:
    /// the neighbours and FDB entries (with a MAC and destination) of the VXLAN device and the
    /// routes of the view (main table: through the device or inside the cluster network).
    /// [`crate::own::Ownership`] then decides, as in the daemon, which of them are flanneld's.
    /// Empty without a device.
    pub fn kernel_state(&self) -> KernelState {
        let mut k = KernelState::default();
        let Some(dev) = &self.device else { return k };
        k.device = dev.index;
        for n in &self.neighbours {
            if let Some(mac) = n.mac.as_deref().and_then(parse_mac) {
                k.neighs.push(KernelNeigh { ifindex: dev.index, ip: n.ip, mac, permanent: n.permanent });
            }
        }
        for f in &self.fdb {
            if let (Some(dst), Some(mac)) = (f.dst, parse_mac(&f.mac)) {
                k.fdb.push(KernelFdb {
                    ifindex: dev.index,
                    mac,
                    dst,
                    permanent: f.permanent,
                    self_: f.self_,
                });
            }
        }
        k.routes = self.routes.iter().filter(|r| r.dst.is_ipv4()).map(RouteView::kernel).collect();
        k
    }
}

/// `dst` lies inside `network` (and is not larger; of the same family).
pub fn inside(dst: &IpNetwork, network: &IpNetwork) -> bool {
    dst.is_ipv6() == network.is_ipv6() && dst.prefix() >= network.prefix() && network.contains(dst.network())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> DataplaneView {
        let dev = LinkView {
            name: "flannel.1".into(),
            index: 5,
            kind: Some("vxlan".into()),
            mac: Some("2a:11:22:33:44:55".into()),
            mtu: 1450,
            up: true,
            oper_state: "unknown".into(),
            ..LinkView::default()
        };
        let route =
            |dst: &str, gw: &str, oif: Option<u32>, onlink: bool, protocol: u8, kind: &str| RouteView {
                dst: dst.parse().unwrap(),
                gateway: Some(gw.parse().unwrap()),
                dev: None,
                oif,
                onlink,
                protocol,
                kind: kind.into(),
                table: TABLE_MAIN,
                scope: 0,
                tos: 0,
                metric: 0,
                multipath: false,
            };
        DataplaneView {
            version: VIEW_VERSION,
            flanneld: Some(FlanneldFacts {
                network: Some("10.5.0.0/16".parse().unwrap()),
                ..Default::default()
            }),
            device: Some(dev),
            routes: vec![
                route("10.5.71.0/24", "10.5.71.0", Some(5), true, PROTO_BOOT, "unicast"),
                route("10.5.73.0/24", "198.18.0.5", Some(2), false, PROTO_BOOT, "unicast"),
                route("10.5.74.0/24", "198.18.0.6", Some(2), false, 4, "unicast"),
                route("10.9.0.0/24", "198.18.0.6", Some(2), false, PROTO_BOOT, "unicast"),
            ],
            neighbours: vec![
                NeighView {
                    ip: "10.5.71.0".parse().unwrap(),
                    mac: Some("6e:aa:bb:cc:dd:01".into()),
                    state: "permanent".into(),
                    permanent: true,
                },
                NeighView {
                    ip: "10.5.72.9".parse().unwrap(),
                    mac: None,
                    state: "failed".into(),
                    permanent: false,
                },
            ],
            fdb: vec![
                FdbView {
                    mac: "6e:aa:bb:cc:dd:01".into(),
                    dst: Some("198.18.0.3".parse().unwrap()),
                    self_: true,
                    permanent: true,
                },
                FdbView { mac: "00:00:00:00:00:00".into(), dst: None, self_: true, permanent: true },
            ],
            ..DataplaneView::default()
        }
    }

    #[test]
    fn kernel_state_feeds_the_reconciler_like_a_dump() {
        let k = view().kernel_state();
        let m: crate::Mac = [0x6e, 0xaa, 0xbb, 0xcc, 0xdd, 0x01];
        assert_eq!(k.device, 5);
        // The neighbour without a MAC and the FDB entry without a destination are not dumped.
        assert_eq!(
            k.neighs,
            vec![KernelNeigh { ifindex: 5, ip: "10.5.71.0".parse().unwrap(), mac: m, permanent: true }]
        );
        assert_eq!(k.fdb.len(), 1);
        assert_eq!(k.routes.len(), 4);
        assert_eq!(
            k.routes[0],
            KernelRoute::made("10.5.71.0/24".parse().unwrap(), "10.5.71.0".parse().unwrap(), true, Some(5))
        );
        let peer = crate::plan::Peer {
            subnet: "10.5.71.0/24".parse().unwrap(),
            public_ip: "198.18.0.3".parse().unwrap(),
            vtep_mac: m,
            direct: false,
        };
        let owner = crate::own::Ownership::of_peers(
            "10.5.0.0/16".parse().unwrap(),
            24,
            std::slice::from_ref(&peer),
            false,
        );
        // Healthy: nothing to change, and the routes flanneld did not make are left alone.
        assert_eq!(crate::plan::plan_reconcile(std::slice::from_ref(&peer), &k, &owner).ops, vec![]);
        let no_dev = DataplaneView { device: None, ..view() };
        assert_eq!(no_dev.kernel_state(), KernelState::default());
    }

    #[test]
    fn json_round_trip_and_field_names() {
        let v = view();
        let text = serde_json::to_string(&v).unwrap();
        assert!(text.contains(r#""self":true"#), "{text}");
        assert!(text.contains(r#""neighbours":["#) && text.contains(r#""fdb":["#), "{text}");
        let back: DataplaneView = serde_json::from_str(&text).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn a_view_of_an_older_flanneld_still_reads_and_new_fields_round_trip() {
        // Schema version 1 as first published: no firewall, underlay or IPv6 fields.
        let mut old = serde_json::to_value(view()).unwrap();
        for k in ["firewall", "underlay_neighbours", "device_v6", "neighbours_v6", "fdb_v6", "routes_v6"] {
            old.as_object_mut().unwrap().remove(k);
        }
        old["device"]["vxlan"] = serde_json::json!({"vni": 1, "local": "198.18.0.2", "port": 8472,
            "underlay_index": 2, "underlay": "eth0", "learning": false, "gbp": false});
        let back: DataplaneView = serde_json::from_value(old).unwrap();
        assert_eq!((back.firewall, back.device_v6, back.underlay_neighbours.len()), (None, None, 0));
        assert_eq!(back.device.unwrap().vxlan.unwrap().local6, None);
        // Before the IPv6 firewall and forwarding fields: they read as absent.
        let mut old = serde_json::to_value(view()).unwrap();
        old["firewall"] =
            serde_json::json!({"iptables_filter": "*filter\nCOMMIT\n", "nft": null, "errors": []});
        old["sysctls"].as_object_mut().unwrap().remove("ipv6_forwarding");
        let back: DataplaneView = serde_json::from_value(old).unwrap();
        assert_eq!((back.firewall.unwrap().ip6tables_filter, back.sysctls.ipv6_forwarding), (None, None));
        // The new fields as written.
        let mut v = view();
        v.firewall = Some(FirewallView {
            iptables_filter: Some("*filter\n:FORWARD DROP [0:0]\nCOMMIT\n".into()),
            ip6tables_filter: Some("*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n".into()),
            nft: Some(serde_json::json!({"nftables": []})),
            errors: vec![],
        });
        v.device_v6 = Some(LinkView {
            name: "flannel-v6.1".into(),
            vxlan: Some(VxlanView { local6: Some("fd00::2".parse().unwrap()), ..VxlanView::default() }),
            ..LinkView::default()
        });
        v.fdb_v6 = vec![FdbView {
            mac: "6e:aa:bb:cc:dd:02".into(),
            dst: Some("fd00::3".parse().unwrap()),
            self_: true,
            permanent: true,
        }];
        let text = serde_json::to_string(&v).unwrap();
        assert!(
            text.contains(r#""local6":"fd00::2""#)
                && text.contains(r#""iptables_filter":"*filter"#)
                && text.contains(r#""ip6tables_filter":"*filter"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<DataplaneView>(&text).unwrap(), v);
        // The IPv6 device stays out of the IPv4 kernel state the reconciler plan reads.
        assert_eq!(v.kernel_state(), view().kernel_state());
    }

    #[test]
    fn rp_filter_effective_is_the_maximum() {
        let mut s = SysctlView::default();
        s.rp_filter.insert("all".into(), 1);
        s.rp_filter.insert("eth0".into(), 2);
        s.rp_filter.insert("cni0".into(), 0);
        assert_eq!(s.rp_filter_effective("eth0"), Some(2));
        assert_eq!(s.rp_filter_effective("cni0"), Some(1));
        assert_eq!(s.rp_filter_effective("x"), Some(1));
    }
}
