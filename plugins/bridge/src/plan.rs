//! Pure planning of the L3 part of ADD (docs/cni.md §7.3 step 9) and of the result
//! (step 6, 15): gateways, the default route, bridge gateway addresses, interface indexes.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use weft_common::cni::{CniResult, Dns, Interface, IpConfig, Route};

use crate::config::BridgeSpec;

/// Index of the container interface in `interfaces` (bridge, host veth, container).
pub const CONTAINER_INDEX: usize = 2;

/// What the container and the bridge get in L3 mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L3Plan {
    /// The container's addresses, each with `interface` = 2 and its gateway.
    pub ips: Vec<IpConfig>,
    /// Routes for the container (IPAM's, plus the default routes `isDefaultGateway` adds).
    pub routes: Vec<Route>,
    /// Gateway addresses for the bridge (`<gateway>/<prefix of the IP>`), when `isGateway`.
    pub bridge_addrs: Vec<IpNetwork>,
    pub dns: Dns,
}

/// `0.0.0.0/0` or `::/0`.
fn default_dst(v4: bool) -> Option<IpNetwork> {
    let ip = if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) };
    IpNetwork::new(ip, 0).ok()
}

/// The first address after the network address of `net` (the reference's default gateway).
pub fn first_host(net: &IpNetwork) -> Option<IpAddr> {
    match net.network() {
        IpAddr::V4(n) => u32::from(n).checked_add(1).map(|v| IpAddr::V4(v.into())),
        IpAddr::V6(n) => u128::from(n).checked_add(1).map(|v| IpAddr::V6(v.into())),
    }
}

/// Plans addresses, gateways and routes from the IPAM result.
pub fn plan_l3(spec: &BridgeSpec, ipam: &CniResult) -> L3Plan {
    let mut routes = ipam.routes.clone();
    let mut ips = Vec::with_capacity(ipam.ips.len());
    let mut bridge_addrs: Vec<IpNetwork> = Vec::new();
    for ip in &ipam.ips {
        let mut ip = ip.clone();
        ip.interface = Some(CONTAINER_INDEX);
        if ip.gateway.is_none() && spec.is_gateway {
            ip.gateway = first_host(&ip.address);
        }
        let v4 = ip.address.is_ipv4();
        if let Some(gw) = ip.gateway {
            if spec.is_default_gateway {
                let has_default =
                    routes.iter().any(|r| r.dst.prefix() == 0 && r.dst.is_ipv4() == v4 && r.gw.is_some());
                if let Some(dst) = default_dst(v4).filter(|_| !has_default) {
                    routes.push(Route::new(dst, Some(gw)));
                }
            }
            if spec.is_gateway {
                if let Ok(net) = IpNetwork::new(gw, ip.address.prefix()) {
                    if !bridge_addrs.contains(&net) {
                        bridge_addrs.push(net);
                    }
                }
            }
        }
        ips.push(ip);
    }
    L3Plan { ips, routes, bridge_addrs, dns: ipam.dns.clone() }
}

/// The gateway a route without `gw` is installed through: the first IP gateway of its family.
pub fn route_gateway(route: &Route, ips: &[IpConfig]) -> Option<IpAddr> {
    route
        .gw
        .or_else(|| ips.iter().filter(|i| i.address.is_ipv4() == route.dst.is_ipv4()).find_map(|i| i.gateway))
}

/// The names and MACs that make up `interfaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub bridge: String,
    pub bridge_mac: String,
    pub host_veth: String,
    pub host_mac: String,
    pub ifname: String,
    pub container_mac: String,
    pub netns: String,
    /// `<bridge>.<vlan>` (name, MAC) when the gateway lives on a VLAN interface (index 3).
    pub vlan_gateway: Option<(String, String)>,
}

/// The ADD result: `interfaces` = [bridge, host veth, container interface with sandbox],
/// the planned IPs and routes, and DNS (the config's when set, else IPAM's).
pub fn build_result(att: &Attachment, l3: Option<L3Plan>, config_dns: Option<&Dns>) -> CniResult {
    let iface = |name: &str, mac: &str, sandbox: Option<&str>| Interface {
        name: name.to_string(),
        mac: Some(mac.to_string()).filter(|m| !m.is_empty()),
        sandbox: sandbox.map(str::to_string),
        ..Default::default()
    };
    let mut interfaces = vec![
        iface(&att.bridge, &att.bridge_mac, None),
        iface(&att.host_veth, &att.host_mac, None),
        iface(&att.ifname, &att.container_mac, Some(&att.netns)),
    ];
    if let Some((name, mac)) = &att.vlan_gateway {
        interfaces.push(iface(name, mac, None));
    }
    let (ips, routes, ipam_dns) = match l3 {
        Some(p) => (p.ips, p.routes, p.dns),
        None => (Vec::new(), Vec::new(), Dns::default()),
    };
    CniResult {
        cni_version: weft_common::cni::version::CURRENT.to_string(),
        interfaces,
        ips,
        routes,
        dns: config_dns.cloned().unwrap_or(ipam_dns),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use serde_json::json;

    fn spec(v: serde_json::Value) -> BridgeSpec {
        config::parse(&v, "", true).unwrap()
    }

    fn ipam(v: serde_json::Value) -> CniResult {
        CniResult::parse(&v, "1.0.0").unwrap()
    }

    #[test]
    fn flannel_style_default_gateway() {
        let s = spec(json!({"isDefaultGateway": true, "ipam": {"type": "host-local"}}));
        let r = ipam(json!({"ips": [{"address": "10.244.1.3/24"}], "routes": [{"dst": "10.244.0.0/16"}]}));
        let p = plan_l3(&s, &r);
        assert_eq!(p.ips[0].interface, Some(2));
        assert_eq!(p.ips[0].gateway, Some("10.244.1.1".parse().unwrap()));
        assert_eq!(p.routes.len(), 2);
        assert_eq!(
            p.routes[1],
            Route::new("0.0.0.0/0".parse().unwrap(), Some("10.244.1.1".parse().unwrap()))
        );
        assert_eq!(p.bridge_addrs, vec!["10.244.1.1/24".parse::<IpNetwork>().unwrap()]);
        assert_eq!(route_gateway(&p.routes[0], &p.ips), Some("10.244.1.1".parse().unwrap()));
    }

    #[test]
    fn dual_stack_gets_one_default_per_family() {
        let s = spec(json!({"isDefaultGateway": true, "ipam": {"type": "x"}}));
        let r = ipam(json!({"ips": [{"address": "10.9.0.3/29", "gateway": "10.9.0.1"},
                                    {"address": "fd00:9::3/64"}, {"address": "10.9.1.3/24"}]}));
        let p = plan_l3(&s, &r);
        let defaults: Vec<_> = p.routes.iter().filter(|r| r.dst.prefix() == 0).collect();
        assert_eq!(defaults.len(), 2);
        assert_eq!(defaults[1].gw, Some("fd00:9::1".parse().unwrap()));
        assert_eq!(p.bridge_addrs.len(), 3);
        assert!(p.ips.iter().all(|i| i.interface == Some(2)));
    }

    #[test]
    fn existing_default_with_gw_is_kept_and_no_gateway_without_is_gateway() {
        let s = spec(json!({"isDefaultGateway": true}));
        let r = ipam(
            json!({"ips": [{"address": "10.9.0.3/24"}], "routes": [{"dst": "0.0.0.0/0", "gw": "10.9.0.254"}]}),
        );
        assert_eq!(plan_l3(&s, &r).routes.len(), 1);
        let p = plan_l3(&spec(json!({})), &r);
        assert_eq!(p.ips[0].gateway, None);
        assert!(p.bridge_addrs.is_empty());
    }

    #[test]
    fn result_shape() {
        let att = Attachment {
            bridge: "cni0".into(),
            bridge_mac: "0a:00:00:00:00:01".into(),
            host_veth: "veth0123abcd".into(),
            host_mac: "0a:00:00:00:00:02".into(),
            ifname: "eth0".into(),
            container_mac: "0a:00:00:00:00:03".into(),
            netns: "/run/netns/x".into(),
            vlan_gateway: None,
        };
        let s = spec(json!({"isGateway": true}));
        let r = ipam(json!({"ips": [{"address": "10.9.0.3/24"}], "dns": {"nameservers": ["1.1.1.1"]}}));
        let res = build_result(&att, Some(plan_l3(&s, &r)), None);
        let v = res.render("0.3.1").unwrap();
        assert_eq!(v["interfaces"][0], json!({"name": "cni0", "mac": "0a:00:00:00:00:01"}));
        assert_eq!(v["interfaces"][2]["sandbox"], "/run/netns/x");
        assert_eq!(
            v["ips"][0],
            json!({"version": "4", "interface": 2, "address": "10.9.0.3/24", "gateway": "10.9.0.1"})
        );
        assert_eq!(v["dns"]["nameservers"][0], "1.1.1.1");
        let dns = Dns { domain: "x".into(), ..Default::default() };
        let res = build_result(&att, None, Some(&dns));
        let v = res.render("1.0.0").unwrap();
        assert!(v.get("ips").is_none());
        assert_eq!(v["dns"]["domain"], "x");
        let att = Attachment { vlan_gateway: Some(("cni0.100".into(), "0a:00:00:00:00:04".into())), ..att };
        let v = build_result(&att, None, None).render("1.0.0").unwrap();
        assert_eq!(v["interfaces"][3], json!({"name": "cni0.100", "mac": "0a:00:00:00:00:04"}));
        assert_eq!(v["interfaces"][2]["name"], "eth0");
    }
}
