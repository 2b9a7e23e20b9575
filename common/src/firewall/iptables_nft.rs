//! The IPv4 iptables masquerade ADD written in-process, without the `iptables-restore` process:
//! with iptables-nft (Debian's default, 1.8.9) iptables rules are nf_tables rules in `table ip
//! nat`, so one nf_tables batch can create the chain and append the rules exactly as
//! `iptables-restore` of our script would. The encoding is iptables-nft 1.8.9's, byte for byte
//! (see the golden test below, from a capture of `iptables-restore`'s batch), so iptables,
//! `iptables-save` and the reference's `-C`/`-D` see the rules as their own.
//!
//! Used only when that is certainly right, else the caller runs the process path:
//! - the `iptables-restore` on `PATH` is iptables-nft (resolved through its symlinks), so the
//!   tools that list and delete these rules later see them;
//! - x_tables (iptables-legacy) has no `nat` table in this network namespace;
//! - `table ip nat` exists and looks like iptables-nft's (no flags, no owner, no user data: 1.8.9
//!   marks its tables with nothing else), and its `POSTROUTING` is iptables' built-in base chain
//!   (type nat, hook postrouting, priority 100, no user data). An absent table (the host's first
//!   ADD) is left to `iptables-restore`, which creates it the normal way;
//! - the chain does not exist yet: it is created with `NLM_F_EXCL` in the same transaction, so an
//!   existing chain fails the whole batch (nothing is applied) and the caller falls back.
//!
//! A difference to `iptables-restore`'s batch that does not change what is stored: every message
//! asks for an acknowledgement (so a failure names its message). iptables also sends a
//! generation id and re-sends `NEWTABLE nat` / `NEWCHAIN POSTROUTING` before its writes (no-ops on
//! existing objects); we do not, so a table or chain that vanished fails the batch instead of being
//! recreated half-way.

use std::net::Ipv4Addr;

use ipnetwork::{IpNetwork, Ipv4Network};

use super::nfnl::Reader;
use super::nfnl_batch::{Batch, CmpOp, Expr, NFPROTO_IPV4};

/// iptables' table and built-in chain.
const TABLE: &str = "nat";
const POSTROUTING: &str = "POSTROUTING";
/// `NF_INET_POST_ROUTING` and `NF_IP_PRI_NAT_SRC`: iptables-nft's built-in POSTROUTING hook.
const HOOK_POSTROUTING: u32 = 4;
const PRIORITY_NAT_SRC: i32 = 100;
/// Where legacy iptables lists the x_tables tables of the reading thread's network namespace.
const LEGACY_TABLES: &str = "/proc/thread-self/net/ip_tables_names";
/// `XT_MAX_COMMENT_LEN`: `struct xt_comment_info { char comment[256]; }`, NUL included.
const XT_COMMENT_LEN: usize = 256;
/// Offsets of the source and destination addresses in the IPv4 header.
const IPV4_SADDR: u32 = 12;
const IPV4_DADDR: u32 = 16;

/// One `-A <chain> …` of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XtRule {
    pub chain: String,
    pub exprs: Vec<Expr>,
}

/// Tries the in-process ADD of the IPv4 `addrs` (with prefix; their subnets are the network
/// parts). True when the rules are in place; false when the caller must use the process path
/// (the reason is logged), with nothing changed. `chain` and `comment` are
/// [`super::chain_name`] and [`super::iptables_comment`] of the attachment. [`super::setup_masquerade`]
/// calls it; public so that tests can tell which path an ADD takes.
pub fn try_add(chain: &str, comment: &str, addrs: &[IpNetwork]) -> bool {
    match add(chain, comment, addrs) {
        Ok(()) => true,
        Err(why) => {
            tracing::debug!(reason = %why, "in-process iptables-nft add not used, running iptables-restore");
            false
        }
    }
}

fn add(chain: &str, comment: &str, addrs: &[IpNetwork]) -> Result<(), String> {
    let v4: Vec<Ipv4Network> = addrs
        .iter()
        .map(|a| match a {
            IpNetwork::V4(a) => Ok(*a),
            IpNetwork::V6(_) => Err("IPv6 address".to_string()),
        })
        .collect::<Result<_, _>>()?;
    let rules = plan(chain, comment, &v4).ok_or("rules iptables would encode differently")?;
    check_tools()?;
    check_legacy()?;
    check_table()?;
    let mut batch = Batch::new_xt(NFPROTO_IPV4);
    batch.new_chain_excl(TABLE, chain, "create iptables chain");
    for rule in &rules {
        batch.append_xt_rule(TABLE, &rule.chain, &rule.exprs, "append iptables rule");
    }
    batch.commit().map_err(|e| format!("{}: {}", e.op, e.source))
}

/// The host's `iptables-restore` (the one the process path and the reference run, found on
/// `PATH`) must be iptables-nft: with the legacy tools, rules written to nf_tables would be
/// invisible to `iptables-save`, so neither our DEL nor the reference's would remove them.
/// Debian's alternatives resolve it to `xtables-nft-multi` (or `xtables-legacy-multi`).
fn check_tools() -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let tool = find_tool(&path, "iptables-restore").ok_or("no iptables-restore on PATH")?;
    if is_nft_variant(&tool) {
        Ok(())
    } else {
        Err(format!("{} is not iptables-nft", tool.display()))
    }
}

/// The first `name` in the `:`-separated directories of `path`, as `execvp` would find it.
fn find_tool(path: &std::ffi::OsStr, name: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

/// True when `tool` resolves (through its symlinks) to an iptables-nft binary.
fn is_nft_variant(tool: &std::path::Path) -> bool {
    let Ok(real) = std::fs::canonicalize(tool) else { return false };
    let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    name.starts_with("xtables-nft") || name.starts_with("iptables-nft")
}

/// Legacy iptables in use here: its `nat` table is registered with x_tables, and rules written
/// to nf_tables would not be the ones `iptables` (legacy) shows.
fn check_legacy() -> Result<(), String> {
    match std::fs::read_to_string(LEGACY_TABLES) {
        Ok(names) if names.lines().any(|l| l.trim() == TABLE) => Err("legacy iptables nat table".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("read {LEGACY_TABLES}: {e}")),
    }
}

/// `table ip nat` exists, is iptables-nft's, and has its built-in POSTROUTING.
fn check_table() -> Result<(), String> {
    let netlink = |e: std::io::Error| format!("read table ip nat: {e}");
    let mut reader = Reader::open_family(NFPROTO_IPV4).map_err(netlink)?;
    let table = reader.table(TABLE).map_err(netlink)?.ok_or("no table ip nat yet")?;
    if table.flags != 0 || table.has_owner || table.has_userdata {
        return Err(format!("table ip nat is not iptables-nft's ({table:?})"));
    }
    let post = reader.chain(TABLE, POSTROUTING).map_err(netlink)?.ok_or("no POSTROUTING chain yet")?;
    let builtin =
        post.info.hook.as_ref().is_some_and(|h| {
            h.kind == "nat" && h.hooknum == HOOK_POSTROUTING && h.priority == PRIORITY_NAT_SRC
        });
    if !builtin || post.has_userdata {
        return Err(format!("POSTROUTING is not iptables-nft's built-in chain ({post:?})"));
    }
    Ok(())
}

/// The rules of [`super::iptables::plan_rules`] for IPv4, as iptables-nft 1.8.9 encodes them, in
/// the same order and with the same de-duplication. `None` when some rule would not be encoded by
/// our rules here (a /0 subnet, which iptables drops from the rule; a comment iptables refuses).
pub(crate) fn plan(chain: &str, comment: &str, addrs: &[Ipv4Network]) -> Option<Vec<XtRule>> {
    let comment = comment_match(comment)?;
    let mut rules: Vec<XtRule> = Vec::new();
    for addr in addrs {
        let subnet = addr_match(IPV4_DADDR, addr.network(), addr.prefix(), CmpOp::Eq)?;
        let mcast = addr_match(IPV4_DADDR, Ipv4Addr::new(224, 0, 0, 0), 4, CmpOp::Neq)?;
        let host = addr_match(IPV4_SADDR, addr.ip(), 32, CmpOp::Eq)?;
        let masquerade = Expr::XtTarget { name: "MASQUERADE", rev: 0, info: masquerade_info() };
        for (chain, matched, verdict) in [
            (chain, subnet, Expr::Accept),
            (chain, mcast, masquerade),
            (POSTROUTING, host, Expr::Jump(chain.to_string())),
        ] {
            let mut exprs = matched;
            exprs.extend([comment.clone(), Expr::Counter, verdict]);
            let rule = XtRule { chain: chain.to_string(), exprs };
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    Some(rules)
}

/// `-s`/`-d <addr>/<prefix>` (with `!` for `Neq`), as iptables-nft's `add_addr`: a byte-aligned
/// prefix loads and compares only its bytes; any other prefix loads 4 bytes and masks them.
fn addr_match(offset: u32, addr: Ipv4Addr, prefix: u8, op: CmpOp) -> Option<Vec<Expr>> {
    if prefix == 0 || prefix > 32 {
        return None; // iptables leaves a /0 match out of the rule entirely
    }
    let mask = u32::MAX << (32 - u32::from(prefix));
    let data = (u32::from(addr) & mask).to_be_bytes();
    if prefix.is_multiple_of(8) {
        let len = usize::from(prefix / 8);
        let bytes = data.get(..len)?.to_vec();
        return Some(vec![
            Expr::Payload { offset, len: u32::from(prefix / 8) },
            Expr::Cmp { op, data: bytes },
        ]);
    }
    Some(vec![
        Expr::Payload { offset, len: 4 },
        Expr::Bitwise { mask: mask.to_be_bytes().to_vec() },
        Expr::Cmp { op, data: data.to_vec() },
    ])
}

/// `-m comment --comment <text>`: `struct xt_comment_info`, the text NUL-padded to 256 bytes.
/// iptables refuses a comment of 256 bytes or more; a NUL would cut it.
fn comment_match(comment: &str) -> Option<Expr> {
    if comment.len() >= XT_COMMENT_LEN || comment.contains('\0') {
        return None;
    }
    let mut info = comment.as_bytes().to_vec();
    info.resize(XT_COMMENT_LEN, 0);
    Some(Expr::XtMatch { name: "comment", rev: 0, info })
}

/// `-j MASQUERADE`: `struct nf_nat_ipv4_multi_range_compat` with `rangesize` 1 (host byte order)
/// and one all-zero `nf_nat_ipv4_range` (no flags, no addresses, no ports): 24 bytes, already
/// `XT_ALIGN`ed.
fn masquerade_info() -> Vec<u8> {
    let mut info = 1u32.to_ne_bytes().to_vec();
    info.resize(24, 0);
    info
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_iptables_nft_restore_on_path_qualifies() {
        let dir = tempfile::tempdir().unwrap();
        let (nft, legacy) = (dir.path().join("nft"), dir.path().join("legacy"));
        for d in [&nft, &legacy] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(nft.join("xtables-nft-multi"), "").unwrap();
        std::fs::write(legacy.join("xtables-legacy-multi"), "").unwrap();
        std::os::unix::fs::symlink(nft.join("xtables-nft-multi"), nft.join("iptables-restore")).unwrap();
        std::os::unix::fs::symlink(legacy.join("xtables-legacy-multi"), legacy.join("iptables-restore"))
            .unwrap();
        let path = |dirs: &[&std::path::Path]| std::env::join_paths(dirs).unwrap();
        let resolve =
            |p: &std::ffi::OsStr| find_tool(p, "iptables-restore").is_some_and(|t| is_nft_variant(&t));
        assert!(resolve(&path(&[&nft, &legacy])));
        // The first on PATH wins, as for execvp.
        assert!(!resolve(&path(&[&legacy, &nft])));
        assert!(!resolve(&path(&[dir.path()])));
    }

    const CHAIN: &str = "CNI-9cccacf967e00a3c04e26966";

    /// `iptables-restore --noflush -w` (iptables v1.8.9 (nf_tables), Debian 12) of
    /// ```text
    /// *nat
    /// -N CNI-9cccacf967e00a3c04e26966
    /// -A CNI-9cccacf967e00a3c04e26966 -d 10.244.1.0/24 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j ACCEPT
    /// -A CNI-9cccacf967e00a3c04e26966 ! -d 224.0.0.0/4 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j MASQUERADE
    /// -A POSTROUTING -s 10.244.1.2/32 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j CNI-9cccacf967e00a3c04e26966
    /// COMMIT
    /// ```
    /// into a namespace whose nat table existed: the one batch it sent, captured with
    /// `strace -f -e trace=sendmsg -e write=3` (2140 bytes).
    const CAPTURE: &str = include_str!("iptables_nft_capture.hex");

    /// A batch split into messages: (type, flags, nfgenmsg, attributes).
    fn messages(buf: &[u8]) -> Vec<(u16, u16, Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes([rest[4], rest[5]]);
            let flags = u16::from_ne_bytes([rest[6], rest[7]]);
            out.push((kind, flags, rest[16..20].to_vec(), rest[20..len].to_vec()));
            rest = &rest[len.next_multiple_of(4)..];
        }
        out
    }

    fn capture() -> Vec<u8> {
        let hex: String = CAPTURE.split_whitespace().collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn batch_is_byte_for_byte_iptables_restores() {
        let theirs = messages(&capture());
        assert_eq!(theirs.len(), 11);
        let addrs: Vec<Ipv4Network> = vec!["10.244.1.2/24".parse().unwrap()];
        let comment = super::super::naming::iptables_comment("cbr0", "ctr1");
        let rules = plan(CHAIN, &comment, &addrs).unwrap();
        let mut batch = Batch::new_xt(NFPROTO_IPV4);
        batch.new_chain_excl(TABLE, CHAIN, "chain");
        for rule in &rules {
            batch.append_xt_rule(TABLE, &rule.chain, &rule.exprs, "rule");
        }
        let ours = messages(&batch.into_datagram());
        assert_eq!(ours.len(), 6);
        // iptables' messages we send too: the chain (3rd), the rules (5th, 7th, 10th). Its
        // NEWTABLE nat (2nd, 4th, 6th, 8th) and NEWCHAIN POSTROUTING (9th) are no-ops on the
        // existing table and chain and are not sent.
        let wanted = [&theirs[2], &theirs[4], &theirs[6], &theirs[9]];
        const ACK: u16 = 0x4;
        for (ours, theirs) in ours[1..5].iter().zip(wanted) {
            assert_eq!(ours.0, theirs.0, "message type");
            assert_eq!(ours.1, theirs.1 | ACK, "flags (ours add NLM_F_ACK)");
            assert_eq!(ours.2, theirs.2, "nfgenmsg");
            assert_eq!(ours.3, theirs.3, "attributes of message type {:#x}", ours.0);
        }
        // Batch begin (iptables adds its generation id) and end: same header and nfgenmsg.
        assert_eq!((ours[0].0, ours[0].1, &ours[0].2), (theirs[0].0, theirs[0].1, &theirs[0].2));
        assert_eq!(ours[5], theirs[10]);
    }

    #[test]
    fn address_matches_follow_iptables_add_addr() {
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(
            addr_match(16, a("10.244.1.0"), 24, CmpOp::Eq).unwrap(),
            vec![Expr::Payload { offset: 16, len: 3 }, Expr::Cmp { op: CmpOp::Eq, data: vec![10, 244, 1] }]
        );
        assert_eq!(
            addr_match(12, a("10.244.1.2"), 32, CmpOp::Eq).unwrap(),
            vec![
                Expr::Payload { offset: 12, len: 4 },
                Expr::Cmp { op: CmpOp::Eq, data: vec![10, 244, 1, 2] }
            ]
        );
        assert_eq!(
            addr_match(16, a("10.244.17.9"), 20, CmpOp::Eq).unwrap(),
            vec![
                Expr::Payload { offset: 16, len: 4 },
                Expr::Bitwise { mask: vec![255, 255, 240, 0] },
                Expr::Cmp { op: CmpOp::Eq, data: vec![10, 244, 16, 0] },
            ]
        );
        assert_eq!(addr_match(16, a("0.0.0.0"), 0, CmpOp::Eq), None);
    }

    #[test]
    fn plan_deduplicates_like_the_restore_script() {
        let addrs: Vec<Ipv4Network> =
            vec!["10.244.1.2/24".parse().unwrap(), "10.244.2.3/24".parse().unwrap()];
        let rules = plan(CHAIN, "c", &addrs).unwrap();
        let chains: Vec<&str> = rules.iter().map(|r| r.chain.as_str()).collect();
        // ACCEPT, MASQUERADE, jump; then the second subnet's ACCEPT and jump (MASQUERADE is shared).
        assert_eq!(chains, [CHAIN, CHAIN, POSTROUTING, CHAIN, POSTROUTING]);
        assert_eq!(plan(CHAIN, &"x".repeat(256), &addrs), None);
        assert!(plan(CHAIN, &"x".repeat(255), &addrs).is_some());
    }
}
