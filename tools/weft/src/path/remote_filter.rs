//! The destination node's own filters for the cross-node packet, judged from its flanneld's
//! view: strict `rp_filter` on the interface the packet arrives on (the VXLAN device, or the
//! external interface with host-gw) against the view's return route to SRC, and its FORWARD
//! chain (`iif` that interface, `oif` its bridge) walked with [`crate::firewall`] over the
//! rules the view carries (`firewall`: `iptables-save -t filter`, `nft -j list ruleset`).
//! docs/flannel.md §9 (flanneld's FORWARD rules); the rp_filter rule is the kernel's
//! `fib_validate_source` (net/ipv4/fib_frontend.c): strict mode wants the reverse route to
//! leave by the arrival interface.

use std::net::IpAddr;
#[cfg(test)]
use std::net::Ipv4Addr;

use ipnetwork::IpNetwork;
use serde_json::Value;

use super::Walk;
use crate::cause::Cause;
use crate::firewall::{Packet, Ruleset};

/// The packet as the destination node sees it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flow {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
}

/// The interface a packet from another node arrives on: the VXLAN device, else (host-gw)
/// the external interface.
pub(super) fn arrival_iface(v: &Value) -> Option<&str> {
    v.pointer("/device/name")
        .and_then(Value::as_str)
        .or_else(|| v.pointer("/underlay/name").and_then(Value::as_str))
}

fn rp_filter(v: &Value, dev: &str) -> Option<u64> {
    let all = v.pointer("/sysctls/rp_filter/all").and_then(Value::as_u64);
    let d =
        v.get("sysctls").and_then(|s| s.get("rp_filter")).and_then(|r| r.get(dev)).and_then(Value::as_u64);
    match (all, d) {
        (Some(a), Some(d)) => Some(a.max(d)),
        (a, d) => a.or(d),
    }
}

/// The view's main-table unicast route that the node would use back to `src` (longest
/// prefix among the routes the view lists: the device's and those inside the network).
fn return_route(v: &Value, src: IpAddr) -> Option<(IpNetwork, Option<&str>)> {
    v.get(if src.is_ipv6() { "routes_v6" } else { "routes" })?
        .as_array()?
        .iter()
        .filter(|r| r.get("kind").and_then(Value::as_str).is_none_or(|k| k == "unicast"))
        .filter_map(|r| {
            let dst = r.get("dst")?.as_str()?.parse::<IpNetwork>().ok()?;
            dst.contains(src).then(|| (dst, r.get("dev").and_then(Value::as_str)))
        })
        .max_by_key(|(d, _)| d.prefix())
}

/// Strict `rp_filter` on `iif` rejects `flow.src`: the return route leaves by another device,
/// or (the VXLAN device, all of whose routes the view lists) there is none through it.
/// `Some(why)` when rejected; a note when it cannot be judged.
pub(super) fn rp_rejects(w: &mut Walk, v: &Value, at: IpAddr, iif: &str, flow: Flow) -> Option<String> {
    // IPv6 has no rp_filter sysctl.
    if flow.src.is_ipv6() || rp_filter(v, iif) != Some(1) {
        return None;
    }
    let vxlan = v.pointer("/device/name").and_then(Value::as_str) == Some(iif);
    match return_route(v, flow.src) {
        Some((dst, dev)) if dev != Some(iif) => Some(format!(
            "strict rp_filter on {iif} of {at}: its route back to {} ({dst} dev {}) does not leave by {iif}",
            flow.src,
            dev.unwrap_or("?")
        )),
        Some(_) => None,
        None if vxlan => {
            Some(format!("strict rp_filter on {iif} of {at}: no route back to {} through {iif}", flow.src))
        }
        None => {
            w.notes.push(format!(
                "rp_filter on {at}: strict on {iif}; its route back to {} is not in the view (not judged)",
                flow.src
            ));
            None
        }
    }
}

/// The `remote-firewall` hop: the destination node's FORWARD verdict for `flow`, arriving on
/// `iif` and leaving by `bridge`. `false` when it drops the packet. A view without rules
/// (older flanneld) is a note, not a finding.
pub(super) fn forward_hop(
    w: &mut Walk,
    v: &Value,
    at: IpAddr,
    src: Option<String>,
    (iif, bridge): (&str, &str),
    flow: Flow,
) -> bool {
    let Some(rules) = Ruleset::from_view(v) else {
        w.notes.push(format!("FORWARD on {at} not judged: its view carries no firewall rules"));
        return true;
    };
    let errors: Vec<&str> = v
        .pointer("/firewall/errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    for e in errors {
        w.notes.push(format!("firewall of {at}: {e}"));
    }
    if flow.dst.is_ipv6() && rules.filter6.is_none() {
        w.notes.push(format!(
            "FORWARD on {at}: its view carries no ip6tables rules (ip6tables-save missing, or an older flanneld)"
        ));
    }
    let verdict = rules.forward(&Packet { src: flow.src, dst: flow.dst, iif: Some(iif), oif: Some(bridge) });
    let obj = format!("FORWARD {iif} → {bridge} on {at}: {}", verdict.shown());
    if !verdict.skipped.is_empty() {
        w.notes.push(format!(
            "remote-firewall: {} rule(s) on {at} with matches weft does not evaluate were skipped",
            verdict.skipped.len()
        ));
    }
    if verdict.drops() {
        let why = format!(
            "the {} FORWARD chain of {at} drops {} → {}",
            super::local::family(flow.dst),
            flow.src,
            flow.dst
        );
        w.broken("remote-firewall", obj, src, Cause::ForwardDrop, why);
        return false;
    }
    w.ok("remote-firewall", obj, src);
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const FLOW: Flow =
        Flow { src: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 2)), dst: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 3)) };
    const AT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 18, 0, 11));

    fn walk() -> Walk {
        Walk { hops: Vec::new(), notes: Vec::new(), node: AT.to_string() }
    }

    fn view(filter: &str, rp: u64, back_dev: &str) -> Value {
        json!({
            "device": {"name": "flannel.1"},
            "underlay": {"name": "eth0"},
            "bridge": {"name": "cni0"},
            "routes": [
                {"dst": "10.244.1.0/24", "dev": back_dev, "kind": "unicast"},
                {"dst": "10.244.2.0/24", "dev": "cni0", "kind": "unicast"}
            ],
            "sysctls": {"ip_forward": 1, "rp_filter": {"all": 0, "flannel.1": rp}},
            "firewall": {"iptables_filter": filter, "nft": null, "errors": []}
        })
    }

    const POLICY_DROP: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n";
    const POD_RULE: &str = "*filter\n:FORWARD DROP [0:0]\n:FLANNEL-FWD - [0:0]\n-A FORWARD -j FLANNEL-FWD\n\
                            -A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT\nCOMMIT\n";

    #[test]
    fn remote_forward_policy_drop_is_named_on_that_node() {
        let mut w = walk();
        let v = view(POLICY_DROP, 0, "flannel.1");
        let iif = arrival_iface(&v).unwrap();
        assert!(!forward_hop(&mut w, &v, AT, None, (iif, "cni0"), FLOW));
        let h = &w.hops[0];
        assert_eq!(
            (h.step, h.ok, h.cause, h.node.as_str()),
            ("remote-firewall", false, Some(Cause::ForwardDrop), "198.18.0.11")
        );
        assert!(h.object.contains("FORWARD flannel.1 → cni0 on 198.18.0.11: policy DROP"), "{}", h.object);
    }

    #[test]
    fn remote_forward_accepted_by_a_rule_for_the_pod_network() {
        let mut w = walk();
        let v = view(POD_RULE, 0, "flannel.1");
        assert!(forward_hop(&mut w, &v, AT, None, ("flannel.1", "cni0"), FLOW));
        assert!(
            w.hops[0].ok && w.hops[0].object.contains("ACCEPT (-A FLANNEL-FWD -s 10.244.0.0/16 -j ACCEPT)")
        );
    }

    #[test]
    fn a_view_without_rules_is_a_note_not_a_finding() {
        let mut w = walk();
        let mut v = view(POLICY_DROP, 0, "flannel.1");
        v.as_object_mut().unwrap().remove("firewall");
        assert!(forward_hop(&mut w, &v, AT, None, ("flannel.1", "cni0"), FLOW));
        assert!(w.hops.is_empty() && w.notes[0].contains("not judged"), "{:?}", w.notes);
    }

    #[test]
    fn strict_rp_filter_against_the_return_route() {
        let mut w = walk();
        // Return route through the arrival device: accepted.
        assert_eq!(rp_rejects(&mut w, &view("", 1, "flannel.1"), AT, "flannel.1", FLOW), None);
        // Return route by another device: rejected.
        let why = rp_rejects(&mut w, &view("", 1, "eth0"), AT, "flannel.1", FLOW).unwrap();
        assert!(why.contains("10.244.1.0/24 dev eth0"), "{why}");
        // Loose mode: not judged here (the kernel needs any route back).
        assert_eq!(rp_rejects(&mut w, &view("", 2, "eth0"), AT, "flannel.1", FLOW), None);
        // `all` counts too (the maximum of all and the device).
        let mut v = view("", 0, "eth0");
        v["sysctls"]["rp_filter"]["all"] = json!(1);
        assert!(rp_rejects(&mut w, &v, AT, "flannel.1", FLOW).is_some());
        // No return route: rejected through the VXLAN device, not judged on host-gw's uplink.
        let mut v = view("", 1, "flannel.1");
        v["routes"] = json!([]);
        assert!(rp_rejects(&mut w, &v, AT, "flannel.1", FLOW).is_some());
        v["device"] = Value::Null;
        v["sysctls"]["rp_filter"]["eth0"] = json!(1);
        assert_eq!(arrival_iface(&v), Some("eth0"));
        assert_eq!(rp_rejects(&mut w, &v, AT, "eth0", FLOW), None);
        assert!(w.notes.iter().any(|n| n.contains("not judged")), "{:?}", w.notes);
    }

    const FLOW6: Flow = Flow {
        src: IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 5, 0, 1, 0, 0, 0, 2)),
        dst: IpAddr::V6(std::net::Ipv6Addr::new(0xfd00, 5, 0, 2, 0, 0, 0, 3)),
    };

    #[test]
    fn remote_ipv6_forward_walks_the_ip6tables_rules_of_the_view() {
        let mut v = view(POD_RULE, 0, "flannel.1");
        let drop6 = "*filter\n:FORWARD ACCEPT [0:0]\n\
                     -A FORWARD -s fd00:5:0:1::2/128 -d fd00:5:0:2::3/128 -j DROP\nCOMMIT\n";
        v["firewall"]["ip6tables_filter"] = json!(drop6);
        let mut w = walk();
        assert!(!forward_hop(&mut w, &v, AT, None, ("flannel-v6.1", "cni0"), FLOW6));
        let h = &w.hops[0];
        assert_eq!((h.step, h.cause), ("remote-firewall", Some(Cause::ForwardDrop)));
        assert!(h.detail.as_deref().unwrap_or("").contains("IPv6 FORWARD chain of 198.18.0.11"), "{h:?}");
        // The IPv4 pair is judged by the IPv4 rules, which accept it.
        let mut w = walk();
        assert!(forward_hop(&mut w, &v, AT, None, ("flannel.1", "cni0"), FLOW));
        // A view without the IPv6 rules (older flanneld): a note, and nothing dropped.
        v["firewall"].as_object_mut().unwrap().remove("ip6tables_filter");
        let mut w = walk();
        assert!(forward_hop(&mut w, &v, AT, None, ("flannel-v6.1", "cni0"), FLOW6));
        assert!(w.notes.iter().any(|n| n.contains("no ip6tables rules")), "{:?}", w.notes);
    }
}
