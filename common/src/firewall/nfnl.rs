//! Reading nftables rules in-process over `NETLINK_NETFILTER` (no `nft` process): a filtered
//! `NFT_MSG_GETRULE` dump of one chain, keeping each rule's handle and comment. Only reads; all
//! writes go through `nft -f` so the expressions are exactly those the `nft` parser builds.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWRULE: u16 = 6;
const NFPROTO_INET: u8 = 1;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_USERDATA: u16 = 7;
/// libnftnl's `NFTNL_UDATA_RULE_COMMENT`, the TLV type `nft` stores rule comments under.
const UDATA_RULE_COMMENT: u8 = 0;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// One rule of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleInfo {
    pub handle: u64,
    pub comment: Option<String>,
}

/// The rules of `family inet` `table` `chain`, in order. A missing table or chain is an empty list.
pub(crate) fn list_rules(table: &str, chain: &str) -> io::Result<Vec<RuleInfo>> {
    let mut socket = Socket::new(NETLINK_NETFILTER)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.send(&request(table, chain), 0)?;
    let mut rules = Vec::new();
    loop {
        let (buf, _) = socket.recv_from_full()?;
        if buf.is_empty() {
            return Ok(rules);
        }
        for (kind, payload) in messages(&buf) {
            match kind {
                NLMSG_DONE => return Ok(rules),
                NLMSG_ERROR => {
                    let errno = payload.get(0..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes);
                    match errno {
                        Some(0) => return Ok(rules),
                        Some(e) if e == -libc::ENOENT => return Ok(Vec::new()),
                        Some(e) => return Err(io::Error::from_raw_os_error(e.saturating_neg())),
                        None => {
                            return Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink error"))
                        }
                    }
                }
                k if k == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE => {
                    // Skip the 4-byte nfgenmsg header, then the attributes.
                    if let Some(rule) = payload.get(4..).and_then(parse_rule) {
                        rules.push(rule);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The dump request: nlmsghdr + nfgenmsg + table and chain attributes (the kernel filters on them).
fn request(table: &str, chain: &str) -> Vec<u8> {
    let mut body = vec![NFPROTO_INET, 0, 0, 0];
    push_attr(&mut body, NFTA_RULE_TABLE, table);
    push_attr(&mut body, NFTA_RULE_CHAIN, chain);
    let len = u32::try_from(body.len() + 16).unwrap_or(u32::MAX);
    let mut msg = Vec::with_capacity(body.len() + 16);
    msg.extend_from_slice(&len.to_ne_bytes());
    msg.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETRULE).to_ne_bytes());
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    msg.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg.extend_from_slice(&body);
    msg
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let len = u16::try_from(4 + value.len() + 1).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value.as_bytes());
    buf.push(0);
    while buf.len() & 3 != 0 {
        buf.push(0);
    }
}

fn ne_u16(b: Option<&[u8]>) -> Option<u16> {
    b.and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes)
}

fn ne_u32(b: Option<&[u8]>) -> Option<u32> {
    b.and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes)
}

fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// Splits a datagram into (type, payload) netlink messages, stopping at anything malformed.
fn messages(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (ne_u32(rest.get(0..4)), ne_u16(rest.get(4..6))) {
        let Ok(len) = usize::try_from(len) else { break };
        let Some(payload) = rest.get(16..len) else { break };
        out.push((kind, payload));
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// Iterates (type, value) attributes.
fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (ne_u16(rest.get(0..2)), ne_u16(rest.get(2..4))) {
        let Some(value) = rest.get(4..usize::from(len)) else { break };
        out.push((kind & NLA_TYPE_MASK, value));
        rest = rest.get(align4(usize::from(len))..).unwrap_or(&[]);
    }
    out
}

fn parse_rule(buf: &[u8]) -> Option<RuleInfo> {
    let mut handle = None;
    let mut comment = None;
    for (kind, value) in attrs(buf) {
        match kind {
            NFTA_RULE_HANDLE => {
                let b: [u8; 8] = value.get(0..8)?.try_into().ok()?;
                handle = Some(u64::from_be_bytes(b));
            }
            NFTA_RULE_USERDATA => comment = udata_comment(value),
            _ => {}
        }
    }
    Some(RuleInfo { handle: handle?, comment })
}

/// The comment TLV (u8 type, u8 length, NUL-terminated text) of a rule's user data.
fn udata_comment(buf: &[u8]) -> Option<String> {
    let mut rest = buf;
    while let (Some(&kind), Some(&len)) = (rest.first(), rest.get(1)) {
        let end = 2 + usize::from(len);
        let value = rest.get(2..end)?;
        if kind == UDATA_RULE_COMMENT {
            let text = value.split(|&b| b == 0).next().unwrap_or(value);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        rest = rest.get(end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_well_formed() {
        let msg = request("t", "chain");
        assert_eq!(msg.len() % 4, 0);
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        let a = attrs(&msg[20..]);
        assert_eq!(a, vec![(NFTA_RULE_TABLE, &b"t\0"[..]), (NFTA_RULE_CHAIN, &b"chain\0"[..])]);
    }

    #[test]
    fn rule_attributes_parse() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&12u16.to_ne_bytes());
        buf.extend_from_slice(&NFTA_RULE_HANDLE.to_ne_bytes());
        buf.extend_from_slice(&42u64.to_be_bytes());
        let udata = [UDATA_RULE_COMMENT, 4, b'a', b'b', b'c', 0];
        buf.extend_from_slice(&(4 + udata.len() as u16).to_ne_bytes());
        buf.extend_from_slice(&(NFTA_RULE_USERDATA | 0x8000).to_ne_bytes());
        buf.extend_from_slice(&udata);
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(parse_rule(&buf), Some(RuleInfo { handle: 42, comment: Some("abc".into()) }));
        // Truncated input never panics.
        for n in 0..buf.len() {
            let _ = parse_rule(&buf[..n]);
            let _ = messages(&buf[..n]);
        }
    }
}
