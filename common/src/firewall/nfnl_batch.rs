//! Writing nftables in-process: one `NETLINK_NETFILTER` batch (`NFNL_MSG_BATCH_BEGIN`, the
//! messages, `NFNL_MSG_BATCH_END`) is one kernel transaction, all or nothing, exactly as `nft -f`
//! sends it. Every message carries `NLM_F_ACK`; the kernel answers the whole batch inside `send`,
//! so the answers are read without blocking and the first error names the message that failed.
//!
//! Only what the masquerade layout needs: add table/chain (with libnftnl comment user data), flush
//! a chain, delete a rule by handle, append a rule built from [`Expr`]s. Attribute numbers are the
//! kernel's `include/uapi/linux/netfilter/nf_tables.h`.
//!
//! A batch is either `nft`-style (family inet, [`Batch::new`]) or iptables-nft-style
//! ([`Batch::new_xt`], family ip): the latter writes rules in the `ip nat` table exactly as
//! iptables-nft 1.8.9 encodes them (x_tables `match`/`target` through nft_compat, a `counter`, and
//! `NFTA_RULE_COMPAT`), so that iptables reads them back as its own.

use std::io;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nft_abi::*;

/// Comparison of a [`Expr::Cmp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Neq,
}

impl CmpOp {
    /// `NFT_CMP_EQ` / `NFT_CMP_NEQ`.
    fn code(self) -> u32 {
        match self {
            CmpOp::Eq => 0,
            CmpOp::Neq => 1,
        }
    }
}

/// One rule expression, as `nft --debug=netlink` prints them. All registers are `reg 1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expr {
    /// `meta load nfproto => reg 1` (the family check of `ip`/`ip6` matches in an inet table).
    MetaNfproto,
    /// `payload load <len>b @ network header + <offset> => reg 1`.
    Payload { offset: u32, len: u32 },
    /// `bitwise reg 1 = (reg 1 & mask) ^ 0`, over `mask.len()` bytes.
    Bitwise { mask: Vec<u8> },
    /// `cmp <op> reg 1 <data>`.
    Cmp { op: CmpOp, data: Vec<u8> },
    /// `immediate reg 0 return`.
    Return,
    /// `immediate reg 0 goto -> <chain>`.
    Goto(String),
    /// `masq` without flags or port range.
    Masq,
    /// `counter pkts 0 bytes 0` (iptables-nft puts one in every rule).
    Counter,
    /// `immediate reg 0 accept`.
    Accept,
    /// `immediate reg 0 jump -> <chain>`.
    Jump(String),
    /// `match name <name> rev <rev>`: an x_tables match through nft_compat; `info` is the match's
    /// struct (e.g. `xt_comment_info`), already padded to `XT_ALIGN` as iptables sends it.
    XtMatch { name: &'static str, rev: u32, info: Vec<u8> },
    /// `target name <name> rev <rev>`: an x_tables target through nft_compat, `info` as for
    /// [`Expr::XtMatch`].
    XtTarget { name: &'static str, rev: u32, info: Vec<u8> },
}

/// A base chain's hook: `type <kind> hook <hooknum> priority <priority>`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hook {
    pub kind: &'static str,
    pub hooknum: u32,
    pub priority: i32,
}

/// A failed transaction: the operation of the message the kernel rejected, and its errno.
#[derive(Debug)]
pub(crate) struct BatchError {
    pub op: &'static str,
    pub source: io::Error,
}

impl BatchError {
    fn new(op: &'static str, source: io::Error) -> BatchError {
        BatchError { op, source }
    }
}

/// Netlink attributes being built; nests are patched with their length when closed.
#[derive(Default)]
struct Attrs {
    buf: Vec<u8>,
    /// Set when an attribute does not fit its 16-bit length; the batch is then refused.
    overflow: bool,
}

impl Attrs {
    fn header(&mut self, kind: u16, len: usize) {
        let len = u16::try_from(len).unwrap_or_else(|_| {
            self.overflow = true;
            u16::MAX
        });
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn bytes(&mut self, kind: u16, value: &[u8]) {
        self.header(kind, 4 + value.len());
        self.buf.extend_from_slice(value);
        self.pad();
    }

    /// A NUL-terminated string, as libmnl's `mnl_attr_put_strz`.
    fn strz(&mut self, kind: u16, value: &str) {
        self.header(kind, 4 + value.len() + 1);
        self.buf.extend_from_slice(value.as_bytes());
        self.buf.push(0);
        self.pad();
    }

    fn be32(&mut self, kind: u16, value: u32) {
        self.bytes(kind, &value.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attrs)) {
        let start = self.buf.len();
        self.header(kind | NLA_F_NESTED, 4);
        fill(self);
        let len = u16::try_from(self.buf.len() - start).unwrap_or_else(|_| {
            self.overflow = true;
            u16::MAX
        });
        if let Some(slot) = self.buf.get_mut(start..start + 2) {
            slot.copy_from_slice(&len.to_ne_bytes());
        }
    }

    /// libnftnl user data holding one comment TLV: type, length, text with its NUL.
    fn comment(&mut self, kind: u16, comment: &str) {
        let len = u8::try_from(comment.len() + 1).unwrap_or_else(|_| {
            self.overflow = true;
            u8::MAX
        });
        let mut tlv = vec![UDATA_COMMENT, len];
        tlv.extend_from_slice(comment.as_bytes());
        tlv.push(0);
        self.bytes(kind, &tlv);
    }

    /// One `NFTA_LIST_ELEM`: the expression's name and its `NFTA_EXPR_DATA` (libnftnl sends the
    /// data nest even when empty, as for `masq`).
    fn expr(&mut self, expr: &Expr) {
        let name = match expr {
            Expr::MetaNfproto => "meta",
            Expr::Payload { .. } => "payload",
            Expr::Bitwise { .. } => "bitwise",
            Expr::Cmp { .. } => "cmp",
            Expr::Return | Expr::Goto(_) | Expr::Accept | Expr::Jump(_) => "immediate",
            Expr::Masq => "masq",
            Expr::Counter => "counter",
            Expr::XtMatch { .. } => "match",
            Expr::XtTarget { .. } => "target",
        };
        self.nest(NFTA_LIST_ELEM, |a| {
            a.strz(NFTA_EXPR_NAME, name);
            a.nest(NFTA_EXPR_DATA, |a| match expr {
                Expr::MetaNfproto => {
                    a.be32(2, NFT_META_NFPROTO); // NFTA_META_KEY
                    a.be32(1, REG_1); // NFTA_META_DREG
                }
                Expr::Payload { offset, len } => {
                    a.be32(1, REG_1); // NFTA_PAYLOAD_DREG
                    a.be32(2, NFT_PAYLOAD_NETWORK_HEADER); // NFTA_PAYLOAD_BASE
                    a.be32(3, *offset); // NFTA_PAYLOAD_OFFSET
                    a.be32(4, *len); // NFTA_PAYLOAD_LEN
                }
                Expr::Bitwise { mask } => {
                    a.be32(1, REG_1); // NFTA_BITWISE_SREG
                    a.be32(2, REG_1); // NFTA_BITWISE_DREG
                    let len = u32::try_from(mask.len()).unwrap_or(u32::MAX);
                    a.be32(3, len); // NFTA_BITWISE_LEN
                    a.nest(4, |a| a.bytes(NFTA_DATA_VALUE, mask)); // NFTA_BITWISE_MASK
                    let xor = vec![0; mask.len()];
                    a.nest(5, |a| a.bytes(NFTA_DATA_VALUE, &xor)); // NFTA_BITWISE_XOR
                }
                Expr::Cmp { op, data } => {
                    a.be32(1, REG_1); // NFTA_CMP_SREG
                    a.be32(2, op.code()); // NFTA_CMP_OP
                    a.nest(3, |a| a.bytes(NFTA_DATA_VALUE, data)); // NFTA_CMP_DATA
                }
                Expr::Return => a.verdict(NFT_RETURN, None),
                Expr::Goto(chain) => a.verdict(NFT_GOTO, Some(chain)),
                Expr::Masq => {}
                Expr::Accept => a.verdict(NF_ACCEPT, None),
                Expr::Jump(chain) => a.verdict(NFT_JUMP, Some(chain)),
                Expr::Counter => {
                    a.bytes(1, &0u64.to_be_bytes()); // NFTA_COUNTER_BYTES
                    a.bytes(2, &0u64.to_be_bytes()); // NFTA_COUNTER_PACKETS
                }
                // NFTA_MATCH_NAME / NFTA_TARGET_NAME, _REV, _INFO share the numbers 1, 2, 3.
                Expr::XtMatch { name, rev, info } | Expr::XtTarget { name, rev, info } => {
                    a.strz(1, name);
                    a.be32(2, *rev);
                    a.bytes(3, info);
                }
            });
        });
    }

    /// An `immediate` verdict into the verdict register.
    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.be32(1, REG_VERDICT); // NFTA_IMMEDIATE_DREG
        self.nest(2, |a| {
            // NFTA_IMMEDIATE_DATA
            a.nest(NFTA_DATA_VERDICT, |a| {
                a.bytes(NFTA_VERDICT_CODE, &code.to_be_bytes());
                if let Some(chain) = chain {
                    a.strz(NFTA_VERDICT_CHAIN, chain);
                }
            });
        });
    }
}

/// One nftables transaction being built. Nothing reaches the kernel before [`Batch::commit`].
pub(crate) struct Batch {
    buf: Vec<u8>,
    /// The nfgenmsg family of every message but begin/end.
    family: u8,
    /// The nfgenmsg resource id of those messages: `nft` (libnftnl) sends the subsystem,
    /// iptables-nft 0.
    res_id: u16,
    /// The operation of each message, by sequence number (0 = the batch itself).
    ops: Vec<&'static str>,
    overflow: bool,
}

impl Batch {
    /// A transaction on `inet` tables, encoded as `nft` does.
    pub(crate) fn new() -> Batch {
        Batch::with_family(NFPROTO_INET, NFNL_SUBSYS_NFTABLES)
    }

    /// A transaction on iptables-nft's tables of `family` (e.g. [`NFPROTO_IPV4`]), encoded as
    /// iptables-nft 1.8.9 does.
    pub(crate) fn new_xt(family: u8) -> Batch {
        Batch::with_family(family, 0)
    }

    fn with_family(family: u8, res_id: u16) -> Batch {
        let mut batch = Batch { buf: Vec::new(), family, res_id, ops: Vec::new(), overflow: false };
        batch.push(
            NFNL_MSG_BATCH_BEGIN,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            Attrs::default(),
            "begin transaction",
        );
        batch
    }

    /// Appends one message: nlmsghdr, nfgenmsg, attributes. Its sequence number is its index.
    fn push(&mut self, kind: u16, flags: u16, family: u8, res_id: u16, attrs: Attrs, op: &'static str) {
        let seq = u32::try_from(self.ops.len()).unwrap_or(u32::MAX);
        let len = u32::try_from(16 + 4 + attrs.buf.len()).unwrap_or(u32::MAX);
        self.overflow |= attrs.overflow;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&seq.to_ne_bytes());
        self.buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
                                                         // nfgenmsg: family, version 0, resource id (big endian).
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&res_id.to_be_bytes());
        self.buf.extend_from_slice(&attrs.buf);
        self.ops.push(op);
    }

    fn push_nft(&mut self, msg: u16, flags: u16, attrs: Attrs, op: &'static str) {
        let kind = (NFNL_SUBSYS_NFTABLES << 8) | msg;
        let (family, res_id) = (self.family, self.res_id);
        self.push(kind, NLM_F_REQUEST | NLM_F_ACK | flags, family, res_id, attrs, op);
    }

    /// `add table inet <name> { comment "<comment>" ; }` (no error if it exists).
    pub(crate) fn add_table(&mut self, name: &str, comment: &str, op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_TABLE_NAME, name);
        a.be32(NFTA_TABLE_FLAGS, 0);
        a.comment(NFTA_TABLE_USERDATA, comment);
        self.push_nft(NFT_MSG_NEWTABLE, NLM_F_CREATE, a, op);
    }

    /// `add chain inet <table> <name> { [type … hook … priority … ;] [comment "…" ;] }`.
    pub(crate) fn add_chain(
        &mut self,
        table: &str,
        name: &str,
        hook: Option<Hook>,
        comment: Option<&str>,
        op: &'static str,
    ) {
        let mut a = Attrs::default();
        a.strz(NFTA_CHAIN_TABLE, table);
        a.strz(NFTA_CHAIN_NAME, name);
        if let Some(hook) = hook {
            a.nest(NFTA_CHAIN_HOOK, |a| {
                a.be32(NFTA_HOOK_HOOKNUM, hook.hooknum);
                a.bytes(NFTA_HOOK_PRIORITY, &hook.priority.to_be_bytes());
            });
            a.strz(NFTA_CHAIN_TYPE, hook.kind);
        }
        if let Some(comment) = comment {
            a.comment(NFTA_CHAIN_USERDATA, comment);
        }
        self.push_nft(NFT_MSG_NEWCHAIN, NLM_F_CREATE, a, op);
    }

    /// iptables' `-N <name>`: a regular chain that must not exist yet (`NLM_F_EXCL`, as
    /// iptables-nft sends it: an existing chain fails the whole transaction with `EEXIST`).
    pub(crate) fn new_chain_excl(&mut self, table: &str, name: &str, op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_CHAIN_TABLE, table);
        a.strz(NFTA_CHAIN_NAME, name);
        self.push_nft(NFT_MSG_NEWCHAIN, NLM_F_EXCL, a, op);
    }

    /// iptables' `-A <chain> …`: appends a rule of `exprs` with iptables-nft's
    /// `NFTA_RULE_COMPAT` (protocol 0, flags 0: the rules we write have no `-p` match).
    pub(crate) fn append_xt_rule(&mut self, table: &str, chain: &str, exprs: &[Expr], op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_RULE_TABLE, table);
        a.strz(NFTA_RULE_CHAIN, chain);
        a.nest(NFTA_RULE_EXPRESSIONS, |a| exprs.iter().for_each(|e| a.expr(e)));
        a.nest(NFTA_RULE_COMPAT, |a| {
            a.be32(NFTA_RULE_COMPAT_PROTO, 0);
            a.be32(NFTA_RULE_COMPAT_FLAGS, 0);
        });
        self.push_nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, a, op);
    }

    /// The messages added from now on are for the tables of `family` (one transaction may change
    /// the tables of several families: iptables' and ip6tables' at once).
    pub(crate) fn set_family(&mut self, family: u8) {
        self.family = family;
    }

    /// iptables' `-X <name>` / `delete chain <table> <name>`.
    pub(crate) fn delete_chain(&mut self, table: &str, name: &str, op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_CHAIN_TABLE, table);
        a.strz(NFTA_CHAIN_NAME, name);
        self.push_nft(NFT_MSG_DELCHAIN, 0, a, op);
    }

    /// `flush chain inet <table> <chain>`: a rule delete without handle.
    pub(crate) fn flush_chain(&mut self, table: &str, chain: &str, op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_RULE_TABLE, table);
        a.strz(NFTA_RULE_CHAIN, chain);
        self.push_nft(NFT_MSG_DELRULE, 0, a, op);
    }

    /// `delete rule inet <table> <chain> handle <handle>`.
    pub(crate) fn delete_rule(&mut self, table: &str, chain: &str, handle: u64, op: &'static str) {
        let mut a = Attrs::default();
        a.strz(NFTA_RULE_TABLE, table);
        a.strz(NFTA_RULE_CHAIN, chain);
        a.bytes(NFTA_RULE_HANDLE, &handle.to_be_bytes());
        self.push_nft(NFT_MSG_DELRULE, 0, a, op);
    }

    /// `add rule inet <table> <chain> <exprs> [comment "…"]` (appended).
    pub(crate) fn add_rule(
        &mut self,
        table: &str,
        chain: &str,
        exprs: &[Expr],
        comment: Option<&str>,
        op: &'static str,
    ) {
        let mut a = Attrs::default();
        a.strz(NFTA_RULE_TABLE, table);
        a.strz(NFTA_RULE_CHAIN, chain);
        a.nest(NFTA_RULE_EXPRESSIONS, |a| exprs.iter().for_each(|e| a.expr(e)));
        if let Some(comment) = comment {
            a.comment(NFTA_RULE_USERDATA, comment);
        }
        self.push_nft(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, a, op);
    }

    /// The value of `NFTA_RULE_EXPRESSIONS` as [`Batch::add_rule`] encodes `exprs` (for tests of
    /// the reader, which must parse back exactly what we write).
    #[cfg(test)]
    pub(crate) fn encode_exprs(exprs: &[Expr]) -> Vec<u8> {
        let mut a = Attrs::default();
        exprs.iter().for_each(|e| a.expr(e));
        a.buf
    }

    /// The operation of each message so far, `begin transaction` first.
    #[cfg(test)]
    pub(crate) fn ops(&self) -> &[&'static str] {
        &self.ops
    }

    /// The whole datagram as [`Batch::commit`] would send it (for golden tests of the encoding).
    #[cfg(test)]
    pub(crate) fn into_datagram(self) -> Vec<u8> {
        self.finish().0
    }

    /// The whole datagram, `BATCH_END` included.
    fn finish(mut self) -> (Vec<u8>, Vec<&'static str>, bool) {
        self.push(
            NFNL_MSG_BATCH_END,
            NLM_F_REQUEST,
            NFPROTO_UNSPEC,
            NFNL_SUBSYS_NFTABLES,
            Attrs::default(),
            "commit transaction",
        );
        (self.buf, self.ops, self.overflow)
    }

    /// Sends the transaction in the calling thread's network namespace and reads the kernel's
    /// answers: Ok when every message was acknowledged, else the first rejected message's
    /// operation and errno (the kernel then applied nothing).
    pub(crate) fn commit(self) -> Result<(), BatchError> {
        let (datagram, ops, overflow) = self.finish();
        if overflow {
            return Err(BatchError::new(
                "encode nftables batch",
                io::Error::from_raw_os_error(libc::EMSGSIZE),
            ));
        }
        let io = |e| BatchError::new("nftables netlink socket", e);
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        socket.send(&datagram, 0).map_err(io)?;
        // nfnetlink processes the batch inside send(), so every answer is queued by now: reading
        // without blocking cannot miss one, and cannot hang on an answer that never comes.
        socket.set_non_blocking(true).map_err(io)?;
        // Messages 1..n-1 carry NLM_F_ACK; begin and end are answered only when they fail.
        let mut acked = vec![false; ops.len()];
        let wanted = ops.len().saturating_sub(2);
        let mut seen = 0;
        while seen < wanted {
            let buf = match socket.recv_from_full() {
                Ok((buf, _)) => buf,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(BatchError::new(
                        "read nftables acknowledgements",
                        io::Error::from_raw_os_error(libc::EPROTO),
                    ))
                }
                Err(e) => return Err(BatchError::new("read nftables acknowledgements", e)),
            };
            for (seq, errno) in acks(&buf) {
                let Some(op) = usize::try_from(seq).ok().and_then(|i| ops.get(i)) else { continue };
                if errno != 0 {
                    return Err(BatchError::new(op, io::Error::from_raw_os_error(errno.saturating_neg())));
                }
                if let Some(slot) = usize::try_from(seq).ok().and_then(|i| acked.get_mut(i)) {
                    if !*slot {
                        *slot = true;
                        seen += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The (sequence, errno) of every `NLMSG_ERROR` in a datagram (errno 0 = acknowledgement).
fn acks(buf: &[u8]) -> Vec<(u32, i32)> {
    let word = |b: Option<&[u8]>| b.and_then(|b| <[u8; 4]>::try_from(b).ok());
    let mut out = Vec::new();
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (word(rest.get(0..4)), rest.get(4..6)) {
        let Ok(len) = usize::try_from(u32::from_ne_bytes(len)) else { break };
        if len < 16 {
            break;
        }
        let (Some(seq), Some(payload)) = (word(rest.get(8..12)), rest.get(16..len)) else { break };
        if u16::from_ne_bytes([kind[0], kind[1]]) == NLMSG_ERROR {
            if let Some(errno) = word(payload.get(0..4)) {
                out.push((u32::from_ne_bytes(seq), i32::from_ne_bytes(errno)));
            }
        }
        rest = rest.get(len.saturating_add(3) & !3..).unwrap_or(&[]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits attributes into (type, value).
    fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
        let mut out = Vec::new();
        while buf.len() >= 4 {
            let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
            out.push((u16::from_ne_bytes([buf[2], buf[3]]), &buf[4..len]));
            buf = &buf[((len + 3) & !3).min(buf.len())..];
        }
        out
    }

    #[test]
    fn batch_frames_and_sequences() {
        let mut b = Batch::new();
        b.add_table("t", "hello", "add table");
        b.delete_rule("t", "c", 7, "delete rule");
        let (buf, ops, overflow) = b.finish();
        assert!(!overflow);
        assert_eq!(ops, vec!["begin transaction", "add table", "delete rule", "commit transaction"]);
        let mut rest = &buf[..];
        let mut kinds = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0);
            kinds.push((
                u16::from_ne_bytes([rest[4], rest[5]]),
                u16::from_ne_bytes([rest[6], rest[7]]),
                u32::from_ne_bytes(rest[8..12].try_into().unwrap()),
            ));
            if kinds.len() == 2 {
                let a = attrs(&rest[20..len]);
                assert_eq!(a[0], (NFTA_TABLE_NAME, &b"t\0"[..]));
                assert_eq!(a[1], (NFTA_TABLE_FLAGS, &[0u8, 0, 0, 0][..]));
                assert_eq!(a[2], (NFTA_TABLE_USERDATA, &b"\x00\x06hello\0"[..]));
            }
            rest = &rest[len..];
        }
        assert_eq!(
            kinds,
            vec![
                (NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0),
                (0xa00, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE, 1),
                (0xa08, NLM_F_REQUEST | NLM_F_ACK, 2),
                (NFNL_MSG_BATCH_END, NLM_F_REQUEST, 3),
            ]
        );
    }

    #[test]
    fn nested_lengths_are_patched() {
        let mut a = Attrs::default();
        a.expr(&Expr::Goto("masq_checks".into()));
        let outer = attrs(&a.buf);
        assert_eq!(outer.len(), 1);
        assert_eq!(outer[0].0, NFTA_LIST_ELEM | NLA_F_NESTED);
        let inner = attrs(outer[0].1);
        assert_eq!(inner[0], (NFTA_EXPR_NAME, &b"immediate\0"[..]));
        let data = attrs(inner[1].1);
        assert_eq!(data[0], (1, &[0u8, 0, 0, 0][..]));
        let verdict = attrs(attrs(data[1].1)[0].1);
        assert_eq!(verdict[0], (NFTA_VERDICT_CODE, &NFT_GOTO.to_be_bytes()[..]));
        assert_eq!(verdict[1], (NFTA_VERDICT_CHAIN, &b"masq_checks\0"[..]));
        assert!(!a.overflow);
        let mut long = Attrs::default();
        long.comment(NFTA_RULE_USERDATA, &"x".repeat(300));
        assert!(long.overflow);
    }

    #[test]
    fn acks_parse_and_never_panic() {
        let mut buf = Vec::new();
        for (seq, errno) in [(1u32, 0i32), (2, -libc::ENOENT)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&errno.to_ne_bytes());
            buf.extend_from_slice(&[0; 16]);
        }
        assert_eq!(acks(&buf), vec![(1, 0), (2, -libc::ENOENT)]);
        for n in 0..buf.len() {
            let _ = acks(&buf[..n]);
        }
    }
}
