//! `weft path --probe`: real packets from inside the source pod, watched on each hop's
//! interface of this node with packet sockets, so the report says where they were last seen.
//!
//! The probe sends three small packets (ICMP echo, or UDP/TCP to `--port`) and, for ICMP, one
//! echo of exactly the pod's MTU, which the kernel sends with DF set (a raw socket's default
//! path-MTU mode); then it listens for a bounded time (under two seconds) on one `AF_PACKET`
//! socket in the pod's namespace and one in the node's, and attributes every frame carrying
//! the probe (found by its payload marker or its ports, also inside VXLAN) to the interface it
//! was seen on. Only this node's hops are watched: the remote flanneld serves no capture
//! endpoint. All sockets are closed when it returns; nothing else is created.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    bind, connect, getsockname, recvfrom, sendto, socket, AddressFamily, LinkAddr, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrIn,
};
use serde::Serialize;
use weft_common::netns::NetNs;

use crate::cli::Proto;

/// One interface to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Hop name (`pod`, `veth`, `bridge`, `vtep`, `underlay`, `dst-veth`, `dst-pod`).
    pub place: &'static str,
    pub ifname: String,
    pub ifindex: u32,
    /// The pod namespace it lives in; `None` for this node's namespace.
    pub netns: Option<String>,
}

/// What was seen on one interface.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub place: &'static str,
    pub ifname: String,
    /// Probe packets seen going toward DST.
    pub requests: u32,
    /// Answers seen coming back.
    pub replies: u32,
}

/// The probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub proto: String,
    pub sent: u32,
    pub hops: Vec<Seen>,
    /// The last hop (in path order) where a probe packet toward DST was seen.
    pub last_seen: Option<String>,
    pub answered: bool,
    /// The DF probe at the pod MTU (ICMP only): `Some(true)` answered.
    pub df_probe_size: Option<u32>,
    pub df_answered: Option<bool>,
    pub notes: Vec<String>,
}

const MARKER: &[u8] = b"WEFT-PROBE";
const LISTEN: Duration = Duration::from_millis(1500);

fn packet_socket(netns: Option<&str>) -> Result<OwnedFd, String> {
    let open = || {
        socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            SockProtocol::EthAll,
        )
        .map_err(|e| format!("open packet socket: {e}"))
    };
    match netns {
        None => open(),
        Some(p) => {
            let ns = NetNs::open(p).map_err(|e| format!("open netns {p}: {e}"))?;
            let _g = ns.enter().map_err(|e| format!("enter netns {p}: {e}"))?;
            open()
        }
    }
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in data.chunks(2) {
        let w = u16::from_be_bytes([c.first().copied().unwrap_or(0), c.get(1).copied().unwrap_or(0)]);
        sum = sum.wrapping_add(u32::from(w));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(u16::try_from(sum).unwrap_or(0))
}

fn echo(id: u16, seq: u16, payload_len: usize, nonce: u32) -> Vec<u8> {
    let mut p = vec![8u8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    let mut body = MARKER.to_vec();
    body.extend_from_slice(&nonce.to_be_bytes());
    body.resize(payload_len.max(body.len()), 0x5a);
    p.extend_from_slice(&body);
    let c = checksum(&p);
    if let Some(s) = p.get_mut(2..4) {
        s.copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// What a captured IPv4 packet is, relative to the probe.
#[derive(PartialEq, Eq)]
enum Kind {
    Request,
    Reply,
    Other,
}

struct Matcher {
    proto: Proto,
    nonce: [u8; 4],
    src_port: u16,
    dst_port: u16,
    vxlan_port: u16,
}

impl Matcher {
    /// Classifies an Ethernet frame; VXLAN frames are opened once.
    fn frame(&self, f: &[u8], depth: u8) -> Kind {
        if f.get(12..14) != Some(&[0x08, 0x00]) {
            return Kind::Other;
        }
        self.ip(f.get(14..).unwrap_or(&[]), depth)
    }

    fn ip(&self, p: &[u8], depth: u8) -> Kind {
        let Some(&vihl) = p.first() else { return Kind::Other };
        if vihl >> 4 != 4 {
            return Kind::Other;
        }
        let hl = usize::from(vihl & 0x0f) * 4;
        let proto = p.get(9).copied().unwrap_or(0);
        let l4 = p.get(hl..).unwrap_or(&[]);
        let port = |o: usize| l4.get(o..o + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0);
        if proto == 17 && depth == 0 && port(2) == self.vxlan_port {
            return self.frame(l4.get(16..).unwrap_or(&[]), 1);
        }
        let has_marker =
            |d: &[u8]| d.windows(MARKER.len() + 4).any(|w| w.starts_with(MARKER) && w.ends_with(&self.nonce));
        match (self.proto, proto) {
            (Proto::Icmp, 1) => match l4.first() {
                Some(8) if has_marker(l4) => Kind::Request,
                Some(0) if has_marker(l4) => Kind::Reply,
                _ => Kind::Other,
            },
            // After masquerade the ports may be rewritten; the payload marker is not.
            (Proto::Udp, 17) if port(0) == self.src_port && port(2) == self.dst_port || has_marker(l4) => {
                if port(2) == self.dst_port {
                    Kind::Request
                } else {
                    Kind::Reply
                }
            }
            (Proto::Udp, 17) if port(2) == self.src_port && port(0) == self.dst_port => Kind::Reply,
            // ICMP errors about our UDP packets (port unreachable) are answers too.
            (Proto::Udp | Proto::Tcp, 1)
                if has_marker(l4) || l4.get(8..).is_some_and(|inner| self.quotes_ports(inner)) =>
            {
                Kind::Reply
            }
            (Proto::Tcp, 6) if port(0) == self.src_port && port(2) == self.dst_port => Kind::Request,
            (Proto::Tcp, 6) if port(2) == self.src_port && port(0) == self.dst_port => Kind::Reply,
            _ => Kind::Other,
        }
    }

    fn quotes_ports(&self, inner_ip: &[u8]) -> bool {
        let hl = usize::from(inner_ip.first().copied().unwrap_or(0) & 0x0f) * 4;
        let l4 = inner_ip.get(hl..).unwrap_or(&[]);
        l4.get(0..4).is_some_and(|b| {
            u16::from_be_bytes([b[0], b[1]]) == self.src_port
                && u16::from_be_bytes([b[2], b[3]]) == self.dst_port
        })
    }
}

/// Sends the probe from `src_netns` and watches `watches`.
#[allow(clippy::too_many_arguments)]
pub fn run(
    src_netns: &str,
    src_ip: Ipv4Addr,
    dst_ip: Ipv4Addr,
    pod_mtu: u32,
    proto: Proto,
    port: Option<u16>,
    vxlan_port: u16,
    watches: &[Watch],
) -> Result<ProbeReport, String> {
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let nonce: u32 = std::process::id().rotate_left(16) ^ clock;
    let mut notes =
        vec!["only this node's hops are watched (no capture endpoint on the remote node)".to_string()];
    // Capture first, so nothing is missed.
    let mut caps: Vec<(Option<String>, OwnedFd)> = Vec::new();
    let mut spaces: Vec<Option<String>> = watches.iter().map(|w| w.netns.clone()).collect();
    spaces.sort();
    spaces.dedup();
    for ns in spaces {
        caps.push((ns.clone(), packet_socket(ns.as_deref())?));
    }
    let ns = NetNs::open(src_netns).map_err(|e| format!("open netns {src_netns}: {e}"))?;
    let dst_port = match proto {
        Proto::Icmp => 0,
        _ => port.ok_or_else(|| "--port is needed for UDP and TCP probes".to_string())?,
    };
    let (sender, src_port, df_size) = {
        let _g = ns.enter().map_err(|e| format!("enter netns {src_netns}: {e}"))?;
        match proto {
            Proto::Icmp => {
                let s =
                    socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::Icmp)
                        .map_err(|e| format!("open ICMP socket in the pod: {e}"))?;
                (s, 0u16, Some(pod_mtu))
            }
            Proto::Udp | Proto::Tcp => {
                let (ty, p) = if proto == Proto::Udp {
                    (SockType::Datagram, SockProtocol::Udp)
                } else {
                    (SockType::Stream, SockProtocol::Tcp)
                };
                let s = socket(AddressFamily::Inet, ty, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, p)
                    .map_err(|e| format!("open socket in the pod: {e}"))?;
                bind(s.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src_ip, 0)))
                    .map_err(|e| format!("bind {src_ip}: {e}"))?;
                let local: SockaddrIn =
                    getsockname(s.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
                (s, local.port(), None)
            }
        }
    };
    let m = Matcher { proto, nonce: nonce.to_be_bytes(), src_port, dst_port, vxlan_port };
    let to = SockaddrIn::from(SocketAddrV4::new(dst_ip, dst_port));
    let id = u16::try_from(nonce & 0xffff).unwrap_or(1);
    let mut sent = 0;
    for seq in 0..3u16 {
        let r = match proto {
            Proto::Icmp => {
                sendto(sender.as_raw_fd(), &echo(id, seq, 32, nonce), &to, MsgFlags::empty()).map(|_| ())
            }
            Proto::Udp => {
                let mut payload = MARKER.to_vec();
                payload.extend_from_slice(&nonce.to_be_bytes());
                sendto(sender.as_raw_fd(), &payload, &to, MsgFlags::empty()).map(|_| ())
            }
            Proto::Tcp if seq == 0 => match connect(sender.as_raw_fd(), &to) {
                Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
                other => other,
            },
            // One SYN: the kernel retransmits it by itself.
            Proto::Tcp => continue,
        };
        match r {
            Ok(()) => sent += 1,
            Err(e) => notes.push(format!("send probe {seq}: {e}")),
        }
    }
    let mut counts: Vec<(u32, u32)> = vec![(0, 0); watches.len()];
    let mut df_reply = false;
    let df_seq = 100u16;
    let listen = |counts: &mut Vec<(u32, u32)>, df_reply: &mut bool, until: Instant, df: bool| {
        let mut buf = vec![0u8; 65536];
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            let ms = u16::try_from(left.as_millis().min(200)).unwrap_or(200);
            let mut fds: Vec<PollFd> =
                caps.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)).collect();
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) <= 0 {
                continue;
            }
            for (ns, fd) in &caps {
                while let Ok((n, Some(addr))) = recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
                    let frame = buf.get(..n).unwrap_or(&[]);
                    let kind = m.frame(frame, 0);
                    if kind == Kind::Other {
                        continue;
                    }
                    if df
                        && kind == Kind::Reply
                        && frame.len() >= usize::try_from(pod_mtu).unwrap_or(usize::MAX)
                    {
                        *df_reply = true;
                    }
                    let idx = u32::try_from(addr.ifindex()).unwrap_or(0);
                    if let Some(i) = watches.iter().position(|w| w.netns == *ns && w.ifindex == idx) {
                        if let Some(c) = counts.get_mut(i) {
                            if kind == Kind::Request {
                                c.0 += 1;
                            } else {
                                c.1 += 1;
                            }
                        }
                    }
                }
            }
        }
    };
    listen(&mut counts, &mut df_reply, Instant::now() + LISTEN, false);
    let mut df_answered = None;
    if let Some(size) = df_size {
        let payload = usize::try_from(size.saturating_sub(28)).unwrap_or(0);
        let mut dfc = vec![(0, 0); watches.len()];
        match sendto(sender.as_raw_fd(), &echo(id, df_seq, payload, nonce), &to, MsgFlags::empty()) {
            Ok(_) => {
                listen(&mut dfc, &mut df_reply, Instant::now() + Duration::from_millis(500), true);
                df_answered = Some(df_reply);
            }
            Err(e) => notes.push(format!("DF probe of {size} bytes not sent: {e}")),
        }
    }
    drop(sender);
    drop(caps);
    let hops: Vec<Seen> = watches
        .iter()
        .zip(&counts)
        .map(|(w, c)| Seen { place: w.place, ifname: w.ifname.clone(), requests: c.0, replies: c.1 })
        .collect();
    let last_seen = hops.iter().rev().find(|h| h.requests > 0).map(|h| format!("{} ({})", h.place, h.ifname));
    let answered = hops.first().is_some_and(|h| h.replies > 0);
    Ok(ProbeReport {
        proto: format!("{proto:?}").to_lowercase(),
        sent,
        hops,
        last_seen,
        answered,
        df_probe_size: df_size,
        df_answered,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matcher(proto: Proto) -> Matcher {
        Matcher { proto, nonce: [1, 2, 3, 4], src_port: 40000, dst_port: 9, vxlan_port: 8472 }
    }

    fn ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0, 10, 244, 1, 2, 10, 244, 2, 2];
        p.extend_from_slice(l4);
        p
    }

    fn eth(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend_from_slice(ip);
        f
    }

    #[test]
    fn echo_has_a_valid_checksum_and_the_marker() {
        let e = echo(7, 1, 64, 0x01020304);
        assert_eq!(checksum(&e), 0, "a packet including its checksum sums to zero");
        assert_eq!(e.len(), 8 + 64);
        let m = matcher(Proto::Icmp);
        assert!(m.frame(&eth(&ipv4(1, &e)), 0) == Kind::Request);
        let mut reply = e.clone();
        reply[0] = 0;
        assert!(m.frame(&eth(&ipv4(1, &reply)), 0) == Kind::Reply);
        let other = echo(7, 1, 64, 0x0a0b0c0d);
        assert!(m.frame(&eth(&ipv4(1, &other)), 0) == Kind::Other, "another run's probe");
    }

    #[test]
    fn probes_are_found_inside_vxlan() {
        let inner = eth(&ipv4(1, &echo(7, 1, 32, 0x01020304)));
        let mut udp = vec![0x12, 0x34, 0x21, 0x18, 0, 0, 0, 0]; // dport 8472
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]); // VXLAN header, VNI 1
        udp.extend_from_slice(&inner);
        let m = matcher(Proto::Icmp);
        assert!(m.frame(&eth(&ipv4(17, &udp)), 0) == Kind::Request);
    }

    #[test]
    fn udp_and_tcp_match_by_ports() {
        let m = matcher(Proto::Udp);
        let out = [0x9c, 0x40, 0, 9, 0, 8, 0, 0];
        let back = [0, 9, 0x9c, 0x40, 0, 8, 0, 0];
        assert!(m.frame(&eth(&ipv4(17, &out)), 0) == Kind::Request);
        assert!(m.frame(&eth(&ipv4(17, &back)), 0) == Kind::Reply);
        let t = matcher(Proto::Tcp);
        let syn = [0x9c, 0x40, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0];
        assert!(t.frame(&eth(&ipv4(6, &syn)), 0) == Kind::Request);
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let m = matcher(Proto::Udp);
        let mut seed: u32 = 12345;
        for len in 0..300usize {
            let mut f = Vec::with_capacity(len);
            for _ in 0..len {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                f.push(u8::try_from(seed >> 24).unwrap_or(0));
            }
            if f.len() > 14 {
                f[12] = 8;
                f[13] = 0;
                f[14] = 0x45;
            }
            let _ = m.frame(&f, 0);
        }
    }
}
