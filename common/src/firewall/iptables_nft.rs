//! The iptables masquerade ADD written in-process, without the `iptables-restore` /
//! `ip6tables-restore` process: with iptables-nft (Debian's default, 1.8.9) iptables rules are
//! nf_tables rules in `table ip nat` (`table ip6 nat` for ip6tables), so one nf_tables batch can
//! create the chain and append the rules exactly as the restore tool would from our script. The
//! encoding is iptables-nft 1.8.9's, byte for byte (see the golden tests below, from captures of
//! both tools' batches), so iptables, `iptables-save` and the reference's `-C`/`-D` see the rules
//! as their own.
//!
//! Used only when that is certainly right, else the caller runs the process path:
//! - the family's restore tool on `PATH` is iptables-nft (resolved through its symlinks), so the
//!   tools that list and delete these rules later see them;
//! - x_tables (iptables-legacy) has no `nat` table of the family in this network namespace;
//! - the family's `nat` table exists and looks like iptables-nft's (no flags, no owner, no user data: 1.8.9
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

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

use super::iptables::Family;
use super::nfnl::Reader;
use super::nfnl_batch::{Batch, CmpOp, Expr};
use super::nft_abi::{NFPROTO_IPV4, NFPROTO_IPV6};

/// iptables' table and built-in chain.
const TABLE: &str = "nat";
const POSTROUTING: &str = "POSTROUTING";
/// `NF_INET_POST_ROUTING` and `NF_IP_PRI_NAT_SRC`: iptables-nft's built-in POSTROUTING hook.
const HOOK_POSTROUTING: u32 = 4;
const PRIORITY_NAT_SRC: i32 = 100;
/// `XT_MAX_COMMENT_LEN`: `struct xt_comment_info { char comment[256]; }`, NUL included.
const XT_COMMENT_LEN: usize = 256;

/// What differs between iptables and ip6tables here.
struct XtFamily {
    family: Family,
    /// The nfgenmsg family of the tables.
    nfproto: u8,
    /// Offsets of the source and destination addresses in the network header.
    saddr: u32,
    daddr: u32,
    /// Where legacy iptables lists the x_tables tables of the reading thread's network namespace.
    legacy_tables: &'static str,
    /// The multicast range never masqueraded.
    multicast: (IpAddr, u8),
}

const V4: XtFamily = XtFamily {
    family: Family::V4,
    nfproto: NFPROTO_IPV4,
    saddr: 12,
    daddr: 16,
    legacy_tables: "/proc/thread-self/net/ip_tables_names",
    multicast: (IpAddr::V4(Ipv4Addr::new(224, 0, 0, 0)), 4),
};

const V6: XtFamily = XtFamily {
    family: Family::V6,
    nfproto: NFPROTO_IPV6,
    saddr: 8,
    daddr: 24,
    legacy_tables: "/proc/thread-self/net/ip6_tables_names",
    multicast: (IpAddr::V6(Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0)), 8),
};

impl XtFamily {
    /// The family of `addrs`, which must all be of one.
    fn of(addrs: &[IpNetwork]) -> Result<&'static XtFamily, String> {
        if addrs.iter().all(IpNetwork::is_ipv4) {
            Ok(&V4)
        } else if addrs.iter().all(IpNetwork::is_ipv6) {
            Ok(&V6)
        } else {
            Err("IPv4 and IPv6 addresses in one call".into())
        }
    }

    fn table_name(&self) -> &'static str {
        match self.family {
            Family::V4 => "table ip nat",
            Family::V6 => "table ip6 nat",
        }
    }

    /// `-j MASQUERADE`'s target data. IPv4: `struct nf_nat_ipv4_multi_range_compat` with
    /// `rangesize` 1 (host byte order) and one all-zero `nf_nat_ipv4_range`, 24 bytes. IPv6:
    /// an all-zero `struct nf_nat_range` (no flags, addresses or ports), 40 bytes. Both
    /// already `XT_ALIGN`ed.
    fn masquerade_info(&self) -> Vec<u8> {
        match self.family {
            Family::V4 => {
                let mut info = 1u32.to_ne_bytes().to_vec();
                info.resize(24, 0);
                info
            }
            Family::V6 => vec![0; 40],
        }
    }
}

/// One `-A <chain> …` of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct XtRule {
    pub chain: String,
    pub exprs: Vec<Expr>,
}

/// Tries the in-process ADD of `addrs` (with prefix; their subnets are the network parts; all of
/// one family). True when the rules are in place; false when the caller must use the process
/// path (the reason is logged), with nothing changed. `chain` and `comment` are
/// [`super::chain_name`] and [`super::iptables_comment`] of the attachment. [`super::setup_masquerade`]
/// calls it; public so that tests can tell which path an ADD takes.
pub fn try_add(chain: &str, comment: &str, addrs: &[IpNetwork]) -> bool {
    match add(chain, comment, addrs) {
        Ok(()) => true,
        Err(why) => {
            tracing::debug!(reason = %why, "in-process iptables-nft add not used, running the restore tool");
            false
        }
    }
}

fn add(chain: &str, comment: &str, addrs: &[IpNetwork]) -> Result<(), String> {
    let fam = XtFamily::of(addrs)?;
    let rules = plan(fam, chain, comment, addrs).ok_or("rules iptables would encode differently")?;
    check_tools(fam.family.restore_tool())?;
    check_legacy(fam)?;
    check_table(fam)?;
    let mut batch = Batch::new_xt(fam.nfproto);
    batch.new_chain_excl(TABLE, chain, "create iptables chain");
    for rule in &rules {
        batch.append_xt_rule(TABLE, &rule.chain, &rule.exprs, "append iptables rule");
    }
    batch.commit().map_err(|e| format!("{}: {}", e.op, e.source))
}

/// Tries the in-process DEL of the attachment whose chain is `chain`, in the tables of
/// `families`: every POSTROUTING rule jumping to the chain, the chain's rules and the chain, for
/// all families in ONE nf_tables transaction (a transaction that deletes rules makes the kernel
/// wait ~14 ms at commit; the restore tools cost that once per family). True when nothing of it
/// is left; false when the caller must use the tools (the reason is logged), with nothing
/// changed. Same conditions as [`try_add`], except that a family without a `nat` table simply
/// has nothing to delete. `v4`/`v6`: the families to clean.
pub fn try_del(chain: &str, v4: bool, v6: bool) -> bool {
    let families: Vec<&XtFamily> =
        [(v4, &V4), (v6, &V6)].into_iter().filter(|(on, _)| *on).map(|(_, f)| f).collect();
    let mut last = String::new();
    // One retry: a rule or the chain read just before may vanish (a concurrent DEL).
    for _ in 0..2 {
        match del(chain, &families) {
            Ok(()) => return true,
            Err(why) => last = why,
        }
    }
    tracing::debug!(reason = %last, "in-process iptables-nft delete not used, running the tools");
    false
}

fn del(chain: &str, families: &[&XtFamily]) -> Result<(), String> {
    let mut batch: Option<Batch> = None;
    for fam in families {
        check_tools(fam.family.restore_tool())?;
        check_legacy(fam)?;
        let name = fam.table_name();
        let netlink = |e: std::io::Error| format!("read {name}: {e}");
        let mut reader = Reader::open_family(fam.nfproto).map_err(netlink)?;
        // Without a nat table of this family both reads find nothing (the kernel's ENOENT).
        let exists = reader.chain(TABLE, chain).map_err(netlink)?.is_some();
        let jumps: Vec<u64> = reader
            .rules(TABLE, POSTROUTING)
            .map_err(netlink)?
            .into_iter()
            .filter(|r| r.target.as_deref() == Some(chain))
            .map(|r| r.handle)
            .collect();
        if !exists && jumps.is_empty() {
            continue;
        }
        let b = batch.get_or_insert_with(|| Batch::new_xt(fam.nfproto));
        b.set_family(fam.nfproto);
        for handle in jumps {
            b.delete_rule(TABLE, POSTROUTING, handle, "delete iptables jump");
        }
        if exists {
            b.flush_chain(TABLE, chain, "flush iptables chain");
            b.delete_chain(TABLE, chain, "delete iptables chain");
        }
    }
    match batch {
        None => Ok(()),
        Some(b) => b.commit().map_err(|e| format!("{}: {}", e.op, e.source)),
    }
}

/// The host's `iptables-restore` / `ip6tables-restore` (the one the process path and the
/// reference run, found on `PATH`) must be iptables-nft: with the legacy tools, rules written to
/// nf_tables would be invisible to `iptables-save`, so neither our DEL nor the reference's would
/// remove them. Debian's alternatives resolve it to `xtables-nft-multi` (or
/// `xtables-legacy-multi`).
fn check_tools(name: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let tool = find_tool(&path, name).ok_or_else(|| format!("no {name} on PATH"))?;
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
fn check_legacy(fam: &XtFamily) -> Result<(), String> {
    match std::fs::read_to_string(fam.legacy_tables) {
        Ok(names) if names.lines().any(|l| l.trim() == TABLE) => Err("legacy iptables nat table".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("read {}: {e}", fam.legacy_tables)),
    }
}

/// The family's `nat` table exists, is iptables-nft's, and has its built-in POSTROUTING.
fn check_table(fam: &XtFamily) -> Result<(), String> {
    let name = fam.table_name();
    let netlink = |e: std::io::Error| format!("read {name}: {e}");
    let mut reader = Reader::open_family(fam.nfproto).map_err(netlink)?;
    let table = reader.table(TABLE).map_err(netlink)?.ok_or_else(|| format!("no {name} yet"))?;
    if table.flags != 0 || table.has_owner || table.has_userdata {
        return Err(format!("{name} is not iptables-nft's ({table:?})"));
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

/// The rules of [`super::iptables::plan_rules`] for `addrs` (all of `fam`), as iptables-nft 1.8.9
/// encodes them, in the same order and with the same de-duplication. `None` when some rule would
/// not be encoded by our rules here (a /0 subnet, which iptables drops from the rule; a comment
/// iptables refuses).
fn plan(fam: &XtFamily, chain: &str, comment: &str, addrs: &[IpNetwork]) -> Option<Vec<XtRule>> {
    let comment = comment_match(comment)?;
    let mut rules: Vec<XtRule> = Vec::new();
    for addr in addrs {
        let subnet = addr_match(fam.daddr, addr.network(), addr.prefix(), CmpOp::Eq)?;
        let mcast = addr_match(fam.daddr, fam.multicast.0, fam.multicast.1, CmpOp::Neq)?;
        let host = addr_match(fam.saddr, addr.ip(), full_len(addr.ip()), CmpOp::Eq)?;
        let masquerade = Expr::XtTarget { name: "MASQUERADE", rev: 0, info: fam.masquerade_info() };
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

/// The address's bytes in network order.
fn octets(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// 32 or 128.
fn full_len(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `-s`/`-d <addr>/<prefix>` (with `!` for `Neq`), as iptables-nft's `add_addr`: a byte-aligned
/// prefix loads and compares only its bytes; any other prefix loads the whole address and masks
/// it.
fn addr_match(offset: u32, addr: IpAddr, prefix: u8, op: CmpOp) -> Option<Vec<Expr>> {
    let width = full_len(addr);
    if prefix == 0 || prefix > width {
        return None; // iptables leaves a /0 match out of the rule entirely
    }
    let mask: Vec<u8> = (0..width / 8)
        .map(|i| {
            let bits = prefix.saturating_sub(i * 8).min(8);
            u8::MAX.checked_shl(u32::from(8 - bits)).unwrap_or(0)
        })
        .collect();
    let data: Vec<u8> = octets(addr).iter().zip(&mask).map(|(a, m)| a & m).collect();
    if prefix.is_multiple_of(8) {
        let len = prefix / 8;
        let bytes = data.get(..usize::from(len))?.to_vec();
        return Some(vec![Expr::Payload { offset, len: u32::from(len) }, Expr::Cmp { op, data: bytes }]);
    }
    Some(vec![
        Expr::Payload { offset, len: u32::from(width / 8) },
        Expr::Bitwise { mask },
        Expr::Cmp { op, data },
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

    /// `ip6tables-restore --noflush -w` (ip6tables v1.8.9 (nf_tables), Debian 12) of
    /// ```text
    /// *nat
    /// -N CNI-9cccacf967e00a3c04e26966
    /// -A CNI-9cccacf967e00a3c04e26966 -d fd00:10:244:1::/64 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j ACCEPT
    /// -A CNI-9cccacf967e00a3c04e26966 ! -d ff00::/8 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j MASQUERADE
    /// -A POSTROUTING -s fd00:10:244:1::2/128 -m comment --comment "name: \"cbr0\" id: \"ctr1\"" -j CNI-9cccacf967e00a3c04e26966
    /// COMMIT
    /// ```
    /// into a namespace whose ip6 nat table existed, captured the same way (1992 bytes).
    const CAPTURE6: &str = include_str!("ip6tables_nft_capture.hex");

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

    fn capture(text: &str) -> Vec<u8> {
        let hex: String = text.split_whitespace().collect();
        (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
    }

    /// Our batch for one attachment of `addr` (network cbr0, container ctr1).
    fn our_batch(fam: &XtFamily, addr: &str) -> Vec<(u16, u16, Vec<u8>, Vec<u8>)> {
        let addrs: Vec<IpNetwork> = vec![addr.parse().unwrap()];
        let comment = super::super::naming::iptables_comment("cbr0", "ctr1");
        let rules = plan(fam, CHAIN, &comment, &addrs).unwrap();
        let mut batch = Batch::new_xt(fam.nfproto);
        batch.new_chain_excl(TABLE, CHAIN, "chain");
        for rule in &rules {
            batch.append_xt_rule(TABLE, &rule.chain, &rule.exprs, "rule");
        }
        messages(&batch.into_datagram())
    }

    const ACK: u16 = 0x4;

    /// `ours[1..]` against `wanted`: same type, flags (ours add NLM_F_ACK), nfgenmsg, attributes.
    fn assert_same(ours: &[(u16, u16, Vec<u8>, Vec<u8>)], wanted: &[&(u16, u16, Vec<u8>, Vec<u8>)]) {
        for (ours, theirs) in ours.iter().zip(wanted) {
            assert_eq!(ours.0, theirs.0, "message type");
            assert_eq!(ours.1, theirs.1 | ACK, "flags (ours add NLM_F_ACK)");
            assert_eq!(ours.2, theirs.2, "nfgenmsg");
            assert_eq!(ours.3, theirs.3, "attributes of message type {:#x}", ours.0);
        }
    }

    #[test]
    fn batch_is_byte_for_byte_iptables_restores() {
        let theirs = messages(&capture(CAPTURE));
        assert_eq!(theirs.len(), 11);
        let ours = our_batch(&V4, "10.244.1.2/24");
        assert_eq!(ours.len(), 6);
        // iptables' messages we send too: the chain (3rd), the rules (5th, 7th, 10th). Its
        // NEWTABLE nat (2nd, 4th, 6th, 8th) and NEWCHAIN POSTROUTING (9th) are no-ops on the
        // existing table and chain and are not sent.
        assert_same(&ours[1..5], &[&theirs[2], &theirs[4], &theirs[6], &theirs[9]]);
        // Batch begin (iptables adds its generation id) and end: same header and nfgenmsg.
        assert_eq!((ours[0].0, ours[0].1, &ours[0].2), (theirs[0].0, theirs[0].1, &theirs[0].2));
        assert_eq!(ours[5], theirs[10]);
    }

    #[test]
    fn batch_is_byte_for_byte_ip6tables_restores() {
        let theirs = messages(&capture(CAPTURE6));
        assert_eq!(theirs.len(), 7);
        let ours = our_batch(&V6, "fd00:10:244:1::2/64");
        assert_eq!(ours.len(), 6);
        // The chain (2nd), the rules (3rd, 4th, 6th); its NEWCHAIN POSTROUTING (5th) is a no-op.
        assert_same(&ours[1..5], &[&theirs[1], &theirs[2], &theirs[3], &theirs[5]]);
        assert_eq!((ours[0].0, ours[0].1, &ours[0].2), (theirs[0].0, theirs[0].1, &theirs[0].2));
        assert_eq!(ours[5], theirs[6]);
    }

    #[test]
    fn address_matches_follow_iptables_add_addr() {
        let a = |s: &str| s.parse::<IpAddr>().unwrap();
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
        assert_eq!(
            addr_match(24, a("fd00:10:244:1::"), 64, CmpOp::Eq).unwrap(),
            vec![
                Expr::Payload { offset: 24, len: 8 },
                Expr::Cmp { op: CmpOp::Eq, data: vec![0xfd, 0, 0, 0x10, 2, 0x44, 0, 1] }
            ]
        );
        let masked = addr_match(24, a("fd00:10:244:1::"), 60, CmpOp::Neq).unwrap();
        let mut mask = vec![0xff; 7];
        mask.push(0xf0);
        mask.resize(16, 0);
        let mut data = vec![0xfd, 0, 0, 0x10, 2, 0x44, 0, 0];
        data.resize(16, 0);
        assert_eq!(
            masked,
            vec![
                Expr::Payload { offset: 24, len: 16 },
                Expr::Bitwise { mask },
                Expr::Cmp { op: CmpOp::Neq, data }
            ]
        );
        assert_eq!(addr_match(8, a("::"), 0, CmpOp::Eq), None);
        assert_eq!(addr_match(8, a("::1"), 129, CmpOp::Eq), None);
    }

    #[test]
    fn plan_deduplicates_like_the_restore_script() {
        let addrs: Vec<IpNetwork> = vec!["10.244.1.2/24".parse().unwrap(), "10.244.2.3/24".parse().unwrap()];
        let rules = plan(&V4, CHAIN, "c", &addrs).unwrap();
        let chains: Vec<&str> = rules.iter().map(|r| r.chain.as_str()).collect();
        // ACCEPT, MASQUERADE, jump; then the second subnet's ACCEPT and jump (MASQUERADE is shared).
        assert_eq!(chains, [CHAIN, CHAIN, POSTROUTING, CHAIN, POSTROUTING]);
        assert_eq!(plan(&V4, CHAIN, &"x".repeat(256), &addrs), None);
        assert!(plan(&V4, CHAIN, &"x".repeat(255), &addrs).is_some());
        assert!(XtFamily::of(&["10.0.0.2/24".parse().unwrap(), "fd00::2/64".parse().unwrap()]).is_err());
    }
}
