//! The whole nf_tables ruleset of the calling thread's network namespace (families `ip`, `ip6`
//! and `inet`), read in-process with three netlink dumps (tables, chains, rules), and shown the
//! way an operator reads it: iptables-nft's tables as `iptables-save` prints them, and every
//! table in the shape of `nft -j list ruleset` (see [`super::rule_render`]). `weft path` and
//! flanneld's `/debug/dataplane` read the firewall this way instead of starting `iptables-save`,
//! `ip6tables-save` and `nft` (about 1.8 ms of process start-up per read).
//!
//! Rules that the legacy x_tables backend holds (`iptables-legacy`) are not in nf_tables:
//! [`legacy_in_use`] tells a caller to read those with the tools instead.

use std::io;

use super::nfnl::{attrs, be32, cstr, udata_comment, Reader};
use super::nft_abi::*;
use super::rule_terms::{decode, Family, Term};

/// One rule: its terms and its user-data comment (nft's `comment "…"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub terms: Vec<Term>,
    pub comment: Option<String>,
}

/// A base chain's hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hook {
    /// `filter`, `nat`, `route`.
    pub kind: String,
    /// `NF_INET_*`: 0 prerouting, 1 input, 2 forward, 3 output, 4 postrouting.
    pub num: u32,
    pub priority: i32,
    /// The policy: `true` accept, `false` drop.
    pub accept: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// `NFPROTO_INET` 1, `NFPROTO_IPV4` 2, `NFPROTO_IPV6` 10.
    pub family: u8,
    pub name: String,
    pub chains: Vec<Chain>,
}

impl Table {
    /// `ip`, `ip6` or `inet`, as nft names the family.
    pub fn family_name(&self) -> &'static str {
        match self.family {
            NFPROTO_IPV4 => "ip",
            NFPROTO_IPV6 => "ip6",
            _ => "inet",
        }
    }

    /// iptables-nft's own table (`iptables-save` lists it): one of its five table names in
    /// family `ip` (`ip6` for ip6tables).
    pub fn is_iptables(&self, v6: bool) -> bool {
        self.family == if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }
            && matches!(self.name.as_str(), "filter" | "nat" | "mangle" | "raw" | "security")
    }
}

/// The ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub tables: Vec<Table>,
}

const NFTA_CHAIN_POLICY: u16 = 5;
const NF_INET_FAMILIES: [u8; 3] = [NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6];

impl Listing {
    /// Reads the ruleset of the calling thread's network namespace (needs `CAP_NET_ADMIN` there,
    /// as `nft list ruleset` does). A dump the kernel marks interrupted is read again.
    pub fn read() -> io::Result<Listing> {
        let mut reader = Reader::open_family(NFPROTO_UNSPEC)?;
        let tables = reader.dump_all(NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE)?;
        let chains = reader.dump_all(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN)?;
        let rules = reader.dump_all(NFT_MSG_GETRULE, NFT_MSG_NEWRULE)?;
        Ok(Listing::from_dumps(&tables, &chains, &rules))
    }

    /// The tables alone, from one dump (no chains or rules read): enough to tell whether a
    /// table exists, without the cost of decoding a large ruleset.
    pub fn read_tables() -> io::Result<Listing> {
        let mut reader = Reader::open_family(NFPROTO_UNSPEC)?;
        let tables = reader.dump_all(NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE)?;
        Ok(Listing::from_dumps(&tables, &[], &[]))
    }

    /// The listing from the three dumps' messages (family, attributes); objects of other
    /// families (`bridge`, `arp`, `netdev`) are left out.
    fn from_dumps(tables: &[(u8, Vec<u8>)], chains: &[(u8, Vec<u8>)], rules: &[(u8, Vec<u8>)]) -> Listing {
        let mut out = Listing::default();
        for (family, a) in tables.iter().filter(|(f, _)| NF_INET_FAMILIES.contains(f)) {
            if let Some(name) = text_attr(a, NFTA_TABLE_NAME) {
                out.tables.push(Table { family: *family, name, chains: Vec::new() });
            }
        }
        for (family, a) in chains {
            let (Some(table), Some(chain)) = (text_attr(a, NFTA_CHAIN_TABLE), parse_chain(a)) else {
                continue;
            };
            if let Some(t) = out.table_mut(*family, &table) {
                t.chains.push(chain);
            }
        }
        for (family, a) in rules {
            let (Some(table), Some(chain)) = (text_attr(a, NFTA_RULE_TABLE), text_attr(a, NFTA_RULE_CHAIN))
            else {
                continue;
            };
            let rule_family = match *family {
                NFPROTO_IPV4 => Some(Family::V4),
                NFPROTO_IPV6 => Some(Family::V6),
                _ => None,
            };
            let mut rule = Rule { terms: Vec::new(), comment: None };
            for (kind, value) in attrs(a) {
                match kind {
                    NFTA_RULE_EXPRESSIONS => rule.terms = decode(value, rule_family),
                    NFTA_RULE_USERDATA => rule.comment = udata_comment(value),
                    _ => {}
                }
            }
            let chain =
                out.table_mut(*family, &table).and_then(|t| t.chains.iter_mut().find(|c| c.name == chain));
            if let Some(c) = chain {
                c.rules.push(rule);
            }
        }
        out
    }

    fn table_mut(&mut self, family: u8, name: &str) -> Option<&mut Table> {
        self.tables.iter_mut().find(|t| t.family == family && t.name == name)
    }
}

/// Whether the legacy x_tables backend holds tables of this family in the calling thread's
/// network namespace (`/proc/net/ip_tables_names` or `ip6_tables_names` lists them; iptables-nft
/// registers none there). Their rules are only visible to the legacy tools.
pub fn legacy_in_use(v6: bool) -> bool {
    // `thread-self`: `/proc/net` is the thread group leader's namespace, not this thread's.
    let path =
        if v6 { "/proc/thread-self/net/ip6_tables_names" } else { "/proc/thread-self/net/ip_tables_names" };
    std::fs::read_to_string(path).is_ok_and(|names| !names.trim().is_empty())
}

/// The tool that prints the legacy backend's rules of a family: `iptables-legacy-save`
/// (`ip6tables-legacy-save`) where it is installed beside the nft variant (Debian's `iptables`
/// package; there `iptables-save` only warns that legacy tables exist), else `iptables-save`
/// (`ip6tables-save`), which is the legacy one on a legacy-only host.
pub fn legacy_save_tool(v6: bool) -> &'static str {
    let (legacy, plain) = if v6 {
        ("ip6tables-legacy-save", "ip6tables-save")
    } else {
        ("iptables-legacy-save", "iptables-save")
    };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir.join(legacy).is_file()) {
        legacy
    } else {
        plain
    }
}

fn parse_chain(a: &[u8]) -> Option<Chain> {
    let mut chain = Chain { name: text_attr(a, NFTA_CHAIN_NAME)?, hook: None, rules: Vec::new() };
    let (mut kind, mut num, mut priority, mut accept) = (None, None, None, true);
    for (attr, value) in attrs(a) {
        match attr {
            NFTA_CHAIN_TYPE => kind = Some(cstr(value)),
            NFTA_CHAIN_POLICY => accept = be32(value).is_none_or(|p| p == NF_ACCEPT as u32),
            NFTA_CHAIN_HOOK => {
                for (h, v) in attrs(value) {
                    match h {
                        NFTA_HOOK_HOOKNUM => num = be32(v),
                        NFTA_HOOK_PRIORITY => priority = be32(v).map(|p| i32::from_be_bytes(p.to_be_bytes())),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let (Some(kind), Some(num), Some(priority)) = (kind, num, priority) {
        chain.hook = Some(Hook { kind, num, priority, accept });
    }
    Some(chain)
}

fn text_attr(a: &[u8], kind: u16) -> Option<String> {
    attrs(a).into_iter().find(|(k, _)| *k == kind).map(|(_, v)| cstr(v))
}
