//! Recognising the probe's own packets in captured Ethernet frames: `weft path --probe` marks
//! them (a payload marker with a per-run nonce, or the probe socket's ports), and the same
//! matcher runs in `weft` (this node's hops) and in flanneld's capture endpoint (the remote
//! node's hops), so both sides count exactly the same packets.
//!
//! Pure and total: any byte string is classified, never indexed out of bounds.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The payload marker every probe packet carries (followed by the run's 4-byte nonce).
pub const MARKER: &[u8] = b"WEFT-PROBE";

/// The probe's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeProto {
    Icmp,
    Udp,
    Tcp,
}

impl ProbeProto {
    /// `icmp`, `udp` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            ProbeProto::Icmp => "icmp",
            ProbeProto::Udp => "udp",
            ProbeProto::Tcp => "tcp",
        }
    }

    /// The inverse of [`ProbeProto::name`].
    pub fn parse(s: &str) -> Option<ProbeProto> {
        match s {
            "icmp" => Some(ProbeProto::Icmp),
            "udp" => Some(ProbeProto::Udp),
            "tcp" => Some(ProbeProto::Tcp),
            _ => None,
        }
    }
}

/// What a captured frame is, relative to the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A probe packet going toward DST.
    Request,
    /// An answer coming back (echo reply, UDP/TCP answer, ICMP error quoting the probe).
    Reply,
    Other,
}

/// The probe's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub proto: ProbeProto,
    pub nonce: [u8; 4],
    /// The probe socket's source port (UDP/TCP; 0 for ICMP).
    pub src_port: u16,
    /// `--port` (UDP/TCP; 0 for ICMP).
    pub dst_port: u16,
    /// The VXLAN UDP port: frames to it are opened once and matched inside.
    pub vxlan_port: u16,
    /// The probe's (inner) source and destination addresses, when known and not rewritten by
    /// NAT on the way: a packet between other addresses is not the probe's.
    pub endpoints: Option<(Ipv4Addr, Ipv4Addr)>,
}

fn be16(d: &[u8], at: usize) -> u16 {
    match d.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

fn addr(d: &[u8], at: usize) -> Option<Ipv4Addr> {
    match d.get(at..at + 4) {
        Some(&[a, b, c, e]) => Some(Ipv4Addr::new(a, b, c, e)),
        _ => None,
    }
}

impl Matcher {
    /// Classifies an Ethernet frame; VXLAN frames are opened once.
    pub fn frame(&self, f: &[u8]) -> Kind {
        self.frame_at(f, 0)
    }

    fn frame_at(&self, f: &[u8], depth: u8) -> Kind {
        match f.get(12..14) {
            Some(&[0x08, 0x00]) => self.ip(f.get(14..).unwrap_or(&[]), depth),
            Some(&[0x86, 0xdd]) => self.ip6(f.get(14..).unwrap_or(&[]), depth),
            _ => Kind::Other,
        }
    }

    /// An IPv6 packet (RFC 8200 §3): the fixed 40-byte header, then the upper layer. Extension
    /// headers are not followed (the probe sends none; a packet with them is not the probe's).
    /// `endpoints` are IPv4 only and so never restrict an IPv6 packet.
    fn ip6(&self, p: &[u8], depth: u8) -> Kind {
        if p.first().map(|v| v >> 4) != Some(6) {
            return Kind::Other;
        }
        let next = p.get(6).copied().unwrap_or(0);
        let l4 = p.get(40..).unwrap_or(&[]);
        if next == 17 && depth == 0 && be16(l4, 2) == self.vxlan_port {
            return self.frame_at(l4.get(16..).unwrap_or(&[]), 1);
        }
        self.l4(next, l4)
    }

    fn ip(&self, p: &[u8], depth: u8) -> Kind {
        let Some(&vihl) = p.first() else { return Kind::Other };
        if vihl >> 4 != 4 {
            return Kind::Other;
        }
        let hl = usize::from(vihl & 0x0f) * 4;
        let proto = p.get(9).copied().unwrap_or(0);
        let l4 = p.get(hl..).unwrap_or(&[]);
        let port = |o: usize| be16(l4, o);
        if proto == 17 && depth == 0 && port(2) == self.vxlan_port {
            return self.frame_at(l4.get(16..).unwrap_or(&[]), 1);
        }
        let kind = self.l4(proto, l4);
        match (kind, self.endpoints, addr(p, 12), addr(p, 16)) {
            (Kind::Other, ..) | (_, None, ..) => kind,
            (Kind::Request, Some((s, d)), Some(a), Some(b)) if a == s && b == d => kind,
            (Kind::Reply, Some((s, d)), Some(a), Some(b)) if b == s && (a == d || proto == 1) => kind,
            _ => Kind::Other,
        }
    }

    fn l4(&self, proto: u8, l4: &[u8]) -> Kind {
        let port = |o: usize| be16(l4, o);
        let has_marker =
            |d: &[u8]| d.windows(MARKER.len() + 4).any(|w| w.starts_with(MARKER) && w.ends_with(&self.nonce));
        match (self.proto, proto) {
            (ProbeProto::Icmp, 1) => match l4.first() {
                Some(8) if has_marker(l4) => Kind::Request,
                Some(0) if has_marker(l4) => Kind::Reply,
                _ => Kind::Other,
            },
            // ICMPv6 echo request 128, reply 129 (RFC 4443 §4).
            (ProbeProto::Icmp, 58) => match l4.first() {
                Some(128) if has_marker(l4) => Kind::Request,
                Some(129) if has_marker(l4) => Kind::Reply,
                _ => Kind::Other,
            },
            // After masquerade the ports may be rewritten; the payload marker is not.
            (ProbeProto::Udp, 17)
                if port(0) == self.src_port && port(2) == self.dst_port || has_marker(l4) =>
            {
                if port(2) == self.dst_port {
                    Kind::Request
                } else {
                    Kind::Reply
                }
            }
            (ProbeProto::Udp, 17) if port(2) == self.src_port && port(0) == self.dst_port => Kind::Reply,
            // ICMP errors about our UDP packets (port unreachable) are answers too.
            (ProbeProto::Udp | ProbeProto::Tcp, 1)
                if has_marker(l4) || l4.get(8..).is_some_and(|inner| self.quotes_ports(inner)) =>
            {
                Kind::Reply
            }
            // ICMPv6 errors (types below 128, RFC 4443 §2.1) quote the IPv6 packet at offset 8.
            (ProbeProto::Udp | ProbeProto::Tcp, 58)
                if l4.first().is_some_and(|&t| t < 128)
                    && (has_marker(l4) || l4.get(48..).is_some_and(|q| self.quotes_l4_ports(q))) =>
            {
                Kind::Reply
            }
            (ProbeProto::Tcp, 6) if port(0) == self.src_port && port(2) == self.dst_port => Kind::Request,
            (ProbeProto::Tcp, 6) if port(2) == self.src_port && port(0) == self.dst_port => Kind::Reply,
            _ => Kind::Other,
        }
    }

    fn quotes_ports(&self, inner_ip: &[u8]) -> bool {
        let hl = usize::from(inner_ip.first().copied().unwrap_or(0) & 0x0f) * 4;
        self.quotes_l4_ports(inner_ip.get(hl..).unwrap_or(&[]))
    }

    fn quotes_l4_ports(&self, l4: &[u8]) -> bool {
        l4.len() >= 4 && be16(l4, 0) == self.src_port && be16(l4, 2) == self.dst_port
    }
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
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

/// An ICMP echo request carrying [`MARKER`] and `nonce`, `payload_len` bytes of payload.
pub fn echo(id: u16, seq: u16, payload_len: usize, nonce: u32) -> Vec<u8> {
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

/// An ICMPv6 echo request (RFC 4443 §4.1) from `src` to `dst` carrying [`MARKER`] and `nonce`,
/// `payload_len` bytes of payload, its checksum over the IPv6 pseudo-header (RFC 8200 §8.1).
/// (A raw `IPPROTO_ICMPV6` socket fills in the checksum itself, RFC 3542 §3.1; it is set here
/// as well so the packet is valid whatever sends it.)
pub fn echo6(src: Ipv6Addr, dst: Ipv6Addr, id: u16, seq: u16, payload_len: usize, nonce: u32) -> Vec<u8> {
    let mut p = echo(id, seq, payload_len, nonce);
    if let Some(t) = p.first_mut() {
        *t = 128;
    }
    if let Some(s) = p.get_mut(2..4) {
        s.copy_from_slice(&[0, 0]);
    }
    let c = checksum6(src, dst, 58, &p);
    if let Some(s) = p.get_mut(2..4) {
        s.copy_from_slice(&c.to_be_bytes());
    }
    p
}

/// The upper-layer checksum of `data` over the IPv6 pseudo-header (RFC 8200 §8.1).
pub fn checksum6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, data: &[u8]) -> u16 {
    let mut all = Vec::with_capacity(40 + data.len());
    all.extend_from_slice(&src.octets());
    all.extend_from_slice(&dst.octets());
    all.extend_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    all.extend_from_slice(&[0, 0, 0, next]);
    all.extend_from_slice(data);
    checksum(&all)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn matcher(proto: ProbeProto) -> Matcher {
        Matcher {
            proto,
            nonce: [1, 2, 3, 4],
            src_port: 40000,
            dst_port: 9,
            vxlan_port: 8472,
            endpoints: None,
        }
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
        let m = matcher(ProbeProto::Icmp);
        assert_eq!(m.frame(&eth(&ipv4(1, &e))), Kind::Request);
        let mut reply = e.clone();
        reply[0] = 0;
        assert_eq!(m.frame(&eth(&ipv4(1, &reply))), Kind::Reply);
        let other = echo(7, 1, 64, 0x0a0b0c0d);
        assert_eq!(m.frame(&eth(&ipv4(1, &other))), Kind::Other, "another run's probe");
    }

    #[test]
    fn probes_are_found_inside_vxlan() {
        let inner = eth(&ipv4(1, &echo(7, 1, 32, 0x01020304)));
        let mut udp = vec![0x12, 0x34, 0x21, 0x18, 0, 0, 0, 0]; // dport 8472
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]); // VXLAN header, VNI 1
        udp.extend_from_slice(&inner);
        let m = matcher(ProbeProto::Icmp);
        assert_eq!(m.frame(&eth(&ipv4(17, &udp))), Kind::Request);
        let other_port = Matcher { vxlan_port: 4789, ..m };
        assert_eq!(other_port.frame(&eth(&ipv4(17, &udp))), Kind::Other);
    }

    #[test]
    fn endpoints_when_given_must_match() {
        let e = eth(&ipv4(1, &echo(7, 1, 32, 0x01020304)));
        let want = |s: [u8; 4], d: [u8; 4]| Matcher {
            endpoints: Some((Ipv4Addr::from(s), Ipv4Addr::from(d))),
            ..matcher(ProbeProto::Icmp)
        };
        assert_eq!(want([10, 244, 1, 2], [10, 244, 2, 2]).frame(&e), Kind::Request);
        assert_eq!(want([10, 244, 1, 9], [10, 244, 2, 2]).frame(&e), Kind::Other);
    }

    #[test]
    fn udp_and_tcp_match_by_ports() {
        let v4: fn(u8, &[u8]) -> Vec<u8> = |p, l4| eth(&ipv4(p, l4));
        let v6: fn(u8, &[u8]) -> Vec<u8> = |p, l4| eth6(&ipv6(p, l4));
        for frame in [v4, v6] {
            let m = matcher(ProbeProto::Udp);
            let out = [0x9c, 0x40, 0, 9, 0, 8, 0, 0];
            let back = [0, 9, 0x9c, 0x40, 0, 8, 0, 0];
            assert_eq!(m.frame(&frame(17, &out)), Kind::Request);
            assert_eq!(m.frame(&frame(17, &back)), Kind::Reply);
            let t = matcher(ProbeProto::Tcp);
            let syn = [0x9c, 0x40, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02, 0, 0, 0, 0, 0, 0];
            assert_eq!(t.frame(&frame(6, &syn)), Kind::Request);
        }
    }

    #[test]
    fn arbitrary_frames_never_panic() {
        let m = matcher(ProbeProto::Udp);
        let mut seed: u32 = 12345;
        for (ethertype, version) in [([0x08, 0x00], 0x45), ([0x86, 0xdd], 0x60)] {
            for len in 0..300usize {
                let mut f: Vec<u8> = (0..len)
                    .map(|_| {
                        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                        u8::try_from(seed >> 24).unwrap_or(0)
                    })
                    .collect();
                if f.len() > 14 {
                    f[12..14].copy_from_slice(&ethertype);
                    f[14] = version;
                }
                let _ = m.frame(&f);
            }
        }
    }

    fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        let len = u16::try_from(l4.len()).unwrap();
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&V6_SRC.octets());
        p.extend_from_slice(&V6_DST.octets());
        p.extend_from_slice(l4);
        p
    }

    fn eth6(ip: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x86, 0xdd]);
        f.extend_from_slice(ip);
        f
    }

    const V6_SRC: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2);
    const V6_DST: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 2, 0, 0, 0, 2);

    #[test]
    fn echo6_has_a_valid_pseudo_header_checksum_and_the_marker() {
        let e = echo6(V6_SRC, V6_DST, 7, 1, 64, 0x01020304);
        assert_eq!(e[0], 128, "ICMPv6 echo request");
        assert_eq!(e.len(), 8 + 64);
        assert_eq!(checksum6(V6_SRC, V6_DST, 58, &e), 0, "sums to zero including its checksum");
        assert_ne!(checksum6(V6_DST, V6_SRC, 58, &e[..8]), 0);
        assert!(e.windows(MARKER.len() + 4).any(|w| w.starts_with(MARKER) && w.ends_with(&[1, 2, 3, 4])));
        let m = matcher(ProbeProto::Icmp);
        assert_eq!(m.frame(&eth6(&ipv6(58, &e))), Kind::Request);
        let mut reply = e.clone();
        reply[0] = 129;
        assert_eq!(m.frame(&eth6(&ipv6(58, &reply))), Kind::Reply);
        let other = echo6(V6_SRC, V6_DST, 7, 1, 64, 0x0a0b0c0d);
        assert_eq!(m.frame(&eth6(&ipv6(58, &other))), Kind::Other, "another run's probe");
    }

    #[test]
    fn ipv6_probes_are_found_inside_vxlan_over_an_ipv6_underlay() {
        let inner = eth6(&ipv6(58, &echo6(V6_SRC, V6_DST, 7, 1, 32, 0x01020304)));
        let mut udp = vec![0x12, 0x34, 0x21, 0x18, 0, 0, 0, 0]; // dport 8472
        udp.extend_from_slice(&[0x08, 0, 0, 0, 0, 0, 1, 0]); // VXLAN header, VNI 1
        udp.extend_from_slice(&inner);
        let m = matcher(ProbeProto::Icmp);
        assert_eq!(m.frame(&eth6(&ipv6(17, &udp))), Kind::Request, "outer IPv6");
        assert_eq!(m.frame(&eth(&ipv4(17, &udp))), Kind::Request, "outer IPv4, inner IPv6");
        let other_port = Matcher { vxlan_port: 4789, ..m };
        assert_eq!(other_port.frame(&eth6(&ipv6(17, &udp))), Kind::Other);
    }

    #[test]
    fn icmpv6_errors_quoting_the_probe_are_answers() {
        let m = matcher(ProbeProto::Udp);
        let out = [0x9c, 0x40, 0, 9, 0, 8, 0, 0];
        // Port unreachable (type 1 code 4) quoting the probe's IPv6/UDP header.
        let mut unreach = vec![1, 4, 0, 0, 0, 0, 0, 0];
        unreach.extend_from_slice(&ipv6(17, &out));
        assert_eq!(m.frame(&eth6(&ipv6(58, &unreach))), Kind::Reply);
        let mut other = vec![1, 4, 0, 0, 0, 0, 0, 0];
        other.extend_from_slice(&ipv6(17, &[0x9c, 0x41, 0, 9, 0, 8, 0, 0]));
        assert_eq!(m.frame(&eth6(&ipv6(58, &other))), Kind::Other, "another socket's packet");
    }

    #[test]
    fn proto_names_round_trip() {
        for p in [ProbeProto::Icmp, ProbeProto::Udp, ProbeProto::Tcp] {
            assert_eq!(ProbeProto::parse(p.name()), Some(p));
        }
        assert_eq!(ProbeProto::parse("sctp"), None);
    }
}
