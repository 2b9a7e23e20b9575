//! Leases straight from etcd (with flanneld's registry and key/value codec), for the "where
//! it should have come from" side of a hop.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use serde::Serialize;
use weft_common::mac::format_mac;
use weft_flanneld::cli::EtcdArgs;
use weft_flanneld::lease::{self, LeaseAttrs};
use weft_flanneld::registry::etcd::{EtcdOptions, EtcdRegistry};
use weft_flanneld::registry::Registry;

/// One subnet lease as stored in etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lease {
    pub key: String,
    pub subnet: Ipv4Network,
    pub public_ip: Ipv4Addr,
    pub vtep_mac: Option<String>,
    pub vni: Option<u32>,
    /// `BackendType` (`vxlan`, `host-gw`, ...).
    pub backend_type: String,
    pub revision: i64,
    /// Dual stack: the IPv6 subnet of the key (`&<v6>-<len>`), `PublicIPv6` and
    /// `BackendV6Data.VtepMAC` (docs/flannel.md §4.2).
    pub subnet6: Option<Ipv6Network>,
    pub public_ipv6: Option<Ipv6Addr>,
    pub vtep_mac6: Option<String>,
}

impl Lease {
    /// A lease in upstream's host-gw format (docs/flannel.md §4.2).
    pub fn is_host_gw(&self) -> bool {
        self.backend_type == weft_flanneld::lease::BACKEND_HOST_GW
    }

    /// The lease's IPv4 subnet or, with `v6`, its IPv6 one.
    pub fn subnet_of(&self, v6: bool) -> Option<IpNetwork> {
        if v6 {
            self.subnet6.map(IpNetwork::V6)
        } else {
            Some(IpNetwork::V4(self.subnet))
        }
    }

    /// Whether the lease's subnet of `ip`'s family holds `ip`.
    pub fn covers(&self, ip: IpAddr) -> bool {
        self.subnet_of(ip.is_ipv6()).is_some_and(|s| s.contains(ip))
    }

    /// `PublicIP` or, with `v6`, `PublicIPv6`.
    pub fn public_of(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.public_ipv6.map(IpAddr::V6)
        } else {
            Some(IpAddr::V4(self.public_ip))
        }
    }

    /// `VtepMAC` of `BackendData` or, with `v6`, of `BackendV6Data`.
    pub fn mac_of(&self, v6: bool) -> Option<String> {
        if v6 {
            self.vtep_mac6.clone()
        } else {
            self.vtep_mac.clone()
        }
    }
}

/// How long reading etcd may take in all.
const ETCD_DEADLINE: Duration = Duration::from_secs(5);

/// Reads every lease under `<prefix>/subnets/` with flanneld's connection settings (TLS and
/// user/password as flanneld takes them); malformed records are skipped.
pub fn read(etcd: &EtcdArgs) -> Result<Vec<Lease>, String> {
    etcd.check()?;
    let (tls, _) = etcd.tls();
    let opts: EtcdOptions = etcd.options(tls.as_ref())?;
    let endpoints = etcd.etcd_endpoints.as_str();
    let prefix = etcd.etcd_prefix.as_str();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start async runtime: {e}"))?;
    let dir = lease::subnets_dir(prefix);
    let records = rt.block_on(async {
        tokio::time::timeout(ETCD_DEADLINE, async {
            let reg = EtcdRegistry::connect(&opts).await.map_err(|e| e.to_string())?;
            reg.list(&dir).await.map_err(|e| e.to_string())
        })
        .await
        .map_err(|_| format!("etcd at {endpoints} did not answer within {}s", ETCD_DEADLINE.as_secs()))?
    });
    let (records, _) = records.map_err(|e| format!("read leases from etcd at {endpoints}: {e}"))?;
    let mut out = Vec::new();
    for r in records {
        let Ok(key) = lease::parse_lease_path(&dir, &r.key) else { continue };
        let Ok(attrs) = LeaseAttrs::parse(&r.value) else { continue };
        // `BackendData` as flanneld decodes it (field names matched whatever their case, as Go's
        // encoding/json): what its peer entries are made of.
        let data = attrs.vxlan_data().ok();
        out.push(Lease {
            key: r.key.clone(),
            subnet: key.ipv4,
            public_ip: attrs.public_ip,
            vtep_mac: data.as_ref().map(|d| format_mac(&d.vtep_mac)),
            vni: data.map(|d| d.vni),
            backend_type: attrs.backend_type.clone(),
            revision: r.mod_revision,
            subnet6: key.ipv6,
            public_ipv6: attrs.public_ipv6,
            vtep_mac6: attrs.vxlan_v6_data().ok().map(|d| format_mac(&d.vtep_mac)),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn each_family_of_a_dual_stack_lease() {
        let l = Lease {
            key: "/coreos.com/network/subnets/10.5.11.0-24&fd00:5:0:11::-64".into(),
            subnet: "10.5.11.0/24".parse().unwrap(),
            public_ip: "198.18.0.11".parse().unwrap(),
            vtep_mac: Some("6e:aa:00:00:00:01".into()),
            vni: Some(1),
            backend_type: "vxlan".into(),
            revision: 3,
            subnet6: Some("fd00:5:0:11::/64".parse().unwrap()),
            public_ipv6: Some("fd00:18::11".parse().unwrap()),
            vtep_mac6: Some("6a:bb:00:00:00:01".into()),
        };
        assert!(l.covers("10.5.11.7".parse().unwrap()) && l.covers("fd00:5:0:11::7".parse().unwrap()));
        assert!(!l.covers("fd00:5:0:12::7".parse().unwrap()) && !l.covers("10.5.12.7".parse().unwrap()));
        assert_eq!(l.public_of(true), Some("fd00:18::11".parse().unwrap()));
        assert_eq!(l.mac_of(true).as_deref(), Some("6a:bb:00:00:00:01"));
        let v4_only = Lease { subnet6: None, public_ipv6: None, vtep_mac6: None, ..l };
        assert!(!v4_only.covers("fd00:5:0:11::7".parse().unwrap()));
        assert_eq!((v4_only.subnet_of(true), v4_only.public_of(true)), (None, None));
    }
}
