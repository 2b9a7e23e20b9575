//! Dual stack in the lab ([`Lab::set_dual_stack`]): every node also gets an IPv6 underlay
//! address in the benchmarking range 2001:2::/48 (`2001:2::<10+i>/64` on `eth0`), the network
//! config gets `EnableIPv6` with [`POD_NETWORK_V6`], flanneld gets `--public-ipv6`, and pods get
//! an IPv6 address from the flannel CNI plugin (it writes a second range set from subnet.env's
//! `FLANNEL_IPV6_SUBNET`). Read back with `ip -j`: the `flannel-v6.1` device and its routes.

use std::net::{IpAddr, Ipv6Addr};

use ipnetwork::{IpNetwork, Ipv6Network};
use serde_json::Value;

use crate::backend::Backend;
use crate::error::{LabError, Result};
use crate::lab::{Lab, MAX_NODES};

/// flanneld's IPv6 VXLAN device (VNI 1).
pub const VXLAN6_DEV: &str = "flannel-v6.1";
/// Prefix length of the IPv6 underlay.
pub const UNDERLAY_PREFIX_V6: u8 = 64;
/// The pods' IPv6 network (`IPv6Network`; leases of /64).
pub const POD_NETWORK_V6: &str = "fd00:244::/56";

/// IPv6 underlay address of node `i`: `2001:2::<10+i>` (hex last group).
pub fn node_ip6(i: usize) -> Option<Ipv6Addr> {
    (i < MAX_NODES)
        .then(|| u16::try_from(10 + i).ok())
        .flatten()
        .map(|g| Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 0, g))
}

/// `config` (a network config JSON) with `EnableIPv6` and `IPv6Network` [`POD_NETWORK_V6`].
pub fn with_ipv6(config: &str) -> Result<String> {
    let mut v: Value =
        serde_json::from_str(config).map_err(|e| LabError::parse("network config", e.to_string()))?;
    let obj = v.as_object_mut().ok_or_else(|| LabError::parse("network config", "not an object"))?;
    obj.insert("EnableIPv6".into(), Value::Bool(true));
    obj.insert("IPv6Network".into(), Value::String(POD_NETWORK_V6.into()));
    Ok(v.to_string())
}

/// The pod's first IPv6 address from a CNI result (`ips[].address`).
pub fn result_ip6(result: &Value) -> Option<Ipv6Addr> {
    result.get("ips").and_then(Value::as_array).into_iter().flatten().find_map(|ip| {
        ip.get("address").and_then(Value::as_str).and_then(|a| a.parse::<Ipv6Network>().ok()).map(|n| n.ip())
    })
}

impl Lab {
    /// Runs the lab dual stack from now on (call before adding nodes). See the module doc.
    pub fn set_dual_stack(&mut self, on: bool) {
        self.dual_stack = on;
    }

    /// Whether the lab runs dual stack.
    pub fn dual_stack(&self) -> bool {
        self.dual_stack
    }

    /// Node `i`'s IPv6 subnet (subnet.env's `FLANNEL_IPV6_SUBNET` reduced to its network).
    pub fn node_subnet6(&self, i: usize) -> Result<Ipv6Network> {
        let env =
            self.subnet_env(i)?.ok_or_else(|| LabError::Invalid(format!("node {i} has no subnet.env")))?;
        match env.ipv6_subnet_network() {
            Some(IpNetwork::V6(n)) => Ok(n),
            other => Err(LabError::parse("FLANNEL_IPV6_SUBNET", format!("{other:?} is not an IPv6 subnet"))),
        }
    }

    /// Destinations routed via `flannel-v6.1` on node `i` (empty if the device is absent).
    pub fn flannel6_routes(&self, i: usize) -> Result<Vec<Ipv6Network>> {
        self.routes_on(i, "-6", VXLAN6_DEV)
    }

    /// Node `i`'s host-gw style IPv6 routes, `(destination, gateway)`: `proto boot` routes with
    /// a gateway on `eth0` (what flanneld's host-gw backend makes for the IPv6 side).
    pub fn host_gw_routes6(&self, i: usize) -> Result<Vec<(Ipv6Network, Ipv6Addr)>> {
        self.gateway_routes(i, "-6")
    }

    /// Destinations of flanneld's IPv6 peer routes on node `i` for the lab's backend:
    /// [`Lab::flannel6_routes`] (VXLAN) or [`Lab::host_gw_routes6`] (host-gw).
    pub fn peer_routes6(&self, i: usize) -> Result<Vec<Ipv6Network>> {
        match self.backend {
            Backend::Vxlan => self.flannel6_routes(i),
            Backend::HostGw => Ok(self.host_gw_routes6(i)?.into_iter().map(|(dst, _)| dst).collect()),
        }
    }

    /// Waits until every node routes every other node's IPv6 subnet ([`Lab::peer_routes6`]).
    pub fn wait_converged6(&self) -> Result<()> {
        let n = self.nodes.len();
        let subnets: Vec<Ipv6Network> = (0..n).map(|i| self.node_subnet6(i)).collect::<Result<_>>()?;
        crate::wait::until_true("IPv6 routes between all nodes", crate::flannel::CONVERGE_TIMEOUT, || {
            for on in 0..n {
                let have = self.peer_routes6(on)?;
                for (peer, s) in subnets.iter().enumerate() {
                    if peer != on && !have.contains(s) {
                        return Ok(false);
                    }
                }
            }
            Ok(true)
        })
    }

    /// Pings every pod's IPv6 address from every other pod (as [`Lab::ping_matrix`]).
    pub fn ping_matrix6(&self) -> Result<crate::PingMatrix> {
        let targets = self
            .pods
            .iter()
            .map(|p| {
                p.ip6()
                    .map(IpAddr::V6)
                    .ok_or_else(|| LabError::Invalid(format!("{} has no IPv6", p.ns.name())))
            })
            .collect::<Result<Vec<IpAddr>>>()?;
        self.ping_matrix_to(&targets)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_config_and_results() {
        assert_eq!(node_ip6(0).map(|a| a.to_string()).as_deref(), Some("2001:2::a"));
        assert_eq!(node_ip6(MAX_NODES), None);
        let v: Value = serde_json::from_str(&with_ipv6(r#"{"Network":"10.244.0.0/16"}"#).unwrap()).unwrap();
        assert_eq!(
            (v["EnableIPv6"].as_bool(), v["IPv6Network"].as_str()),
            (Some(true), Some(POD_NETWORK_V6))
        );
        let r = serde_json::json!({"ips": [{"address": "10.244.1.2/24"}, {"address": "fd00:244:0:1::2/64"}]});
        assert_eq!(result_ip6(&r), Some("fd00:244:0:1::2".parse().unwrap()));
    }
}
