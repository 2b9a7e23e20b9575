//! A [`Listing`] shown as an operator's tools show it: iptables-nft's tables in `iptables-save`'s
//! syntax (`*filter`, `:CHAIN POLICY [0:0]`, `-A CHAIN -s … -j …`, `COMMIT`), and the whole
//! ruleset in the shape of `nft -j list ruleset` (`{"nftables": [{"table": …}, {"chain": …},
//! {"rule": {…, "expr": […]}}]}`).
//!
//! The matches weft reads (addresses, interfaces, protocol, mark, conntrack state, ports,
//! comments) print as `iptables-save` prints them, and the common targets with their options
//! (`MASQUERADE --random-fully`, `REJECT --reject-with …`). Any other match prints as
//! `-m <name>` without its options (in JSON, a `match` on `{"<name>": null}`), so a reader
//! that evaluates the text skips that rule rather than taking it for a match.

use serde_json::{json, Value};

use super::listing::{Listing, Rule, Table};
use super::rule_terms::{Key, Term};

/// A JSON object of `fields`, moved in (`json!` would copy an interpolated `Value`).
fn obj<const N: usize>(fields: [(&str, Value); N]) -> Value {
    Value::Object(fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
}

/// nft's names of the `NF_INET_*` hooks, by hook number (`hook forward` …).
const HOOK_NAMES: [&str; 5] = ["prerouting", "input", "forward", "output", "postrouting"];

impl Listing {
    /// `iptables-save` (`ip6tables-save` with `v6`) of iptables-nft's tables: empty when there
    /// is none. With `only` (`-t <table>`) that table alone, and like the tool, its built-in
    /// chains with policy ACCEPT when the table does not exist.
    pub fn iptables_save(&self, v6: bool, only: Option<&str>) -> String {
        let mut out = String::new();
        for t in self.tables.iter().filter(|t| t.is_iptables(v6) && only.is_none_or(|o| o == t.name)) {
            save_table(t, &mut out);
        }
        if let Some(name) = only.filter(|_| out.is_empty()) {
            let empty = Table { family: if v6 { 10 } else { 2 }, name: name.to_string(), chains: Vec::new() };
            if empty.is_iptables(v6) {
                save_table(&empty, &mut out);
            }
        }
        out
    }

    /// The ruleset in `nft -j list ruleset`'s shape (tables, chains with their hook and policy,
    /// rules with their expressions; no handles or counters). Without `iptables_tables`,
    /// iptables-nft's own tables (those [`Listing::iptables_save`] shows) are left out.
    pub fn nft_json(&self, iptables_tables: bool) -> Value {
        let mut items = Vec::new();
        let shown = |t: &&Table| iptables_tables || !(t.is_iptables(false) || t.is_iptables(true));
        for t in self.tables.iter().filter(shown) {
            let family = t.family_name();
            items.push(json!({"table": {"family": family, "name": t.name}}));
            for c in &t.chains {
                let mut chain = json!({"family": family, "table": t.name, "name": c.name});
                if let Some(h) = &c.hook {
                    chain["type"] = json!(h.kind);
                    chain["hook"] = json!(HOOK_NAMES.get(h.num as usize).copied().unwrap_or("unknown"));
                    chain["prio"] = json!(h.priority);
                    chain["policy"] = json!(if h.accept { "accept" } else { "drop" });
                }
                items.push(obj([("chain", chain)]));
            }
            for c in &t.chains {
                for r in &c.rules {
                    let mut rule = obj([
                        ("family", json!(family)),
                        ("table", json!(t.name)),
                        ("chain", json!(c.name)),
                        ("expr", Value::Array(exprs_json(r))),
                    ]);
                    if let Some(comment) = &r.comment {
                        rule["comment"] = json!(comment);
                    }
                    items.push(obj([("rule", rule)]));
                }
            }
        }
        obj([("nftables", Value::Array(items))])
    }
}

/// The built-in chains iptables-nft shows for a table, in `iptables-save`'s order (whether or
/// not it has created them in the kernel yet).
fn builtin_chains(table: &str) -> &'static [&'static str] {
    match table {
        "filter" | "security" => &["INPUT", "FORWARD", "OUTPUT"],
        "nat" => &["PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"],
        "mangle" => &["PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"],
        "raw" => &["PREROUTING", "OUTPUT"],
        _ => &[],
    }
}

fn save_table(t: &Table, out: &mut String) {
    let v6 = t.family_name() == "ip6";
    out.push_str(&format!("*{}\n", t.name));
    let builtin = builtin_chains(&t.name);
    for name in builtin {
        let accept =
            t.chains.iter().find(|c| c.name == *name).and_then(|c| c.hook.as_ref()).is_none_or(|h| h.accept);
        out.push_str(&format!(":{name} {} [0:0]\n", if accept { "ACCEPT" } else { "DROP" }));
    }
    let user: Vec<_> = t.chains.iter().filter(|c| !builtin.contains(&c.name.as_str())).collect();
    for c in &user {
        out.push_str(&format!(":{} - [0:0]\n", c.name));
    }
    let ordered = builtin.iter().filter_map(|n| t.chains.iter().find(|c| c.name == *n)).chain(user);
    for c in ordered {
        for r in &c.rules {
            out.push_str(&format!("-A {}{}\n", c.name, rule_text(r, v6)));
        }
    }
    out.push_str("COMMIT\n");
}

/// One rule after `-A <chain>`: ` -s … -d … -i … -o … -p …`, then the other matches in the
/// rule's order, then the target, each with its leading space.
fn rule_text(r: &Rule, v6: bool) -> String {
    let mut head = String::new();
    let not = |neg: bool| if neg { " !" } else { "" };
    let fixed: [fn(&Key) -> Option<String>; 5] = [
        |k| matches!(k, Key::Saddr(_)).then(|| format!(" -s {}", net(k))),
        |k| matches!(k, Key::Daddr(_)).then(|| format!(" -d {}", net(k))),
        |k| match k {
            Key::Iif { name, wildcard } => Some(format!(" -i {name}{}", if *wildcard { "+" } else { "" })),
            _ => None,
        },
        |k| match k {
            Key::Oif { name, wildcard } => Some(format!(" -o {name}{}", if *wildcard { "+" } else { "" })),
            _ => None,
        },
        |k| match k {
            Key::Proto(p) => Some(format!(" -p {}", proto_name(*p))),
            _ => None,
        },
    ];
    for pick in fixed {
        for t in &r.terms {
            if let Term::Match { key, neg } = t {
                if let Some(s) = pick(key) {
                    head.push_str(not(*neg));
                    head.push_str(&s);
                }
            }
        }
    }
    let proto = r.terms.iter().find_map(|t| match t {
        Term::Match { key: Key::Proto(p), neg: false } => Some(*p),
        _ => None,
    });
    let mut tail = String::new();
    let mut comment_seen = false;
    for t in &r.terms {
        match t {
            Term::Match { key: Key::Mark { value, mask }, neg } => {
                tail.push_str(&format!(" -m mark{} --mark {value:#x}", not(*neg)));
                if *mask != u32::MAX {
                    tail.push_str(&format!("/{mask:#x}"));
                }
            }
            Term::Match { key: Key::CtState(bits), neg } => {
                tail.push_str(&format!(" -m conntrack{} --ctstate {}", not(*neg), ct_states(*bits)));
            }
            Term::Match { key: Key::Port { dst, port }, .. } => {
                let m = proto.map_or_else(|| "tcp".to_string(), proto_name);
                tail.push_str(&format!(" -m {m} --{}port {port}", if *dst { "d" } else { "s" }));
            }
            // The family check nft adds; iptables has no such option.
            Term::Match { key: Key::Nfproto(n), neg } if !neg && *n == if v6 { 10 } else { 2 } => {}
            Term::Match { key: Key::Nfproto(_), .. } => tail.push_str(" -m nfproto"),
            Term::Unknown(name) => tail.push_str(&format!(" -m {name}")),
            Term::Comment(c) => {
                comment_seen = true;
                tail.push_str(&format!(" -m comment --comment{}", save_string(c)));
            }
            _ => {}
        }
    }
    if let (Some(c), false) = (&r.comment, comment_seen) {
        tail.push_str(&format!(" -m comment --comment{}", save_string(c)));
    }
    let target = r.terms.iter().find_map(|t| target_text(t, v6)).unwrap_or_default();
    format!("{head}{tail}{target}")
}

fn target_text(t: &Term, v6: bool) -> Option<String> {
    Some(match t {
        Term::Accept => " -j ACCEPT".into(),
        Term::Drop => " -j DROP".into(),
        Term::Return => " -j RETURN".into(),
        Term::Jump(c) => format!(" -j {c}"),
        Term::Goto(c) => format!(" -g {c}"),
        Term::XtTarget { name, info, .. } => format!(" -j {name}{}", xt_target_options(name, info, v6)),
        Term::Masq { flags } => format!(" -j MASQUERADE{}", nat_flags(*flags)),
        Term::Snat => " -j SNAT".into(),
        Term::Dnat => " -j DNAT".into(),
        Term::Reject => " -j REJECT".into(),
        _ => return None,
    })
}

/// The options `iptables-save` prints for the targets flannel and CNI rules use.
fn xt_target_options(name: &str, info: &[u8], v6: bool) -> String {
    let u32_at =
        |o: usize| info.get(o..o + 4).and_then(|b| <[u8; 4]>::try_from(b).ok()).map(u32::from_ne_bytes);
    let u16_at =
        |o: usize| info.get(o..o + 2).and_then(|b| <[u8; 2]>::try_from(b).ok()).map(u16::from_be_bytes);
    match name {
        "MASQUERADE" => {
            // IPv4: nf_nat_ipv4_multi_range_compat (rangesize, then flags, min_ip, max_ip, min
            // and max port); IPv6: nf_nat_range (flags, min/max address, min/max port).
            let (flags, ports) = if v6 { (u32_at(0), 36) } else { (u32_at(4), 16) };
            let flags = flags.unwrap_or(0);
            let mut s = String::new();
            if flags & NAT_PROTO_SPECIFIED != 0 {
                if let (Some(min), Some(max)) = (u16_at(ports), u16_at(ports + 2)) {
                    s.push_str(&if min == max {
                        format!(" --to-ports {min}")
                    } else {
                        format!(" --to-ports {min}-{max}")
                    });
                }
            }
            s + &nat_flags(flags & !NAT_PROTO_SPECIFIED)
        }
        "REJECT" => {
            let names: &[&str] = if v6 { &REJECT6 } else { &REJECT4 };
            u32_at(0)
                .and_then(|w| names.get(w as usize))
                .filter(|n| !n.is_empty())
                .map(|n| format!(" --reject-with {n}"))
                .unwrap_or_default()
        }
        _ => String::new(),
    }
}

const NAT_PROTO_SPECIFIED: u32 = 0x2;
const NAT_PROTO_RANDOM: u32 = 0x4;
const NAT_PROTO_RANDOM_FULLY: u32 = 0x10;

/// `ipt_reject_with` and `ip6t_reject_with`, as libxt_REJECT names them.
const REJECT4: [&str; 9] = [
    "icmp-net-unreachable",
    "icmp-host-unreachable",
    "icmp-proto-unreachable",
    "icmp-port-unreachable",
    "",
    "icmp-net-prohibited",
    "icmp-host-prohibited",
    "tcp-reset",
    "icmp-admin-prohibited",
];
const REJECT6: [&str; 9] = [
    "icmp6-no-route",
    "icmp6-adm-prohibited",
    "",
    "icmp6-addr-unreachable",
    "icmp6-port-unreachable",
    "",
    "tcp-reset",
    "icmp6-policy-fail",
    "icmp6-reject-route",
];

fn nat_flags(flags: u32) -> String {
    let mut s = String::new();
    if flags & NAT_PROTO_RANDOM != 0 {
        s.push_str(" --random");
    }
    if flags & NAT_PROTO_RANDOM_FULLY != 0 {
        s.push_str(" --random-fully");
    }
    s
}

fn net(k: &Key) -> String {
    match k {
        Key::Saddr(n) | Key::Daddr(n) => format!("{}/{}", n.network(), n.prefix()),
        _ => String::new(),
    }
}

fn proto_name(p: u8) -> String {
    match p {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        50 => "esp".into(),
        51 => "ah".into(),
        58 => "ipv6-icmp".into(),
        132 => "sctp".into(),
        136 => "udplite".into(),
        other => other.to_string(),
    }
}

/// `--ctstate`'s states in libxt_conntrack's order.
fn ct_states(bits: u32) -> String {
    const STATES: [(u32, &str); 5] =
        [(1, "INVALID"), (8, "NEW"), (4, "RELATED"), (2, "ESTABLISHED"), (64, "UNTRACKED")];
    let names: Vec<&str> = STATES.iter().filter(|(b, _)| bits & b != 0).map(|(_, n)| *n).collect();
    names.join(",")
}

/// libxtables' `xtables_save_string`: bare when only `[A-Za-z0-9_-]`, else double-quoted with
/// `"`, `\` and `'` escaped; with its leading space.
fn save_string(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return format!(" {s}");
    }
    let mut out = String::from(" \"");
    for c in s.chars() {
        if matches!(c, '"' | '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// nft's JSON leaves out the `meta nfproto` check it adds in front of an address match of an
/// `inet` table (the address's family already says it).
fn implied_nfproto(t: &Term, next: Option<&Term>) -> bool {
    let Term::Match { key: Key::Nfproto(n), neg: false } = t else { return false };
    matches!(next, Some(Term::Match { key: Key::Saddr(a) | Key::Daddr(a), .. }) if a.is_ipv6() == (*n == 10))
}

/// A rule's expressions in `nft -j`'s vocabulary.
fn exprs_json(r: &Rule) -> Vec<Value> {
    let m = |op: bool, left: Value, right: Value| {
        obj([("match", obj([("op", json!(if op { "!=" } else { "==" })), ("left", left), ("right", right)]))])
    };
    let mut out = Vec::new();
    for (i, t) in r.terms.iter().enumerate() {
        if implied_nfproto(t, r.terms.get(i + 1)) {
            continue;
        }
        out.push(match t {
            Term::Match { key, neg } => match key {
                Key::Saddr(n) | Key::Daddr(n) => {
                    // The address's own family (in an inet table, the nfproto check's).
                    let proto = if n.is_ipv6() { "ip6" } else { "ip" };
                    let field = if matches!(key, Key::Saddr(_)) { "saddr" } else { "daddr" };
                    let full = if n.is_ipv6() { 128 } else { 32 };
                    let right = if n.prefix() == full {
                        json!(n.ip().to_string())
                    } else {
                        json!({"prefix": {"addr": n.network().to_string(), "len": n.prefix()}})
                    };
                    m(*neg, json!({"payload": {"protocol": proto, "field": field}}), right)
                }
                Key::Iif { name, wildcard } | Key::Oif { name, wildcard } => {
                    let key = if matches!(key, Key::Iif { .. }) { "iifname" } else { "oifname" };
                    let right = if *wildcard { format!("{name}*") } else { name.clone() };
                    m(*neg, json!({"meta": {"key": key}}), json!(right))
                }
                Key::Nfproto(n) => {
                    let name = match n {
                        2 => "ipv4".to_string(),
                        10 => "ipv6".to_string(),
                        other => other.to_string(),
                    };
                    m(*neg, json!({"meta": {"key": "nfproto"}}), json!(name))
                }
                Key::Proto(p) => m(*neg, json!({"meta": {"key": "l4proto"}}), json!(p)),
                Key::Mark { value, mask } if *mask == u32::MAX => {
                    m(*neg, json!({"meta": {"key": "mark"}}), json!(value))
                }
                Key::Mark { value, mask } => {
                    m(*neg, json!({"&": [{"meta": {"key": "mark"}}, mask]}), json!(value))
                }
                Key::CtState(bits) => json!({"match": {"op": "in", "left": {"ct": {"key": "state"}},
                    "right": ct_states(*bits).to_lowercase().split(',').collect::<Vec<_>>()}}),
                Key::Port { dst, port } => {
                    let field = if *dst { "dport" } else { "sport" };
                    m(*neg, json!({"payload": {"protocol": "th", "field": field}}), json!(port))
                }
            },
            Term::Unknown(name) => {
                json!({"match": {"op": "==", "left": {name.as_str(): null}, "right": null}})
            }
            Term::Comment(c) => json!({"xt": {"type": "match", "name": "comment", "comment": c}}),
            Term::Accept => json!({"accept": null}),
            Term::Drop => json!({"drop": null}),
            Term::Return => json!({"return": null}),
            Term::Jump(c) => json!({"jump": {"target": c}}),
            Term::Goto(c) => json!({"goto": {"target": c}}),
            Term::XtTarget { name, .. } => json!({"xt": {"type": "target", "name": name}}),
            Term::Masq { .. } => json!({"masquerade": null}),
            Term::Snat => json!({"snat": {}}),
            Term::Dnat => json!({"dnat": {}}),
            Term::Reject => json!({"reject": null}),
            Term::Statement(name) => json!({ name.as_str(): null }),
        });
    }
    out
}
