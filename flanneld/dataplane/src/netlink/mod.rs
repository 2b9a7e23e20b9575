//! The real dataplane: rtnetlink, two sockets in the namespace it was created in.
//!
//! Batches of ops go on a blocking socket, many requests per datagram ([`WINDOW`], see
//! `weft_common::netlink::Netlink::batch`): the kernel handles them in order inside one
//! `sendmsg` and answers only the failures and each datagram's last request, so 1,000 peers
//! cost a few milliseconds of kernel work and a few system calls, not 3,000 round trips. The
//! receive buffer is enlarged so a datagram's failures fit; if the kernel still reports
//! ENOBUFS (answers lost) the affected requests are reported as `overrun`: the kernel has most
//! likely applied them, and the caller re-reads with [`Dataplane::dump`] and reconciles. The
//! device's set-up and the dumps go through rtnetlink's async connection.
//!
//! It must not: touch anything but the device it created or adopted, its addresses, the
//! main-table routes it is asked to program, and (`--ip-blackhole-route`) the own subnet's
//! blackhole route. Dumps report everything (every device, table and protocol); the caller
//! decides what is its own with `own::Ownership`.

mod collect;
mod device;
mod msg;

use futures::stream::StreamExt;
use ipnetwork::Ipv4Network;
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::NeighbourMessage;
use netlink_packet_route::route::RouteMessage;
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;
use rtnetlink::Handle;
use tokio::sync::watch;
use weft_common::netlink::{BatchOutcome, Netlink};

pub use collect::{collect_view, ViewInput, DEFAULT_BRIDGE, DEFAULT_DEVICE, DEFAULT_SUBNET_FILE};
pub use msg::describe;

use std::net::IpAddr;

use crate::{
    ApplyReport, Dataplane, DataplaneError, DeviceInfo, KernelRoute, KernelState, Mac, NetOp, VxlanSpec,
};

/// Requests per datagram of a batch. The failures of a full datagram (≈1 KiB of socket
/// memory each, skb overhead included) fit easily in the enlarged receive buffer.
pub const WINDOW: usize = 256;

/// Receive buffer asked for (SO_RCVBUFFORCE when permitted, else SO_RCVBUF capped by rmem_max).
const RCVBUF: usize = 8 << 20;

/// Outcome of one request.
#[derive(Debug)]
enum Outcome {
    Done,
    /// The kernel's error (its negative errno, as an [`Errno`]).
    Errno(Errno),
    /// The socket overran while this request was in flight: its ack may be lost.
    Overrun,
    /// The connection is gone.
    Closed,
}

/// The device the dataplane works on, remembered from `ensure_device`.
#[derive(Debug, Clone)]
struct Device {
    index: u32,
}

/// rtnetlink implementation of [`Dataplane`] for the network namespace it was created in.
pub struct NetlinkDataplane {
    handle: Handle,
    /// Incremented by the monitor task each time the socket reports ENOBUFS.
    overruns: watch::Receiver<u64>,
    device: Option<Device>,
    /// The `flannel-v6` device (dual stack), once ensured: IPv6 ops go to it.
    device_v6: Option<Device>,
    /// host-gw (`ensure_no_device`): no device; IPv6 plain routes are programmed and dumped.
    host_gw: bool,
    /// The blocking socket batches of ops are sent on.
    bulk: Netlink,
    window: usize,
}

impl std::fmt::Debug for NetlinkDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetlinkDataplane")
            .field("device", &self.device)
            .field("device_v6", &self.device_v6)
            .finish_non_exhaustive()
    }
}

fn nl_err(
    op: &'static str,
    object: impl Into<String>,
    message: impl Into<String>,
    errno: Option<Errno>,
) -> DataplaneError {
    DataplaneError::Netlink { op, object: object.into(), message: message.into(), errno }
}

/// `No such device (os error 19)`, as `std::io::Error` words it.
fn errno_text(errno: Errno) -> String {
    std::io::Error::from(errno).to_string()
}

impl NetlinkDataplane {
    /// Opens a route netlink socket in the calling thread's network namespace and spawns its
    /// connection task. Must be called inside a tokio runtime (an error otherwise).
    pub fn new() -> Result<Self, DataplaneError> {
        Self::with_receive_buffer(RCVBUF)
    }

    /// Like [`NetlinkDataplane::new`] with another socket receive buffer size in bytes (the
    /// kernel enforces a minimum). A small buffer with a large window provokes ENOBUFS, which
    /// tests use to exercise the overrun path.
    pub fn with_receive_buffer(rcvbuf: usize) -> Result<Self, DataplaneError> {
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|e| DataplaneError::Other(format!("NetlinkDataplane needs a tokio runtime: {e}")))?;
        let (mut conn, handle, mut messages) = rtnetlink::new_connection().map_err(|e| {
            nl_err("open", "route netlink socket", e.to_string(), e.raw_os_error().map(Errno::from_raw))
        })?;
        {
            use netlink_sys::AsyncSocket;
            let sock = conn.socket_mut().socket_mut();
            let forced =
                nix::sys::socket::setsockopt(&*sock, nix::sys::socket::sockopt::RcvBufForce, &rcvbuf);
            if forced.is_err() {
                // Without CAP_NET_ADMIN: the kernel caps this at rmem_max, still better than default.
                let _ = sock.set_rx_buf_sz(rcvbuf);
            }
        }
        rt.spawn(conn);
        let mut bulk = Netlink::open().map_err(|e| {
            nl_err("open", "route netlink socket", e.to_string(), e.raw_errno().map(Errno::from_raw))
        })?;
        bulk.set_receive_buffer(rcvbuf);
        let (tx, rx) = watch::channel(0u64);
        rt.spawn(async move {
            // Unsolicited messages: only the overrun notice (ENOBUFS) matters here.
            while let Some((m, _)) = messages.next().await {
                if matches!(m.payload, NetlinkPayload::Overrun(_)) {
                    tracing::warn!("netlink receive buffer overrun (ENOBUFS)");
                    tx.send_modify(|n| *n += 1);
                }
            }
        });
        Ok(NetlinkDataplane {
            handle,
            overruns: rx,
            device: None,
            device_v6: None,
            host_gw: false,
            bulk,
            window: WINDOW,
        })
    }

    /// Sets how many requests of a batch go in one datagram (at least 1; 1 is a request and
    /// its ack at a time, as `ip -batch` sends them).
    pub fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// The address families dumps read: IPv4, and IPv6 once there is a `flannel-v6` device or
    /// with host-gw.
    fn families(&self) -> Vec<AddressFamily> {
        let mut f = vec![AddressFamily::Inet];
        if self.device_v6.is_some() || self.host_gw {
            f.push(AddressFamily::Inet6);
        }
        f
    }

    fn device(&self) -> Result<&Device, DataplaneError> {
        self.device
            .as_ref()
            .ok_or_else(|| DataplaneError::Other("no VXLAN device yet: call ensure_device first".into()))
    }

    /// Sends one request that is answered by an ack.
    async fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> Outcome {
        ack(self.handle.clone(), self.overruns.clone(), msg, flags).await
    }

    /// Sends a dump request and collects the inner messages. A dump the kernel marks interrupted
    /// (the table changed under it, so it may have skipped an entry) is run again.
    async fn dump_req(
        &self,
        msg: RouteNetlinkMessage,
        what: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, DataplaneError> {
        for _ in 0..DUMP_ATTEMPTS {
            let (out, interrupted) = self.request(msg.clone(), NLM_F_DUMP, what).await?;
            if !interrupted {
                return Ok(out);
            }
        }
        Err(nl_err("dump", what, "interrupted by concurrent changes every time", Some(Errno::EINTR)))
    }

    /// Sends a get request (`extra` = NLM_F_DUMP for dumps) and collects the inner messages.
    async fn get(
        &self,
        msg: RouteNetlinkMessage,
        extra: u16,
        what: &'static str,
    ) -> Result<Vec<RouteNetlinkMessage>, DataplaneError> {
        self.request(msg, extra, what).await.map(|(out, _)| out)
    }

    /// [`Self::get`], also telling whether the kernel flagged a dump as interrupted.
    async fn request(
        &self,
        msg: RouteNetlinkMessage,
        extra: u16,
        what: &'static str,
    ) -> Result<(Vec<RouteNetlinkMessage>, bool), DataplaneError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | extra;
        let mut handle = self.handle.clone();
        let mut overruns = self.overruns.clone();
        let seen = *overruns.borrow_and_update();
        let mut responses = handle.request(req).map_err(|e| nl_err("dump", what, e.to_string(), None))?;
        let collect = async {
            let mut out = Vec::new();
            let mut interrupted = false;
            while let Some(m) = responses.next().await {
                interrupted |= m.header.flags & NLM_F_DUMP_INTR != 0;
                match m.payload {
                    NetlinkPayload::InnerMessage(inner) => out.push(inner),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        let errno = Errno::from_raw(e.raw_code().abs());
                        return Err(nl_err("get", what, errno_text(errno), Some(errno)));
                    }
                    NetlinkPayload::Overrun(_) => {
                        return Err(nl_err("dump", what, "receive buffer overrun", Some(Errno::ENOBUFS)))
                    }
                    _ => {}
                }
            }
            Ok((out, interrupted))
        };
        // A lost part of the dump (ENOBUFS) would otherwise leave us waiting for NLMSG_DONE.
        tokio::select! {
            out = collect => out,
            _ = overruns.wait_for(|n| *n > seen) => {
                Err(nl_err("dump", what, "receive buffer overrun", Some(Errno::ENOBUFS)))
            }
        }
    }
}

/// The request `apply` sends for `op` on the device with `index` (0: none, host-gw's plain
/// routes): the message and its `NLM_F_*` flags besides `NLM_F_REQUEST`. For measuring the
/// same kernel work from elsewhere (the benchmark's netlink floor).
pub fn op_request(index: u32, op: &NetOp) -> (RouteNetlinkMessage, u16) {
    let r = msg::request(index, op);
    (r.msg, r.flags)
}

/// How many times a dump interrupted by concurrent changes is restarted.
const DUMP_ATTEMPTS: usize = 20;

async fn ack(
    mut handle: Handle,
    mut overruns: watch::Receiver<u64>,
    msg: RouteNetlinkMessage,
    flags: u16,
) -> Outcome {
    let seen = *overruns.borrow_and_update();
    let mut req = NetlinkMessage::from(msg);
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let Ok(mut responses) = handle.request(req) else {
        return Outcome::Closed;
    };
    let wait = async {
        while let Some(m) = responses.next().await {
            match m.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        Some(code) => Outcome::Errno(Errno::from_raw(code.get().abs())),
                        None => Outcome::Done,
                    }
                }
                NetlinkPayload::Overrun(_) => return Outcome::Overrun,
                _ => {}
            }
        }
        // netlink-proto does not forward a positive ack: the stream just ends.
        Outcome::Done
    };
    tokio::select! {
        out = wait => out,
        _ = overruns.wait_for(|n| *n > seen) => Outcome::Overrun,
    }
}

/// EEXIST on an add and ENOENT/ESRCH on a delete mean the kernel is already as asked.
fn benign(op: &NetOp, errno: Errno) -> bool {
    if msg::is_add(op) {
        errno == Errno::EEXIST
    } else {
        matches!(errno, Errno::ENOENT | Errno::ESRCH)
    }
}

impl Dataplane for NetlinkDataplane {
    async fn ensure_device(
        &mut self,
        spec: &VxlanSpec,
        mac_hint: Option<Mac>,
    ) -> Result<DeviceInfo, DataplaneError> {
        let info = device::ensure(self, spec, mac_hint).await?;
        self.host_gw = false;
        let slot = if spec.is_v6() { &mut self.device_v6 } else { &mut self.device };
        *slot = Some(Device { index: info.index });
        Ok(info)
    }

    async fn ensure_no_device(&mut self, underlay_index: u32) -> Result<Vec<String>, DataplaneError> {
        let _ = underlay_index;
        let removed = device::remove_stale(self).await?;
        // Index 0 is no device: only plain `dst via gw` routes are programmed (msg::route
        // gives them no oif), and nothing on a device is flanneld's (`own::Ownership`).
        self.device = Some(Device { index: 0 });
        self.device_v6 = None;
        self.host_gw = true;
        Ok(removed)
    }

    async fn devices_up(&mut self) -> Result<bool, DataplaneError> {
        if self.host_gw {
            return Ok(true);
        }
        let indexes: Vec<u32> =
            [&self.device, &self.device_v6].into_iter().flatten().map(|d| d.index).collect();
        for index in indexes {
            if !device::is_up(self, index).await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn apply(&mut self, ops: &[NetOp]) -> Result<ApplyReport, DataplaneError> {
        let index = self.device()?.index;
        // Each op goes to the device of its family; without a `flannel-v6` device an IPv6 op
        // fails as the kernel would fail it on a device that is not there, except host-gw's
        // plain IPv6 routes, which name no device.
        let index_v6 = self.device_v6.as_ref().map(|d| d.index).or(self.host_gw.then_some(0));
        let mut report = ApplyReport::default();
        let mut sent: Vec<&NetOp> = Vec::with_capacity(ops.len());
        let mut requests = Vec::with_capacity(ops.len());
        for op in ops {
            let device = if op.is_v6() { index_v6 } else { Some(index) };
            match device {
                Some(x) => {
                    let r = msg::request(x, op);
                    sent.push(op);
                    requests.push((r.msg, r.flags));
                }
                None => report.failed.push((
                    op.clone(),
                    format!(
                        "{}: {} (errno {})",
                        msg::describe(op),
                        errno_text(Errno::ENODEV),
                        Errno::ENODEV as i32
                    ),
                )),
            }
        }
        // The ops go in their given order, which is their dependency order (a neighbour before
        // the route that uses it, §8.5): the kernel handles a batch's requests one after the
        // other. This blocks the runtime for the batch (a few ms per thousand ops), which the
        // caller waits for anyway.
        let outcomes = self.bulk.batch(requests, self.window).map_err(|e| {
            nl_err("apply", format!("{} ops", sent.len()), e.to_string(), e.raw_errno().map(Errno::from_raw))
        })?;
        for (op, outcome) in sent.into_iter().zip(outcomes) {
            match outcome {
                BatchOutcome::Done => report.applied += 1,
                BatchOutcome::Failed { errno, .. }
                    if errno == Errno::EEXIST as i32 && matches!(op, NetOp::CreateRoute { .. }) =>
                {
                    report.exists.push(op.clone())
                }
                BatchOutcome::Failed { errno, .. } if benign(op, Errno::from_raw(errno)) => {
                    report.applied += 1
                }
                BatchOutcome::Failed { errno, message } => {
                    let e = Errno::from_raw(errno);
                    let why = message.map(|m| format!(" ({m})")).unwrap_or_default();
                    report.failed.push((
                        op.clone(),
                        format!("{}: {}{why} (errno {})", msg::describe(op), errno_text(e), e as i32),
                    ))
                }
                BatchOutcome::Unknown => report.overrun = true,
            }
        }
        if !report.failed.is_empty() {
            tracing::warn!(
                failed = report.failed.len(),
                applied = report.applied,
                "some dataplane ops failed"
            );
        }
        Ok(report)
    }

    async fn dump(&mut self) -> Result<KernelState, DataplaneError> {
        self.device()?;
        let mut state = self.dump_routes().await?;
        for family in self.families() {
            let mut q = NeighbourMessage::default();
            q.header.family = family;
            for m in self.dump_req(RouteNetlinkMessage::GetNeighbour(q), "neighbours").await? {
                if let RouteNetlinkMessage::NewNeighbour(n) = m {
                    state.neighs.extend(msg::parse_neigh(&n));
                }
            }
        }
        let mut q = NeighbourMessage::default();
        q.header.family = AddressFamily::Bridge;
        for m in self.dump_req(RouteNetlinkMessage::GetNeighbour(q), "fdb").await? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                state.fdb.extend(msg::parse_fdb(&n));
            }
        }
        tracing::debug!(
            neighs = state.neighs.len(),
            fdb = state.fdb.len(),
            routes = state.routes.len(),
            "dumped kernel state"
        );
        Ok(state)
    }

    async fn dump_routes(&mut self) -> Result<KernelState, DataplaneError> {
        // Without a device yet, nothing is on it (index 0 is no device).
        let device = self.device.as_ref().map_or(0, |d| d.index);
        let device_v6 = self.device_v6.as_ref().map_or(0, |d| d.index);
        let mut state = KernelState { device, device_v6, ..KernelState::default() };
        for family in self.families() {
            let mut q = RouteMessage::default();
            q.header.address_family = family;
            for m in self.dump_req(RouteNetlinkMessage::GetRoute(q), "routes").await? {
                if let RouteNetlinkMessage::NewRoute(r) = m {
                    state.routes.extend(msg::parse_route(&r));
                }
            }
        }
        Ok(state)
    }

    async fn route_to(&mut self, dst: IpAddr) -> Result<Option<KernelRoute>, DataplaneError> {
        match self.get(RouteNetlinkMessage::GetRoute(msg::route_get(dst)), 0, "route").await {
            Ok(answer) => Ok(answer.iter().find_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) => msg::parse_route(r),
                _ => None,
            })),
            // No route to it: not on-link, as `ip route get` says "unreachable".
            Err(DataplaneError::Netlink {
                errno: Some(Errno::ENETUNREACH | Errno::EHOSTUNREACH | Errno::EINVAL | Errno::EACCES),
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn ensure_blackhole(&mut self, dst: Ipv4Network) -> Result<bool, DataplaneError> {
        let mut q = RouteMessage::default();
        q.header.address_family = AddressFamily::Inet;
        let routes = self.dump_req(RouteNetlinkMessage::GetRoute(q), "routes").await?;
        let present = routes
            .iter()
            .any(|m| matches!(m, RouteNetlinkMessage::NewRoute(r) if msg::is_blackhole_to(r, &dst)));
        if present {
            return Ok(false);
        }
        let object = format!("blackhole {dst}");
        match self.ack(RouteNetlinkMessage::NewRoute(msg::blackhole(&dst)), NLM_F_CREATE | NLM_F_EXCL).await {
            Outcome::Done => Ok(true),
            Outcome::Errno(errno) => Err(nl_err("add route", &object, errno_text(errno), Some(errno))),
            Outcome::Overrun => {
                Err(nl_err("add route", &object, "receive buffer overrun", Some(Errno::ENOBUFS)))
            }
            Outcome::Closed => Err(nl_err("add route", &object, "netlink connection closed", None)),
        }
    }
}

/// Compile-time check: the daemon may run the dataplane inside `tokio::spawn`, so the futures
/// of the concrete implementations must be `Send`.
#[allow(dead_code)]
fn futures_are_send(dp: &mut NetlinkDataplane, fake: &mut crate::fake::FakeDataplane, spec: &VxlanSpec) {
    fn send<T: Send>(_: T) {}
    send(dp.ensure_device(spec, None));
    send(dp.apply(&[]));
    send(dp.dump());
    send(dp.dump_routes());
    send(dp.route_to(std::net::Ipv4Addr::LOCALHOST.into()));
    send(fake.ensure_device(spec, None));
    send(fake.apply(&[]));
    send(fake.dump());
    send(fake.dump_routes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    #[test]
    fn benign_errnos_and_their_text() {
        let add = NetOp::AddNeigh { ip: IpAddr::V4(Ipv4Addr::new(10, 5, 1, 0)), mac: [2; 6] };
        let del = NetOp::DelRoute {
            dst: "10.5.1.0/24".parse().unwrap_or_else(|_| unreachable!()),
            gw: IpAddr::V4(Ipv4Addr::new(10, 5, 1, 0)),
            onlink: true,
        };
        assert!(benign(&add, Errno::EEXIST) && !benign(&add, Errno::ENOENT));
        assert!(benign(&del, Errno::ENOENT) && benign(&del, Errno::ESRCH) && !benign(&del, Errno::EEXIST));
        assert_eq!(errno_text(Errno::ENODEV), "No such device (os error 19)");
        assert_eq!(Errno::ENOBUFS as i32, 105, "the value the code used to spell out");
    }
}
