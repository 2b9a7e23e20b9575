//! Collecting a [`DataplaneView`] from the kernel of the calling thread's network namespace:
//! links, addresses, neighbours and FDB entries of the VXLAN device (and of `flannel-v6` in dual
//! stack), main-table routes, the
//! forwarding sysctls and subnet.env. Read-only. Nothing here fails as a whole: what cannot be
//! read is named in [`DataplaneView::errors`] and the rest is still reported.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use weft_common::flannel::SubnetEnv;
use weft_common::mac::format_mac;
use weft_common::netlink::OperState;

use super::NetlinkDataplane;
use crate::view::{
    inside, DataplaneView, FdbView, FlanneldFacts, LinkView, NeighView, RouteView, SubnetEnvView, SysctlView,
    VxlanView, VIEW_VERSION,
};

/// Default names when neither the caller nor flanneld's facts give one.
pub const DEFAULT_DEVICE: &str = "flannel.1";
pub const DEFAULT_BRIDGE: &str = "cni0";
pub const DEFAULT_SUBNET_FILE: &str = "/run/flannel/subnet.env";

/// What to collect. Unset fields come from `facts`, then from the defaults above.
#[derive(Debug, Clone, Default)]
pub struct ViewInput {
    /// flanneld's own facts, copied into the view.
    pub facts: Option<FlanneldFacts>,
    /// The VXLAN device (default: flanneld's expected device, else `flannel.1`).
    pub device: Option<String>,
    /// ifindex of the external interface (default: flanneld's, else the device's lower device).
    pub underlay_index: Option<u32>,
    /// The pod bridge (default `cni0`).
    pub bridge: Option<String>,
    /// subnet.env (default: flanneld's `-subnet-file`, else `/run/flannel/subnet.env`).
    pub subnet_file: Option<PathBuf>,
}

/// Collects the view of the calling thread's network namespace. Must be called inside a tokio
/// runtime; without one (or without a netlink socket) only the files and sysctls are read and
/// the failure is named in `errors`.
pub async fn collect_view(input: &ViewInput) -> DataplaneView {
    let facts = input.facts.clone();
    let device_name = input
        .device
        .clone()
        .or_else(|| facts.as_ref()?.expected_device.as_ref().map(|d| d.name.clone()))
        .unwrap_or_else(|| DEFAULT_DEVICE.to_string());
    let bridge_name = input.bridge.clone().unwrap_or_else(|| DEFAULT_BRIDGE.to_string());
    let subnet_file = input
        .subnet_file
        .clone()
        .or_else(|| facts.as_ref()?.subnet_file.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SUBNET_FILE));
    let mut view = DataplaneView {
        version: VIEW_VERSION,
        collected_at: SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        hostname: std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string()),
        flanneld: facts.clone(),
        ..DataplaneView::default()
    };
    view.subnet_env = Some(read_subnet_env(subnet_file));

    match NetlinkDataplane::new() {
        Ok(nl) => collect_kernel(&nl, input, &device_name, &bridge_name, &mut view).await,
        Err(e) => view.errors.push(format!("open netlink socket: {e}")),
    }
    view.sysctls = read_sysctls(&view);
    view
}

async fn collect_kernel(
    nl: &NetlinkDataplane,
    input: &ViewInput,
    device_name: &str,
    bridge_name: &str,
    view: &mut DataplaneView,
) {
    let links = match nl.dump_req(RouteNetlinkMessage::GetLink(LinkMessage::default()), "links").await {
        Ok(msgs) => msgs
            .into_iter()
            .filter_map(|m| if let RouteNetlinkMessage::NewLink(l) = m { Some(link_view(&l)) } else { None })
            .collect::<Vec<_>>(),
        Err(e) => {
            view.errors.push(format!("dump links: {e}"));
            return;
        }
    };
    let names: BTreeMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let mut addrs: BTreeMap<u32, Vec<IpNetwork>> = BTreeMap::new();
    match nl.dump_req(RouteNetlinkMessage::GetAddress(AddressMessage::default()), "addresses").await {
        Ok(msgs) => {
            for m in msgs {
                if let RouteNetlinkMessage::NewAddress(a) = m {
                    if let Some(net) = address(&a) {
                        addrs.entry(a.header.index).or_default().push(net);
                    }
                }
            }
        }
        Err(e) => view.errors.push(format!("dump addresses: {e}")),
    }
    let with_addrs = |mut l: LinkView| {
        l.addresses = addrs.get(&l.index).cloned().unwrap_or_default();
        if let Some(v) = l.vxlan.as_mut() {
            v.underlay = names.get(&v.underlay_index).cloned();
        }
        l
    };
    view.device = links.iter().find(|l| l.name == device_name).cloned().map(with_addrs);
    if view.device.is_none() {
        view.errors.push(format!("link {device_name}: not found"));
    }
    let underlay_index = input
        .underlay_index
        .or_else(|| view.flanneld.as_ref()?.underlay_index)
        .or_else(|| view.device.as_ref()?.vxlan.as_ref().map(|v| v.underlay_index));
    view.underlay =
        underlay_index.and_then(|i| links.iter().find(|l| l.index == i && i != 0)).cloned().map(with_addrs);
    view.bridge = links.iter().find(|l| l.name == bridge_name).cloned().map(with_addrs);

    // Dual stack: `flannel-v6.<VNI>` next to `flannel.<VNI>`.
    let v6_name = device_name.strip_prefix("flannel.").map(|n| format!("flannel-v6.{n}"));
    view.device_v6 = v6_name.and_then(|n| links.iter().find(|l| l.name == n).cloned()).map(with_addrs);

    // host-gw has no device: its peer routes (inside the cluster network) are still listed.
    let dev_index = view.device.as_ref().map(|d| d.index);
    let network = view.network().map(IpNetwork::V4);
    let v4 = collect_device(nl, &names, dev_index, AddressFamily::Inet, network, view).await;
    (view.neighbours, view.fdb, view.routes) = v4;
    let dev6 = view.device_v6.as_ref().map(|d| d.index);
    let network6 = view.flanneld.as_ref().and_then(|f| f.network_v6).map(IpNetwork::V6);
    if dev6.is_some() || network6.is_some() {
        let v6 = collect_device(nl, &names, dev6, AddressFamily::Inet6, network6, view).await;
        (view.neighbours_v6, view.fdb_v6, view.routes_v6) = v6;
    }
}

/// The neighbours (of `family`) and FDB entries of the device `dev` (none without a device),
/// and the main-table routes of `family` through it or inside `network`; what cannot be read
/// goes to `view.errors`.
async fn collect_device(
    nl: &NetlinkDataplane,
    names: &BTreeMap<u32, String>,
    dev: Option<u32>,
    family: AddressFamily,
    network: Option<IpNetwork>,
    view: &mut DataplaneView,
) -> (Vec<NeighView>, Vec<FdbView>, Vec<RouteView>) {
    let (neighbours, fdb) = match dev {
        Some(dev_index) => collect_entries(nl, names, dev_index, family, view).await,
        None => (Vec::new(), Vec::new()),
    };
    let mut routes = Vec::new();
    let mut q = RouteMessage::default();
    q.header.address_family = family;
    match nl.dump_req(RouteNetlinkMessage::GetRoute(q), "routes").await {
        Ok(msgs) => {
            for m in msgs {
                let RouteNetlinkMessage::NewRoute(r) = m else { continue };
                let Some(k) = super::msg::parse_route(&r) else { continue };
                if k.table != crate::RT_TABLE_MAIN {
                    continue;
                }
                if (dev.is_some() && k.oif == dev) || network.is_some_and(|n| inside(&k.dst, &n)) {
                    routes.push(RouteView::of(&k, k.oif.and_then(|i| names.get(&i).cloned())));
                }
            }
        }
        Err(e) => view.errors.push(format!("dump routes: {e}")),
    }
    (neighbours, fdb, routes)
}

/// The neighbours (of `family`) and FDB entries of the device `dev_index`.
async fn collect_entries(
    nl: &NetlinkDataplane,
    names: &BTreeMap<u32, String>,
    dev_index: u32,
    family: AddressFamily,
    view: &mut DataplaneView,
) -> (Vec<NeighView>, Vec<FdbView>) {
    let dev_name = names.get(&dev_index).cloned().unwrap_or_else(|| format!("#{dev_index}"));
    let (mut neighbours, mut fdb) = (Vec::new(), Vec::new());
    let mut q = NeighbourMessage::default();
    q.header.family = family;
    match nl.dump_req(RouteNetlinkMessage::GetNeighbour(q), "neighbours").await {
        Ok(msgs) => {
            for m in msgs {
                let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
                if n.header.ifindex != dev_index {
                    continue;
                }
                if let Some(k) = super::msg::parse_neigh(&n) {
                    neighbours.push(NeighView {
                        ip: k.ip,
                        mac: Some(format_mac(&k.mac)),
                        state: nud_names(u16::from(n.header.state)),
                        permanent: k.permanent,
                    });
                }
            }
        }
        Err(e) => view.errors.push(format!("dump neighbours of {dev_name}: {e}")),
    }
    let mut q = NeighbourMessage::default();
    q.header.family = AddressFamily::Bridge;
    match nl.dump_req(RouteNetlinkMessage::GetNeighbour(q), "fdb").await {
        Ok(msgs) => {
            for m in msgs {
                let RouteNetlinkMessage::NewNeighbour(n) = m else { continue };
                if let Some(k) = super::msg::parse_fdb(&n).filter(|k| k.ifindex == dev_index) {
                    fdb.push(FdbView {
                        mac: format_mac(&k.mac),
                        dst: Some(k.dst),
                        self_: k.self_,
                        permanent: k.permanent,
                    });
                }
            }
        }
        Err(e) => view.errors.push(format!("dump fdb of {dev_name}: {e}")),
    }
    (neighbours, fdb)
}

/// `NUD_*` bits as names joined by `,`.
fn nud_names(state: u16) -> String {
    const NAMES: [(u16, &str); 8] = [
        (0x01, "incomplete"),
        (0x02, "reachable"),
        (0x04, "stale"),
        (0x08, "delay"),
        (0x10, "probe"),
        (0x20, "failed"),
        (0x40, "noarp"),
        (0x80, "permanent"),
    ];
    let names: Vec<&str> = NAMES.iter().filter(|(bit, _)| state & bit != 0).map(|(_, n)| *n).collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

fn link_view(m: &LinkMessage) -> LinkView {
    let mut l = LinkView {
        index: m.header.index,
        up: m.header.flags.contains(LinkFlags::Up),
        oper_state: OperState::Unknown.to_string(),
        ..LinkView::default()
    };
    for a in &m.attributes {
        match a {
            LinkAttribute::IfName(n) => l.name.clone_from(n),
            LinkAttribute::Address(mac) if !mac.is_empty() => l.mac = Some(format_mac(mac)),
            LinkAttribute::Mtu(mtu) => l.mtu = *mtu,
            LinkAttribute::Controller(i) => l.master = Some(*i),
            LinkAttribute::OperState(s) => l.oper_state = OperState::from(s).to_string(),
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    match info {
                        LinkInfo::Kind(k) => l.kind = Some(k.to_string()),
                        LinkInfo::Data(InfoData::Vxlan(attrs)) => {
                            let mut v = VxlanView::default();
                            for a in attrs {
                                match a {
                                    InfoVxlan::Id(id) => v.vni = Some(*id),
                                    InfoVxlan::Link(i) => v.underlay_index = *i,
                                    InfoVxlan::Local(ip) => v.local = Some(*ip),
                                    InfoVxlan::Port(p) => v.port = *p,
                                    InfoVxlan::Learning(b) => v.learning = *b,
                                    InfoVxlan::Gbp => v.gbp = true,
                                    _ => {}
                                }
                            }
                            l.vxlan = Some(v);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    l
}

fn address(m: &AddressMessage) -> Option<IpNetwork> {
    let mut local = None;
    let mut addr = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => addr = Some(*ip),
            _ => {}
        }
    }
    IpNetwork::new(local.or(addr)?, m.header.prefix_len).ok()
}

fn read_subnet_env(path: PathBuf) -> SubnetEnvView {
    let shown = path.display().to_string();
    let mut v = SubnetEnvView { path, ..SubnetEnvView::default() };
    match std::fs::read_to_string(&v.path) {
        Err(e) => v.error = Some(format!("read {shown}: {e}")),
        Ok(text) => match SubnetEnv::parse(&text, &shown) {
            Ok(env) => {
                v.network = env.networks;
                v.subnet = env.subnet;
                v.mtu = Some(env.mtu);
                v.ipmasq = Some(env.ipmasq);
            }
            Err(e) => v.error = Some(e.to_string()),
        },
    }
    v
}

fn read_sysctl(key: &str) -> Option<u8> {
    weft_common::sysctl::get(key).ok()?.parse().ok()
}

fn read_sysctls(view: &DataplaneView) -> SysctlView {
    let mut s = SysctlView {
        ip_forward: read_sysctl("net/ipv4/ip_forward"),
        bridge_nf_call_iptables: read_sysctl("net/bridge/bridge-nf-call-iptables"),
        ..SysctlView::default()
    };
    let devs = [&view.device, &view.underlay, &view.bridge];
    let names = ["all", "default"]
        .into_iter()
        .map(String::from)
        .chain(devs.iter().filter_map(|d| d.as_ref().map(|l| l.name.clone())));
    for name in names {
        if let Some(v) = read_sysctl(&weft_common::sysctl::iface_key("ipv4", &name, "rp_filter")) {
            s.rp_filter.insert(name, v);
        }
    }
    s
}
