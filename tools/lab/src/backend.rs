//! Which flannel backend a lab runs (`vxlan`, the default, or `host-gw`): the network config
//! written to etcd, and where a node's routes to its peers are (`flannel.1` with VXLAN, plain
//! `S via P dev eth0` routes with host-gw), read back with `ip -j`.

use std::str::FromStr;

use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::error::{LabError, Result};
use crate::flannel::VXLAN_DEV;
use crate::lab::{Lab, NODE_IFACE};

/// A flannel backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Backend {
    /// VXLAN over `flannel.1` (the default).
    #[default]
    Vxlan,
    /// Plain routes to the other nodes' public IPs on the shared underlay.
    HostGw,
}

impl Backend {
    /// `Backend.Type` in the network config.
    pub fn type_name(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// `config` (a network config JSON) with its `Backend` replaced by `{"Type": <this>}`.
    pub fn apply_to(self, config: &str) -> Result<String> {
        let mut v: Value =
            serde_json::from_str(config).map_err(|e| LabError::parse("network config", e.to_string()))?;
        let obj = v.as_object_mut().ok_or_else(|| LabError::parse("network config", "not an object"))?;
        obj.insert("Backend".into(), serde_json::json!({ "Type": self.type_name() }));
        Ok(v.to_string())
    }
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Backend, String> {
        match s {
            "vxlan" => Ok(Backend::Vxlan),
            "host-gw" => Ok(Backend::HostGw),
            other => Err(format!("unknown backend {other:?} (vxlan or host-gw)")),
        }
    }
}

impl Lab {
    /// The backend later network configs and route checks use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Uses `backend` from now on: [`Lab::put_network_config`] writes it, and
    /// [`Lab::peer_routes`] (hence `wait_route`, `wait_converged`) looks where it puts routes.
    pub fn set_backend(&mut self, backend: Backend) {
        self.backend = backend;
    }

    /// Destinations node `i` routes to other nodes the way the lab's backend does: on
    /// `flannel.1` (VXLAN) or, with host-gw, main-table routes `S via <gateway> dev eth0`.
    pub fn peer_routes(&self, i: usize) -> Result<Vec<Ipv4Network>> {
        match self.backend {
            Backend::Vxlan => self.flannel_routes(i),
            Backend::HostGw => Ok(self.host_gw_routes(i)?.into_iter().map(|(dst, _)| dst).collect()),
        }
    }

    /// Node `i`'s host-gw style routes, `(destination, gateway)`: `proto boot` routes with a
    /// gateway on `eth0` (what flanneld's host-gw backend makes), from `ip -j -4 route`.
    pub fn host_gw_routes(&self, i: usize) -> Result<Vec<(Ipv4Network, std::net::Ipv4Addr)>> {
        self.gateway_routes(i, "-4")
    }

    /// Node `i`'s `proto boot` routes with a gateway on `eth0` in `family` (`-4` or `-6`), as
    /// `(destination, gateway)`; routes whose fields do not parse as `D` and `G` are left out.
    pub(crate) fn gateway_routes<D: FromStr, G: FromStr>(
        &self,
        i: usize,
        family: &str,
    ) -> Result<Vec<(D, G)>> {
        let node = self.node(i)?;
        let v = node.ns.try_ip_json(&[family, "route", "show", "proto", "boot", "dev", NODE_IFACE])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| {
                let dst = r.get("dst")?.as_str()?.parse().ok()?;
                let gw = r.get("gateway")?.as_str()?.parse().ok()?;
                Some((dst, gw))
            })
            .collect())
    }

    /// Whether node `i` has a VXLAN device `flannel.1`.
    pub fn has_vxlan_device(&self, i: usize) -> Result<bool> {
        Ok(self.node(i)?.ns.has_link(VXLAN_DEV))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_and_config_rewrite() {
        assert_eq!("host-gw".parse::<Backend>(), Ok(Backend::HostGw));
        assert_eq!("vxlan".parse::<Backend>(), Ok(Backend::Vxlan));
        assert!("udp".parse::<Backend>().is_err());
        let out =
            Backend::HostGw.apply_to(r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan","VNI":1}}"#);
        let v: Value = serde_json::from_str(&out.unwrap()).unwrap();
        assert_eq!(v["Backend"], serde_json::json!({"Type": "host-gw"}));
        assert_eq!(v["Network"], "10.244.0.0/16");
    }
}
