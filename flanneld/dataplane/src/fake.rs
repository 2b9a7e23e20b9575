//! An in-memory [`Dataplane`] for daemon tests without root: it records every call and keeps a
//! kernel-like state with the same keys and replace/delete semantics as the real one
//! (neighbours by address, FDB entries by MAC, routes by destination).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::{IpNetwork, Ipv4Network};

use crate::{ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelState, Mac, NetOp, VxlanSpec};

/// The fake kernel. All fields are public so tests can inspect and tamper (e.g. delete a route
/// behind the daemon's back, or make ops fail).
#[derive(Debug, Default, Clone)]
pub struct FakeDataplane {
    /// The device after `ensure_device`, with the spec it was made from.
    pub device: Option<(VxlanSpec, DeviceInfo)>,
    /// Neighbours: address → MAC.
    pub neighs: BTreeMap<IpAddr, Mac>,
    /// FDB: MAC → destination (a replace rewrites the destination, like the kernel).
    pub fdb: BTreeMap<Mac, IpAddr>,
    /// Routes: destination → (gateway, onlink).
    pub routes: BTreeMap<IpNetwork, (IpAddr, bool)>,
    /// Every op passed to `apply`, in order (batches concatenated).
    pub applied: Vec<NetOp>,
    /// Number of `apply` calls.
    pub batches: usize,
    /// Number of `ensure_device` calls.
    pub ensure_calls: usize,
    /// Ops in this list fail with the given message when applied (they stay here).
    pub fail: Vec<(NetOp, String)>,
    /// When set, the next `apply` applies everything but reports `overrun` (then clears it).
    pub overrun_next: bool,
    /// Public IPs `is_onlink` answers `true` for.
    pub onlink: Vec<Ipv4Addr>,
    /// The MAC a newly created device gets when no hint is given.
    pub next_mac: Mac,
    /// Blackhole routes (`ensure_blackhole`), in the order they were added.
    pub blackholes: Vec<Ipv4Network>,
    /// When set, `ensure_blackhole` fails with this message (as the kernel's EEXIST would).
    pub blackhole_error: Option<String>,
}

impl FakeDataplane {
    /// An empty fake whose created device gets MAC `02:00:00:00:00:01` unless hinted.
    pub fn new() -> Self {
        FakeDataplane { next_mac: [2, 0, 0, 0, 0, 1], ..FakeDataplane::default() }
    }

    /// The current state as [`Dataplane::dump`] reports it (sorted).
    pub fn state(&self) -> KernelState {
        KernelState {
            neighs: self.neighs.iter().map(|(ip, mac)| (*ip, *mac)).collect(),
            fdb: self.fdb.iter().map(|(mac, dst)| (*mac, *dst)).collect(),
            routes: self.routes.iter().map(|(dst, (gw, onlink))| (*dst, *gw, *onlink)).collect(),
        }
    }

    /// Simulates the device disappearing (e.g. deleted by an operator): entries go with it.
    pub fn remove_device(&mut self) {
        self.device = None;
        self.neighs.clear();
        self.fdb.clear();
        self.routes.retain(|_, (_, onlink)| !*onlink);
    }

    fn exec(&mut self, op: &NetOp) {
        match op {
            NetOp::AddNeigh { ip, mac } => {
                self.neighs.insert(*ip, *mac);
            }
            NetOp::DelNeigh { ip, .. } => {
                self.neighs.remove(ip);
            }
            NetOp::AddFdb { mac, dst } => {
                self.fdb.insert(*mac, *dst);
            }
            NetOp::DelFdb { mac, dst } => {
                // The kernel deletes only the entry with that destination.
                if self.fdb.get(mac) == Some(dst) {
                    self.fdb.remove(mac);
                }
            }
            NetOp::AddRoute { dst, gw, onlink } => {
                self.routes.insert(*dst, (*gw, *onlink));
            }
            NetOp::DelRoute { dst, gw, onlink } => {
                if self.routes.get(dst) == Some(&(*gw, *onlink)) {
                    self.routes.remove(dst);
                }
            }
        }
    }
}

impl Dataplane for FakeDataplane {
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        self.ensure_calls += 1;
        if let Some((old, info)) = &self.device {
            let compatible = old.vni == spec.vni
                && old.local == spec.local
                && old.underlay_index == spec.underlay_index
                && old.gbp == spec.gbp
                && (old.port == spec.port || old.port == 0 || spec.port == 0);
            if compatible {
                let info = info.clone();
                self.device = Some((spec.clone(), info.clone()));
                return Ok(info);
            }
            self.remove_device();
        }
        let info = DeviceInfo { index: 1000, mac: mac_hint.unwrap_or(self.next_mac), mtu: spec.mtu };
        self.device = Some((spec.clone(), info.clone()));
        Ok(info)
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        if self.device.is_none() {
            return Err(DataplaneError::Other("no VXLAN device yet: call ensure_device first".into()));
        }
        self.batches += 1;
        let mut report = ApplyReport::default();
        for op in ops {
            self.applied.push(op.clone());
            if let Some((_, why)) = self.fail.iter().find(|(f, _)| f == op) {
                report.failed.push((op.clone(), why.clone()));
                continue;
            }
            self.exec(op);
            report.applied += 1;
        }
        if self.overrun_next {
            self.overrun_next = false;
            report.overrun = true;
        }
        Ok(report)
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        if self.device.is_none() {
            return Err(DataplaneError::Other("no VXLAN device yet: call ensure_device first".into()));
        }
        Ok(self.state())
    }

    async fn is_onlink(&mut self, dst: Ipv4Addr) -> Result<bool, DataplaneError> {
        Ok(self.onlink.contains(&dst))
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        if let Some(e) = &self.blackhole_error {
            return Err(DataplaneError::Other(e.clone()));
        }
        if self.blackholes.contains(&dst) {
            return Ok(false);
        }
        self.blackholes.push(dst);
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{plan_add, plan_reconcile, plan_remove, Peer};

    fn spec() -> VxlanSpec {
        VxlanSpec {
            name: "flannel.1".into(),
            vni: 1,
            port: 0,
            gbp: false,
            learning: false,
            local: "198.18.0.2".parse().unwrap(),
            underlay_index: 2,
            mtu: 1450,
            address: "10.5.72.0/32".parse().unwrap(),
            network: "10.5.0.0/16".parse().unwrap(),
        }
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn add_change_remove_round_trip() {
        block(async {
            let mut dp = FakeDataplane::new();
            assert!(dp.apply(&[]).await.is_err(), "no device yet");
            let info = dp.ensure_device(&spec(), Some([2, 9, 9, 9, 9, 9])).await.unwrap();
            assert_eq!(info.mac, [2, 9, 9, 9, 9, 9]);
            let p = Peer {
                subnet: "10.5.71.0/24".parse().unwrap(),
                public_ip: "198.18.0.3".parse().unwrap(),
                vtep_mac: [6; 6],
                direct: false,
            };
            dp.apply(&plan_add(None, &p)).await.unwrap();
            let mut p2 = p.clone();
            p2.vtep_mac = [7; 6];
            dp.apply(&plan_add(Some(&p), &p2)).await.unwrap();
            assert_eq!(dp.fdb.len(), 1, "old MAC's FDB entry removed");
            assert_eq!(plan_reconcile(&[p2.clone()], &dp.dump().await.unwrap()), vec![]);
            let r = dp.apply(&plan_remove(&p2)).await.unwrap();
            assert_eq!(r.applied, 3);
            assert_eq!(dp.state(), KernelState::default());
            assert_eq!(dp.batches, 3);
        });
    }

    #[test]
    fn adoption_keeps_mac_and_incompatible_spec_recreates() {
        block(async {
            let mut dp = FakeDataplane::new();
            let a = dp.ensure_device(&spec(), None).await.unwrap();
            let b = dp.ensure_device(&spec(), Some([2, 5, 5, 5, 5, 5])).await.unwrap();
            assert_eq!(a, b);
            let mut s = spec();
            s.vni = 2;
            let c = dp.ensure_device(&s, Some([2, 5, 5, 5, 5, 5])).await.unwrap();
            assert_eq!(c.mac, [2, 5, 5, 5, 5, 5]);
        });
    }

    #[test]
    fn failures_and_overrun_are_reported() {
        block(async {
            let mut dp = FakeDataplane::new();
            dp.ensure_device(&spec(), None).await.unwrap();
            let op = NetOp::AddNeigh { ip: "10.5.1.0".parse().unwrap(), mac: [1; 6] };
            dp.fail.push((op.clone(), "EPERM".into()));
            dp.overrun_next = true;
            let r = dp.apply(std::slice::from_ref(&op)).await.unwrap();
            assert_eq!(r.failed.len(), 1);
            assert!(r.overrun);
            assert!(dp.neighs.is_empty());
        });
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        /// Up to 12 peers on distinct subnets `10.5.<i>.0/24` with distinct MACs.
        fn peers() -> impl Strategy<Value = Vec<Peer>> {
            proptest::collection::btree_map(0u8..40, (1u8..6, any::<bool>()), 0..12).prop_map(|m| {
                m.into_iter()
                    .map(|(i, (host, direct))| Peer {
                        subnet: format!("10.5.{i}.0/24").parse().unwrap(),
                        public_ip: format!("198.18.0.{host}").parse().unwrap(),
                        vtep_mac: [2, 0, 0, 0, host, i],
                        direct,
                    })
                    .collect()
            })
        }

        fn programmed(peers: &[Peer]) -> KernelState {
            block(async {
                let mut dp = FakeDataplane::new();
                dp.ensure_device(&spec(), None).await.unwrap();
                for p in peers {
                    dp.apply(&plan_add(None, p)).await.unwrap();
                }
                dp.state()
            })
        }

        proptest! {
            /// Whatever was programmed before, one reconcile round yields exactly the desired state.
            #[test]
            fn reconcile_converges_in_one_round(old in peers(), new in peers()) {
                let got = block(async {
                    let mut dp = FakeDataplane::new();
                    dp.ensure_device(&spec(), None).await.unwrap();
                    for p in &old {
                        dp.apply(&plan_add(None, p)).await.unwrap();
                    }
                    let ops = plan_reconcile(&new, &dp.dump().await.unwrap());
                    dp.apply(&ops).await.unwrap();
                    dp.state()
                });
                prop_assert_eq!(got, programmed(&new));
            }

            /// A change of a peer (MAC, public IP, direct) leaves exactly the new peer's entries.
            #[test]
            fn change_leaves_only_new_entries(a in peers(), b in peers()) {
                for (old, new) in a.iter().zip(b.iter()) {
                    let mut new = new.clone();
                    new.subnet = old.subnet;
                    let got = block(async {
                        let mut dp = FakeDataplane::new();
                        dp.ensure_device(&spec(), None).await.unwrap();
                        dp.apply(&plan_add(None, old)).await.unwrap();
                        dp.apply(&plan_add(Some(old), &new)).await.unwrap();
                        dp.state()
                    });
                    prop_assert_eq!(got, programmed(std::slice::from_ref(&new)));
                }
            }
        }
    }
}
