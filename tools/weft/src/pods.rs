//! `weft pods`: every pod attachment of this node, read from the kernel outward.
//!
//! Pod namespaces are found from the result cache (`netns` of each entry) and
//! `/var/run/netns`. A namespace is one of this node's pods when it holds a veth whose peer
//! (`IFLA_LINK` in the namespace `IFLA_LINK_NETNSID` names) lives in the namespace `weft`
//! runs in; the host end is then confirmed from the host side (its own `IFLA_LINK` and
//! `IFLA_LINK_NETNSID`, compared with `RTM_GETNSID` of the pod namespace). Each attachment is
//! matched with its cache entry and host-local reservation; what has no partner is an orphan.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipnetwork::IpNetwork;
use serde::Serialize;
use weft_common::flannel::SubnetEnv;
use weft_common::netlink::Netlink;
use weft_common::netns::NetNs;

use crate::cli::CniDirs;
use crate::firewall::{Packet, Ruleset};
use crate::kernel::{self, LinkFacts};
use crate::links::NodeLinks;
use crate::state::{self, CacheEntry, Reservation};

/// Where pod namespaces are bound by `ip netns add` (and by the lab).
pub const NETNS_DIR: &str = "/var/run/netns";

/// The host end of a pod's veth.
#[derive(Debug, Clone, Serialize)]
pub struct HostVeth {
    pub name: String,
    pub index: u32,
    pub mtu: u32,
    pub up: bool,
    pub oper_state: String,
    /// The bridge it is a port of (`None`: not enslaved).
    pub bridge: Option<String>,
    pub bridge_index: Option<u32>,
    pub port_state: Option<String>,
    pub hairpin: Option<bool>,
    /// The host end names the pod interface back (`IFLA_LINK` + `IFLA_LINK_NETNSID`).
    pub peer_confirmed: bool,
}

/// Masquerade for the pod's traffic leaving the cluster.
#[derive(Debug, Clone, Serialize)]
pub struct Masquerade {
    /// Who should masquerade: `"flanneld"` (`FLANNEL_IPMASQ=true`), `"bridge"` (`ipMasq`), or `null`.
    pub expected_by: Option<String>,
    /// A masquerade rule applies to the pod's outbound packets.
    pub present: bool,
    /// The deciding rule.
    pub rule: Option<String>,
}

/// One pod attachment.
#[derive(Debug, Clone, Serialize)]
pub struct Attachment {
    pub container_id: Option<String>,
    pub ifname: String,
    pub netns: String,
    /// The pod namespace's id in this namespace (`ip netns list-id`).
    pub nsid: Option<i32>,
    pub index: u32,
    pub mac: String,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<IpNetwork>,
    pub host_veth: Option<HostVeth>,
    pub reservations: Vec<Reservation>,
    pub cache: Option<CacheEntry>,
    /// Masquerade of the pod's IPv4 address; `None` without one.
    pub masquerade: Option<Masquerade>,
    /// The same for the pod's IPv6 address (dual stack); `None` without one.
    pub masquerade_v6: Option<Masquerade>,
    /// What does not agree (empty when healthy).
    pub problems: Vec<String>,
}

impl Attachment {
    /// The pod's first IPv4 address.
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        self.addresses.iter().find_map(|a| match a.ip() {
            IpAddr::V4(v) => Some(v),
            IpAddr::V6(_) => None,
        })
    }

    /// The pod's first address of the family `v6` selects.
    pub fn address(&self, v6: bool) -> Option<IpAddr> {
        self.addresses.iter().map(|a| a.ip()).find(|ip| ip.is_ipv6() == v6)
    }
}

/// Something left behind.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Orphan {
    /// A veth on a bridge whose pod end is in no pod namespace found.
    Veth { name: String, index: u32, bridge: Option<String> },
    /// A host-local reservation no pod interface holds.
    Reservation { path: PathBuf, ip: IpAddr, container_id: String, ifname: String },
    /// A result-cache entry with no reservation for its addresses, or no interface (its pod
    /// namespace was deleted without a CNI DEL).
    Cache { path: PathBuf, container_id: String, ifname: String, netns: Option<String>, netns_exists: bool },
}

/// The whole answer of `weft pods`.
#[derive(Debug, Clone, Serialize)]
pub struct PodsReport {
    pub pods: Vec<Attachment>,
    pub orphans: Vec<Orphan>,
    /// What could not be read.
    pub errors: Vec<String>,
}

/// Candidate pod namespace paths: the cache entries' `netns`, then `/var/run/netns/*`,
/// de-duplicated by the namespace's inode.
fn candidates(cache: &[CacheEntry]) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = cache.iter().filter_map(|c| c.netns.as_ref().map(PathBuf::from)).collect();
    if let Ok(rd) = std::fs::read_dir(NETNS_DIR) {
        let mut more: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        more.sort();
        paths.extend(more);
    }
    dedup_namespaces(paths)
}

/// The paths that exist, the first of each namespace (by device and inode) only.
fn dedup_namespaces(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut seen = BTreeSet::new();
    paths
        .into_iter()
        .filter(|p| std::fs::metadata(p).map(|m| seen.insert((m.dev(), m.ino()))).unwrap_or(false))
        .collect()
}

/// The namespace this thread runs in.
pub fn own_netns() -> std::io::Result<NetNs> {
    NetNs::open("/proc/thread-self/ns/net").map_err(std::io::Error::other)
}

/// Builds the report. Errors that stop everything (the own namespace cannot be read) are
/// `Err`; per-pod read failures land in `errors`.
pub fn collect(dirs: &CniDirs) -> Result<PodsReport, String> {
    collect_with(dirs, &Ruleset::read())
}

/// [`collect`] with the firewall rules already read.
pub fn collect_with(dirs: &CniDirs, rules: &Ruleset) -> Result<PodsReport, String> {
    let mut host = Netlink::open().map_err(|e| format!("open netlink socket: {e}"))?;
    let all = kernel::links(&mut host).map_err(|e| format!("list links of this node: {e}"))?;
    let mut node = Node::read(dirs, all)?;
    let mut pods = Vec::new();
    for path in candidates(&node.cache) {
        node.read_namespace(&path, &mut pods);
    }
    Ok(node.finish(pods, rules).0)
}

/// The attachments `names` point at (SRC and DST of `weft path`: an address, a container ID or
/// a netns path), with this node's links as read so far ([`NodeLinks`]). Only the namespaces
/// the result cache names for them are read, and only the links they name, so the cost does
/// not grow with the node's pod count. When `complete` finds
/// that read short of what it needs (no cache entry, a stale one, an entry without `netns`),
/// every namespace is read as [`collect`] does, so an attachment the cache does not know is
/// still found. Orphans are not looked for.
pub fn collect_named(
    dirs: &CniDirs,
    rules: &Ruleset,
    names: &[&str],
    complete: impl Fn(&PodsReport) -> bool,
) -> Result<(PodsReport, NodeLinks), String> {
    let links = || NodeLinks::open().map_err(|e| format!("open netlink socket: {e}"));
    let mut node = Node::read(dirs, links()?)?;
    let named: Vec<CacheEntry> =
        node.cache.iter().filter(|c| names.iter().any(|n| names_entry(n, c))).cloned().collect();
    let mut pods = Vec::new();
    if !named.is_empty() {
        for path in dedup_namespaces(named.iter().filter_map(|c| c.netns.as_ref().map(PathBuf::from))) {
            node.read_namespace(&path, &mut pods);
        }
        let found = node.finish(pods, rules);
        if complete(&found.0) {
            return Ok(found);
        }
        node = Node::read(dirs, links()?)?;
        pods = Vec::new();
    }
    for path in candidates(&node.cache) {
        node.read_namespace(&path, &mut pods);
    }
    Ok(node.finish(pods, rules))
}

/// Whether cache entry `c` is the attachment `name` names: one of its addresses, its
/// container ID, or its namespace.
fn names_entry(name: &str, c: &CacheEntry) -> bool {
    if let Ok(ip) = name.parse::<IpAddr>() {
        return c.ips.iter().any(|i| i.ip() == ip);
    }
    if name.starts_with('/') {
        return c.netns.as_deref().is_some_and(|n| same_path(n, Path::new(name)));
    }
    c.container_id == name
}

/// Where a pods read finds this node's links: all of them, listed once (`weft pods`, which
/// looks for orphans among them), or each asked for as an attachment names it (`weft path`).
trait HostLinks {
    fn get(&self, index: u32) -> Option<LinkFacts>;
    /// Every link, when they were all listed.
    fn all(&self) -> Option<&[LinkFacts]>;
}

impl HostLinks for Vec<LinkFacts> {
    fn get(&self, index: u32) -> Option<LinkFacts> {
        self.iter().find(|l| l.index == index).cloned()
    }
    fn all(&self) -> Option<&[LinkFacts]> {
        Some(self)
    }
}

impl HostLinks for NodeLinks {
    fn get(&self, index: u32) -> Option<LinkFacts> {
        NodeLinks::get(self, index)
    }
    fn all(&self) -> Option<&[LinkFacts]> {
        None
    }
}

/// What a pods read needs besides the pod namespaces: the CNI state on disk and this node's
/// namespace, links and netlink socket.
struct Node<L> {
    cache: Vec<CacheEntry>,
    reservations: Vec<Reservation>,
    subnet_env: Option<SubnetEnv>,
    own: NetNs,
    host: Netlink,
    host_links: L,
    errors: Vec<String>,
}

impl<L: HostLinks> Node<L> {
    fn read(dirs: &CniDirs, host_links: L) -> Result<Node<L>, String> {
        let mut errors = Vec::new();
        let cache = state::read_cache(&dirs.cni_cache_dir, &mut errors);
        let reservations = state::read_reservations(&dirs.ipam_data_dir, &mut errors);
        let subnet_env = SubnetEnv::read(&dirs.subnet_file).ok();
        let own = own_netns().map_err(|e| format!("open own network namespace: {e}"))?;
        let host = Netlink::open().map_err(|e| format!("open netlink socket: {e}"))?;
        Ok(Node { cache, reservations, subnet_env, own, host, host_links, errors })
    }

    /// Adds the attachments of the namespace at `path`: its veths whose peer is in ours.
    fn read_namespace(&mut self, path: &Path, pods: &mut Vec<Attachment>) {
        let Ok(ns) = NetNs::open(path) else { return };
        let Ok(mut nl) = Netlink::open_in(&ns) else { return };
        // The id the pod namespace gives ours: no id, no veth to us.
        let Ok(Some(our_id)) = kernel::nsid_of(&mut nl, &self.own) else { return };
        let Ok(links) = kernel::links(&mut nl) else {
            self.errors.push(format!("list links in {}", path.display()));
            return;
        };
        let nsid = kernel::nsid_of(&mut self.host, &ns).ok().flatten();
        for l in links.iter().filter(|l| l.is_veth() && l.link_netnsid == Some(our_id)) {
            let addresses = match nl.addresses(Some(l.index)) {
                Ok(a) => a.into_iter().filter(|a| a.is_global()).map(|a| a.address).collect(),
                Err(e) => {
                    self.errors.push(format!("list addresses of {} in {}: {e}", l.name, path.display()));
                    Vec::new()
                }
            };
            let host_veth = l
                .link
                .and_then(|i| self.host_links.get(i))
                .map(|h| host_veth(&h, l, nsid, h.master.and_then(|m| self.host_links.get(m))));
            pods.push(Attachment {
                container_id: None,
                ifname: l.name.clone(),
                netns: path.display().to_string(),
                nsid,
                index: l.index,
                mac: l.mac.clone(),
                mtu: l.mtu,
                up: l.up,
                addresses,
                host_veth,
                reservations: Vec::new(),
                cache: None,
                masquerade: None,
                masquerade_v6: None,
                problems: Vec::new(),
            });
        }
    }

    /// Matches the attachments with the CNI state, checks them and (when every link was
    /// listed) lists what has no partner; also hands back this node's links.
    fn finish(self, mut pods: Vec<Attachment>, rules: &Ruleset) -> (PodsReport, L) {
        for a in &mut pods {
            match_state(a, &self.cache, &self.reservations);
        }
        // A veth to this node that is no bridge port and matches no CNI state is not a pod
        // attachment (the underlay link of a node, a hand-made pair).
        pods.retain(|a| {
            a.host_veth.as_ref().is_some_and(|h| h.bridge.is_some())
                || a.cache.is_some()
                || !a.reservations.is_empty()
        });
        pods.sort_by(|a, b| (&a.netns, &a.ifname).cmp(&(&b.netns, &b.ifname)));
        for a in &mut pods {
            check(a, self.subnet_env.as_ref(), rules);
        }
        let orphans = match self.host_links.all() {
            Some(all) => find_orphans(&pods, all, &self.cache, &self.reservations),
            None => Vec::new(),
        };
        (PodsReport { pods, orphans, errors: self.errors }, self.host_links)
    }
}

fn host_veth(h: &LinkFacts, pod: &LinkFacts, nsid: Option<i32>, bridge: Option<LinkFacts>) -> HostVeth {
    HostVeth {
        name: h.name.clone(),
        index: h.index,
        mtu: h.mtu,
        up: h.up,
        oper_state: h.oper_state.clone(),
        bridge: bridge.map(|b| b.name.clone()),
        bridge_index: h.master,
        port_state: h.port_state.clone(),
        hairpin: h.hairpin,
        peer_confirmed: h.link == Some(pod.index) && nsid.is_some() && h.link_netnsid == nsid,
    }
}

fn same_path(a: &str, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => Path::new(a) == b,
    }
}

fn match_state(a: &mut Attachment, cache: &[CacheEntry], reservations: &[Reservation]) {
    let ips: Vec<IpAddr> = a.addresses.iter().map(IpNetwork::ip).collect();
    let netns = PathBuf::from(&a.netns);
    a.cache = cache
        .iter()
        .find(|c| c.ifname == a.ifname && c.netns.as_deref().is_some_and(|n| same_path(n, &netns)))
        .or_else(|| {
            cache.iter().find(|c| c.ifname == a.ifname && c.ips.iter().any(|i| ips.contains(&i.ip())))
        })
        .cloned();
    a.reservations = reservations.iter().filter(|r| ips.contains(&r.ip)).cloned().collect();
    a.container_id = a
        .cache
        .as_ref()
        .map(|c| c.container_id.clone())
        .or_else(|| a.reservations.first().map(|r| r.container_id.clone()));
}

fn check(a: &mut Attachment, subnet_env: Option<&SubnetEnv>, rules: &Ruleset) {
    let mut problems = Vec::new();
    match &a.host_veth {
        None => problems.push("host end of the veth not found".to_string()),
        Some(h) => {
            if !h.peer_confirmed {
                problems.push(format!("host veth {} does not name the pod interface back", h.name));
            }
            if h.bridge.is_none() {
                problems.push(format!("host veth {} is not a bridge port", h.name));
            }
            let want_hairpin =
                a.cache.as_ref().and_then(|c| c.config.as_ref()).is_some_and(state::bridge_hairpin);
            if want_hairpin && h.hairpin == Some(false) {
                problems.push(format!(
                    "hairpin mode is off on {} but the network config asks for it (HAIRPIN_OFF)",
                    h.name
                ));
            }
            if !h.up || h.port_state.as_deref().is_some_and(|s| s != "forwarding") {
                problems.push(format!(
                    "host veth {} is {} (port {})",
                    h.name,
                    if h.up { "up" } else { "down" },
                    h.port_state.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    if a.addresses.is_empty() {
        problems.push("no address on the pod interface".into());
    }
    if a.cache.is_none() {
        problems.push("no result-cache entry".into());
    }
    for ip in a.addresses.iter().map(IpNetwork::ip) {
        match a.reservations.iter().find(|r| r.ip == ip) {
            None => problems.push(format!("no host-local reservation for {ip}")),
            Some(r) => {
                if let Some(c) = &a.container_id {
                    if &r.container_id != c {
                        problems.push(format!(
                            "reservation {} belongs to {}, not {c}",
                            r.path.display(),
                            r.container_id
                        ));
                    }
                }
                if !r.ifname.is_empty() && r.ifname != a.ifname {
                    problems.push(format!("reservation {} names interface {}", r.path.display(), r.ifname));
                }
            }
        }
    }
    a.masquerade = masquerade(a, subnet_env, rules, false);
    a.masquerade_v6 = masquerade(a, subnet_env, rules, true);
    for (m, family) in [(&a.masquerade, "IPv4"), (&a.masquerade_v6, "IPv6")] {
        if let Some(m) = m.as_ref().filter(|m| m.expected_by.is_some() && !m.present) {
            problems.push(format!(
                "{family} masquerade expected (by {}) but no rule applies",
                m.expected_by.as_deref().unwrap_or("")
            ));
        }
    }
    a.problems = problems;
}

/// Addresses outside every private and cluster range, for asking "would this be masqueraded"
/// (documentation ranges: RFC 5737, RFC 3849).
const OUTSIDE_PROBE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const OUTSIDE_PROBE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// The masquerade of the pod's address of the family `v6` selects: flanneld's (`-ip-masq`,
/// for IPv6 only with an IPv6 network) or the bridge plugin's (`ipMasq`, every address).
fn masquerade(
    a: &Attachment,
    subnet_env: Option<&SubnetEnv>,
    rules: &Ruleset,
    v6: bool,
) -> Option<Masquerade> {
    let src = a.address(v6)?;
    let flanneld = subnet_env.is_some_and(|s| s.ipmasq && (!v6 || !s.ipv6_networks.is_empty()));
    let bridge =
        a.cache.as_ref().and_then(|c| c.config.as_ref()).is_some_and(|c| state::bridge_ipmasq(c, flanneld));
    let expected_by = if flanneld {
        Some("flanneld".to_string())
    } else if bridge {
        Some("bridge".to_string())
    } else {
        None
    };
    let dst = if v6 { IpAddr::V6(OUTSIDE_PROBE_V6) } else { IpAddr::V4(OUTSIDE_PROBE) };
    let v = rules.postrouting(&Packet { src, dst, iif: None, oif: None });
    let present = v.masquerades();
    Some(Masquerade { expected_by, present, rule: v.rule.filter(|_| present) })
}

fn find_orphans(
    pods: &[Attachment],
    host_links: &[LinkFacts],
    cache: &[CacheEntry],
    reservations: &[Reservation],
) -> Vec<Orphan> {
    let mut out = Vec::new();
    let used: BTreeSet<u32> = pods.iter().filter_map(|p| p.host_veth.as_ref().map(|h| h.index)).collect();
    for l in host_links.iter().filter(|l| l.is_veth() && l.master.is_some() && !used.contains(&l.index)) {
        let bridge = l.master.and_then(|m| host_links.iter().find(|b| b.index == m)).map(|b| b.name.clone());
        out.push(Orphan::Veth { name: l.name.clone(), index: l.index, bridge });
    }
    let held: BTreeSet<IpAddr> = pods.iter().flat_map(|p| p.addresses.iter().map(IpNetwork::ip)).collect();
    for r in reservations.iter().filter(|r| !held.contains(&r.ip)) {
        out.push(Orphan::Reservation {
            path: r.path.clone(),
            ip: r.ip,
            container_id: r.container_id.clone(),
            ifname: r.ifname.clone(),
        });
    }
    for c in cache {
        let reserved = !c.ips.is_empty()
            && c.ips
                .iter()
                .all(|i| reservations.iter().any(|r| r.ip == i.ip() && r.container_id == c.container_id));
        let attached = pods.iter().any(|p| p.cache.as_ref().is_some_and(|pc| pc.path == c.path));
        if !reserved || !attached {
            out.push(Orphan::Cache {
                path: c.path.clone(),
                container_id: c.container_id.clone(),
                ifname: c.ifname.clone(),
                netns: c.netns.clone(),
                netns_exists: c.netns.as_deref().is_some_and(|n| Path::new(n).exists()),
            });
        }
    }
    out
}

/// The table's masquerade cell: `yes`, `MISSING` or `-`; `<IPv4>/<IPv6>` for a dual-stack pod.
fn masq_cell(v4: &Option<Masquerade>, v6: &Option<Masquerade>) -> String {
    let one = |m: &Option<Masquerade>| match m {
        Some(m) if m.present => "yes",
        Some(m) if m.expected_by.is_some() => "MISSING",
        _ => "-",
    };
    match v6 {
        None => one(v4).to_string(),
        Some(_) => format!("{}/{}", one(v4), one(v6)),
    }
}

/// The table `weft pods` prints.
pub fn render_table(r: &PodsReport) -> String {
    let mut rows = vec![[
        "CONTAINER".to_string(),
        "IF".into(),
        "NETNS".into(),
        "NSID".into(),
        "ADDRESS".into(),
        "MTU".into(),
        "HOST VETH".into(),
        "BRIDGE".into(),
        "PORT".into(),
        "RESERVED".into(),
        "CACHED".into(),
        "MASQ".into(),
    ]];
    for p in &r.pods {
        let h = p.host_veth.as_ref();
        rows.push([
            p.container_id.clone().unwrap_or_else(|| "-".into()),
            p.ifname.clone(),
            p.netns.clone(),
            p.nsid.map(|n| n.to_string()).unwrap_or_else(|| "-".into()),
            p.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            p.mtu.to_string(),
            h.map(|h| format!("{}@{}", h.name, h.index)).unwrap_or_else(|| "-".into()),
            h.and_then(|h| h.bridge.clone()).unwrap_or_else(|| "-".into()),
            h.map(|h| {
                format!("{}{}", if h.up { "" } else { "down," }, h.port_state.as_deref().unwrap_or("-"))
            })
            .unwrap_or_else(|| "-".into()),
            if p.reservations.is_empty() { "no".into() } else { "yes".into() },
            if p.cache.is_some() { "yes".into() } else { "no".into() },
            masq_cell(&p.masquerade, &p.masquerade_v6),
        ]);
    }
    let mut widths = [0usize; 12];
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:w$}")).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    for p in &r.pods {
        for problem in &p.problems {
            out.push_str(&format!(
                "! {} {}: {problem}\n",
                p.container_id.as_deref().unwrap_or("-"),
                p.ifname
            ));
        }
    }
    if !r.orphans.is_empty() {
        out.push_str("\norphans:\n");
        for o in &r.orphans {
            let line = match o {
                Orphan::Veth { name, index, bridge } => {
                    format!(
                        "  veth        {name}@{index} on {} (no pod namespace holds its peer)",
                        bridge.as_deref().unwrap_or("-")
                    )
                }
                Orphan::Reservation { path, ip, container_id, .. } => {
                    format!(
                        "  reservation {ip} of {container_id} ({}): no pod interface holds it",
                        path.display()
                    )
                }
                Orphan::Cache { path, container_id, netns, netns_exists, .. } => format!(
                    "  cache       {container_id} ({}): no live attachment; netns {} {}",
                    path.display(),
                    netns.as_deref().unwrap_or("-"),
                    if *netns_exists { "exists" } else { "is gone" }
                ),
            };
            out.push_str(&line);
            out.push('\n');
        }
    }
    for e in &r.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out
}
