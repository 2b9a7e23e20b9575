//! Reading nftables in-process over `NETLINK_NETFILTER` (no `nft` process): which chains of a table
//! exist (a `NFT_MSG_GETCHAIN` dump, plus a `NFT_MSG_GETTABLE` when the table has no chain), and a
//! filtered `NFT_MSG_GETRULE` dump of one chain, keeping each rule's handle and comment; and, for
//! iptables-nft's tables (family ip), a single table's or chain's attributes. Only reads; writes
//! are [`super::nfnl_batch`] transactions.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nft_abi::*;

/// How many times an interrupted dump is restarted before giving up with EINTR (libmnl reports
/// EINTR and nft restarts the same way); each restart needs another writer to commit mid-dump.
const DUMP_ATTEMPTS: usize = 50;

/// One rule of a chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleInfo {
    pub handle: u64,
    pub comment: Option<String>,
    /// The rule's expressions when every one is of a kind [`super::nfnl_expr`] knows.
    pub exprs: Option<Vec<super::nfnl_batch::Expr>>,
    /// The chain its verdict jumps or goes to, if any (read even when `exprs` is `None`).
    pub target: Option<String>,
}

/// A base chain's hook as the kernel reports it: `type <kind> hook <hooknum> priority <priority>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainHook {
    pub kind: String,
    pub hooknum: u32,
    pub priority: i32,
}

/// One chain of a table; `hook` is `None` for a regular chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainInfo {
    pub name: String,
    pub hook: Option<ChainHook>,
}

/// What a table's own attributes say about who manages it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableInfo {
    /// `NFTA_TABLE_FLAGS` (dormant, owner, persist); 0 for a table iptables-nft created.
    pub flags: u32,
    /// The table carries user data (a comment, or a tool's marker).
    pub has_userdata: bool,
    /// The table is owned by a netlink socket (`NFTA_TABLE_OWNER`).
    pub has_owner: bool,
}

/// One chain's attributes, from a single-chain get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ChainDetail {
    pub info: ChainInfo,
    /// The chain carries user data (e.g. an `nft` comment; iptables-nft 1.8.9 sets none).
    pub has_userdata: bool,
}

/// One dumped object: its nfgenmsg family and its attributes.
pub(crate) type FamilyMessage = (u8, Vec<u8>);

/// One netlink socket for several reads in the calling thread's network namespace.
pub(crate) struct Reader {
    socket: Socket,
    seq: u32,
    /// The nfgenmsg family of every request.
    family: u8,
}

impl Reader {
    /// A reader of `inet` tables.
    pub(crate) fn open() -> io::Result<Reader> {
        Reader::open_family(NFPROTO_INET)
    }

    /// A reader of `family`'s tables (e.g. `NFPROTO_IPV4` = 2 for iptables-nft's).
    pub(crate) fn open_family(family: u8) -> io::Result<Reader> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Reader { socket, seq: 0, family })
    }

    /// The attributes of `table`, or `None` when it does not exist.
    pub(crate) fn table(&mut self, table: &str) -> io::Result<Option<TableInfo>> {
        let found = self.query(NFT_MSG_GETTABLE, NLM_F_ACK, &[(NFTA_TABLE_NAME, table)], NFT_MSG_NEWTABLE)?;
        Ok(found.and_then(|msgs| msgs.first().map(|m| parse_table(m))))
    }

    /// The attributes of chain `name` of `table`, or `None` when either does not exist.
    pub(crate) fn chain(&mut self, table: &str, name: &str) -> io::Result<Option<ChainDetail>> {
        let attrs = [(NFTA_CHAIN_TABLE, table), (NFTA_CHAIN_NAME, name)];
        let found = self.query(NFT_MSG_GETCHAIN, NLM_F_ACK, &attrs, NFT_MSG_NEWCHAIN)?;
        Ok(found.and_then(|msgs| msgs.first().and_then(|m| parse_chain_detail(m, table))))
    }

    /// The chains of `family inet` `table`, or `None` when the table does not exist.
    pub(crate) fn chains(&mut self, table: &str) -> io::Result<Option<Vec<ChainInfo>>> {
        // The kernel filters a chain dump by family only; the table is filtered here.
        let dump = self.query(NFT_MSG_GETCHAIN, NLM_F_DUMP, &[], NFT_MSG_NEWCHAIN)?.unwrap_or_default();
        let chains: Vec<ChainInfo> = dump.iter().filter_map(|m| parse_chain(m, table)).collect();
        if !chains.is_empty() {
            return Ok(Some(chains));
        }
        // No chain: the table may still exist (empty). One get of it settles that.
        let found = self.query(NFT_MSG_GETTABLE, NLM_F_ACK, &[(NFTA_TABLE_NAME, table)], NFT_MSG_NEWTABLE)?;
        Ok(found.filter(|t| !t.is_empty()).map(|_| Vec::new()))
    }

    /// The rules of `family inet` `table` `chain`, in order. A missing table or chain is an empty
    /// list.
    pub(crate) fn rules(&mut self, table: &str, chain: &str) -> io::Result<Vec<RuleInfo>> {
        let attrs = [(NFTA_RULE_TABLE, table), (NFTA_RULE_CHAIN, chain)];
        let dump = self.query(NFT_MSG_GETRULE, NLM_F_DUMP, &attrs, NFT_MSG_NEWRULE)?.unwrap_or_default();
        Ok(dump.iter().filter_map(|m| parse_rule(m)).collect())
    }

    /// Sends one request and collects the attributes (after the nfgenmsg header) of every `reply`
    /// message until the dump's end or the acknowledgement; `None` when the kernel answers ENOENT.
    /// A dump the kernel marks interrupted (the ruleset changed under it) is run again, so a
    /// caller never acts on a listing that silently lacks an entry.
    fn query(
        &mut self,
        msg: u16,
        flags: u16,
        attrs: &[(u16, &str)],
        reply: u16,
    ) -> io::Result<Option<Vec<Vec<u8>>>> {
        let found = self.query_families(msg, flags, attrs, reply)?;
        Ok(found.map(|msgs| msgs.into_iter().map(|(_, attrs)| attrs).collect()))
    }

    /// Dumps every object of kind `msg` (e.g. `NFT_MSG_GETRULE`) of every family the reader was
    /// opened for (`NFPROTO_UNSPEC`: all), each with the family its nfgenmsg header names.
    pub(crate) fn dump_all(&mut self, msg: u16, reply: u16) -> io::Result<Vec<FamilyMessage>> {
        Ok(self.query_families(msg, NLM_F_DUMP, &[], reply)?.unwrap_or_default())
    }

    /// [`Reader::query`], each message with its nfgenmsg family.
    fn query_families(
        &mut self,
        msg: u16,
        flags: u16,
        attrs: &[(u16, &str)],
        reply: u16,
    ) -> io::Result<Option<Vec<FamilyMessage>>> {
        for _ in 0..DUMP_ATTEMPTS {
            match self.query_once(msg, flags, attrs, reply)? {
                Answer::Complete(found) => return Ok(found),
                Answer::Interrupted => continue,
            }
        }
        Err(io::Error::from_raw_os_error(libc::EINTR))
    }

    fn query_once(&mut self, msg: u16, flags: u16, attrs: &[(u16, &str)], reply: u16) -> io::Result<Answer> {
        self.seq = self.seq.wrapping_add(1);
        self.socket.send(&request(self.family, msg, flags, self.seq, attrs), 0)?;
        let mut out = Vec::new();
        let mut interrupted = false;
        loop {
            let (buf, _) = self.socket.recv_from_full()?;
            if buf.is_empty() {
                return Ok(Answer::of(Some(out), interrupted));
            }
            for m in messages(&buf) {
                if m.seq != self.seq {
                    continue; // a late answer to an earlier request
                }
                interrupted |= m.flags & NLM_F_DUMP_INTR != 0;
                match m.kind {
                    NLMSG_DONE => return Ok(Answer::of(Some(out), interrupted)),
                    NLMSG_ERROR => {
                        let errno =
                            m.payload.get(0..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes);
                        return match errno {
                            Some(0) => Ok(Answer::of(Some(out), interrupted)),
                            Some(e) if e == -libc::ENOENT => Ok(Answer::of(None, interrupted)),
                            Some(e) => Err(io::Error::from_raw_os_error(e.saturating_neg())),
                            None => Err(io::Error::new(io::ErrorKind::InvalidData, "short netlink error")),
                        };
                    }
                    k if k == (NFNL_SUBSYS_NFTABLES << 8) | reply => {
                        // The 4-byte nfgenmsg header (family first), then the attributes.
                        if let (Some(&family), Some(attrs)) = (m.payload.first(), m.payload.get(4..)) {
                            out.push((family, attrs.to_vec()));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The outcome of one request.
enum Answer {
    Complete(Option<Vec<FamilyMessage>>),
    /// The kernel flagged the dump as inconsistent; it must be repeated.
    Interrupted,
}

impl Answer {
    fn of(found: Option<Vec<FamilyMessage>>, interrupted: bool) -> Answer {
        if interrupted {
            Answer::Interrupted
        } else {
            Answer::Complete(found)
        }
    }
}

/// The rules of `family inet` `table` `chain`, in order. A missing table or chain is an empty list.
pub(crate) fn list_rules(table: &str, chain: &str) -> io::Result<Vec<RuleInfo>> {
    Reader::open()?.rules(table, chain)
}

/// A request: nlmsghdr + nfgenmsg (`family`) + string attributes.
fn request(family: u8, msg: u16, flags: u16, seq: u32, attrs: &[(u16, &str)]) -> Vec<u8> {
    let mut body = vec![family, 0, 0, 0];
    for (kind, value) in attrs {
        push_attr(&mut body, *kind, value);
    }
    let len = u32::try_from(body.len() + 16).unwrap_or(u32::MAX);
    let mut msg_buf = Vec::with_capacity(body.len() + 16);
    msg_buf.extend_from_slice(&len.to_ne_bytes());
    msg_buf.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
    msg_buf.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    msg_buf.extend_from_slice(&seq.to_ne_bytes());
    msg_buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    msg_buf.extend_from_slice(&body);
    msg_buf
}

fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &str) {
    let len = u16::try_from(4 + value.len() + 1).unwrap_or(u16::MAX);
    buf.extend_from_slice(&len.to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value.as_bytes());
    buf.push(0);
    while !buf.len().is_multiple_of(4) {
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

/// One netlink message of a datagram.
#[derive(Debug, PartialEq, Eq)]
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// Splits a datagram into netlink messages, stopping at anything malformed.
fn messages(buf: &[u8]) -> Vec<Message<'_>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let (Some(len), Some(kind), Some(flags), Some(seq)) =
        (ne_u32(rest.get(0..4)), ne_u16(rest.get(4..6)), ne_u16(rest.get(6..8)), ne_u32(rest.get(8..12)))
    {
        let Ok(len) = usize::try_from(len) else { break };
        let Some(payload) = rest.get(16..len) else { break };
        out.push(Message { kind, flags, seq, payload });
        rest = rest.get(align4(len)..).unwrap_or(&[]);
    }
    out
}

/// Iterates (type, value) attributes.
pub(crate) fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (ne_u16(rest.get(0..2)), ne_u16(rest.get(2..4))) {
        let Some(value) = rest.get(4..usize::from(len)) else { break };
        out.push((kind & NLA_TYPE_MASK, value));
        rest = rest.get(align4(usize::from(len))..).unwrap_or(&[]);
    }
    out
}

/// The value of attribute `kind` in a parsed attribute list.
pub(crate) fn find<'a>(a: &[(u16, &'a [u8])], kind: u16) -> Option<&'a [u8]> {
    a.iter().find(|(k, _)| *k == kind).map(|(_, v)| *v)
}

/// A big-endian u32 attribute value (nf_tables sends its numbers in network order).
pub(crate) fn be32(v: &[u8]) -> Option<u32> {
    v.get(0..4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_be_bytes)
}

/// The bytes of an `NFTA_DATA_VALUE` nested in `v`.
pub(crate) fn data_value(v: &[u8]) -> Option<&[u8]> {
    find(&attrs(v), NFTA_DATA_VALUE)
}

/// A NUL-terminated string attribute.
pub(crate) fn cstr(v: &[u8]) -> String {
    String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(v)).into_owned()
}

/// A chain of `table` from a `NEWCHAIN` message's attributes; `None` for another table's chain.
fn parse_chain(buf: &[u8], table: &str) -> Option<ChainInfo> {
    let (mut in_table, mut name, mut kind) = (false, None, None);
    let (mut hooknum, mut priority) = (None, None);
    let text = |v: &[u8]| String::from_utf8_lossy(v.split(|&b| b == 0).next().unwrap_or(v)).into_owned();
    for (attr, value) in attrs(buf) {
        match attr {
            NFTA_CHAIN_TABLE => in_table = text(value) == table,
            NFTA_CHAIN_NAME => name = Some(text(value)),
            NFTA_CHAIN_TYPE => kind = Some(text(value)),
            NFTA_CHAIN_HOOK => {
                for (h, v) in attrs(value) {
                    let be = v.get(0..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
                    match h {
                        NFTA_HOOK_HOOKNUM => hooknum = be.map(u32::from_be_bytes),
                        NFTA_HOOK_PRIORITY => priority = be.map(i32::from_be_bytes),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if !in_table {
        return None;
    }
    let hook = match (kind, hooknum, priority) {
        (Some(kind), Some(hooknum), Some(priority)) => Some(ChainHook { kind, hooknum, priority }),
        _ => None,
    };
    Some(ChainInfo { name: name?, hook })
}

fn parse_table(buf: &[u8]) -> TableInfo {
    let mut info = TableInfo { flags: 0, has_userdata: false, has_owner: false };
    for (attr, value) in attrs(buf) {
        match attr {
            NFTA_TABLE_FLAGS => {
                // Unreadable flags count as "some flag set", which callers treat as foreign.
                info.flags =
                    value.get(0..4).and_then(|b| b.try_into().ok()).map_or(u32::MAX, u32::from_be_bytes)
            }
            NFTA_TABLE_USERDATA => info.has_userdata = true,
            NFTA_TABLE_OWNER => info.has_owner = true,
            _ => {}
        }
    }
    info
}

fn parse_chain_detail(buf: &[u8], table: &str) -> Option<ChainDetail> {
    let info = parse_chain(buf, table)?;
    let has_userdata = attrs(buf).iter().any(|(attr, _)| *attr == NFTA_CHAIN_USERDATA);
    Some(ChainDetail { info, has_userdata })
}

fn parse_rule(buf: &[u8]) -> Option<RuleInfo> {
    let mut handle = None;
    let mut comment = None;
    let mut exprs = None;
    let mut target = None;
    for (kind, value) in attrs(buf) {
        match kind {
            NFTA_RULE_EXPRESSIONS => {
                exprs = super::nfnl_expr::parse_exprs(value);
                target = super::nfnl_expr::verdict_chain(value);
            }
            NFTA_RULE_HANDLE => {
                let b: [u8; 8] = value.get(0..8)?.try_into().ok()?;
                handle = Some(u64::from_be_bytes(b));
            }
            NFTA_RULE_USERDATA => comment = udata_comment(value),
            _ => {}
        }
    }
    Some(RuleInfo { handle: handle?, comment, exprs, target })
}

/// The comment TLV (u8 type, u8 length, NUL-terminated text) of a rule's user data.
pub(crate) fn udata_comment(buf: &[u8]) -> Option<String> {
    let mut rest = buf;
    while let (Some(&kind), Some(&len)) = (rest.first(), rest.get(1)) {
        let end = 2 + usize::from(len);
        let value = rest.get(2..end)?;
        if kind == UDATA_COMMENT {
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
        let msg = request(
            NFPROTO_INET,
            NFT_MSG_GETRULE,
            NLM_F_DUMP,
            9,
            &[(NFTA_RULE_TABLE, "t"), (NFTA_RULE_CHAIN, "chain")],
        );
        assert!(msg.len().is_multiple_of(4));
        assert_eq!(u32::from_ne_bytes(msg[0..4].try_into().unwrap()) as usize, msg.len());
        let flags = NLM_F_REQUEST | NLM_F_DUMP;
        assert_eq!(messages(&msg), vec![Message { kind: 0xa07, flags, seq: 9, payload: &msg[16..] }]);
        let a = attrs(&msg[20..]);
        assert_eq!(a, vec![(NFTA_RULE_TABLE, &b"t\0"[..]), (NFTA_RULE_CHAIN, &b"chain\0"[..])]);
    }

    #[test]
    fn chain_attributes_parse() {
        let mut buf = Vec::new();
        push_attr(&mut buf, NFTA_CHAIN_TABLE, "tbl");
        push_attr(&mut buf, NFTA_CHAIN_NAME, "postrouting");
        push_attr(&mut buf, NFTA_CHAIN_TYPE, "nat");
        let mut hook = Vec::new();
        for (kind, value) in
            [(NFTA_HOOK_HOOKNUM, 4u32.to_be_bytes()), (NFTA_HOOK_PRIORITY, 100i32.to_be_bytes())]
        {
            hook.extend_from_slice(&8u16.to_ne_bytes());
            hook.extend_from_slice(&kind.to_ne_bytes());
            hook.extend_from_slice(&value);
        }
        buf.extend_from_slice(&(4 + hook.len() as u16).to_ne_bytes());
        buf.extend_from_slice(&(NFTA_CHAIN_HOOK | 0x8000).to_ne_bytes());
        buf.extend_from_slice(&hook);
        let hook = ChainHook { kind: "nat".into(), hooknum: 4, priority: 100 };
        assert_eq!(
            parse_chain(&buf, "tbl"),
            Some(ChainInfo { name: "postrouting".into(), hook: Some(hook) })
        );
        assert_eq!(parse_chain(&buf, "other"), None);
        let mut regular = Vec::new();
        push_attr(&mut regular, NFTA_CHAIN_TABLE, "tbl");
        push_attr(&mut regular, NFTA_CHAIN_NAME, "masq_checks");
        assert_eq!(parse_chain(&regular, "tbl"), Some(ChainInfo { name: "masq_checks".into(), hook: None }));
        // Truncated input never panics.
        for n in 0..buf.len() {
            let _ = parse_chain(&buf[..n], "tbl");
        }
    }

    #[test]
    fn rule_attributes_parse() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&12u16.to_ne_bytes());
        buf.extend_from_slice(&NFTA_RULE_HANDLE.to_ne_bytes());
        buf.extend_from_slice(&42u64.to_be_bytes());
        let udata = [UDATA_COMMENT, 4, b'a', b'b', b'c', 0];
        buf.extend_from_slice(&(4 + udata.len() as u16).to_ne_bytes());
        buf.extend_from_slice(&(NFTA_RULE_USERDATA | 0x8000).to_ne_bytes());
        buf.extend_from_slice(&udata);
        buf.extend_from_slice(&[0, 0]);
        assert_eq!(
            parse_rule(&buf),
            Some(RuleInfo { handle: 42, comment: Some("abc".into()), exprs: None, target: None })
        );
        // Truncated input never panics.
        for n in 0..buf.len() {
            let _ = parse_rule(&buf[..n]);
            let _ = messages(&buf[..n]);
        }
    }
}
