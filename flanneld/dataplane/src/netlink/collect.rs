//! Collecting a [`DataplaneView`] from the kernel of the calling thread's network namespace:
//! links, addresses, neighbours and FDB entries of the VXLAN device (and of `flannel-v6.<VNI>`
//! on a dual-stack node), the external interface's neighbours, main-table routes, the
//! forwarding sysctls, subnet.env and (when asked) the filter rules. Read-only. Nothing here fails as a whole: what cannot be
//! read is named in [`DataplaneView::errors`] and the rest is still reported.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnetwork::IpNetwork;
use netlink_packet_route::link::{
    InfoData, InfoVxlan, LinkAttribute, LinkExtentMask, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use weft_common::firewall::listing::{legacy_in_use, legacy_save_tool, Listing};
use weft_common::flannel::SubnetEnv;
use weft_common::mac::format_mac;
use weft_common::netlink::OperState;

use nix::errno::Errno;

use super::NetlinkDataplane;
use crate::view::{
    inside, DataplaneView, FdbView, FirewallView, FlanneldFacts, LinkView, NeighView, RouteView,
    SubnetEnvView, SysctlView, VxlanView, VIEW_VERSION,
};
use crate::DataplaneError;

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
    /// Also read the filter rules (as `iptables-save -t filter`, `ip6tables-save -t filter` and
    /// `nft -j list ruleset` print them) into [`DataplaneView::firewall`], in-process (see
    /// [`start_firewall_read`]).
    pub firewall: bool,
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
    let firewall = input.firewall.then(start_firewall_read);

    match NetlinkDataplane::new() {
        Ok(nl) => collect_kernel(&nl, input, &device_name, &bridge_name, &mut view).await,
        Err(e) => view.errors.push(format!("open netlink socket: {e}")),
    }
    view.sysctls = read_sysctls(&view);
    view.firewall = match firewall {
        None => None,
        Some(FirewallRead::Done(fw)) => Some(fw),
        Some(FirewallRead::Tools(read)) => Some(read.await.unwrap_or_else(|e| FirewallView {
            errors: vec![format!("read firewall rules: {e}")],
            ..FirewallView::default()
        })),
    };
    view
}

const IPTABLES_FILTER: [&str; 3] = ["iptables-save", "-t", "filter"];
const IP6TABLES_FILTER: [&str; 3] = ["ip6tables-save", "-t", "filter"];
const NFT_RULESET: [&str; 4] = ["nft", "-j", "list", "ruleset"];

/// Reads the filter rules of the calling thread's network namespace: nf_tables in-process over
/// netlink (iptables-nft's `filter` tables shown as `iptables-save -t filter` prints them, the
/// whole ruleset in `nft -j list ruleset`'s shape; see `weft_common::firewall::listing`), and
/// with `iptables-legacy-save -t filter` / `ip6tables-legacy-save -t filter` only a family whose
/// rules the legacy x_tables backend holds (or everything with `iptables-save`,
/// `ip6tables-save` and `nft` when the netlink read fails). A tool is waited for on the blocking pool while the caller goes on with the netlink
/// dumps. The rules are read afresh for every request, never cached: `weft path` is run right
/// after a rule was changed by hand to see whether that fixed the path, and a cached copy would
/// answer with the rules from before (flanneld's `-iptables-resync` only re-checks its own
/// rules, it is no bound on what an operator changes). A caller that does not judge FORWARD
/// asks for a view without them instead (`?firewall=0`, `flanneld/src/debug.rs`). The blocking
/// task owns the children, so they are reaped even when the request is dropped half-way.
fn start_firewall_read() -> FirewallRead {
    let listing = Listing::read();
    let tools = listing.is_err();
    if let (Ok(l), false, false) = (&listing, legacy_in_use(false), legacy_in_use(true)) {
        // The usual case: no process to wait for, and no thread to hand the work to.
        return FirewallRead::Done(FirewallView {
            iptables_filter: Some(l.iptables_save(false, Some("filter"))),
            ip6tables_filter: Some(l.iptables_save(true, Some("filter"))),
            nft: Some(l.nft_json(false)),
            errors: Vec::new(),
        });
    }
    let legacy = |v6: bool| [legacy_save_tool(v6), "-t", "filter"];
    let (argv4, argv6) = match tools {
        true => (IPTABLES_FILTER, IP6TABLES_FILTER),
        false => (legacy(false), legacy(true)),
    };
    let iptables = (tools || legacy_in_use(false)).then(|| start_tool(&argv4));
    let ip6tables = (tools || legacy_in_use(true)).then(|| start_tool(&argv6));
    let nft = tools.then(|| start_tool(&NFT_RULESET));
    FirewallRead::Tools(tokio::task::spawn_blocking(move || {
        let mut fw = FirewallView::default();
        if let Err(e) = &listing {
            fw.errors.push(format!("read nf_tables over netlink: {e}"));
        }
        let listing = listing.ok();
        let saved = |child: Option<Result<std::process::Child, String>>, argv: &[&str], v6: bool| match child
        {
            Some(child) => tool_output(child, argv),
            None => Ok(listing.as_ref().map(|l| l.iptables_save(v6, Some("filter"))).unwrap_or_default()),
        };
        match saved(iptables, &argv4, false) {
            Ok(t) => fw.iptables_filter = Some(t),
            Err(e) => fw.errors.push(e),
        }
        match saved(ip6tables, &argv6, true) {
            Ok(t) => fw.ip6tables_filter = Some(t),
            Err(e) => fw.errors.push(e),
        }
        match (nft, &listing) {
            (Some(child), _) => match tool_output(child, &NFT_RULESET) {
                Ok(t) => match serde_json::from_str(&t) {
                    Ok(v) => fw.nft = Some(v),
                    Err(e) => fw.errors.push(format!("nft -j list ruleset: not JSON: {e}")),
                },
                Err(e) => fw.errors.push(e),
            },
            (None, Some(l)) => fw.nft = Some(l.nft_json(false)),
            (None, None) => {}
        }
        fw
    }))
}

/// The filter rules, read already, or a tool still to be waited for.
enum FirewallRead {
    Done(FirewallView),
    Tools(tokio::task::JoinHandle<FirewallView>),
}

/// Starts a system tool with its output piped; why not if it cannot be started.
fn start_tool(argv: &[&str]) -> Result<std::process::Child, String> {
    let (cmd, args) = argv.split_first().ok_or_else(|| "no command".to_string())?;
    std::process::Command::new(cmd)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", argv.join(" ")))
}

/// A started tool's standard output once it succeeded, else why not.
fn tool_output(child: Result<std::process::Child, String>, argv: &[&str]) -> Result<String, String> {
    let out = child?.wait_with_output().map_err(|e| format!("{}: {e}", argv.join(" ")))?;
    if !out.status.success() {
        return Err(format!("{}: {}", argv.join(" "), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn collect_kernel(
    nl: &NetlinkDataplane,
    input: &ViewInput,
    device_name: &str,
    bridge_name: &str,
    view: &mut DataplaneView,
) {
    // The links the view names, each asked for by name or index: a node's pod veths (one per
    // pod) are never read, so a request costs the same on a node with 100 pods as with one.
    let mut links = Links::default();
    view.device = match links.named(nl, device_name).await {
        Ok(Some(d)) => Some(d),
        Ok(None) => {
            if device_expected(input) {
                view.errors.push(format!("link {device_name}: not found"));
            }
            None
        }
        Err(e) => {
            view.errors.push(format!("get link {device_name}: {e}"));
            return;
        }
    };
    view.device_v6 = match v6_device_name(input) {
        Some(name) => links.named(nl, &name).await.unwrap_or_else(|e| {
            view.errors.push(format!("get link {name}: {e}"));
            None
        }),
        None => any_v6_device(nl, &mut view.errors).await,
    };
    let underlay_index = input
        .underlay_index
        .or_else(|| view.flanneld.as_ref()?.underlay_index)
        .or_else(|| view.device.as_ref()?.vxlan.as_ref().map(|v| v.underlay_index))
        .filter(|i| *i != 0);
    view.underlay = match underlay_index {
        Some(i) => links.indexed(nl, i).await.unwrap_or_else(|e| {
            view.errors.push(format!("get link {i}: {e}"));
            None
        }),
        None => None,
    };
    view.bridge = links.named(nl, bridge_name).await.unwrap_or_else(|e| {
        view.errors.push(format!("get link {bridge_name}: {e}"));
        None
    });
    // Addresses, neighbours and FDB entries are asked for per link, on a socket with strict
    // checking, where the kernel filters dumps by link: a node's pods add an IPv6 link-local
    // address, ARP entries and bridge FDB entries each, none of which the view shows.
    let mut per_link = match LinkScoped::open() {
        Ok(s) => s,
        Err(e) => {
            view.errors.push(e);
            return;
        }
    };
    for l in
        [&mut view.device, &mut view.device_v6, &mut view.underlay, &mut view.bridge].into_iter().flatten()
    {
        match per_link.addresses(l.index) {
            Ok(a) => l.addresses = a,
            Err(e) => view.errors.push(e),
        }
        if let Some(i) = l.vxlan.as_ref().map(|v| v.underlay_index) {
            let name = links.name_of(nl, i).await;
            if let Some(v) = l.vxlan.as_mut() {
                v.underlay = name;
            }
        }
    }

    let dev_index = view.device.as_ref().map(|d| d.index);
    let v6_index = view.device_v6.as_ref().map(|d| d.index);
    let underlay_index = view.underlay.as_ref().map(|d| d.index);
    // IPv4 neighbours: the device's (flanneld's entries) and the external interface's (ARP;
    // with host-gw the peers' PublicIPs, docs/flannel.md §4.2).
    if let Some(i) = dev_index {
        match per_link.neighbours(AddressFamily::Inet, i) {
            Ok(msgs) => view.neighbours.extend(msgs.iter().filter_map(device_neigh)),
            Err(e) => view.errors.push(e),
        }
    }
    if let Some(i) = underlay_index {
        match per_link.neighbours(AddressFamily::Inet, i) {
            Ok(msgs) => view.underlay_neighbours.extend(msgs.iter().filter_map(any_neigh)),
            Err(e) => view.errors.push(e),
        }
    }
    if let Some(i) = v6_index {
        match per_link.neighbours(AddressFamily::Inet6, i) {
            Ok(msgs) => view.neighbours_v6.extend(msgs.iter().filter_map(device_neigh)),
            Err(e) => view.errors.push(e),
        }
    }
    for (index, fdb) in [(dev_index, &mut view.fdb), (v6_index, &mut view.fdb_v6)] {
        let Some(i) = index else { continue };
        match per_link.neighbours(AddressFamily::Bridge, i) {
            Ok(msgs) => fdb.extend(msgs.iter().filter_map(super::msg::parse_fdb).map(|k| FdbView {
                mac: format_mac(&k.mac),
                dst: Some(k.dst),
                self_: k.self_,
                permanent: k.permanent,
            })),
            Err(e) => view.errors.push(e),
        }
    }
    // host-gw has no device: its peer routes (inside the cluster network) are still listed.
    let network = view.network().map(IpNetwork::V4);
    view.routes =
        collect_routes(nl, AddressFamily::Inet, dev_index, network, &mut links, &mut view.errors).await;
    let network6 = view.flanneld.as_ref().and_then(|f| f.network_v6).map(IpNetwork::V6);
    if v6_index.is_some() || network6.is_some() {
        view.routes_v6 =
            collect_routes(nl, AddressFamily::Inet6, v6_index, network6, &mut links, &mut view.errors).await;
    }
}

/// flanneld's device is expected unless flanneld has read its config and wants none
/// (host-gw, docs/flannel.md §4.2), or the caller named one.
fn device_expected(input: &ViewInput) -> bool {
    input.device.is_some()
        || input.facts.as_ref().is_none_or(|f| f.network.is_none() || f.expected_device.is_some())
}

/// `flannel-v6.<VNI>`, the VNI of flanneld's device or lease (docs/flannel.md §4.1); `None`
/// when flanneld's facts name neither.
fn v6_device_name(input: &ViewInput) -> Option<String> {
    let f = input.facts.as_ref()?;
    let vni = f
        .expected_device
        .as_ref()
        .map(|d| d.vni)
        .or_else(|| f.lease.as_ref().map(|l| l.vni).filter(|v| *v != 0))?;
    Some(format!("flannel-v6.{vni}"))
}

/// Without a VNI to go by: any VXLAN link named `flannel-v6.*` (this needs every link).
async fn any_v6_device(nl: &NetlinkDataplane, errors: &mut Vec<String>) -> Option<LinkView> {
    match nl.dump_req(RouteNetlinkMessage::GetLink(skip_stats(LinkMessage::default())), "links").await {
        Ok(msgs) => msgs.iter().find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_view(l)).filter(is_v6_device),
            _ => None,
        }),
        Err(e) => {
            errors.push(format!("dump links: {e}"));
            None
        }
    }
}

/// A VXLAN link named like flanneld's IPv6 device.
fn is_v6_device(l: &LinkView) -> bool {
    l.name.starts_with("flannel-v6.") && l.kind.as_deref() == Some("vxlan")
}

/// A link request without the counters (`RTEXT_FILTER_SKIP_STATS`): the view shows none.
fn skip_stats(mut q: LinkMessage) -> LinkMessage {
    q.attributes.push(LinkAttribute::ExtMask(vec![LinkExtentMask::SkipStats]));
    q
}

/// The links read for one view, by index; names of other links (a route's output device) are
/// asked for once each.
#[derive(Default)]
struct Links {
    by_index: BTreeMap<u32, Option<LinkView>>,
}

impl Links {
    /// The link named `name`; `None` when there is none (`ENODEV`).
    async fn named(&mut self, nl: &NetlinkDataplane, name: &str) -> Result<Option<LinkView>, DataplaneError> {
        let mut q = LinkMessage::default();
        q.attributes.push(LinkAttribute::IfName(name.to_string()));
        let found = self.get(nl, q).await?;
        if let Some(l) = &found {
            self.by_index.insert(l.index, Some(l.clone()));
        }
        Ok(found)
    }

    /// The link with ifindex `index`; `None` when there is none.
    async fn indexed(
        &mut self,
        nl: &NetlinkDataplane,
        index: u32,
    ) -> Result<Option<LinkView>, DataplaneError> {
        if let Some(known) = self.by_index.get(&index) {
            return Ok(known.clone());
        }
        let mut q = LinkMessage::default();
        q.header.index = index;
        let found = self.get(nl, q).await?;
        self.by_index.insert(index, found.clone());
        Ok(found)
    }

    /// The name of link `index`, if it can be read.
    async fn name_of(&mut self, nl: &NetlinkDataplane, index: u32) -> Option<String> {
        self.indexed(nl, index).await.ok().flatten().map(|l| l.name)
    }

    async fn get(
        &mut self,
        nl: &NetlinkDataplane,
        q: LinkMessage,
    ) -> Result<Option<LinkView>, DataplaneError> {
        match nl.get(RouteNetlinkMessage::GetLink(skip_stats(q)), 0, "link").await {
            Ok(msgs) => Ok(msgs.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(link_view(l)),
                _ => None,
            })),
            Err(DataplaneError::Netlink { errno: Some(Errno::ENODEV), .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Dumps the kernel filters to one link: a socket of its own with strict checking
/// (`NETLINK_GET_STRICT_CHK`), which the dataplane's asynchronous one does not set (its
/// reconciliation reads whole tables).
struct LinkScoped {
    nl: weft_common::netlink::Netlink,
}

impl LinkScoped {
    fn open() -> Result<LinkScoped, String> {
        weft_common::netlink::Netlink::open()
            .map(|nl| LinkScoped { nl })
            .map_err(|e| format!("open netlink socket: {e}"))
    }

    /// The addresses of link `index`.
    fn addresses(&mut self, index: u32) -> Result<Vec<IpNetwork>, String> {
        let addrs = self.nl.addresses(Some(index)).map_err(|e| format!("dump addresses: {e}"))?;
        Ok(addrs.into_iter().map(|a| a.address).collect())
    }

    /// Neighbour entries (`Inet`, `Inet6`) or FDB entries (`Bridge`) of link `index`.
    fn neighbours(&mut self, family: AddressFamily, index: u32) -> Result<Vec<NeighbourMessage>, String> {
        let what = if family == AddressFamily::Bridge { "fdb" } else { "neighbours" };
        self.nl.neighbours_of(family, index).map_err(|e| format!("dump {what}: {e}"))
    }
}

/// A neighbour of flanneld's device (with a MAC, as the reconciler dumps it).
fn device_neigh(n: &NeighbourMessage) -> Option<NeighView> {
    let k = super::msg::parse_neigh(n)?;
    Some(NeighView {
        ip: k.ip,
        mac: Some(format_mac(&k.mac)),
        state: nud_names(u16::from(n.header.state)),
        permanent: k.permanent,
    })
}

/// Any neighbour entry with an address, with or without a MAC (FAILED and INCOMPLETE
/// entries have none).
fn any_neigh(n: &NeighbourMessage) -> Option<NeighView> {
    let mut ip = None;
    let mut mac = None;
    for a in &n.attributes {
        match a {
            NeighbourAttribute::Destination(NeighbourAddress::Inet(v4)) => ip = Some(IpAddr::V4(*v4)),
            NeighbourAttribute::Destination(NeighbourAddress::Inet6(v6)) => ip = Some(IpAddr::V6(*v6)),
            NeighbourAttribute::LinkLayerAddress(l) if !l.is_empty() => mac = Some(format_mac(l)),
            _ => {}
        }
    }
    let state = u16::from(n.header.state);
    Some(NeighView { ip: ip?, mac, state: nud_names(state), permanent: state & 0x80 != 0 })
}

/// Main-table routes of `family` on the device `dev` or inside `network` (the cluster network
/// of that family).
async fn collect_routes(
    nl: &NetlinkDataplane,
    family: AddressFamily,
    dev: Option<u32>,
    network: Option<IpNetwork>,
    links: &mut Links,
    errors: &mut Vec<String>,
) -> Vec<RouteView> {
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
                    let name = match k.oif {
                        Some(i) => links.name_of(nl, i).await,
                        None => None,
                    };
                    routes.push(RouteView::of(&k, name));
                }
            }
        }
        Err(e) => errors.push(format!("dump routes ({family:?}): {e}")),
    }
    routes
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
                                    InfoVxlan::Local6(ip) => v.local6 = Some(*ip),
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
        ipv6_forwarding: read_sysctl("net/ipv6/conf/all/forwarding"),
        ..SysctlView::default()
    };
    let devs = [&view.device, &view.underlay, &view.bridge, &view.device_v6];
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::{DeviceSpecView, LeaseView};
    use netlink_packet_route::neighbour::NeighbourState;

    fn link(name: &str, index: u32, kind: &str) -> LinkView {
        LinkView { name: name.into(), index, kind: Some(kind.into()), ..LinkView::default() }
    }

    fn facts(network: bool, device: bool, vni: u32) -> FlanneldFacts {
        FlanneldFacts {
            network: network.then(|| "10.5.0.0/16".parse().unwrap()),
            expected_device: device.then(|| DeviceSpecView {
                name: format!("flannel.{vni}"),
                vni,
                port: 0,
                local: "198.18.0.2".parse().unwrap(),
                underlay_index: 2,
                mtu: 1450,
                gbp: false,
                learning: false,
                address: "10.5.1.0/32".parse().unwrap(),
            }),
            ..FlanneldFacts::default()
        }
    }

    #[test]
    fn a_missing_device_is_an_error_unless_flanneld_wants_none() {
        let with = |f: Option<FlanneldFacts>, device: Option<&str>| ViewInput {
            facts: f,
            device: device.map(String::from),
            ..ViewInput::default()
        };
        // host-gw: the config is read and flanneld expects no device.
        assert!(!device_expected(&with(Some(facts(true, false, 0)), None)));
        // vxlan, before the config is read, without flanneld, or named by the caller: expected.
        assert!(device_expected(&with(Some(facts(true, true, 1)), None)));
        assert!(device_expected(&with(Some(facts(false, false, 0)), None)));
        assert!(device_expected(&with(None, None)));
        assert!(device_expected(&with(Some(facts(true, false, 0)), Some("flannel.1"))));
    }

    #[test]
    fn the_v6_device_is_found_by_flanneld_vni_or_by_name() {
        let input = |f| ViewInput { facts: f, ..ViewInput::default() };
        assert_eq!(v6_device_name(&input(Some(facts(true, true, 9)))).as_deref(), Some("flannel-v6.9"));
        let mut by_lease = facts(true, false, 0);
        by_lease.lease = Some(LeaseView {
            key: "k".into(),
            subnet: "10.5.1.0/24".parse().unwrap(),
            public_ip: "198.18.0.2".parse().unwrap(),
            vtep_mac: String::new(),
            vni: 7,
            etcd_revision: 1,
            etcd_lease: 0,
        });
        assert_eq!(v6_device_name(&input(Some(by_lease))).as_deref(), Some("flannel-v6.7"));
        // Without flanneld's VNI: any VXLAN link of that name pattern.
        assert_eq!(v6_device_name(&input(None)), None);
        assert!(is_v6_device(&link("flannel-v6.7", 6, "vxlan")));
        assert!(!is_v6_device(&link("flannel.7", 5, "vxlan")));
        assert!(!is_v6_device(&link("flannel-v6.7", 6, "bridge")));
    }

    #[test]
    fn underlay_neighbours_keep_entries_without_a_mac() {
        let mut n = NeighbourMessage::default();
        n.header.family = AddressFamily::Inet;
        n.header.state = NeighbourState::Failed;
        n.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet("198.18.0.3".parse().unwrap())));
        let v = any_neigh(&n).unwrap();
        assert_eq!((v.mac, v.state.as_str(), v.permanent), (None, "failed", false));
        assert_eq!(device_neigh(&n), None);
        n.header.state = NeighbourState::Reachable;
        n.attributes.push(NeighbourAttribute::LinkLayerAddress(vec![2, 0, 0, 0, 0, 3]));
        let v = any_neigh(&n).unwrap();
        assert_eq!((v.mac.as_deref(), v.state.as_str()), (Some("02:00:00:00:00:03"), "reachable"));
        n.attributes.clear();
        assert_eq!(any_neigh(&n), None);
    }
}
