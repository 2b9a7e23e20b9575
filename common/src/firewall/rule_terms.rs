//! A dumped rule's expressions (`NFTA_RULE_EXPRESSIONS`) read into the terms a reader of
//! `iptables-save` or `nft list ruleset` sees: address, interface, protocol, mark and conntrack
//! state matches, x_tables matches and targets, verdicts and statements. Any other match
//! (set lookups, ranges, other header fields ...) becomes [`Term::Unknown`], so a reader that
//! evaluates terms never takes a rule it cannot read for one that matches.
//!
//! An nf_tables rule is a little register machine: a load (`payload`, `meta`, `ct`) fills a
//! register, `bitwise` masks it and `cmp` compares it. iptables-nft and nft both emit a load
//! immediately followed by its mask and comparison, so one pending load is tracked; register
//! numbers are not. Numbers: `include/uapi/linux/netfilter/nf_tables.h`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::nfnl::{attrs, be32, cstr, data_value, find};
use super::nft_abi::*;

/// The address family a rule's network-header loads are read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// What one match compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    Saddr(IpNetwork),
    Daddr(IpNetwork),
    /// An input interface name; `wildcard` for a prefix (`cni+` / `"cni*"`).
    Iif {
        name: String,
        wildcard: bool,
    },
    Oif {
        name: String,
        wildcard: bool,
    },
    /// The layer-4 protocol number (`-p`, `meta l4proto`).
    Proto(u8),
    /// `meta nfproto` (2 IPv4, 10 IPv6): the family check nft adds in `inet` tables.
    Nfproto(u8),
    /// `meta mark & mask == value` (mask all ones: a plain `meta mark value`).
    Mark {
        value: u32,
        mask: u32,
    },
    /// `ct state` holding any of these bits (`-m conntrack --ctstate`).
    CtState(u32),
    /// A TCP/UDP port (`--dport`/`--sport` of `-m tcp`/`-m udp`).
    Port {
        dst: bool,
        port: u16,
    },
}

/// One piece of a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// A match weft reads: `neg` for `!=` (`! -s …`).
    Match {
        key: Key,
        neg: bool,
    },
    /// A match weft does not read, named by its expression (`lookup`, `range`, an x_tables
    /// match such as `conntrack` …).
    Unknown(String),
    /// `-m comment --comment` (an x_tables `comment` match).
    Comment(String),
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    /// An x_tables target through nft_compat (`MASQUERADE`, `REJECT`, `MARK` …) and its struct.
    XtTarget {
        name: String,
        rev: u32,
        info: Vec<u8>,
    },
    /// Native `masquerade` with its `NF_NAT_RANGE_*` flags.
    Masq {
        flags: u32,
    },
    Snat,
    Dnat,
    Reject,
    /// A statement that does not decide (counter, log, `meta … set`, `limit` is not one).
    Statement(String),
}

/// The terms of a rule. `family` is the table's (`None` for `inet`, where `meta nfproto`
/// decides it).
pub fn decode(buf: &[u8], family: Option<Family>) -> Vec<Term> {
    let mut d = Decoder { family, load: None, mask: None, out: Vec::new() };
    for (kind, elem) in attrs(buf) {
        if kind != NFTA_LIST_ELEM {
            continue;
        }
        let elem = attrs(elem);
        let Some(name) = find(&elem, NFTA_EXPR_NAME).map(cstr) else { continue };
        let data = find(&elem, NFTA_EXPR_DATA).map(attrs).unwrap_or_default();
        d.expr(&name, &data);
    }
    if let Some(load) = d.load.take() {
        d.out.push(Term::Unknown(load.name()));
    }
    d.out
}

/// What the pending register holds.
#[derive(Debug, Clone, Copy)]
enum Load {
    Payload { base: u32, offset: u32, len: u32 },
    Meta(u32),
    CtState,
    Other(&'static str),
}

impl Load {
    fn name(&self) -> String {
        match self {
            Load::Payload { .. } => "payload".into(),
            Load::Meta(_) => "meta".into(),
            Load::CtState => "ct".into(),
            Load::Other(n) => (*n).into(),
        }
    }
}

struct Decoder {
    family: Option<Family>,
    load: Option<Load>,
    mask: Option<Vec<u8>>,
    out: Vec<Term>,
}

const NFT_META_MARK: u32 = 3;
const NFT_META_IIFNAME: u32 = 6;
const NFT_META_OIFNAME: u32 = 7;
const NFT_META_L4PROTO: u32 = 16;
const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
const NFT_CT_STATE: u32 = 0;
const NF_DROP: i32 = 0;

impl Decoder {
    fn expr(&mut self, name: &str, a: &[(u16, &[u8])]) {
        let u32_of = |t: u16| find(a, t).and_then(be32);
        // A load left pending by anything but its mask and comparison is a match we cannot read.
        if !matches!(name, "bitwise" | "cmp") {
            if let Some(load) = self.load.take() {
                self.out.push(Term::Unknown(load.name()));
            }
            self.mask = None;
        }
        match name {
            // NFTA_PAYLOAD_BASE, _OFFSET, _LEN
            "payload" if find(a, 1).is_some() => {
                self.load = match (u32_of(2), u32_of(3), u32_of(4)) {
                    (Some(base), Some(offset), Some(len)) => Some(Load::Payload { base, offset, len }),
                    _ => Some(Load::Other("payload")),
                }
            }
            // NFTA_META_DREG: a load; with NFTA_META_SREG instead it sets the field.
            "meta" if find(a, 1).is_some() => {
                self.load = Some(u32_of(2).map_or(Load::Other("meta"), Load::Meta))
            }
            "ct" if find(a, 1).is_some() => {
                self.load =
                    Some(if u32_of(2) == Some(NFT_CT_STATE) { Load::CtState } else { Load::Other("ct") })
            }
            "bitwise" => {
                let boolean = u32_of(6).unwrap_or(NFT_BITWISE_BOOL) == NFT_BITWISE_BOOL;
                let mask = find(a, 4).and_then(data_value);
                let xor_zero = find(a, 5).and_then(data_value).is_some_and(|x| x.iter().all(|&b| b == 0));
                match (self.load.is_some(), boolean, mask, xor_zero) {
                    (true, true, Some(mask), true) => self.mask = Some(mask.to_vec()),
                    _ => self.unknown(name),
                }
            }
            "cmp" => {
                let op = u32_of(2);
                let data = find(a, 3).and_then(data_value);
                match (self.load.take(), op, data) {
                    (Some(load), Some(op @ (0 | 1)), Some(data)) => {
                        let mask = self.mask.take();
                        let term = self.compare(load, op == 1, data, mask.as_deref());
                        self.out.push(term);
                    }
                    (load, _, _) => {
                        self.mask = None;
                        self.out.push(Term::Unknown(load.map_or_else(|| "cmp".into(), |l| l.name())));
                    }
                }
            }
            "immediate" => self.out.push(immediate(a).unwrap_or_else(|| Term::Statement("immediate".into()))),
            "match" => {
                let xt = xt(a);
                match (xt.0.as_str(), conntrack_state(&xt)) {
                    ("comment", _) => self.out.push(Term::Comment(cstr(&xt.2))),
                    (_, Some((bits, neg))) => self.out.push(Term::Match { key: Key::CtState(bits), neg }),
                    _ => self.out.push(Term::Unknown(xt.0)),
                }
            }
            "target" => {
                let (name, rev, info) = xt(a);
                self.out.push(Term::XtTarget { name, rev, info });
            }
            "masq" => self.out.push(Term::Masq { flags: u32_of(1).unwrap_or(0) }),
            // NFTA_NAT_TYPE: NFT_NAT_SNAT 0, NFT_NAT_DNAT 1
            "nat" => self.out.push(if u32_of(1) == Some(1) { Term::Dnat } else { Term::Snat }),
            "reject" => self.out.push(Term::Reject),
            "counter" | "log" | "meta" | "ct" | "notrack" => self.out.push(Term::Statement(name.into())),
            other => self.out.push(Term::Unknown(other.into())),
        }
    }

    fn unknown(&mut self, name: &str) {
        self.load = None;
        self.mask = None;
        self.out.push(Term::Unknown(name.into()));
    }

    /// The match a load, its optional mask and an `==`/`!=` comparison make.
    fn compare(&mut self, load: Load, neg: bool, data: &[u8], mask: Option<&[u8]>) -> Term {
        let known = |key| Term::Match { key, neg };
        match load {
            Load::Meta(NFT_META_IIFNAME | NFT_META_OIFNAME) if mask.is_none() => {
                let key = if matches!(load, Load::Meta(NFT_META_IIFNAME)) {
                    ifname(data, true)
                } else {
                    ifname(data, false)
                };
                known(key)
            }
            Load::Meta(NFT_META_NFPROTO) if mask.is_none() && data.len() == 1 => {
                if !neg {
                    self.family = match data[0] {
                        2 => Some(Family::V4),
                        10 => Some(Family::V6),
                        _ => self.family,
                    };
                }
                known(Key::Nfproto(data[0]))
            }
            Load::Meta(NFT_META_L4PROTO) if mask.is_none() && data.len() == 1 => known(Key::Proto(data[0])),
            Load::Meta(NFT_META_MARK) => match (ne32(data), mask.map_or(Some(u32::MAX), ne32)) {
                (Some(value), Some(mask)) => known(Key::Mark { value, mask }),
                _ => Term::Unknown("meta".into()),
            },
            Load::CtState => match (ne32(data), mask.and_then(ne32)) {
                // `ct state & bits != 0`: any of the bits (iptables' `--ctstate` and nft's
                // `ct state { … }` in the bitmask form).
                (Some(0), Some(bits)) if neg => Term::Match { key: Key::CtState(bits), neg: false },
                _ => Term::Unknown("ct".into()),
            },
            Load::Payload { base: NFT_PAYLOAD_NETWORK_HEADER, offset, len } => {
                match (self.family, offset, len) {
                    (Some(Family::V4), 9, 1) | (Some(Family::V6), 6, 1) if mask.is_none() => {
                        known(Key::Proto(data.first().copied().unwrap_or(0)))
                    }
                    (Some(Family::V4), 12 | 16, 1..=4) | (Some(Family::V6), 8 | 24, 1..=16) => {
                        let v6 = self.family == Some(Family::V6);
                        match prefix(data, mask, v6) {
                            Some(net) if offset == 12 || offset == 8 => known(Key::Saddr(net)),
                            Some(net) => known(Key::Daddr(net)),
                            None => Term::Unknown("payload".into()),
                        }
                    }
                    _ => Term::Unknown("payload".into()),
                }
            }
            Load::Payload { base: NFT_PAYLOAD_TRANSPORT_HEADER, offset: offset @ (0 | 2), len: 2 }
                if mask.is_none() && !neg =>
            {
                match data.get(0..2) {
                    Some(&[hi, lo]) => {
                        known(Key::Port { dst: offset == 2, port: u16::from_be_bytes([hi, lo]) })
                    }
                    _ => Term::Unknown("payload".into()),
                }
            }
            other => Term::Unknown(other.name()),
        }
    }
}

/// An interface name compared by `cmp`: exact when the data holds its terminating NUL (iptables
/// sends `name\0`, nft pads to 16 bytes), a prefix otherwise.
fn ifname(data: &[u8], input: bool) -> Key {
    let wildcard = !data.contains(&0);
    let name = cstr(data);
    if input {
        Key::Iif { name, wildcard }
    } else {
        Key::Oif { name, wildcard }
    }
}

/// The network an address comparison of `data.len()` bytes (under `mask`, if any) holds.
fn prefix(data: &[u8], mask: Option<&[u8]>, v6: bool) -> Option<IpNetwork> {
    let bits = match mask {
        None => data.len() * 8,
        Some(mask) => {
            let ones: usize = mask.iter().map(|b| b.count_ones() as usize).sum();
            // Only contiguous prefixes are addresses with a length.
            let contiguous =
                mask.iter().flat_map(|b| (0..8).rev().map(move |i| b >> i & 1)).skip(ones).all(|b| b == 0);
            if mask.len() != data.len() || !contiguous {
                return None;
            }
            ones
        }
    };
    let addr: IpAddr = if v6 {
        let mut b = [0u8; 16];
        b.get_mut(..data.len())?.copy_from_slice(data);
        Ipv6Addr::from(b).into()
    } else {
        let mut b = [0u8; 4];
        b.get_mut(..data.len())?.copy_from_slice(data);
        Ipv4Addr::from(b).into()
    };
    IpNetwork::new(addr, u8::try_from(bits).ok()?).ok()
}

/// A verdict in the verdict register (`NFTA_IMMEDIATE_DREG` 0).
fn immediate(a: &[(u16, &[u8])]) -> Option<Term> {
    if find(a, 1).and_then(be32)? != 0 {
        return None;
    }
    let data = attrs(find(a, 2)?);
    let verdict = attrs(find(&data, NFTA_DATA_VERDICT)?);
    let code =
        find(&verdict, NFTA_VERDICT_CODE).and_then(be32).map(|c| i32::from_be_bytes(c.to_be_bytes()))?;
    let chain = find(&verdict, NFTA_VERDICT_CHAIN).map(cstr);
    Some(match (code, chain) {
        (NF_ACCEPT, _) => Term::Accept,
        (NF_DROP, _) => Term::Drop,
        (NFT_RETURN, _) => Term::Return,
        (NFT_JUMP, Some(c)) => Term::Jump(c),
        (NFT_GOTO, Some(c)) => Term::Goto(c),
        _ => return None,
    })
}

/// `-m conntrack [!] --ctstate …` and nothing else (`xt_conntrack_mtinfo2`/`3`: eight
/// addresses, timeouts, protocol and ports, then `match_flags`, `invert_flags` and the u16
/// `state_mask` at byte 150; `XT_CONNTRACK_STATE` is flag 1).
fn conntrack_state((name, rev, info): &(String, u32, Vec<u8>)) -> Option<(u32, bool)> {
    if name != "conntrack" || !matches!(rev, 2 | 3) {
        return None;
    }
    let u16_at =
        |o: usize| info.get(o..o + 2).and_then(|b| <[u8; 2]>::try_from(b).ok()).map(u16::from_ne_bytes);
    let (flags, invert, state) = (u16_at(146)?, u16_at(148)?, u16_at(150)?);
    (flags == 1).then_some((u32::from(state), invert & 1 != 0))
}

/// An x_tables match or target: `NFTA_{MATCH,TARGET}_NAME`, `_REV`, `_INFO`.
fn xt(a: &[(u16, &[u8])]) -> (String, u32, Vec<u8>) {
    let name = find(a, 1).map(cstr).unwrap_or_default();
    let rev = find(a, 2).and_then(be32).unwrap_or(0);
    (name, rev, find(a, 3).map(<[u8]>::to_vec).unwrap_or_default())
}

/// A register value in host order (marks and conntrack bits are compared as host integers).
fn ne32(v: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(v).ok().map(u32::from_ne_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::nfnl_batch::{Batch, CmpOp, Expr};

    fn comment(text: &str) -> Expr {
        let mut info = text.as_bytes().to_vec();
        info.resize(256, 0);
        Expr::XtMatch { name: "comment", rev: 0, info }
    }

    #[test]
    fn the_cni_masquerade_rule_reads_as_its_matches_and_target() {
        // `inet` table: nfproto ipv4, then `ip daddr != 224.0.0.0/4`, then masquerade.
        let rule = Batch::encode_exprs(&[
            Expr::MetaNfproto,
            Expr::Cmp { op: CmpOp::Eq, data: vec![2] },
            Expr::Payload { offset: 16, len: 4 },
            Expr::Bitwise { mask: vec![0xf0, 0, 0, 0] },
            Expr::Cmp { op: CmpOp::Neq, data: vec![0xe0, 0, 0, 0] },
            Expr::Counter,
            Expr::Masq,
        ]);
        assert_eq!(
            decode(&rule, None),
            vec![
                Term::Match { key: Key::Nfproto(2), neg: false },
                Term::Match { key: Key::Daddr("224.0.0.0/4".parse().unwrap()), neg: true },
                Term::Statement("counter".into()),
                Term::Masq { flags: 0 },
            ]
        );
        // Without the nfproto check an inet table's payload cannot be read.
        let bare = Batch::encode_exprs(&[
            Expr::Payload { offset: 12, len: 2 },
            Expr::Cmp { op: CmpOp::Eq, data: vec![10, 244] },
        ]);
        assert_eq!(decode(&bare, None), vec![Term::Unknown("payload".into())]);
        // In an `ip` table it is `-s 10.244.0.0/16` (iptables-nft's shortened load).
        assert_eq!(
            decode(&bare, Some(Family::V4)),
            vec![Term::Match { key: Key::Saddr("10.244.0.0/16".parse().unwrap()), neg: false }]
        );
    }

    #[test]
    fn comments_verdicts_and_x_tables_targets() {
        let rule = Batch::encode_exprs(&[
            comment("flanneld masq"),
            Expr::Counter,
            Expr::XtTarget { name: "MASQUERADE", rev: 0, info: vec![1, 0, 0, 0, 0x10, 0, 0, 0] },
        ]);
        assert_eq!(
            decode(&rule, Some(Family::V4)),
            vec![
                Term::Comment("flanneld masq".into()),
                Term::Statement("counter".into()),
                Term::XtTarget { name: "MASQUERADE".into(), rev: 0, info: vec![1, 0, 0, 0, 0x10, 0, 0, 0] },
            ]
        );
        for (e, t) in [
            (Expr::Accept, Term::Accept),
            (Expr::Return, Term::Return),
            (Expr::Jump("FLANNEL-FWD".into()), Term::Jump("FLANNEL-FWD".into())),
            (Expr::Goto("x".into()), Term::Goto("x".into())),
        ] {
            assert_eq!(decode(&Batch::encode_exprs(&[e]), Some(Family::V6)), vec![t]);
        }
    }

    #[test]
    fn unreadable_comparisons_are_unknown_and_truncation_never_panics() {
        // A non-contiguous mask is not a prefix.
        let odd = Batch::encode_exprs(&[
            Expr::Payload { offset: 12, len: 4 },
            Expr::Bitwise { mask: vec![0xff, 0, 0xff, 0] },
            Expr::Cmp { op: CmpOp::Eq, data: vec![10, 0, 1, 0] },
        ]);
        assert_eq!(decode(&odd, Some(Family::V4)), vec![Term::Unknown("payload".into())]);
        // A load no comparison consumes.
        let dangling = Batch::encode_exprs(&[Expr::Payload { offset: 12, len: 4 }, Expr::Accept]);
        assert_eq!(decode(&dangling, Some(Family::V4)), vec![Term::Unknown("payload".into()), Term::Accept]);
        let full = Batch::encode_exprs(&[
            comment("x"),
            Expr::MetaNfproto,
            Expr::Cmp { op: CmpOp::Eq, data: vec![10] },
            Expr::Payload { offset: 24, len: 16 },
            Expr::Cmp { op: CmpOp::Eq, data: vec![0xfd; 16] },
            Expr::Jump("c".into()),
        ]);
        for n in 0..full.len() {
            let _ = decode(&full[..n], None);
        }
    }
}
