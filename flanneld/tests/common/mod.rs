//! Test helpers: a recording dataplane with an in-memory kernel, and condition waits.
#![allow(dead_code, clippy::unwrap_used)]

pub mod etcd;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use weft_dataplane::{
    ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelFdb, KernelNeigh, KernelRoute, KernelState,
    Mac, NetOp, VxlanSpec, RT_TABLE_MAIN,
};

/// The fake kernel behind [`RecordingDataplane`].
#[derive(Debug, Default)]
pub struct Kernel {
    pub device: Option<(VxlanSpec, DeviceInfo)>,
    pub neighs: BTreeMap<IpAddr, Mac>,
    pub fdb: BTreeSet<(Mac, IpAddr)>,
    /// Routes of flanneld's shapes: destination → (gateway, onlink).
    pub routes: BTreeMap<IpNetwork, (IpAddr, bool)>,
    /// Other routes (an operator's, other tables, …). A route add with the same main-table
    /// replace key overwrites one, as the kernel's create+replace does, so a test sees it.
    pub foreign: Vec<KernelRoute>,
    /// Every op applied, in order.
    pub log: Vec<NetOp>,
    pub ensure_calls: usize,
    pub dumps: usize,
    /// Route dumps (`dump_routes`, and the route part of every `dump`).
    pub route_dumps: usize,
    /// Sizes of the batches passed to `apply`.
    pub batches: Vec<usize>,
    /// Ops matching this fail (with the op left undone).
    pub fail: Option<fn(&NetOp) -> bool>,
    /// The next apply reports an overrun after applying everything.
    pub overrun_next: bool,
    /// ensure_device ignores the MAC hint and uses this one.
    pub force_mac: Option<Mac>,
    pub next_index: u32,
    /// Blackhole routes, and every `ensure_blackhole` call's subnet.
    pub blackholes: BTreeSet<Ipv4Network>,
    pub blackhole_calls: Vec<Ipv4Network>,
    /// `ensure_blackhole` fails with this (like the kernel's EEXIST next to a `cni0` route).
    pub blackhole_error: Option<String>,
    /// Public IPs that are on-link for DirectRouting: dumps show a `<ip>/32 dev eth0 scope
    /// link` route for each.
    pub onlink: Vec<Ipv4Addr>,
}

/// Records what the daemon asks of the kernel; clones share the kernel.
#[derive(Clone, Default)]
pub struct RecordingDataplane {
    pub kernel: Rc<RefCell<Kernel>>,
}

impl RecordingDataplane {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Kernel) -> T) -> T {
        f(&mut self.kernel.borrow_mut())
    }

    /// Routes as `subnet -> gw`.
    pub fn routes(&self) -> BTreeMap<String, String> {
        self.with(|k| k.routes.iter().map(|(d, (g, _))| (d.to_string(), g.to_string())).collect())
    }
}

impl Dataplane for RecordingDataplane {
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        let mut k = self.kernel.borrow_mut();
        k.ensure_calls += 1;
        if let Some((old, info)) = &k.device {
            if old == spec {
                return Ok(info.clone());
            }
        }
        let mac = k.force_mac.or(mac_hint).unwrap_or([0x02, 0, 0, 0, 0, 1]);
        let index = match &k.device {
            Some((_, info)) => info.index,
            None => {
                k.next_index += 1;
                10 + k.next_index
            }
        };
        let info = DeviceInfo { index, mac, mtu: spec.mtu };
        k.device = Some((spec.clone(), info.clone()));
        Ok(info)
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        let mut k = self.kernel.borrow_mut();
        k.batches.push(ops.len());
        let mut report = ApplyReport::default();
        for op in ops {
            k.log.push(op.clone());
            if k.fail.is_some_and(|f| f(op)) {
                report.failed.push((op.clone(), "injected failure".into()));
                continue;
            }
            match op {
                NetOp::AddNeigh { ip, mac } => {
                    k.neighs.insert(*ip, *mac);
                }
                NetOp::DelNeigh { ip, .. } => {
                    k.neighs.remove(ip);
                }
                NetOp::AddFdb { mac, dst } => {
                    // The kernel keys FDB entries by MAC (a replace rewrites the destination).
                    k.fdb.retain(|(m, _)| m != mac);
                    k.fdb.insert((*mac, *dst));
                }
                NetOp::DelFdb { mac, dst } => {
                    k.fdb.remove(&(*mac, *dst));
                }
                NetOp::AddRoute { dst, gw, onlink } => {
                    k.foreign.retain(|r| {
                        !(r.table == RT_TABLE_MAIN && r.dst == *dst && r.tos == 0 && r.metric == 0)
                    });
                    k.routes.insert(*dst, (*gw, *onlink));
                }
                NetOp::DelRoute { dst, .. } => {
                    k.routes.remove(dst);
                }
                NetOp::CreateRoute { dst, gw, onlink } => {
                    let taken = k.routes.contains_key(dst)
                        || k.foreign.iter().any(|r| {
                            r.table == RT_TABLE_MAIN && r.dst == *dst && r.tos == 0 && r.metric == 0
                        });
                    if taken {
                        report.exists.push(op.clone());
                        continue;
                    }
                    k.routes.insert(*dst, (*gw, *onlink));
                }
            }
            report.applied += 1;
        }
        report.overrun = std::mem::take(&mut k.overrun_next);
        Ok(report)
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        let mut state = self.dump_routes().await?;
        let mut k = self.kernel.borrow_mut();
        k.dumps += 1;
        let dev = state.device;
        state.neighs = k
            .neighs
            .iter()
            .map(|(ip, mac)| KernelNeigh { ifindex: dev, ip: *ip, mac: *mac, permanent: true })
            .collect();
        state.fdb = k
            .fdb
            .iter()
            .map(|(mac, dst)| KernelFdb { ifindex: dev, mac: *mac, dst: *dst, permanent: true, self_: true })
            .collect();
        Ok(state)
    }

    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError> {
        self.kernel.borrow_mut().route_dumps += 1;
        let k = self.kernel.borrow();
        let dev = k.device.as_ref().map_or(0, |(_, i)| i.index);
        let mut routes: Vec<KernelRoute> = k
            .routes
            .iter()
            .map(|(d, (g, o))| KernelRoute::made(*d, *g, *o, Some(if *o { dev } else { 2 })))
            .collect();
        routes.extend(k.foreign.iter().cloned());
        routes.extend(k.onlink.iter().map(|ip| KernelRoute {
            gw: None,
            protocol: 2,
            scope: 253,
            ..KernelRoute::made(IpNetwork::V4(Ipv4Network::from(*ip)), IpAddr::V4(*ip), false, Some(2))
        }));
        Ok(KernelState { device: dev, routes, ..KernelState::default() })
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        let mut k = self.kernel.borrow_mut();
        k.blackhole_calls.push(dst);
        if let Some(e) = &k.blackhole_error {
            return Err(DataplaneError::Other(e.clone()));
        }
        Ok(k.blackholes.insert(dst))
    }
}

/// Waits (in tokio time) until `cond` holds; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        // Coarser steps for long (virtual-time) waits.
        tokio::time::sleep((limit / 2000).max(Duration::from_millis(10))).await;
    }
}

pub fn mac(last: u8) -> Mac {
    [0x02, 0, 0, 0, 0, last]
}

/// A lease value exactly as upstream flanneld writes it.
pub fn upstream_value(public_ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}
