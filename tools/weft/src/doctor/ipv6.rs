//! The IPv6 VXLAN device `flannel-v6.<VNI>` of a dual-stack node (docs/flannel.md §4.1), as its
//! view reports it: shown in `weft doctor`'s text and JSON (the checks of the IPv6 side are
//! in `check/ipv6.rs`).

use std::fmt::Write as _;

use serde::Serialize;
use weft_dataplane::view::{DataplaneView, FdbView, NeighView, RouteView};

use super::check::NodeSummary;

/// A node's `flannel-v6.<VNI>` and the entries on it, one line per entry in `ip`/`bridge`
/// words.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ipv6Device {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: u32,
    pub up: bool,
    /// `IFLA_VXLAN_LOCAL6`.
    pub local: Option<String>,
    pub vni: Option<u32>,
    /// `<ip> lladdr <mac> <state>`.
    pub neighbours: Vec<String>,
    /// `<mac> dst <ip>`.
    pub fdb: Vec<String>,
    /// `<dst> [via <gw>] [onlink]`.
    pub routes: Vec<String>,
}

fn neigh(n: &NeighView) -> String {
    format!("{} lladdr {} {}", n.ip, n.mac.as_deref().unwrap_or("-"), n.state)
}

fn fdb(f: &FdbView) -> String {
    match f.dst {
        Some(d) => format!("{} dst {d}", f.mac),
        None => f.mac.clone(),
    }
}

fn route(r: &RouteView) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gateway {
        let _ = write!(s, " via {gw}");
    }
    if r.onlink {
        s.push_str(" onlink");
    }
    s
}

impl Ipv6Device {
    /// The device in `v`, if the node has one.
    pub fn of(v: &DataplaneView) -> Option<Ipv6Device> {
        let d = v.device_v6.as_ref()?;
        let x = d.vxlan.as_ref();
        Some(Ipv6Device {
            name: d.name.clone(),
            mac: d.mac.clone(),
            mtu: d.mtu,
            up: d.up,
            local: x.and_then(|x| x.local6).map(|a| a.to_string()),
            vni: x.and_then(|x| x.vni),
            neighbours: v.neighbours_v6.iter().map(neigh).collect(),
            fdb: v.fdb_v6.iter().map(fdb).collect(),
            routes: v.routes_v6.iter().map(route).collect(),
        })
    }
}

/// The text section: one line per node with an IPv6 device; empty when none has one.
pub fn text(nodes: &[NodeSummary]) -> String {
    let with: Vec<(&str, &Ipv6Device)> =
        nodes.iter().filter_map(|n| Some((n.name.as_str(), n.ipv6_device.as_ref()?))).collect();
    if with.is_empty() {
        return String::new();
    }
    let w = with.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let mut out = String::from("\nIPv6 devices:\n");
    for (node, d) in with {
        let _ = writeln!(
            out,
            "{node:<w$}  {} mac {} mtu {} {} local {}: {} neighbour(s), {} fdb, {} route(s)",
            d.name,
            d.mac.as_deref().unwrap_or("-"),
            d.mtu,
            if d.up { "up" } else { "DOWN" },
            d.local.as_deref().unwrap_or("-"),
            d.neighbours.len(),
            d.fdb.len(),
            d.routes.len()
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use weft_dataplane::view::{LinkView, VxlanView};

    fn v6_view() -> DataplaneView {
        DataplaneView {
            device_v6: Some(LinkView {
                name: "flannel-v6.1".into(),
                index: 7,
                kind: Some("vxlan".into()),
                mac: Some("6a:00:00:00:00:01".into()),
                mtu: 1430,
                up: true,
                vxlan: Some(VxlanView {
                    vni: Some(1),
                    local6: Some("fd00:18::10".parse().unwrap()),
                    ..VxlanView::default()
                }),
                ..LinkView::default()
            }),
            neighbours_v6: vec![NeighView {
                ip: "fd00:5:0:47::".parse().unwrap(),
                mac: Some("6a:00:00:00:00:02".into()),
                state: "permanent".into(),
                permanent: true,
            }],
            fdb_v6: vec![FdbView {
                mac: "6a:00:00:00:00:02".into(),
                dst: Some("fd00:18::11".parse().unwrap()),
                self_: true,
                permanent: true,
            }],
            routes_v6: vec![RouteView {
                dst: "fd00:5:0:47::/64".parse().unwrap(),
                gateway: Some("fd00:5:0:47::".parse().unwrap()),
                dev: Some("flannel-v6.1".into()),
                oif: Some(7),
                onlink: true,
                protocol: 3,
                kind: "unicast".into(),
                table: 254,
                scope: 0,
                tos: 0,
                metric: 1024,
                multipath: false,
            }],
            ..DataplaneView::default()
        }
    }

    #[test]
    fn the_ipv6_device_and_its_entries_are_shown() {
        assert_eq!(Ipv6Device::of(&DataplaneView::default()), None);
        let d = Ipv6Device::of(&v6_view()).unwrap();
        assert_eq!(
            (d.name.as_str(), d.mtu, d.local.as_deref(), d.vni),
            ("flannel-v6.1", 1430, Some("fd00:18::10"), Some(1))
        );
        assert_eq!(d.neighbours, ["fd00:5:0:47:: lladdr 6a:00:00:00:00:02 permanent"]);
        assert_eq!(d.fdb, ["6a:00:00:00:00:02 dst fd00:18::11"]);
        assert_eq!(d.routes, ["fd00:5:0:47::/64 via fd00:5:0:47:: onlink"]);
        let json = serde_json::to_value(&d).unwrap();
        assert_eq!(json["fdb"][0], "6a:00:00:00:00:02 dst fd00:18::11");
    }

    #[test]
    fn the_text_section_lists_nodes_with_one() {
        let node = |name: &str, d| NodeSummary {
            name: name.into(),
            subnet: None,
            lease_key: None,
            vtep_mac: None,
            device_mac: None,
            view: "ok",
            error: None,
            ipv6_device: d,
        };
        assert_eq!(text(&[node("198.18.0.10", None)]), "");
        let t = text(&[node("198.18.0.10", Ipv6Device::of(&v6_view())), node("198.18.0.9", None)]);
        assert_eq!(
            t,
            "\nIPv6 devices:\n198.18.0.10  flannel-v6.1 mac 6a:00:00:00:00:01 mtu 1430 up local fd00:18::10: 1 neighbour(s), 1 fdb, 1 route(s)\n"
        );
    }
}
