//! `weft path SRC DST`: the hops a packet from a pod of this node takes, each asked of the
//! kernel that decides it, and the first broken link.
//!
//! Every hop carries two truths: `object`, the kernel object found (link, route answer,
//! neighbour, FDB entry, sysctl, rule), and `source`, where it should have come from (CNI
//! cache file, host-local reservation, subnet.env, the lease with its etcd key and revision,
//! the remote flanneld's view). Routing decisions are the kernel's own answers to
//! `RTM_GETROUTE` (in the pod namespace; then on the node with `iif <bridge>` and `from
//! <pod>`, which applies policy rules, `rp_filter` and forwarding); nothing is re-implemented
//! but the firewall walk (see [`crate::firewall`]).

use std::net::IpAddr;
use std::path::Path;

use ipnetwork::IpNetwork;
use serde::Serialize;
use weft_common::flannel::SubnetEnv;
use weft_common::netlink::Netlink;
use weft_common::netns::NetNs;

use crate::cause::Cause;
use crate::cli::PathArgs;
use crate::firewall::Ruleset;
use crate::kernel::{self, LinkFacts, RouteAnswer, RouteQuery};
use crate::leases::Lease;
use crate::links::NodeLinks;
use crate::pods::{self, Attachment, PodsReport};

mod ahead;
mod hostgw;
mod local;
mod remote_filter;
use local::walk;
mod overlay;
mod render;

pub use render::render_text;

/// Bytes VXLAN adds in front of the inner IP packet: inner Ethernet header (14), VXLAN
/// header (8), UDP (8), outer IPv4 header (20) — or 40 for an IPv6 underlay.
pub fn vxlan_overhead(underlay_v6: bool) -> u32 {
    14 + 8 + 8 + if underlay_v6 { 40 } else { 20 }
}

/// One hop of the chain.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// Stable step name (`pod`, `pod-route`, `veth`, `bridge`, `host-route`, `forward`, ...).
    pub step: &'static str,
    /// `local`, or the remote node's address.
    pub node: String,
    /// The kernel object found.
    pub object: String,
    /// Where it should have come from.
    pub source: Option<String>,
    pub ok: bool,
    pub cause: Option<Cause>,
    /// Why it is broken (or a remark).
    pub detail: Option<String>,
}

/// The answer of `weft path`.
#[derive(Debug, Clone, Serialize)]
pub struct PathReport {
    pub src: String,
    pub dst: String,
    /// `"reachable"` or `"broken"`.
    pub verdict: &'static str,
    /// The first broken link's code; `null` when reachable.
    pub cause: Option<Cause>,
    pub hint: Option<&'static str>,
    pub failure_mode: Option<&'static str>,
    pub hops: Vec<Hop>,
    /// Remarks that do not change the verdict.
    pub notes: Vec<String>,
    /// `--probe`: where real packets were seen (absent without `--probe`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::probe::ProbeReport>,
}

/// Bad input or something that could not be read (exit status 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathError(pub String);

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome: a report, plus an error when the walk stopped on something unreadable.
pub struct Outcome {
    pub report: PathReport,
    /// Set when the verdict could not be completed (exit 2, the report shows what was seen).
    pub unreadable: Option<String>,
}

enum Dst<'a> {
    Pod(&'a Attachment),
    Ip(IpAddr),
}

fn err<T>(msg: impl Into<String>) -> Result<T, PathError> {
    Err(PathError(msg.into()))
}

/// Finds a pod of this node by IP, container ID or netns path.
fn resolve<'a>(pods: &'a PodsReport, what: &str, role: &str) -> Result<Option<&'a Attachment>, PathError> {
    if let Ok(ip) = what.parse::<IpAddr>() {
        return Ok(pods.pods.iter().find(|p| p.addresses.iter().any(|a| a.ip() == ip)));
    }
    if what.starts_with('/') {
        let path = Path::new(what);
        if !path.exists() {
            return err(format!("{role} {what}: netns path does not exist"));
        }
        if NetNs::open(path).is_err() {
            return err(format!("{role} {what}: not a network namespace"));
        }
        let found = pods.pods.iter().find(|p| same_file(&p.netns, path));
        return match found {
            Some(p) => Ok(Some(p)),
            None => err(format!(
                "{role} {what}: no pod attachment of this node in that namespace (POD_NOT_FOUND)"
            )),
        };
    }
    // Container IDs are letters, digits, `_`, `.` and `-`; something that starts like a
    // dotted quad but does not parse is a mistyped address.
    let addressish = what.starts_with(|c: char| c.is_ascii_digit()) && what.contains('.');
    if addressish || what.contains(':') || what.contains('/') {
        return err(format!(
            "{role} {what:?}: malformed address (want an IPv4 or IPv6 address, a container ID or a netns path)"
        ));
    }
    match pods.pods.iter().find(|p| p.container_id.as_deref() == Some(what)) {
        Some(p) => Ok(Some(p)),
        None => err(format!("{role} {what}: no pod with that container ID on this node (POD_NOT_FOUND)")),
    }
}

/// Whether `ip` is in this node's pod subnet of its family (`FLANNEL_SUBNET`,
/// `FLANNEL_IPV6_SUBNET`); when subnet.env cannot be read, any address may be.
fn own_pod_address(env: Option<&SubnetEnv>, ip: IpAddr) -> bool {
    let Some(env) = env else { return true };
    [env.subnet, env.ipv6_subnet].into_iter().flatten().any(|n| n.contains(ip))
}

fn same_file(a: &str, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// The walk's state: the chain so far.
struct Walk {
    hops: Vec<Hop>,
    notes: Vec<String>,
    node: String,
}

impl Walk {
    fn ok(&mut self, step: &'static str, object: String, source: Option<String>) {
        self.hops.push(Hop {
            step,
            node: self.node.clone(),
            object,
            source,
            ok: true,
            cause: None,
            detail: None,
        });
    }
    fn broken(
        &mut self,
        step: &'static str,
        object: String,
        source: Option<String>,
        cause: Cause,
        detail: String,
    ) {
        self.hops.push(Hop {
            step,
            node: self.node.clone(),
            object,
            source,
            ok: false,
            cause: Some(cause),
            detail: Some(detail),
        });
    }
    fn failed(&self) -> bool {
        self.hops.iter().any(|h| !h.ok)
    }
}

/// Everything read on this node before walking.
struct Local {
    links: NodeLinks,
    subnet_env: Option<SubnetEnv>,
    subnet_file: String,
    rules: Ruleset,
    leases: Option<Vec<Lease>>,
    lease_source: String,
}

impl Local {
    fn link(&self, index: u32) -> Option<LinkFacts> {
        self.links.get(index)
    }
    /// The flannel VXLAN device of a family: `flannel.<VNI>`, or with `v6` the dual-stack
    /// `flannel-v6.<VNI>` (docs/flannel.md §4.1).
    fn vtep(&self, v6: bool) -> Option<LinkFacts> {
        let prefix = if v6 { "flannel-v6." } else { "flannel." };
        self.links.vxlan().iter().find(|l| l.name.starts_with(prefix)).cloned()
    }
    /// The cluster networks of a family (`FLANNEL_NETWORK`, or `FLANNEL_IPV6_NETWORK`).
    fn network(&self, v6: bool) -> Vec<IpNetwork> {
        self.subnet_env
            .iter()
            .flat_map(|s| s.networks.iter().chain(s.ipv6_networks.iter()))
            .filter(|n| n.is_ipv6() == v6)
            .copied()
            .collect()
    }
    /// The host-gw backend (docs/flannel.md §4.2: no VXLAN device, a plain route `S via P` per
    /// peer): this node has no flannel VXLAN device, and the lease covering `dst`, when the
    /// leases were read from etcd, is a host-gw lease. Without etcd a node without the device
    /// is taken for a host-gw node (flanneld with host-gw deletes a left-over one).
    fn host_gw(&self, dst: IpAddr) -> bool {
        if self.vtep(dst.is_ipv6()).is_some() {
            return false;
        }
        match &self.leases {
            Some(ls) => ls.iter().find(|l| l.covers(dst)).is_none_or(Lease::is_host_gw),
            None => true,
        }
    }
    /// Where the route to `dst` should come from: the lease covering it (key, etcd revision,
    /// PublicIP), else every peer lease.
    fn route_source(&self, dst: IpAddr) -> String {
        match self.leases.iter().flatten().find(|l| l.covers(dst)) {
            Some(l) => format!(
                "lease {} rev {} ({}), {} {}",
                l.key,
                l.revision,
                self.lease_source,
                if dst.is_ipv6() { "PublicIPv6" } else { "PublicIP" },
                l.public_of(dst.is_ipv6()).map_or_else(|| "-".to_string(), |p| p.to_string())
            ),
            None => format!("every peer lease (via {})", self.lease_source),
        }
    }
    /// F13: more than one lease (from etcd) covers `dst`; names them on the `host-route` hop.
    fn overlapping(&self, w: &mut Walk, dst_ip: IpAddr, route_obj: &str) -> bool {
        let Some(ls) = &self.leases else { return false };
        let holders: Vec<&Lease> = ls.iter().filter(|l| l.covers(dst_ip)).collect();
        if holders.len() < 2 {
            return false;
        }
        let keys: Vec<String> = holders.iter().map(|l| format!("{} ({})", l.key, l.public_ip)).collect();
        w.broken(
            "host-route",
            route_obj.to_string(),
            Some(self.lease_source.clone()),
            Cause::LeaseOverlap,
            format!("{} leases cover {dst_ip}: {}", holders.len(), keys.join(", ")),
        );
        true
    }
    /// This node's lease subnet of a family (`FLANNEL_SUBNET`, or `FLANNEL_IPV6_SUBNET`).
    fn own_subnet(&self, v6: bool) -> Option<IpNetwork> {
        let env = self.subnet_env.as_ref()?;
        if v6 {
            env.ipv6_subnet
        } else {
            env.subnet
        }
    }
}

fn sysctl(key: &str) -> Option<String> {
    weft_common::sysctl::get(key).ok()
}

/// Runs `weft path`.
pub fn run(args: &PathArgs) -> Result<Outcome, PathError> {
    // A remote DST's node view, read while the own firewall rules are.
    if let Ok(dst) = args.dst.parse::<IpAddr>() {
        ahead::request_remote_view(dst, args.remote_port);
    }
    // The family: an IPv6 address given as SRC or DST, else `--family` (default 4).
    let given_v6 = [&args.src, &args.dst].iter().any(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv6()));
    let given_v4 = [&args.src, &args.dst].iter().any(|a| a.parse::<IpAddr>().is_ok_and(|ip| ip.is_ipv4()));
    if given_v6 && given_v4 {
        return err(format!("SRC {} and DST {} are of different address families", args.src, args.dst));
    }
    let v6 = given_v6 || (!given_v4 && args.family == Some(6));
    // The IPv6 rules only for an IPv6 walk (the pods' own masquerade rules are IPv4).
    let rules = Ruleset::read_families(v6);
    let subnet_env = SubnetEnv::read(&args.dirs.subnet_file).ok();
    // SRC must be a pod of this node; DST is one when it is named by container ID or netns
    // path, or is an address in this node's pod subnet (else it is somewhere else).
    let complete = |r: &PodsReport| {
        let found = |what: &str| matches!(resolve(r, what, ""), Ok(Some(_)));
        found(&args.src)
            && (found(&args.dst)
                || args.dst.parse::<IpAddr>().is_ok_and(|ip| !own_pod_address(subnet_env.as_ref(), ip)))
    };
    let (pods, links) =
        pods::collect_named(&args.dirs, &rules, &[&args.src, &args.dst], complete).map_err(PathError)?;
    let src = match resolve(&pods, &args.src, "SRC")? {
        Some(p) => p,
        None => {
            return err(format!(
                "SRC {}: no pod with that address on this node (POD_NOT_FOUND; run weft path on SRC's node)",
                args.src
            ))
        }
    };
    let fam = if v6 { "IPv6" } else { "IPv4" };
    let src_ip = src
        .address(v6)
        .ok_or_else(|| PathError(format!("SRC {}: the pod has no {fam} address", args.src)))?;
    let dst = match resolve(&pods, &args.dst, "DST")? {
        Some(p) => Dst::Pod(p),
        None => match args.dst.parse::<IpAddr>() {
            Ok(ip) => Dst::Ip(ip),
            Err(_) => {
                return err(format!(
                    "DST {}: not found on this node (give a pod IP for a remote pod)",
                    args.dst
                ))
            }
        },
    };
    let dst_ip = match &dst {
        Dst::Pod(p) => p
            .address(v6)
            .ok_or_else(|| PathError(format!("DST {}: the pod has no {fam} address", args.dst)))?,
        Dst::Ip(v) => *v,
    };
    let mut host = Netlink::open().map_err(|e| PathError(format!("open netlink socket: {e}")))?;
    let (leases, lease_source) = match &args.etcd_endpoints {
        Some(ep) => {
            let etcd = weft_flanneld::cli::EtcdArgs {
                etcd_endpoints: ep.clone(),
                etcd_prefix: args.etcd_prefix.clone(),
                etcd_keyfile: args.etcd_keyfile.clone(),
                etcd_certfile: args.etcd_certfile.clone(),
                etcd_cafile: args.etcd_cafile.clone(),
                etcd_username: args.etcd_username.clone(),
                etcd_password: args.etcd_password.clone(),
            };
            (Some(crate::leases::read(&etcd).map_err(PathError)?), format!("etcd {ep}"))
        }
        None => (None, "the remote flanneld's view".to_string()),
    };
    let local = Local {
        links,
        subnet_env,
        subnet_file: args.dirs.subnet_file.display().to_string(),
        rules,
        leases,
        lease_source,
    };
    let mut w = Walk { hops: Vec::new(), notes: Vec::new(), node: "local".into() };
    if local.subnet_env.is_none() {
        w.notes.push(format!("{} could not be read: cluster network and lease unknown", local.subnet_file));
    }
    let mut unreadable = None;
    walk(&mut w, &mut host, &local, src, src_ip, &dst, dst_ip, args.remote_port, &mut unreadable);
    // A link that could not be read was taken for a missing one: the verdict is not to be trusted.
    if unreadable.is_none() {
        unreadable = local.links.failed();
    }
    if let Some(e) = &unreadable {
        w.notes.retain(|n| n != e);
    }
    let mut probe = None;
    if args.probe && unreadable.is_none() {
        let watches = watches(&mut host, &local, src, &dst, dst_ip);
        let vxlan_port = local.vtep(v6).and_then(|v| v.vxlan).and_then(|x| x.port).unwrap_or(8472);
        let remote = match &dst {
            Dst::Ip(_) => remote_watch(&w, args.remote_port, v6),
            Dst::Pod(_) => None,
        };
        let spec = crate::probe::ProbeSpec {
            src_netns: &src.netns,
            src_ip,
            dst_ip,
            pod_mtu: src.mtu,
            proto: args.proto.into(),
            port: args.port,
            vxlan_port,
            watches: &watches,
            remote,
        };
        let p = crate::probe::run(&spec).map_err(|e| PathError(format!("probe: {e}")))?;
        if !w.failed() {
            probe_verdict(&mut w, &p);
        }
        probe = Some(p);
    }
    let first = w.hops.iter().find(|h| !h.ok).and_then(|h| h.cause);
    let report = PathReport {
        src: args.src.clone(),
        dst: args.dst.clone(),
        verdict: if first.is_some() { "broken" } else { "reachable" },
        cause: first,
        hint: first.map(|c| c.hint()),
        failure_mode: first.and_then(|c| c.failure_mode()),
        hops: w.hops,
        notes: w.notes,
        probe,
    };
    Ok(Outcome { report, unreadable })
}

/// The interfaces of this node (and the pods' namespaces) the probe watches, in path order.
fn watches(
    host: &mut Netlink,
    local: &Local,
    src: &Attachment,
    dst: &Dst,
    dst_ip: IpAddr,
) -> Vec<crate::probe::Watch> {
    use crate::probe::Watch;
    let mut out = vec![Watch {
        place: "pod",
        ifname: src.ifname.clone(),
        ifindex: src.index,
        netns: Some(src.netns.clone()),
    }];
    let node = |place: &'static str, l: &LinkFacts| Watch {
        place,
        ifname: l.name.clone(),
        ifindex: l.index,
        netns: None,
    };
    if let Some(h) = &src.host_veth {
        out.push(Watch { place: "veth", ifname: h.name.clone(), ifindex: h.index, netns: None });
        // Frames bridged between two ports never pass the bridge device itself.
        if let (Some(b), Dst::Ip(_)) = (h.bridge_index.and_then(|b| local.link(b)), dst) {
            out.push(node("bridge", &b));
        }
    }
    match dst {
        Dst::Pod(d) => {
            if let Some(h) = &d.host_veth {
                out.push(Watch { place: "dst-veth", ifname: h.name.clone(), ifindex: h.index, netns: None });
            }
            out.push(Watch {
                place: "dst-pod",
                ifname: d.ifname.clone(),
                ifindex: d.index,
                netns: Some(d.netns.clone()),
            });
        }
        Dst::Ip(_) => {
            let via = kernel::route_get(host, &RouteQuery { to: Some(dst_ip), ..RouteQuery::default() })
                .ok()
                .and_then(|r| r.oif);
            if let Some(v) = local.vtep(dst_ip.is_ipv6()).filter(|v| Some(v.index) == via) {
                out.push(node("vtep", &v));
                if let Some(u) = v.vxlan.as_ref().and_then(|x| x.underlay_index).and_then(|i| local.link(i)) {
                    out.push(node("underlay", &u));
                }
            } else if let Some(l) = via.and_then(|i| local.link(i)) {
                // host-gw: a peer's pods are reached straight over the external interface.
                let peer = local.network(dst_ip.is_ipv6()).iter().any(|n| n.contains(dst_ip));
                out.push(node(if peer { "underlay" } else { "egress" }, &l));
            }
        }
    }
    out
}

/// The destination node's interfaces (underlay, VXLAN device, bridge) as its flanneld's view
/// names them, when the walk went through a remote node. IPv6: its `flannel-v6.<VNI>`
/// (`device_v6`, docs/flannel.md §8.1) instead of `flannel.<VNI>`.
fn remote_watch(w: &Walk, port: u16, v6: bool) -> Option<crate::probe::RemoteWatch> {
    let node: IpAddr = w.hops.iter().find(|h| h.node != "local")?.node.parse().ok()?;
    let view = crate::remote::fetch_view(node, port).ok()?;
    let name = |k: &str| {
        view.get(k).and_then(|l| l.get("name")).and_then(serde_json::Value::as_str).map(String::from)
    };
    let places: Vec<(&'static str, String)> =
        [("underlay", "underlay"), ("vtep", if v6 { "device_v6" } else { "device" }), ("bridge", "bridge")]
            .into_iter()
            .filter_map(|(place, key)| Some((place, name(key)?)))
            .collect();
    Some(crate::probe::RemoteWatch { node, port, places })
}

/// A statically healthy path whose packets were not answered: name where they were lost.
fn probe_verdict(w: &mut Walk, p: &crate::probe::ProbeReport) {
    let last = p.last_seen.clone().unwrap_or_else(|| "nowhere".into());
    let obj = format!(
        "{} {} probe(s) sent, last seen at {last}, {}",
        p.sent,
        p.proto,
        if p.answered { "answered" } else { "NOT answered" }
    );
    if !p.answered {
        let seen = p.hops.iter().rposition(|h| h.requests > 0);
        let at = seen.and_then(|i| p.hops.get(i));
        let next = seen.and_then(|i| p.hops.get(i + 1));
        let remote = |h: &crate::probe::Seen| h.node != "local";
        let (cause, mut why) = match (at, next) {
            (Some(a), Some(n)) if !remote(a) && remote(n) && matches!(a.place, "underlay" | "egress") => (
                Cause::UnderlayLoss,
                format!("the probe left this node's {} and never reached {}'s {}", a.ifname, n.node, n.ifname),
            ),
            (Some(a), _) if !remote(a) && matches!(a.place, "underlay" | "egress") => {
                (Cause::UnderlayLoss, format!("the probe left this node ({last}) and no answer came back"))
            }
            // host-gw: no VXLAN device between the uplink and the bridge; the node itself drops.
            (Some(a), Some(n)) if remote(a) && a.place == "underlay" && n.place == "bridge" => (
                Cause::ForwardDrop,
                format!(
                    "the probe reached {}'s {} but never its {}: dropped on that node (FORWARD chain, ip_forward, rp_filter)",
                    a.node, a.ifname, n.ifname
                ),
            ),
            (Some(a), Some(n)) if remote(a) && a.place == "underlay" => (
                Cause::UnderlayLoss,
                format!(
                    "the probe reached {}'s {} but never its {}: dropped on arrival there (a firewall on the VXLAN port?)",
                    a.node, a.ifname, n.ifname
                ),
            ),
            (Some(a), Some(n)) if remote(a) && a.place == "vtep" => (
                Cause::ForwardDrop,
                format!("the probe left {}'s {} but never reached its {}", a.node, a.ifname, n.ifname),
            ),
            (Some(a), _) if !remote(a) && matches!(a.place, "bridge" | "veth") => {
                (Cause::ForwardDrop, format!("the probe entered the node ({last}) but never left it"))
            }
            _ => (Cause::NoRoute, format!("the probe was last seen at {last}")),
        };
        let list = |rs: &[crate::dropwatch::ReasonCount]| -> String {
            let shown: Vec<String> =
                rs.iter().take(3).map(|r| format!("{} ×{} at {}", r.reason, r.count, r.location)).collect();
            shown.join(", ")
        };
        for (d, of_node) in [(&p.drops, ""), (&p.remote_drops, " on the remote node")] {
            let Some(d) = d.as_ref() else { continue };
            if !d.probe.is_empty() {
                why.push_str(&format!(
                    "; the kernel dropped the probe's packets{of_node}: {}",
                    list(&d.probe)
                ));
            } else if !d.correlated && !d.reasons.is_empty() {
                why.push_str(&format!(
                    "; kernel drops{of_node} meanwhile (machine-wide, not tied to the probe): {}",
                    list(&d.reasons)
                ));
            }
        }
        w.broken("probe", obj, None, cause, why);
        return;
    }
    if p.df_answered == Some(false) {
        let size = p.df_probe_size.unwrap_or(0);
        w.broken(
            "probe",
            obj,
            None,
            Cause::MtuMismatch,
            format!("a {size}-byte DF probe (the pod MTU) got no answer while small ones did"),
        );
        return;
    }
    w.ok("probe", obj, None);
}

fn describe_route(r: &RouteAnswer, local: &Local, to: IpAddr) -> String {
    let dev = r.oif.and_then(|i| local.link(i)).map(|l| l.name.clone()).or(r.oif.map(|i| format!("if{i}")));
    let mut s = format!("{} {to}", r.kind);
    if let Some(g) = r.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if let Some(d) = dev {
        s.push_str(&format!(" dev {d}"));
    }
    if let Some(t) = r.table.filter(|t| *t != 254) {
        s.push_str(&format!(" table {t}"));
    }
    s
}

fn attachment_source(a: &Attachment) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(c) = &a.cache {
        parts.push(format!("cache {}", c.path.display()));
    }
    for r in &a.reservations {
        parts.push(format!("reservation {}", r.path.display()));
    }
    (!parts.is_empty()).then(|| parts.join("; "))
}
