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

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde::Serialize;
use serde_json::Value;
use weft_common::flannel::SubnetEnv;
use weft_common::netlink::Netlink;
use weft_common::netns::NetNs;

use crate::cause::Cause;
use crate::cli::PathArgs;
use crate::firewall::{Packet, Ruleset};
use crate::kernel::{self, Fdb, LinkFacts, Neigh, RouteAnswer, RouteQuery};
use crate::leases::Lease;
use crate::pods::{self, Attachment, PodsReport};
use crate::remote;

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
    Ip(Ipv4Addr),
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
            "{role} {what:?}: malformed address (want an IPv4 address, a container ID or a netns path)"
        ));
    }
    match pods.pods.iter().find(|p| p.container_id.as_deref() == Some(what)) {
        Some(p) => Ok(Some(p)),
        None => err(format!("{role} {what}: no pod with that container ID on this node (POD_NOT_FOUND)")),
    }
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
    links: Vec<LinkFacts>,
    subnet_env: Option<SubnetEnv>,
    subnet_file: String,
    rules: Ruleset,
    leases: Option<Vec<Lease>>,
    lease_source: String,
}

impl Local {
    fn link(&self, index: u32) -> Option<&LinkFacts> {
        self.links.iter().find(|l| l.index == index)
    }
    fn vtep(&self) -> Option<&LinkFacts> {
        self.links.iter().find(|l| l.kind.as_deref() == Some("vxlan") && l.name.starts_with("flannel."))
    }
    fn network(&self) -> Vec<Ipv4Network> {
        self.subnet_env
            .iter()
            .flat_map(|s| s.networks.iter())
            .filter_map(|n| match n {
                IpNetwork::V4(v) => Some(*v),
                IpNetwork::V6(_) => None,
            })
            .collect()
    }
    fn own_subnet(&self) -> Option<Ipv4Network> {
        match self.subnet_env.as_ref()?.subnet? {
            IpNetwork::V4(v) => Some(v),
            IpNetwork::V6(_) => None,
        }
    }
}

fn sysctl(key: &str) -> Option<String> {
    weft_common::sysctl::get(key).ok()
}

/// Runs `weft path`.
pub fn run(args: &PathArgs) -> Result<Outcome, PathError> {
    let rules = Ruleset::read();
    let pods = pods::collect_with(&args.dirs, &rules).map_err(PathError)?;
    let src = match resolve(&pods, &args.src, "SRC")? {
        Some(p) => p,
        None => {
            return err(format!(
                "SRC {}: no pod with that address on this node (POD_NOT_FOUND; run weft path on SRC's node)",
                args.src
            ))
        }
    };
    let src_ip =
        src.ipv4().ok_or_else(|| PathError(format!("SRC {}: the pod has no IPv4 address", args.src)))?;
    let dst = match resolve(&pods, &args.dst, "DST")? {
        Some(p) => Dst::Pod(p),
        None => match args.dst.parse::<IpAddr>() {
            Ok(IpAddr::V4(v)) => Dst::Ip(v),
            Ok(IpAddr::V6(_)) => return err(format!("DST {}: IPv6 is not supported", args.dst)),
            Err(_) => {
                return err(format!(
                    "DST {}: not found on this node (give a pod IP for a remote pod)",
                    args.dst
                ))
            }
        },
    };
    let dst_ip = match &dst {
        Dst::Pod(p) => {
            p.ipv4().ok_or_else(|| PathError(format!("DST {}: the pod has no IPv4 address", args.dst)))?
        }
        Dst::Ip(v) => *v,
    };
    let mut host = Netlink::open().map_err(|e| PathError(format!("open netlink socket: {e}")))?;
    let links = kernel::links(&mut host).map_err(|e| PathError(format!("list links of this node: {e}")))?;
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
        subnet_env: SubnetEnv::read(&args.dirs.subnet_file).ok(),
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
    if let Some(e) = &unreadable {
        w.notes.retain(|n| n != e);
    }
    let mut probe = None;
    if args.probe && unreadable.is_none() {
        let watches = watches(&mut host, &local, src, &dst, dst_ip);
        let vxlan_port = local.vtep().and_then(|v| v.vxlan.as_ref()).and_then(|x| x.port).unwrap_or(8472);
        let p = crate::probe::run(
            &src.netns, src_ip, dst_ip, src.mtu, args.proto, args.port, vxlan_port, &watches,
        )
        .map_err(|e| PathError(format!("probe: {e}")))?;
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
    dst_ip: Ipv4Addr,
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
            out.push(node("bridge", b));
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
            if let Some(v) = local.vtep().filter(|v| Some(v.index) == via) {
                out.push(node("vtep", v));
                if let Some(u) = v.vxlan.as_ref().and_then(|x| x.underlay_index).and_then(|i| local.link(i)) {
                    out.push(node("underlay", u));
                }
            } else if let Some(l) = via.and_then(|i| local.link(i)) {
                out.push(node("egress", l));
            }
        }
    }
    out
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
        let at = p.hops.iter().rev().find(|h| h.requests > 0).map(|h| h.place);
        let (cause, why) = match at {
            Some("underlay" | "egress") => {
                (Cause::UnderlayLoss, format!("the probe left this node ({last}) and no answer came back"))
            }
            Some("bridge" | "veth") => {
                (Cause::ForwardDrop, format!("the probe entered the node ({last}) but never left it"))
            }
            _ => (Cause::NoRoute, format!("the probe was last seen at {last}")),
        };
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

fn describe_route(r: &RouteAnswer, local: &Local, to: Ipv4Addr) -> String {
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

#[allow(clippy::too_many_arguments)]
fn walk(
    w: &mut Walk,
    host: &mut Netlink,
    local: &Local,
    src: &Attachment,
    src_ip: Ipv4Addr,
    dst: &Dst,
    dst_ip: Ipv4Addr,
    remote_port: u16,
    unreadable: &mut Option<String>,
) {
    let vtep = local.vtep();
    // 1. The pod's interface, and the MTU chain from it.
    let src_source = attachment_source(src);
    let pod_obj = format!(
        "{} {} mtu {} {} (netns {}{})",
        src.ifname,
        src.addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        src.mtu,
        if src.up { "up" } else { "DOWN" },
        src.netns,
        src.nsid.map(|n| format!(", nsid {n}")).unwrap_or_default()
    );
    let host_mtu = src.host_veth.as_ref().map(|h| h.mtu);
    let cross = matches!(dst, Dst::Ip(ip) if local.network().iter().any(|n| n.contains(*ip)) && !local.own_subnet().is_some_and(|s| s.contains(*ip)));
    let vtep_mtu = vtep.map(|v| v.mtu).filter(|_| cross);
    if let Some(h) = host_mtu.filter(|h| src.mtu > *h) {
        w.broken(
            "pod",
            pod_obj,
            src_source,
            Cause::MtuMismatch,
            format!("pod {} mtu {} > host veth mtu {h}", src.ifname, src.mtu),
        );
    } else if let Some(v) = vtep_mtu.filter(|v| src.mtu > *v) {
        let from = local
            .subnet_env
            .as_ref()
            .map(|s| format!(" (FLANNEL_MTU={} in {})", s.mtu, local.subnet_file))
            .unwrap_or_default();
        w.broken(
            "pod",
            pod_obj,
            src_source,
            Cause::MtuMismatch,
            format!("pod {} mtu {} > flannel mtu {v}{from}", src.ifname, src.mtu),
        );
    } else {
        w.ok("pod", pod_obj, src_source);
    }

    // 2. The pod's own routing decision.
    let pod_route = NetNs::open(&src.netns)
        .map_err(|e| e.to_string())
        .and_then(|ns| Netlink::open_in(&ns).map_err(|e| e.to_string()))
        .and_then(|mut nl| {
            kernel::route_get(
                &mut nl,
                &RouteQuery { to: Some(dst_ip), from: Some(src_ip), ..RouteQuery::default() },
            )
            .map_err(|e| e.source.to_string())
        });
    match pod_route {
        Ok(r) if r.kind == "unicast" && r.oif == Some(src.index) => {
            let via = r.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
            w.ok(
                "pod-route",
                format!("{dst_ip}{via} dev {} (the pod's own lookup)", src.ifname),
                Some("CNI result routes (cache file)".into()),
            );
        }
        Ok(r) => w.broken(
            "pod-route",
            format!("{} {dst_ip} oif {:?}", r.kind, r.oif),
            Some("CNI result routes".into()),
            Cause::NoRoute,
            format!("the pod does not send {dst_ip} out of {}", src.ifname),
        ),
        Err(e) => w.broken(
            "pod-route",
            format!("route get {dst_ip} in the pod: {e}"),
            Some("CNI result routes".into()),
            Cause::NoRoute,
            format!("the pod has no route to {dst_ip}"),
        ),
    }

    // 3. The host end of the veth and its bridge port.
    let Some(hv) = &src.host_veth else {
        w.broken(
            "veth",
            "host end not found".into(),
            None,
            Cause::BridgePortNotEnslaved,
            "no link of this node is the pod interface's peer".into(),
        );
        return;
    };
    let veth_obj = format!(
        "{}@{} mtu {} {} port {} on {} (peer {} {})",
        hv.name,
        hv.index,
        hv.mtu,
        if hv.up { "up" } else { "DOWN" },
        hv.port_state.as_deref().unwrap_or("-"),
        hv.bridge.as_deref().unwrap_or("no bridge"),
        if hv.peer_confirmed { "confirmed by" } else { "NOT confirmed by" },
        "IFLA_LINK/IFLA_LINK_NETNSID"
    );
    let Some(bridge) = hv.bridge_index.and_then(|b| local.link(b)) else {
        w.broken(
            "veth",
            veth_obj,
            Some("bridge plugin (cache file interfaces)".into()),
            Cause::BridgePortNotEnslaved,
            format!("{} has no master bridge", hv.name),
        );
        return;
    };
    if !hv.up || hv.port_state.as_deref().is_some_and(|s| s != "forwarding") {
        w.broken(
            "veth",
            veth_obj,
            Some("bridge plugin".into()),
            Cause::BridgePortDown,
            format!(
                "{} is {} (port {})",
                hv.name,
                if hv.up { "up" } else { "down" },
                hv.port_state.as_deref().unwrap_or("-")
            ),
        );
    } else {
        w.ok("veth", veth_obj, Some("bridge plugin (cache file interfaces)".into()));
    }

    // 4. The bridge: up, and its address is the lease's gateway (F12).
    let bridge_addrs: Vec<IpNetwork> = host
        .addresses(Some(bridge.index))
        .map(|a| a.into_iter().map(|a| a.address).collect())
        .unwrap_or_default();
    let br_obj = format!(
        "{} mtu {} {} addr {}",
        bridge.name,
        bridge.mtu,
        if bridge.up { "up" } else { "DOWN" },
        bridge_addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
    );
    let want_gw = local.subnet_env.as_ref().and_then(|s| s.subnet);
    let br_src = want_gw.map(|g| format!("FLANNEL_SUBNET={g} ({})", local.subnet_file));
    if !bridge.up {
        w.broken("bridge", br_obj, br_src, Cause::BridgePortDown, format!("bridge {} is down", bridge.name));
    } else if let Some(g) = want_gw.filter(|g| !bridge_addrs.iter().any(|a| a.ip() == g.ip())) {
        w.broken(
            "bridge",
            br_obj,
            br_src,
            Cause::Cni0AddrMismatch,
            format!("{} does not carry the lease gateway {g}", bridge.name),
        );
    } else {
        w.ok("bridge", br_obj, br_src);
    }

    // Same node: bridged, not routed.
    if let Dst::Pod(d) = dst {
        same_node(w, local, bridge, d, src_ip, dst_ip);
        return;
    }

    // A missing or downed VXLAN device takes its routes with it: name the device, not the
    // route the kernel dropped.
    if cross {
        match vtep {
            None => {
                let obj = "no flannel.<VNI> device".to_string();
                w.broken(
                    "vtep",
                    obj,
                    Some("flanneld".into()),
                    Cause::VtepMissing,
                    "this node has no VXLAN device".into(),
                );
                return;
            }
            Some(v) if !v.up => {
                let obj = format!("{}@{} DOWN", v.name, v.index);
                let why = format!("{} is down (the kernel dropped its routes and neighbours)", v.name);
                w.broken("vtep", obj, Some("flanneld".into()), Cause::VtepDown, why);
                return;
            }
            Some(_) => {}
        }
    }

    // 5. The node's routing decision for a packet arriving from the bridge.
    let ip_forward = sysctl("net.ipv4.ip_forward");
    let answer = kernel::route_get(
        host,
        &RouteQuery {
            to: Some(dst_ip),
            from: Some(src_ip),
            iif: Some(bridge.index),
            ..RouteQuery::default()
        },
    );
    let q = format!("route get {dst_ip} from {src_ip} iif {}", bridge.name);
    let answer = match answer {
        Err(e) => {
            let errno = e.raw_errno().unwrap_or(0);
            let rp = |d: &str| {
                sysctl(&weft_common::sysctl::iface_key("ipv4", d, "rp_filter")).unwrap_or_else(|| "?".into())
            };
            let e = &e.source;
            if ip_forward.as_deref() == Some("0") {
                w.broken(
                    "host-route",
                    format!("{q}: {e}"),
                    Some("net.ipv4.ip_forward (bridge isGateway sets it to 1)".into()),
                    Cause::IpForwardOff,
                    "net.ipv4.ip_forward = 0".into(),
                );
            } else if errno == libc::EXDEV || (errno == libc::EINVAL && rp_rejects(host, src_ip, bridge)) {
                w.broken(
                    "host-route",
                    format!("{q}: {e} (rp_filter all={} {}={})", rp("all"), bridge.name, rp(&bridge.name)),
                    Some("net.ipv4.conf.{all,<dev>}.rp_filter".into()),
                    Cause::RpFilter,
                    format!("the kernel rejects {src_ip} arriving on {}: its route back to {src_ip} leaves by another device", bridge.name),
                );
            } else {
                w.broken(
                    "host-route",
                    format!("{q}: {e}"),
                    None,
                    Cause::NoRoute,
                    format!("no route to {dst_ip}"),
                );
            }
            return;
        }
        Ok(a) => a,
    };
    let route_obj = describe_route(&answer, local, dst_ip);
    if answer.kind == "local" {
        w.ok("host-route", format!("{route_obj} (an address of this node)"), None);
        return;
    }
    if answer.kind != "unicast" {
        w.broken(
            "host-route",
            route_obj,
            None,
            Cause::NoRoute,
            format!("the kernel answers {} for {dst_ip}", answer.kind),
        );
        return;
    }
    let out_dev = answer.oif.and_then(|i| local.link(i));
    let out_name = out_dev.map(|l| l.name.clone()).unwrap_or_default();

    if cross {
        cross_node(
            w,
            host,
            local,
            vtep,
            &answer,
            route_obj,
            src,
            src_ip,
            dst_ip,
            &q,
            remote_port,
            unreadable,
            bridge,
        );
    } else {
        outside(w, local, &answer, route_obj, src, src_ip, dst_ip, bridge, &out_name);
    }
}

/// Whether reverse-path filtering explains a rejected input lookup: the effective
/// `rp_filter` (the larger of `all` and the device's) is strict and the kernel's own route
/// back to `src` does not leave by the bridge (loose mode: there is no route back at all).
/// The kernel reports the failed source validation as `EINVAL` (a martian source; older
/// kernels said `EXDEV`).
fn rp_filter_mode(dev: &str) -> u8 {
    let read = |d: &str| {
        sysctl(&weft_common::sysctl::iface_key("ipv4", d, "rp_filter"))
            .and_then(|v| v.parse::<u8>().ok())
            .unwrap_or(0)
    };
    read("all").max(read(dev))
}

fn rp_rejects(host: &mut Netlink, src: Ipv4Addr, bridge: &LinkFacts) -> bool {
    let back = kernel::route_get(host, &RouteQuery { to: Some(src), ..RouteQuery::default() });
    match rp_filter_mode(&bridge.name) {
        1 => back.map(|r| r.oif != Some(bridge.index)).unwrap_or(true),
        2 => back.is_err(),
        _ => false,
    }
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

fn forward_hop(w: &mut Walk, local: &Local, src_ip: Ipv4Addr, dst_ip: Ipv4Addr, iif: &str, oif: &str) {
    let v = local.rules.forward(&Packet { src: src_ip, dst: dst_ip, iif: Some(iif), oif: Some(oif) });
    let obj = format!(
        "FORWARD {iif} → {oif}: {}{}",
        v.verdict,
        v.rule.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    );
    if !v.skipped.is_empty() {
        w.notes.push(format!(
            "forward: {} rule(s) with matches weft does not evaluate were skipped",
            v.skipped.len()
        ));
    }
    if v.drops() {
        w.broken(
            "forward",
            obj,
            Some("flanneld -iptables-forward-rules (FLANNEL-FWD) / the host firewall".into()),
            Cause::ForwardDrop,
            format!("the FORWARD chain drops {src_ip} → {dst_ip}"),
        );
    } else {
        w.ok("forward", obj, None);
    }
}

fn same_node(
    w: &mut Walk,
    local: &Local,
    bridge: &LinkFacts,
    d: &Attachment,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
) {
    if sysctl("net.bridge.bridge-nf-call-iptables").as_deref() == Some("1") {
        forward_hop(w, local, src_ip, dst_ip, &bridge.name, &bridge.name);
    }
    match &d.host_veth {
        Some(h) if h.bridge_index == Some(bridge.index) => {
            let obj = format!(
                "{}@{} port {} on {}",
                h.name,
                h.index,
                h.port_state.as_deref().unwrap_or("-"),
                bridge.name
            );
            if !h.up || h.port_state.as_deref().is_some_and(|s| s != "forwarding") {
                w.broken(
                    "dst-veth",
                    obj,
                    Some("bridge plugin".into()),
                    Cause::BridgePortDown,
                    format!(
                        "{} is {} (port {})",
                        h.name,
                        if h.up { "up" } else { "down" },
                        h.port_state.as_deref().unwrap_or("-")
                    ),
                );
            } else {
                w.ok("dst-veth", obj, Some("bridge plugin".into()));
            }
        }
        Some(h) => w.broken(
            "dst-veth",
            format!("{}@{}", h.name, h.index),
            None,
            Cause::BridgePortNotEnslaved,
            format!("{} is not a port of {}", h.name, bridge.name),
        ),
        None => w.broken(
            "dst-veth",
            "host end not found".into(),
            None,
            Cause::BridgePortNotEnslaved,
            "the destination pod has no host veth".into(),
        ),
    }
    let obj = format!(
        "{} {} mtu {} {} (netns {})",
        d.ifname,
        dst_ip,
        d.mtu,
        if d.up { "up" } else { "DOWN" },
        d.netns
    );
    if d.up {
        w.ok("dst-pod", obj, attachment_source(d));
    } else {
        w.broken(
            "dst-pod",
            obj,
            attachment_source(d),
            Cause::BridgePortDown,
            format!("{} in the destination pod is down", d.ifname),
        );
    }
}

#[allow(clippy::too_many_arguments)]
fn outside(
    w: &mut Walk,
    local: &Local,
    answer: &RouteAnswer,
    route_obj: String,
    src: &Attachment,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    bridge: &LinkFacts,
    out_name: &str,
) {
    w.ok("host-route", route_obj, None);
    forward_hop(w, local, src_ip, dst_ip, &bridge.name, out_name);
    let v = local.rules.postrouting(&Packet { src: src_ip, dst: dst_ip, iif: None, oif: Some(out_name) });
    let expected = src.masquerade.as_ref().and_then(|m| m.expected_by.clone());
    let obj = format!(
        "POSTROUTING: {}{}",
        v.verdict,
        v.rule.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
    );
    match expected {
        Some(by) if !v.masquerades() => w.broken(
            "masquerade",
            obj,
            Some(format!("ipMasq by {by} (FLANNEL_IPMASQ in {} / bridge ipMasq)", local.subnet_file)),
            Cause::MasqMissing,
            format!("{src_ip} → {dst_ip} leaves {out_name} without masquerade"),
        ),
        Some(by) => w.ok("masquerade", obj, Some(format!("ipMasq by {by}"))),
        None => {
            w.notes.push("ipMasq is off: the packet leaves with the pod's address".into());
            w.ok("masquerade", obj, None);
        }
    }
    let gw = answer.gateway.map(|g| format!(" via {g}")).unwrap_or_default();
    w.ok("egress", format!("leaves this node on {out_name}{gw} toward {dst_ip}"), None);
}

/// The lease that covers `dst`, with where it was read.
struct PeerLease {
    subnet: Ipv4Network,
    public_ip: Option<Ipv4Addr>,
    vtep_mac: Option<String>,
    source: String,
}

fn lease_from_view(view: &Value, at: IpAddr) -> Option<PeerLease> {
    let l = view.pointer("/flanneld/lease")?;
    Some(PeerLease {
        subnet: l.get("subnet")?.as_str()?.parse().ok()?,
        public_ip: l.get("public_ip").and_then(Value::as_str).and_then(|p| p.parse().ok()),
        vtep_mac: l.get("vtep_mac").and_then(Value::as_str).map(str::to_lowercase),
        source: format!(
            "lease {} rev {} (as flanneld on {at} holds it)",
            l.get("key").and_then(Value::as_str).unwrap_or("?"),
            l.get("etcd_revision").map(Value::to_string).unwrap_or_else(|| "?".into())
        ),
    })
}

#[allow(clippy::too_many_arguments)]
fn cross_node(
    w: &mut Walk,
    host: &mut Netlink,
    local: &Local,
    vtep: Option<&LinkFacts>,
    answer: &RouteAnswer,
    route_obj: String,
    _src: &Attachment,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    q: &str,
    remote_port: u16,
    unreadable: &mut Option<String>,
    bridge: &LinkFacts,
) {
    let Some(vtep) = vtep else {
        w.broken(
            "host-route",
            route_obj,
            None,
            Cause::VtepMissing,
            "no flannel.<VNI> device on this node".into(),
        );
        return;
    };
    if !vtep.up {
        w.broken(
            "vtep",
            format!("{}@{} DOWN", vtep.name, vtep.index),
            None,
            Cause::VtepDown,
            format!("{} is down (the kernel dropped its routes and neighbours)", vtep.name),
        );
        return;
    }
    let neighs = kernel::neighbours(host, vtep.index).unwrap_or_else(|e| {
        w.notes.push(format!("neighbours of {}: {e}", vtep.name));
        Vec::new()
    });
    let fdbs = kernel::fdb(host, vtep.index).unwrap_or_else(|e| {
        w.notes.push(format!("FDB of {}: {e}", vtep.name));
        Vec::new()
    });
    // The lease covering DST: from etcd, or from the view of the node the FDB points at.
    let mut view: Option<(IpAddr, Value)> = None;
    let etcd_lease = local.leases.as_ref().map(|ls| {
        ls.iter().find(|l| l.subnet.contains(dst_ip)).map(|l| PeerLease {
            subnet: l.subnet,
            public_ip: Some(l.public_ip),
            vtep_mac: l.vtep_mac.clone(),
            source: format!("lease {} rev {} ({})", l.key, l.revision, local.lease_source),
        })
    });
    // Two leases covering DST (F13): traffic goes to whichever route won.
    if let Some(ls) = &local.leases {
        let holders: Vec<&Lease> = ls.iter().filter(|l| l.subnet.contains(dst_ip)).collect();
        if holders.len() > 1 {
            let keys: Vec<String> = holders.iter().map(|l| format!("{} ({})", l.key, l.public_ip)).collect();
            w.broken(
                "host-route",
                route_obj,
                Some(local.lease_source.clone()),
                Cause::LeaseOverlap,
                format!("{} leases cover {dst_ip}: {}", holders.len(), keys.join(", ")),
            );
            return;
        }
    }
    let lease = match etcd_lease {
        Some(Some(l)) => Some(l),
        Some(None) => {
            w.broken(
                "host-route",
                route_obj,
                Some(local.lease_source.clone()),
                Cause::LeaseMissing,
                format!("no lease in etcd covers {dst_ip}"),
            );
            return;
        }
        None => {
            // Ask each peer the FDB names (the neighbour's first) for its own lease.
            let gw_mac =
                answer.gateway.and_then(|g| neighs.iter().find(|n| n.ip == g)).and_then(|n| n.mac.clone());
            let mut dsts: Vec<IpAddr> =
                fdbs.iter().filter(|f| Some(&f.mac) == gw_mac.as_ref()).filter_map(|f| f.dst).collect();
            dsts.extend(fdbs.iter().filter_map(|f| f.dst));
            dsts.dedup();
            let mut found = None;
            let mut errors = Vec::new();
            for d in dsts.into_iter().filter(|d| !d.is_unspecified()) {
                match remote::fetch_view(d, remote_port) {
                    Ok(v) => {
                        if let Some(l) = lease_from_view(&v, d).filter(|l| l.subnet.contains(dst_ip)) {
                            view = Some((d, v));
                            found = Some(l);
                            break;
                        }
                    }
                    Err(e) => errors.push(e),
                }
            }
            if found.is_none() && !errors.is_empty() {
                w.notes.extend(errors);
            }
            found
        }
    };
    let expected_gw = lease.as_ref().map(|l| l.subnet.network());
    let lease_src = lease.as_ref().map(|l| l.source.clone());

    // 5b. The route must leave by the VXLAN device via the peer subnet's network address.
    if answer.oif != Some(vtep.index) {
        // A route for the lease's subnet that leaves elsewhere is wrong; none at all is missing (F1).
        let misrouted = lease.as_ref().is_some_and(|l| {
            host.routes()
                .unwrap_or_default()
                .iter()
                .any(|r| r.dst == IpNetwork::V4(l.subnet) && r.oif != Some(vtep.index))
        });
        let cause = if misrouted { Cause::RouteWrongDev } else { Cause::NoRoute };
        w.broken(
            "host-route",
            route_obj,
            lease_src.clone().or_else(|| Some(format!("every peer lease (via {})", local.lease_source))),
            cause,
            format!("{dst_ip} is in the cluster network but the kernel does not send it to {}", vtep.name),
        );
        return;
    }
    if let (Some(want), Some(got)) = (expected_gw, answer.gateway) {
        if got != IpAddr::V4(want) {
            w.broken(
                "host-route",
                route_obj,
                lease_src,
                Cause::RouteWrongDev,
                format!("gateway {got}, the lease implies {want}"),
            );
            return;
        }
    }
    w.ok("host-route", format!("{route_obj} ({q})"), lease_src.clone());
    forward_hop(w, local, src_ip, dst_ip, &bridge.name, &vtep.name);
    if w.failed() {
        return;
    }

    // 6. The VXLAN device.
    let underlay =
        vtep.vxlan.as_ref().and_then(|x| x.underlay_index).filter(|i| *i != 0).and_then(|i| local.link(i));
    let local_ip = vtep.vxlan.as_ref().and_then(|x| x.local);
    let vx = vtep.vxlan.clone().unwrap_or_default();
    let vtep_obj = format!(
        "{}@{} mac {} mtu {} {} vni {} local {} port {} dev {}",
        vtep.name,
        vtep.index,
        vtep.mac,
        vtep.mtu,
        if vtep.up { "up" } else { "DOWN" },
        vx.vni.map(|v| v.to_string()).unwrap_or_else(|| "-".into()),
        local_ip.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
        vx.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        underlay.map(|u| u.name.clone()).unwrap_or_else(|| "-".into())
    );
    let vtep_src = Some(format!("flanneld (FLANNEL_MTU in {})", local.subnet_file));
    if !vtep.up {
        w.broken("vtep", vtep_obj, vtep_src, Cause::VtepDown, format!("{} is down", vtep.name));
        return;
    }
    if let Some(u) = underlay {
        let max = u.mtu.saturating_sub(vxlan_overhead(false));
        if vtep.mtu > max {
            w.broken(
                "vtep",
                vtep_obj,
                vtep_src,
                Cause::MtuMismatch,
                format!(
                    "{} mtu {} > {} mtu {} - {} VXLAN overhead",
                    vtep.name,
                    vtep.mtu,
                    u.name,
                    u.mtu,
                    vxlan_overhead(false)
                ),
            );
            return;
        }
    }
    if let Some(l) = local_ip {
        let here =
            host.addresses(None).map(|a| a.iter().any(|a| a.address.ip() == IpAddr::V4(l))).unwrap_or(true);
        if !here {
            w.broken(
                "vtep",
                vtep_obj,
                vtep_src,
                Cause::PublicIpNotLocal,
                format!("VXLAN local {l} is not an address of this node"),
            );
            return;
        }
    }
    w.ok("vtep", vtep_obj, vtep_src);

    // 7. Neighbour: the peer gateway's VTEP MAC.
    let Some(gw) = answer.gateway else {
        w.broken(
            "neighbour",
            "no gateway in the route".into(),
            lease_src,
            Cause::RouteWrongDev,
            "the route via the VXLAN device has no gateway".into(),
        );
        return;
    };
    let neigh: Option<&Neigh> = neighs.iter().find(|n| n.ip == gw);
    let Some(neigh) = neigh.filter(|n| n.mac.is_some()) else {
        w.broken(
            "neighbour",
            format!("no entry for {gw} on {}", vtep.name),
            lease_src,
            Cause::NeighMissing,
            format!("no neighbour entry maps {gw} to a VTEP MAC"),
        );
        return;
    };
    let nmac = neigh.mac.clone().unwrap_or_default();
    let neigh_obj = format!("{gw} lladdr {nmac} {}", neigh.state);
    let lease_mac = lease.as_ref().and_then(|l| l.vtep_mac.clone());
    if let Some(lm) = lease_mac.as_ref().filter(|lm| **lm != nmac) {
        // Before blaming our neighbour, ask the peer: if its device has our neighbour's MAC
        // and its flanneld holds that MAC too, it is the lease in etcd that is out of date.
        let peer = lease.as_ref().and_then(|l| l.public_ip).map(IpAddr::V4);
        let stale_lease = peer.and_then(|p| remote::fetch_view(p, remote_port).ok()).is_some_and(|v| {
            let dev = v.pointer("/device/mac").and_then(Value::as_str).map(str::to_lowercase);
            let held = v.pointer("/flanneld/lease/vtep_mac").and_then(Value::as_str).map(str::to_lowercase);
            dev.as_deref() == Some(nmac.as_str()) && held.as_deref() == Some(nmac.as_str())
        });
        let (cause, why) = if stale_lease {
            (
                Cause::LeaseVtepMacStale,
                format!("the lease's VtepMAC {lm} is not the MAC the peer's device has and its flanneld holds ({nmac})"),
            )
        } else {
            (Cause::NeighMacStale, format!("neighbour MAC {nmac} is not the lease's VtepMAC {lm}"))
        };
        w.broken("neighbour", neigh_obj, lease_src, cause, why);
        return;
    }
    w.ok("neighbour", neigh_obj, lease_src.clone());

    // 8. FDB: that MAC to the peer's PublicIP.
    let fdb: Option<&Fdb> = fdbs.iter().find(|f| f.mac == nmac && f.dst.is_some());
    let Some(fdb) = fdb else {
        w.broken(
            "fdb",
            format!("no entry for {nmac} on {}", vtep.name),
            lease_src,
            Cause::FdbMissing,
            format!("no FDB entry sends {nmac} to a node"),
        );
        return;
    };
    let fdst = fdb.dst.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    let fdb_obj = format!("{nmac} dst {fdst} dev {}", vtep.name);
    if let Some(p) = lease.as_ref().and_then(|l| l.public_ip).filter(|p| IpAddr::V4(*p) != fdst) {
        w.broken(
            "fdb",
            fdb_obj,
            lease_src,
            Cause::FdbWrongDst,
            format!("FDB sends {nmac} to {fdst}, the lease's PublicIP is {p}"),
        );
        return;
    }
    w.ok("fdb", fdb_obj, lease_src.clone());

    // 9. The underlay route to the peer (F5: it must leave by the VXLAN device's lower device).
    let IpAddr::V4(peer) = fdst else {
        w.broken(
            "underlay",
            format!("{fdst}"),
            None,
            Cause::UnderlayNoRoute,
            "IPv6 underlay not supported".into(),
        );
        return;
    };
    match kernel::route_get(host, &RouteQuery { to: Some(peer), from: local_ip, ..RouteQuery::default() }) {
        Err(e) => {
            w.broken(
                "underlay",
                format!("route get {peer}: {}", e.source),
                None,
                Cause::UnderlayNoRoute,
                format!("no underlay route to {peer}"),
            );
            return;
        }
        Ok(r) => {
            let obj = describe_route(&r, local, peer);
            if r.kind != "unicast" {
                w.broken(
                    "underlay",
                    obj,
                    None,
                    Cause::UnderlayNoRoute,
                    format!("the kernel answers {} for {peer}", r.kind),
                );
                return;
            }
            if let (Some(u), Some(o)) = (underlay, r.oif) {
                if u.index != o {
                    w.broken(
                        "underlay",
                        obj,
                        None,
                        Cause::UnderlayNoRoute,
                        format!("{peer} is reached via another device than {}'s {}", vtep.name, u.name),
                    );
                    return;
                }
            }
            w.ok("underlay", obj, None);
        }
    }

    // 10. The remote node, through its flanneld's view.
    let (at, v) = match view.take().filter(|(a, _)| *a == fdst) {
        Some(x) => x,
        None => match remote::fetch_view(fdst, remote_port) {
            Ok(v) => (fdst, v),
            Err(e) => {
                w.node = fdst.to_string();
                w.broken(
                    "remote-vtep",
                    format!("view of {fdst}"),
                    None,
                    Cause::RemoteViewUnavailable,
                    e.clone(),
                );
                *unreadable = Some(e);
                return;
            }
        },
    };
    w.node = at.to_string();
    remote_hops(w, &v, at, remote_port, &nmac, lease.as_ref(), dst_ip);
}

fn remote_hops(
    w: &mut Walk,
    v: &Value,
    at: IpAddr,
    port: u16,
    nmac: &str,
    lease: Option<&PeerLease>,
    dst_ip: Ipv4Addr,
) {
    let src = Some(format!("flanneld view {}", remote::url(at, port)));
    let Some(dev) = v.get("device").filter(|d| !d.is_null()) else {
        w.broken(
            "remote-vtep",
            "no flannel.<VNI> device".into(),
            src,
            Cause::VtepMissing,
            format!("{at} has no VXLAN device"),
        );
        return;
    };
    let name = dev.get("name").and_then(Value::as_str).unwrap_or("flannel.?");
    let mac = dev.get("mac").and_then(Value::as_str).unwrap_or("").to_lowercase();
    let up = dev.get("up").and_then(Value::as_bool).unwrap_or(false);
    let obj = format!(
        "{name} mac {mac} mtu {} {}",
        dev.get("mtu").map(Value::to_string).unwrap_or_default(),
        if up { "up" } else { "DOWN" }
    );
    if !up {
        w.broken("remote-vtep", obj, src, Cause::VtepDown, format!("{name} on {at} is down"));
        return;
    }
    let held = lease_from_view(v, at).and_then(|l| l.vtep_mac);
    if mac != nmac {
        // The triangle (F3): device MAC, lease VtepMAC, our neighbour MAC.
        let lease_mac = lease.and_then(|l| l.vtep_mac.clone()).or(held.clone());
        let (cause, why) =
            if held.as_deref() == Some(mac.as_str()) && lease_mac.as_deref() != Some(mac.as_str()) {
                // flanneld holds the device's MAC; the lease we (and our neighbour) follow does not.
                (
                    Cause::LeaseVtepMacStale,
                    format!(
                        "the lease's VtepMAC {} is not {at}'s {name} MAC {mac}, which its flanneld holds",
                        lease_mac.as_deref().unwrap_or("?")
                    ),
                )
            } else if lease_mac.as_deref() == Some(mac.as_str()) {
                (
                    Cause::NeighMacStale,
                    format!("our neighbour MAC {nmac} is not {at}'s {name} MAC {mac} (which its lease has)"),
                )
            } else {
                (
                    Cause::VtepMacMismatch,
                    format!(
                        "{at}'s {name} MAC {mac} differs from our neighbour MAC {nmac} and its lease ({})",
                        lease_mac.as_deref().unwrap_or("?")
                    ),
                )
            };
        w.broken("remote-vtep", obj, src, cause, why);
        return;
    }
    if let (Some(etcd_mac), Some(h)) = (lease.and_then(|l| l.vtep_mac.clone()), held.as_ref()) {
        if etcd_mac != *h || etcd_mac != mac {
            w.broken(
                "remote-vtep",
                obj,
                src,
                Cause::LeaseVtepMacStale,
                format!("lease VtepMAC {etcd_mac}, {at}'s flanneld holds {h}, device {mac}"),
            );
            return;
        }
    }
    w.ok("remote-vtep", obj, src.clone());

    let fwd = v.pointer("/sysctls/ip_forward").and_then(Value::as_u64);
    if fwd == Some(0) {
        w.broken(
            "remote-forward",
            format!("net.ipv4.ip_forward=0 on {at}"),
            src,
            Cause::IpForwardOff,
            format!("{at} does not forward"),
        );
        return;
    }
    let bridge = v.pointer("/bridge/name").and_then(Value::as_str);
    let routes = v.get("routes").and_then(Value::as_array).cloned().unwrap_or_default();
    let route = routes.iter().find(|r| {
        r.get("dst")
            .and_then(Value::as_str)
            .and_then(|d| d.parse::<Ipv4Network>().ok())
            .is_some_and(|d| d.contains(dst_ip) && d.prefix() > 0)
            && r.get("dev").and_then(Value::as_str) == bridge
            && bridge.is_some()
    });
    match route {
        Some(r) => w.ok(
            "remote-route",
            format!("{} dev {}", r.get("dst").and_then(Value::as_str).unwrap_or("?"), bridge.unwrap_or("?")),
            src.clone(),
        ),
        None => {
            w.broken(
                "remote-route",
                format!("no route to {dst_ip} on {at}'s bridge"),
                src,
                Cause::NoRoute,
                format!("{at} has no route for {dst_ip} to its bridge"),
            );
            return;
        }
    }
    w.ok("dst-pod", format!("{dst_ip} behind {} on {at}", bridge.unwrap_or("?")), None);
}

/// The vertical chain. `brief`: only step, verdict and cause (stable for golden tests).
pub fn render_text(r: &PathReport, brief: bool) -> String {
    let mut out = String::new();
    if brief {
        for h in &r.hops {
            let node = if h.node == "local" { "" } else { " remote" };
            match h.cause {
                Some(c) if !h.ok => out.push_str(&format!("✗ {}{node} {c}\n", h.step)),
                _ => out.push_str(&format!("✓ {}{node}\n", h.step)),
            }
        }
    } else {
        out.push_str(&format!("path {} → {}\n", r.src, r.dst));
        let w = r.hops.iter().map(|h| h.step.len()).max().unwrap_or(0);
        let mut node = "local".to_string();
        for h in &r.hops {
            if h.node != node {
                out.push_str(&format!("  ── node {} ──\n", h.node));
                node.clone_from(&h.node);
            }
            let mark = if h.ok { "✓" } else { "✗" };
            out.push_str(&format!("  {mark} {:w$}  {}\n", h.step, h.object));
            if let Some(s) = &h.source {
                out.push_str(&format!("    {:w$}  ← {s}\n", ""));
            }
            if let (false, Some(d)) = (h.ok, &h.detail) {
                out.push_str(&format!("    {:w$}  {} {d}\n", "", h.cause.map(|c| c.code()).unwrap_or("")));
            }
        }
        if let Some(p) = &r.probe {
            out.push_str(&format!("  probe ({}, {} sent):\n", p.proto, p.sent));
            for h in &p.hops {
                let seen = if h.requests > 0 { "seen" } else { "not seen" };
                out.push_str(&format!(
                    "    {:w$}  {:16} {seen:8} out {} back {}\n",
                    h.place, h.ifname, h.requests, h.replies
                ));
            }
            out.push_str(&format!("    last seen: {}\n", p.last_seen.as_deref().unwrap_or("nowhere")));
            if let (Some(size), Some(ok)) = (p.df_probe_size, p.df_answered) {
                out.push_str(&format!(
                    "    DF probe {size} bytes: {}\n",
                    if ok { "answered" } else { "NOT answered" }
                ));
            }
            for n in &p.notes {
                out.push_str(&format!("    note: {n}\n"));
            }
        }
        for n in &r.notes {
            out.push_str(&format!("  note: {n}\n"));
        }
    }
    match (r.cause, r.hint) {
        (Some(c), Some(h)) => out.push_str(&format!("broken {c}: {h}\n")),
        _ => out.push_str("reachable\n"),
    }
    out
}
