//! `weft path --probe`: real packets from inside the source pod, watched on each hop's
//! interface with packet sockets, on this node and (through its flanneld's `/debug/capture`)
//! on the destination's node, so the report says where they were last seen.
//!
//! The probe sends three small packets (ICMP or ICMPv6 echo, or UDP/TCP to `--port`) and, for
//! ICMP, one echo of exactly the pod's MTU, which the kernel sends with DF set (a raw socket's
//! default path-MTU mode; IPv6: `IPV6_DONTFRAG`, RFC 3542 §11.2, so the sender does not fragment
//! it, and routers never do, RFC 8200 §5); then it listens for a bounded time (two to three
//! seconds) on one `AF_PACKET`
//! socket in the pod's namespace and one in the node's, and attributes every frame carrying
//! the probe (found by its payload marker or its ports, also inside VXLAN; see
//! [`weft_common::capture::Matcher`]) to the interface it was seen on. The remote capture is
//! armed before the first packet leaves and ended when the local listening ends (flanneld
//! caps it at 3 s by itself). All sockets are closed when it returns; nothing else is created.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    bind, connect, getsockname, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag,
    SockProtocol, SockType, SockaddrStorage,
};
use serde::Serialize;
use serde_json::Value;
use weft_common::capture::{echo, echo6, Capture, Kind, Matcher, ProbeProto, MARKER};
use weft_common::netns::NetNs;

use crate::remote;

/// One interface of this node to watch.
#[derive(Debug, Clone)]
pub struct Watch {
    /// Hop name (`pod`, `veth`, `bridge`, `vtep`, `underlay`, `dst-veth`, `dst-pod`).
    pub place: &'static str,
    pub ifname: String,
    pub ifindex: u32,
    /// The pod namespace it lives in; `None` for this node's namespace.
    pub netns: Option<String>,
}

/// The destination node's interfaces, watched by its flanneld.
#[derive(Debug, Clone)]
pub struct RemoteWatch {
    pub node: IpAddr,
    /// Its health listener's port.
    pub port: u16,
    /// (hop name, interface name) in path order: `underlay`, `vtep`, `bridge`.
    pub places: Vec<(&'static str, String)>,
}

/// What was seen on one interface.
#[derive(Debug, Clone, Serialize)]
pub struct Seen {
    pub place: &'static str,
    /// `local`, or the remote node's address.
    pub node: String,
    pub ifname: String,
    /// Probe packets seen going toward DST.
    pub requests: u32,
    /// Answers seen coming back.
    pub replies: u32,
}

impl Seen {
    /// `underlay (eth0)`, or `underlay (eth0) of 198.18.0.3` on the remote node.
    pub fn label(&self) -> String {
        if self.node == "local" {
            format!("{} ({})", self.place, self.ifname)
        } else {
            format!("{} ({}) of {}", self.place, self.ifname, self.node)
        }
    }
}

/// What was asked of the probe.
pub struct ProbeSpec<'a> {
    pub src_netns: &'a str,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub pod_mtu: u32,
    pub proto: ProbeProto,
    pub port: Option<u16>,
    pub vxlan_port: u16,
    pub watches: &'a [Watch],
    pub remote: Option<RemoteWatch>,
}

/// The probe's result.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    pub proto: String,
    pub sent: u32,
    /// Every watched interface in path order, this node's first.
    pub hops: Vec<Seen>,
    /// The last hop (in path order) where a probe packet toward DST was seen.
    pub last_seen: Option<String>,
    pub answered: bool,
    /// Whether the destination node's interfaces were watched too.
    pub remote_watched: bool,
    /// The DF probe at the pod MTU (ICMP only): `Some(true)` answered.
    pub df_probe_size: Option<u32>,
    pub df_answered: Option<bool>,
    /// The kernel's drop reasons during the probe (`skb:kfree_skb`), when tracefs is available:
    /// the machine's, and the probe's own packets' (`probe`, when `correlated`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drops: Option<crate::dropwatch::DropReport>,
    /// The remote node's drop reasons during its capture (its flanneld's `/debug/capture`), in
    /// the same form as `drops`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_drops: Option<crate::dropwatch::DropReport>,
    pub notes: Vec<String>,
}

const LISTEN: Duration = Duration::from_millis(1500);
/// IPv6: the first packet toward a neighbour not yet resolved waits for Neighbor Discovery,
/// whose solicitation is retransmitted after RetransTimer, 1 s (RFC 4861 §7.2.2, §10); an
/// answer that needed one retransmission still arrives inside this window.
const LISTEN_V6: Duration = Duration::from_millis(2500);
/// What the remote capture is asked for at most (flanneld caps it at 3 s as well).
const REMOTE_MS: u32 = 3000;
/// Payload bytes of every ICMP and UDP probe packet: the packets are then 489 bytes long
/// (IPv4; 509 over IPv6), a length ordinary traffic rarely has, by which the kernel's drop
/// events are tied to them (`weft_common::capture::dropwatch`).
const PROBE_PAYLOAD: usize = 461;

/// `skb->len` of a probe packet as it enters a device: the IP packet, and the same inside
/// VXLAN over an IPv4 or IPv6 underlay (+50, +70: `crate::path::vxlan_overhead` with the
/// inner Ethernet header). None for TCP, whose SYN carries no payload to give it a length of
/// its own.
fn probe_lens(proto: ProbeProto, v6: bool) -> Vec<u32> {
    if proto == ProbeProto::Tcp {
        return Vec::new();
    }
    let ip = if v6 { 40 } else { 20 } + 8 + u32::try_from(PROBE_PAYLOAD).unwrap_or(0);
    vec![ip, ip + crate::path::vxlan_overhead(false), ip + crate::path::vxlan_overhead(true)]
}

/// Sends the probe from `spec.src_netns` and watches `spec.watches` (and the remote node's).
pub fn run(spec: &ProbeSpec) -> Result<ProbeReport, String> {
    let watches = spec.watches;
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let nonce: u32 = std::process::id().rotate_left(16) ^ clock;
    let mut notes = Vec::new();
    // Capture first, so nothing is missed.
    let mut caps: Capture<Option<String>> = Capture::default();
    let mut spaces: Vec<Option<String>> = watches.iter().map(|w| w.netns.clone()).collect();
    spaces.sort();
    spaces.dedup();
    for ns in spaces {
        caps.open(ns.clone(), ns.as_deref())?;
    }
    let ns = NetNs::open(spec.src_netns).map_err(|e| format!("open netns {}: {e}", spec.src_netns))?;
    let (proto, src_ip, dst_ip) = (spec.proto, spec.src_ip, spec.dst_ip);
    let v6 = dst_ip.is_ipv6();
    let dst_port = match proto {
        ProbeProto::Icmp => 0,
        _ => spec.port.ok_or_else(|| "--port is needed for UDP and TCP probes".to_string())?,
    };
    let (sender, src_port, df_size) = {
        let _g = ns.enter().map_err(|e| format!("enter netns {}: {e}", spec.src_netns))?;
        open_sender(proto, src_ip, spec.pod_mtu)?
    };
    let m = Matcher {
        proto,
        nonce: nonce.to_be_bytes(),
        src_port,
        dst_port,
        vxlan_port: spec.vxlan_port,
        endpoints: None,
    };
    // The remote capture: pod to pod across the overlay, no NAT, so the addresses match too.
    let remote = spec.remote.as_ref().and_then(|r| {
        let names: Vec<&str> = r.places.iter().map(|(_, n)| n.as_str()).collect();
        let query = capture_query(&names, &m, src_ip, dst_ip, &probe_lens(proto, v6));
        match remote::start_capture(r.node, r.port, &query) {
            Ok(id) => Some((r, id)),
            Err(e) => {
                notes.push(format!("remote capture on {} unavailable: {e}", r.node));
                None
            }
        }
    });
    if spec.remote.is_none() {
        notes.push(
            "only this node's hops are watched (the destination is not behind a remote flanneld)".into(),
        );
    }
    let name = format!("weft-probe-{}", std::process::id());
    let drops = match crate::dropwatch::DropWatch::start_tracking(&name, &probe_lens(proto, v6)) {
        Ok(d) => Some(d),
        Err(e) => {
            notes.push(format!("drop reasons unavailable: {e}"));
            None
        }
    };
    let to = SockaddrStorage::from(SocketAddr::new(dst_ip, dst_port));
    let id = u16::try_from(nonce & 0xffff).unwrap_or(1);
    let icmp_echo = |seq: u16, len: usize| match (src_ip, dst_ip) {
        (IpAddr::V6(s), IpAddr::V6(d)) => echo6(s, d, id, seq, len, nonce),
        _ => echo(id, seq, len, nonce),
    };
    let mut sent = 0;
    for seq in 0..3u16 {
        let r = match proto {
            ProbeProto::Icmp => {
                sendto(sender.as_raw_fd(), &icmp_echo(seq, PROBE_PAYLOAD), &to, MsgFlags::empty()).map(|_| ())
            }
            ProbeProto::Udp => {
                let mut payload = MARKER.to_vec();
                payload.extend_from_slice(&nonce.to_be_bytes());
                payload.resize(PROBE_PAYLOAD, 0x5a);
                sendto(sender.as_raw_fd(), &payload, &to, MsgFlags::empty()).map(|_| ())
            }
            ProbeProto::Tcp if seq == 0 => match connect(sender.as_raw_fd(), &to) {
                Err(nix::errno::Errno::EINPROGRESS) => Ok(()),
                other => other,
            },
            // One SYN: the kernel retransmits it by itself.
            ProbeProto::Tcp => continue,
        };
        match r {
            Ok(()) => sent += 1,
            Err(e) => notes.push(format!("send probe {seq}: {e}")),
        }
    }
    let mut counts: Vec<(u32, u32)> = vec![(0, 0); watches.len()];
    let mut df_reply = false;
    let df_seq = 100u16;
    let pod_mtu = usize::try_from(spec.pod_mtu).unwrap_or(usize::MAX);
    let listen = |counts: &mut Vec<(u32, u32)>, df_reply: &mut bool, until: Instant, df: bool| {
        caps.run(until, &|| false, &mut |ns, idx, frame| {
            let kind = m.frame(frame);
            if kind == Kind::Other {
                return;
            }
            if df && kind == Kind::Reply && frame.len() >= pod_mtu {
                *df_reply = true;
            }
            if let Some(i) = watches.iter().position(|w| w.netns == *ns && w.ifindex == idx) {
                if let Some(c) = counts.get_mut(i) {
                    if kind == Kind::Request {
                        c.0 += 1;
                    } else {
                        c.1 += 1;
                    }
                }
            }
        });
    };
    listen(&mut counts, &mut df_reply, Instant::now() + if v6 { LISTEN_V6 } else { LISTEN }, false);
    let drop_report = drops.map(|d| d.finish(&format!("the probe window ({sent} probe packet(s) sent)")));
    let mut df_answered = None;
    if let Some(size) = df_size {
        // IP header and ICMP header: 20 + 8 bytes (IPv4), 40 + 8 (IPv6).
        let headers = if v6 { 48 } else { 28 };
        let payload = usize::try_from(size.saturating_sub(headers)).unwrap_or(0);
        let mut dfc = vec![(0, 0); watches.len()];
        match sendto(sender.as_raw_fd(), &icmp_echo(df_seq, payload), &to, MsgFlags::empty()) {
            Ok(_) => {
                listen(&mut dfc, &mut df_reply, Instant::now() + Duration::from_millis(500), true);
                df_answered = Some(df_reply);
            }
            Err(e) => notes.push(format!("DF probe of {size} bytes not sent: {e}")),
        }
    }
    drop(sender);
    drop(caps);
    let mut hops: Vec<Seen> = watches
        .iter()
        .zip(&counts)
        .map(|(w, c)| Seen {
            place: w.place,
            node: "local".into(),
            ifname: w.ifname.clone(),
            requests: c.0,
            replies: c.1,
        })
        .collect();
    let mut remote_watched = false;
    let mut remote_drops = None;
    if let Some((r, cap_id)) = remote {
        match remote::capture_result(r.node, r.port, cap_id) {
            Ok(v) => {
                hops.extend(remote_hops(r, &v));
                remote_watched = true;
                match crate::dropwatch::from_capture_result(&v) {
                    Ok(d) => remote_drops = Some(d),
                    Err(e) => notes.push(format!("drop reasons of {} unavailable: {e}", r.node)),
                }
            }
            Err(e) => notes.push(format!("remote capture on {}: {e}", r.node)),
        }
    }
    let last_seen = hops.iter().rev().find(|h| h.requests > 0).map(Seen::label);
    let answered = hops.first().is_some_and(|h| h.replies > 0);
    Ok(ProbeReport {
        proto: proto.name().to_string(),
        sent,
        hops,
        last_seen,
        answered,
        remote_watched,
        df_probe_size: df_size,
        df_answered,
        drops: drop_report,
        remote_drops,
        notes,
    })
}

/// Opens the probe's socket (in the pod's namespace, entered by the caller): a raw ICMP or
/// ICMPv6 socket, or a UDP/TCP socket bound to `src_ip`. Returns it, its source port (0 for
/// ICMP) and the size of the DF probe (ICMP only: the pod MTU).
fn open_sender(
    proto: ProbeProto,
    src_ip: IpAddr,
    pod_mtu: u32,
) -> Result<(OwnedFd, u16, Option<u32>), String> {
    let (family, icmp) = match src_ip {
        IpAddr::V4(_) => (AddressFamily::Inet, SockProtocol::Icmp),
        IpAddr::V6(_) => (AddressFamily::Inet6, SockProtocol::IcmpV6),
    };
    match proto {
        ProbeProto::Icmp => {
            let s = socket(family, SockType::Raw, SockFlag::SOCK_CLOEXEC, icmp)
                .map_err(|e| format!("open ICMP socket in the pod: {e}"))?;
            if src_ip.is_ipv6() {
                // IPv6 routers never fragment (RFC 8200 §5); without IPV6_DONTFRAG the sender
                // would, so the probe of the pod MTU would not test the path (RFC 3542 §11.2).
                setsockopt(&s, sockopt::Ipv6DontFrag, &true)
                    .map_err(|e| format!("set IPV6_DONTFRAG: {e}"))?;
            }
            Ok((s, 0u16, Some(pod_mtu)))
        }
        ProbeProto::Udp | ProbeProto::Tcp => {
            let (ty, p) = if proto == ProbeProto::Udp {
                (SockType::Datagram, SockProtocol::Udp)
            } else {
                (SockType::Stream, SockProtocol::Tcp)
            };
            let s = socket(family, ty, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, p)
                .map_err(|e| format!("open socket in the pod: {e}"))?;
            bind(s.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(src_ip, 0)))
                .map_err(|e| format!("bind {src_ip}: {e}"))?;
            let local: SockaddrStorage =
                getsockname(s.as_raw_fd()).map_err(|e| format!("getsockname: {e}"))?;
            let port = local
                .as_sockaddr_in()
                .map(|a| a.port())
                .or_else(|| local.as_sockaddr_in6().map(|a| a.port()))
                .unwrap_or(0);
            Ok((s, port, None))
        }
    }
}

/// The query of the remote `/debug/capture` for the probe `m` between `src_ip` and `dst_ip`.
/// The endpoint takes IPv4 endpoints only (`src=`/`dst=`); an IPv6 probe is found by its marker
/// and ports alone.
fn capture_query(names: &[&str], m: &Matcher, src_ip: IpAddr, dst_ip: IpAddr, lens: &[u32]) -> String {
    let endpoints = match (src_ip, dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => format!("&src={s}&dst={d}"),
        _ => String::new(),
    };
    let lens = match lens {
        [] => String::new(),
        l => format!("&lens={}", l.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
    };
    format!(
        "if={}&proto={}&marker={}&sport={}&dport={}&vxlan_port={}{endpoints}{lens}&ms={REMOTE_MS}",
        names.join(","),
        m.proto.name(),
        nonce_hex(&m.nonce),
        m.src_port,
        m.dst_port,
        m.vxlan_port,
    )
}

fn nonce_hex(n: &[u8; 4]) -> String {
    n.iter().map(|b| format!("{b:02x}")).collect()
}

/// The remote node's hops from its capture answer: the named interfaces in path order, then
/// the destination pod's veth (the bridge port the probe was seen on; its name is only known
/// once a probe reaches it).
fn remote_hops(r: &RemoteWatch, v: &Value) -> Vec<Seen> {
    let count = |i: &Value, k: &str| {
        i.get(k).and_then(Value::as_u64).and_then(|n| u32::try_from(n).ok()).unwrap_or(0)
    };
    let node = r.node.to_string();
    let mut out: Vec<Seen> = r
        .places
        .iter()
        .map(|(place, name)| {
            let i = v
                .get("ifaces")
                .and_then(Value::as_array)
                .and_then(|a| a.iter().find(|i| i.get("name").and_then(Value::as_str) == Some(name)));
            Seen {
                place,
                node: node.clone(),
                ifname: name.clone(),
                requests: i.map(|i| count(i, "requests")).unwrap_or(0),
                replies: i.map(|i| count(i, "replies")).unwrap_or(0),
            }
        })
        .collect();
    let veth = v.get("also_seen").and_then(Value::as_array).and_then(|a| {
        a.iter().find(|i| i.get("kind").and_then(Value::as_str) == Some("veth") && count(i, "requests") > 0)
    });
    out.push(Seen {
        place: "dst-veth",
        node,
        ifname: veth
            .and_then(|i| i.get("name").and_then(Value::as_str))
            .unwrap_or("the pod's veth")
            .to_string(),
        requests: veth.map(|i| count(i, "requests")).unwrap_or(0),
        replies: veth.map(|i| count(i, "replies")).unwrap_or(0),
    });
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// What flanneld's capture endpoint makes of the query is the probe's own matcher.
    #[test]
    fn the_remote_capture_query_parses_back_to_the_probes_matcher() {
        let m = Matcher {
            proto: ProbeProto::Udp,
            nonce: [0xde, 0xad, 0x00, 0x01],
            src_port: 40000,
            dst_port: 9,
            vxlan_port: 4789,
            endpoints: None,
        };
        let names = ["eth0", "flannel-v6.1", "cni0"];
        let lens6 = probe_lens(ProbeProto::Udp, true);
        assert_eq!(lens6, [509, 559, 579]);
        let q6 =
            capture_query(&names, &m, "fd00:1::2".parse().unwrap(), "fd00:2::2".parse().unwrap(), &lens6);
        let r = weft_flanneld::capture::parse_request(Some(&q6)).unwrap();
        assert_eq!(r.matcher, m, "{q6}");
        assert_eq!(r.ifaces, names);
        assert_eq!(r.lens, lens6);
        // TCP: no length of its own to follow.
        assert!(probe_lens(ProbeProto::Tcp, false).is_empty());
        let q4 = capture_query(&names, &m, "10.5.1.2".parse().unwrap(), "10.5.2.3".parse().unwrap(), &[]);
        let r = weft_flanneld::capture::parse_request(Some(&q4)).unwrap();
        assert!(r.lens.is_empty());
        let want =
            Matcher { endpoints: Some(("10.5.1.2".parse().unwrap(), "10.5.2.3".parse().unwrap())), ..m };
        assert_eq!(r.matcher, want, "{q4}");
    }
}
