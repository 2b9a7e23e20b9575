//! nftables masquerade backend, the reference's layout (cni.md §7.4): table
//! `inet cni_plugins_masquerade`, chain `masq_checks`, base chain `postrouting` holding three fixed
//! rules, one commented rule per address. No process is spawned: existing chains and rules are read
//! in-process ([`super::nfnl`], [`super::nfnl_expr`]) and each ADD or DEL is ONE in-process netlink
//! transaction ([`super::nfnl_batch`]). The reference sends `add table`, `add chain` and a flush and
//! refill of `postrouting` on every ADD; we send only what the ruleset lacks — the same result, but
//! an `add chain` of an existing chain or any rule delete (a flush of a non-empty chain) makes the
//! kernel's commit wait ~15 ms, and parallel ADDs would queue behind each other's waits.
//!
//! The expressions are exactly those `nft` 1.0.x builds from the reference's rule text (checked
//! against `nft --debug=netlink`, and by a test comparing listings with `nft -f` of that text), so
//! the reference plugin and `nft` users see the identical ruleset.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::nfnl::{self, ChainInfo, RuleInfo};
use super::nfnl_batch::{Batch, BatchError, CmpOp, Expr, Hook};
use super::nft_abi::{NFPROTO_IPV4, NFPROTO_IPV6};
use super::{naming, FirewallError, MasqTarget};

/// The table every reference plugin shares.
pub const TABLE: &str = "cni_plugins_masquerade";
/// The regular chain holding one rule per masqueraded address.
pub const MASQ_CHAIN: &str = "masq_checks";
const TABLE_COMMENT: &str = "Masquerading for plugins from github.com/containernetworking/plugins";
const CHAIN_COMMENT: &str =
    "Masquerade traffic from certain IPs to any (non-multicast) IP outside their subnet";

/// The rules of `masq_checks` whose comment starts with `prefix` (an instance hash).
fn find_rules(prefix: &str) -> Result<Vec<RuleInfo>, FirewallError> {
    let rules = nfnl::list_rules(TABLE, MASQ_CHAIN).map_err(list_error)?;
    Ok(ours(rules, prefix))
}

/// The comments of every rule of `masq_checks`, in order.
pub(crate) fn rule_comments() -> Result<Vec<Option<String>>, FirewallError> {
    Ok(nfnl::list_rules(TABLE, MASQ_CHAIN).map_err(list_error)?.into_iter().map(|r| r.comment).collect())
}

fn ours(rules: Vec<RuleInfo>, prefix: &str) -> Vec<RuleInfo> {
    rules.into_iter().filter(|r| r.comment.as_deref().is_some_and(|c| c.starts_with(prefix))).collect()
}

fn list_error(source: std::io::Error) -> FirewallError {
    FirewallError::Netlink { op: "list nftables rules", source }
}

/// What of the layout already exists, so ADD creates only what is missing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Present {
    pub table: bool,
    pub masq_checks: bool,
    /// `postrouting` exists AND is the nat/postrouting/priority-100 base chain; a chain of that
    /// name of another kind is "absent", so its `add chain` is sent and the kernel rejects it.
    pub postrouting: bool,
    /// `postrouting` holds exactly the reference's three rules, so ADD need not refill it.
    pub postrouting_filled: bool,
}

impl Present {
    /// From the table's chains (`None`: no table).
    fn of(chains: Option<&[ChainInfo]>) -> Present {
        let Some(chains) = chains else { return Present::default() };
        let hook = |c: &ChainInfo| {
            c.hook.as_ref().is_some_and(|h| {
                h.kind == POSTROUTING.kind
                    && h.hooknum == POSTROUTING.hooknum
                    && h.priority == POSTROUTING.priority
            })
        };
        Present {
            table: true,
            masq_checks: chains.iter().any(|c| c.name == MASQ_CHAIN),
            postrouting: chains.iter().any(|c| c.name == "postrouting" && hook(c)),
            postrouting_filled: false,
        }
    }
}

/// ADD's read: what exists, and this attachment's rules (stale ones from an earlier ADD).
fn read_state(prefix: &str) -> Result<(Present, Vec<RuleInfo>), FirewallError> {
    let mut reader = nfnl::Reader::open().map_err(list_error)?;
    let chains = reader
        .chains(TABLE)
        .map_err(|source| FirewallError::Netlink { op: "list nftables chains", source })?;
    let mut present = Present::of(chains.as_deref());
    if present.postrouting {
        let rules = reader.rules(TABLE, "postrouting").map_err(list_error)?;
        present.postrouting_filled = is_filled(&rules);
    }
    let stale = if present.masq_checks {
        ours(reader.rules(TABLE, MASQ_CHAIN).map_err(list_error)?, prefix)
    } else {
        Vec::new()
    };
    Ok((present, stale))
}

/// True when `rules` are exactly [`postrouting_rules`], uncommented, in order.
fn is_filled(rules: &[RuleInfo]) -> bool {
    let want = postrouting_rules();
    rules.len() == want.len()
        && rules.iter().zip(&want).all(|(r, w)| r.comment.is_none() && r.exprs.as_ref() == Some(w))
}

/// The base chain's rules: multicast is never masqueraded, everything else is checked in
/// `masq_checks`.
fn postrouting_rules() -> [Vec<Expr>; 3] {
    let mut mcast4 = match_addr(Field::Daddr, IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4, CmpOp::Eq);
    mcast4.push(Expr::Return);
    let mut mcast6 =
        match_addr(Field::Daddr, IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8, CmpOp::Eq);
    mcast6.push(Expr::Return);
    [mcast4, mcast6, vec![Expr::Goto(MASQ_CHAIN.to_string())]]
}

/// `NF_INET_POST_ROUTING`, and the priority `srcnat` names.
const POSTROUTING: Hook = Hook { kind: "nat", hooknum: 4, priority: 100 };
/// The operation of a rule delete (its ENOENT: a concurrent DEL won; see [`vanished`]).
const OP_DELETE_STALE: &str = "nftables: delete rule from masq_checks";

/// Which address of the IP header a match reads.
#[derive(Clone, Copy)]
enum Field {
    Saddr,
    Daddr,
}

/// `ip|ip6 saddr|daddr <op> <addr>/<prefix>` in an inet table, as nft 1.0.x linearizes it: the
/// family check, then a payload load and compare. A whole-byte prefix loads only those bytes; any
/// other prefix loads the whole address and masks it; a full-length prefix compares the address.
fn match_addr(field: Field, addr: IpAddr, prefix: u8, op: CmpOp) -> Vec<Expr> {
    let (nfproto, offset, bytes) = match (addr, field) {
        (IpAddr::V4(a), Field::Saddr) => (NFPROTO_IPV4, 12, a.octets().to_vec()),
        (IpAddr::V4(a), Field::Daddr) => (NFPROTO_IPV4, 16, a.octets().to_vec()),
        (IpAddr::V6(a), Field::Saddr) => (NFPROTO_IPV6, 8, a.octets().to_vec()),
        (IpAddr::V6(a), Field::Daddr) => (NFPROTO_IPV6, 24, a.octets().to_vec()),
    };
    let mut exprs = vec![Expr::MetaNfproto, Expr::Cmp { op: CmpOp::Eq, data: vec![nfproto] }];
    exprs.extend(payload_match(offset, &bytes, prefix, op));
    exprs
}

/// The payload part of [`match_addr`] (without the family check), for `bytes` at `offset`.
fn payload_match(offset: u32, bytes: &[u8], prefix: u8, op: CmpOp) -> Vec<Expr> {
    let width = bytes.len();
    let prefix = usize::from(prefix).min(width * 8);
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    if prefix == width * 8 || (prefix > 0 && prefix.is_multiple_of(8)) {
        let n = prefix / 8;
        let data = bytes.get(..n).unwrap_or(bytes).to_vec();
        return vec![Expr::Payload { offset, len: len(n) }, Expr::Cmp { op, data }];
    }
    let mask: Vec<u8> = (0..width)
        .map(|i| {
            let bits = prefix.saturating_sub(i * 8).min(8);
            // bits < 8 here or the byte is fully masked; 0xff << 8 would overflow a u8.
            if bits == 8 {
                0xff
            } else {
                !(0xffu8 >> bits)
            }
        })
        .collect();
    let data = bytes.iter().zip(&mask).map(|(b, m)| b & m).collect();
    vec![Expr::Payload { offset, len: len(width) }, Expr::Bitwise { mask }, Expr::Cmp { op, data }]
}

/// `ip|ip6 saddr == <ip> ip|ip6 daddr != <subnet> masquerade`: one family check, as nft emits it.
fn masq_rule(addr: &IpNetwork) -> Vec<Expr> {
    let full = if addr.is_ipv4() { 32 } else { 128 };
    let mut exprs = match_addr(Field::Saddr, addr.ip(), full, CmpOp::Eq);
    let daddr = match_addr(Field::Daddr, addr.network(), addr.prefix(), CmpOp::Neq);
    // The family check is already there (nft drops the redundant dependency).
    exprs.extend(daddr.into_iter().skip(2));
    exprs.push(Expr::Masq);
    exprs
}

/// The ADD transaction: create what is not `present` of table and chains, refill `postrouting`,
/// drop `stale` rules, add one rule per address. The same commands, in the same order, as the
/// reference's nft script, less the `add`s of what exists (no-ops for the ruleset: the kernel
/// changes neither comment nor hook of an existing table or chain).
pub(crate) fn plan_setup(t: &MasqTarget, addrs: &[IpNetwork], present: Present, stale: &[RuleInfo]) -> Batch {
    let mut b = Batch::new();
    if !present.table {
        b.add_table(TABLE, TABLE_COMMENT, "nftables: add table inet cni_plugins_masquerade");
    }
    if !present.masq_checks {
        b.add_chain(TABLE, MASQ_CHAIN, None, Some(CHAIN_COMMENT), "nftables: add chain masq_checks");
    }
    if !present.postrouting {
        // After masq_checks exists, so the goto below resolves.
        b.add_chain(TABLE, "postrouting", Some(POSTROUTING), None, "nftables: add chain postrouting");
    }
    // The reference flushes and refills on every ADD; the result is the same when the three
    // rules are already there, but the flush's deletes would make the commit wait ~15 ms.
    if !present.postrouting_filled {
        b.flush_chain(TABLE, "postrouting", "nftables: flush chain postrouting");
        for rule in postrouting_rules() {
            b.add_rule(TABLE, "postrouting", &rule, None, "nftables: add rule to postrouting");
        }
    }
    for rule in stale {
        b.delete_rule(TABLE, MASQ_CHAIN, rule.handle, OP_DELETE_STALE);
    }
    let comment = clean_comment(&naming::nft_comment(t.network, t.ifname, t.container_id));
    for addr in addrs {
        b.add_rule(TABLE, MASQ_CHAIN, &masq_rule(addr), Some(&comment), "nftables: add rule to masq_checks");
    }
    b
}

/// The DEL transaction for `rules`; `None` when there is nothing to delete.
pub(crate) fn plan_teardown(rules: &[RuleInfo]) -> Option<Batch> {
    if rules.is_empty() {
        return None;
    }
    let mut b = Batch::new();
    for r in rules {
        b.delete_rule(TABLE, MASQ_CHAIN, r.handle, OP_DELETE_STALE);
    }
    Some(b)
}

/// A comment as the old `nft -f` path stored it: nft string literals cannot hold `"` (the
/// reference strips it already) nor control characters, which became spaces.
fn clean_comment(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c == '"' { ' ' } else { c }).collect()
}

fn netlink_error(e: BatchError) -> FirewallError {
    FirewallError::Netlink { op: e.op, source: e.source }
}

/// True when the transaction failed because something read just before was gone at commit: a
/// stale rule deleted by a concurrent DEL, or the table or a chain deleted by someone else. A
/// fresh read then plans the right transaction.
fn vanished(e: &BatchError) -> bool {
    e.source.raw_os_error() == Some(libc::ENOENT)
}

/// ADD: one read, one transaction. Retried once, after a fresh read, if something read vanished
/// in between (a stale rule removed by a concurrent DEL, the table or a chain deleted).
pub(crate) fn setup(t: &MasqTarget, addrs: &[IpNetwork]) -> Result<(), FirewallError> {
    let prefix = naming::nft_instance_hash(t.network, t.ifname, t.container_id);
    let mut last = None;
    for _ in 0..2 {
        let (present, stale) = read_state(&prefix)?;
        match plan_setup(t, addrs, present, &stale).commit() {
            Ok(()) => return Ok(()),
            Err(e) if vanished(&e) => last = Some(netlink_error(e)),
            Err(e) => return Err(netlink_error(e)),
        }
    }
    Err(last.unwrap_or(FirewallError::Unavailable { backend: "nftables" }))
}

/// DEL by comment prefix; no write at all when the attachment has no rule.
pub(crate) fn teardown(t: &MasqTarget) -> Result<(), FirewallError> {
    let prefix = naming::nft_instance_hash(t.network, t.ifname, t.container_id);
    let mut last = None;
    for _ in 0..2 {
        let Some(batch) = plan_teardown(&find_rules(&prefix)?) else { return Ok(()) };
        match batch.commit() {
            Ok(()) => return Ok(()),
            Err(e) if vanished(&e) => last = Some(netlink_error(e)),
            Err(e) => return Err(netlink_error(e)),
        }
    }
    Err(last.unwrap_or(FirewallError::Unavailable { backend: "nftables" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(exprs: &[Expr]) -> Vec<String> {
        exprs
            .iter()
            .map(|e| match e {
                Expr::Payload { offset, len } => format!("payload {len}b @ +{offset}"),
                Expr::Bitwise { mask } => format!("bitwise {mask:02x?}"),
                Expr::Cmp { op, data } => format!("cmp {op:?} {data:02x?}"),
                other => format!("{other:?}"),
            })
            .collect()
    }

    // Expected lists transcribed from `nft --debug=netlink` (nft 1.0.6) for the same rule text.
    #[test]
    fn masq_rules_match_nft_linearization() {
        let v4 = masq_rule(&"198.19.1.2/24".parse().unwrap());
        assert_eq!(
            hex(&v4),
            [
                "MetaNfproto",
                "cmp Eq [02]",
                "payload 4b @ +12",
                "cmp Eq [c6, 13, 01, 02]",
                "payload 3b @ +16",
                "cmp Neq [c6, 13, 01]",
                "Masq"
            ]
        );
        let v6 = masq_rule(&"fd00:77::2/64".parse().unwrap());
        assert_eq!(hex(&v6[..3]), ["MetaNfproto", "cmp Eq [0a]", "payload 16b @ +8"]);
        assert_eq!(hex(&v6[4..5]), ["payload 8b @ +24"]);
        assert_eq!(hex(&v6[5..6]), ["cmp Neq [fd, 00, 00, 77, 00, 00, 00, 00]"]);
    }

    #[test]
    fn prefixes_follow_nft() {
        let p = |addr: &str, prefix: u8| {
            let addr: IpAddr = addr.parse().unwrap();
            hex(&match_addr(Field::Daddr, addr, prefix, CmpOp::Neq)[2..])
        };
        assert_eq!(
            p("10.0.0.0", 20),
            ["payload 4b @ +16", "bitwise [ff, ff, f0, 00]", "cmp Neq [0a, 00, 00, 00]"]
        );
        assert_eq!(
            p("224.0.0.0", 4),
            ["payload 4b @ +16", "bitwise [f0, 00, 00, 00]", "cmp Neq [e0, 00, 00, 00]"]
        );
        assert_eq!(p("10.1.2.3", 32), ["payload 4b @ +16", "cmp Neq [0a, 01, 02, 03]"]);
        assert_eq!(
            p("0.0.0.0", 0),
            ["payload 4b @ +16", "bitwise [00, 00, 00, 00]", "cmp Neq [00, 00, 00, 00]"]
        );
        assert_eq!(p("ff00::", 8), ["payload 1b @ +24", "cmp Neq [ff]"]);
        let v6 = p("fd00::", 65);
        assert_eq!(v6[1], format!("bitwise {:02x?}", [[0xffu8; 8].as_slice(), &[0x80], &[0; 7]].concat()));
    }

    #[test]
    fn setup_plan_adds_only_what_is_missing() {
        let t = MasqTarget { network: "n", container_id: "c", ifname: "eth0" };
        let addrs: Vec<IpNetwork> = vec!["198.19.1.2/24".parse().unwrap()];
        let stale = [RuleInfo { handle: 9, comment: None, exprs: None, target: None }];
        let adds = |p: Present| {
            let b = plan_setup(&t, &addrs, p, &stale);
            b.ops().iter().filter(|op| op.contains(": add table") || op.contains(": add chain")).count()
        };
        assert_eq!(adds(Present::default()), 3);
        assert_eq!(
            adds(Present { table: true, masq_checks: true, postrouting: true, postrouting_filled: false }),
            0
        );
        assert_eq!(
            adds(Present { table: true, masq_checks: true, postrouting: false, postrouting_filled: false }),
            1
        );
        let all = plan_setup(
            &t,
            &addrs,
            Present { table: true, masq_checks: true, postrouting: true, postrouting_filled: false },
            &stale,
        );
        assert_eq!(
            all.ops(),
            [
                "begin transaction",
                "nftables: flush chain postrouting",
                "nftables: add rule to postrouting",
                "nftables: add rule to postrouting",
                "nftables: add rule to postrouting",
                OP_DELETE_STALE,
                "nftables: add rule to masq_checks",
            ]
        );
    }

    #[test]
    fn present_requires_the_right_base_chain() {
        let chain = |name: &str, hook: Option<(&str, u32, i32)>| ChainInfo {
            name: name.into(),
            hook: hook.map(|(kind, hooknum, priority)| nfnl::ChainHook {
                kind: kind.into(),
                hooknum,
                priority,
            }),
        };
        assert_eq!(Present::of(None), Present::default());
        assert_eq!(Present::of(Some(&[])), Present { table: true, ..Present::default() });
        let good = [chain("masq_checks", None), chain("postrouting", Some(("nat", 4, 100)))];
        assert_eq!(
            Present::of(Some(&good)),
            Present { table: true, masq_checks: true, postrouting: true, postrouting_filled: false }
        );
        for bad in [None, Some(("filter", 4, 100)), Some(("nat", 2, 100)), Some(("nat", 4, 0))] {
            let p = Present::of(Some(&[chain("postrouting", bad)]));
            assert_eq!(
                p,
                Present { table: true, masq_checks: false, postrouting: false, postrouting_filled: false }
            );
        }
    }

    #[test]
    fn teardown_plan_and_comment_cleaning() {
        assert!(plan_teardown(&[]).is_none());
        assert!(plan_teardown(&[RuleInfo { handle: 3, comment: None, exprs: None, target: None }]).is_some());
        assert_eq!(clean_comment("a\"b\nc"), "a b c");
    }
}
