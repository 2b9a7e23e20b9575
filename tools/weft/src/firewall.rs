//! The firewall's verdict for one packet, from the rules of the calling process's namespace:
//! iptables-nft's tables in `iptables-save`'s text, native nftables tables in `nft -j list
//! ruleset`'s shape, both read in-process over netlink
//! ([`weft_common::firewall::listing::Listing`]); only a family whose rules the legacy x_tables
//! backend holds is read with `iptables-save`/`ip6tables-save`.
//!
//! netfilter cannot be asked "what would you do with this packet" without sending it, so the
//! rules are walked here for a NEW packet (no conntrack state, no mark) of either family: the
//! IPv4 rules (`iptables-save`, nft `ip`/`inet` tables) for IPv4, the IPv6 rules
//! (`ip6tables-save`, nft `ip6`/`inet` tables) for IPv6: `-s`, `-d`, `-i`,
//! `-o`, `-p` and comments are evaluated; a rule with any other match is taken as not
//! matching a new unmarked packet (`--ctstate RELATED,ESTABLISHED`, `--mark` ...) and listed
//! in [`Verdict::skipped`]. `--probe` sends a real packet when this is not enough.

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};

use ipnetwork::IpNetwork;
use serde::Serialize;
use serde_json::Value;
use weft_common::firewall::listing::{legacy_in_use, legacy_save_tool, Listing};

/// One packet as the rules see it.
#[derive(Debug, Clone)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub iif: Option<&'a str>,
    pub oif: Option<&'a str>,
}

/// What a chain walk decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `ACCEPT`, `DROP`, `REJECT`, `MASQUERADE`, `SNAT`, or the policy (`policy ACCEPT`).
    pub verdict: String,
    /// The deciding rule, as `iptables-save` prints it (matches weft does not read by name
    /// only, see [`weft_common::firewall::listing`]), or `<family> <table> <chain>: <nft -j
    /// expressions>`.
    pub rule: Option<String>,
    /// Rules skipped because they use matches weft does not evaluate.
    pub skipped: Vec<String>,
}

impl Verdict {
    pub fn drops(&self) -> bool {
        self.verdict.contains("DROP") || self.verdict.contains("REJECT")
    }
    /// `ACCEPT (<rule>)`, or the verdict alone when a policy decided.
    pub fn shown(&self) -> String {
        match &self.rule {
            Some(r) => format!("{} ({r})", self.verdict),
            None => self.verdict.clone(),
        }
    }
    pub fn masquerades(&self) -> bool {
        self.verdict == "MASQUERADE" || self.verdict == "SNAT"
    }
}

impl Packet<'_> {
    fn v6(&self) -> bool {
        self.dst.is_ipv6()
    }
}

/// The rules of this namespace.
#[derive(Debug, Clone, Default)]
pub struct Ruleset {
    pub nat: Option<String>,
    pub filter: Option<String>,
    /// `ip6tables-save`'s nat and filter tables (the IPv6 packet's rules).
    pub nat6: Option<String>,
    pub filter6: Option<String>,
    pub nft: Option<Value>,
}

/// Starts a system tool (a missing tool reads as no output).
fn start(argv: &[&str]) -> Option<Child> {
    let (cmd, args) = argv.split_first()?;
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()
}

/// Its standard output, if it succeeded.
fn finish(child: Option<Child>) -> Option<String> {
    let out = child?.wait_with_output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One table (`*nat` … `COMMIT`) of a whole `iptables-save` dump.
fn table(saved: &str, name: &str) -> Option<String> {
    let head = format!("*{name}");
    let mut lines = saved.lines().skip_while(|l| l.trim_end() != head);
    lines.next()?;
    let body: Vec<&str> = lines.take_while(|l| l.trim_end() != "COMMIT").collect();
    Some(format!("{head}\n{}\nCOMMIT\n", body.join("\n")))
}

impl Ruleset {
    /// Reads the rules of both families.
    pub fn read() -> Ruleset {
        Ruleset::read_families(true)
    }

    /// Like [`Ruleset::read`]; without `ipv6` (an IPv4 packet's walk) the IPv6 tables read as
    /// absent. nf_tables is read in-process; a family the legacy backend holds is read with
    /// [`legacy_save_tool`] instead (a host mixing both backends for one family is judged by its
    /// legacy rules), and when the netlink read fails, everything is read with the tools (a
    /// missing tool reads as no rules).
    pub fn read_families(ipv6: bool) -> Ruleset {
        let Ok(listing) = Listing::read() else { return Ruleset::read_with_tools(ipv6) };
        let legacy6 = ipv6 && legacy_in_use(true);
        let ipt = legacy_in_use(false).then(|| start(&[legacy_save_tool(false)]));
        let ip6t = legacy6.then(|| start(&[legacy_save_tool(true)]));
        let saved = ipt.map_or_else(|| Some(listing.iptables_save(false, None)), finish);
        let saved6 = match ip6t {
            Some(child) => finish(child),
            None => ipv6.then(|| listing.iptables_save(true, None)),
        };
        Ruleset::from_saved(saved, saved6, Some(listing.nft_json(false)))
    }

    /// The same with the system tools: one `iptables-save` and one `ip6tables-save` for every
    /// table and one `nft -j list ruleset`, all started before any is waited for.
    pub fn read_with_tools(ipv6: bool) -> Ruleset {
        let ipt = start(&["iptables-save"]);
        let ip6t = if ipv6 { start(&["ip6tables-save"]) } else { None };
        let nft = start(&["nft", "-j", "list", "ruleset"]);
        let saved = finish(ipt);
        let saved6 = finish(ip6t);
        Ruleset::from_saved(saved, saved6, finish(nft).and_then(|t| serde_json::from_str(&t).ok()))
    }

    fn from_saved(saved: Option<String>, saved6: Option<String>, nft: Option<Value>) -> Ruleset {
        Ruleset {
            nat: saved.as_deref().and_then(|t| table(t, "nat")),
            filter: saved.as_deref().and_then(|t| table(t, "filter")),
            nat6: saved6.as_deref().and_then(|t| table(t, "nat")),
            filter6: saved6.as_deref().and_then(|t| table(t, "filter")),
            nft,
        }
    }

    /// Another node's filter rules as its flanneld's `/debug/dataplane` carries them
    /// (`firewall`: `iptables-save -t filter` and `ip6tables-save -t filter` text and `nft -j
    /// list ruleset`); `None` when the view has none (collected without them, or by an older
    /// flanneld).
    pub fn from_view(view: &Value) -> Option<Ruleset> {
        let fw = view.get("firewall").filter(|f| f.is_object())?;
        let filter = |key: &str| fw.get(key).and_then(Value::as_str).and_then(|t| table(t, "filter"));
        Some(Ruleset {
            filter: filter("iptables_filter"),
            filter6: filter("ip6tables_filter"),
            nft: fw.get("nft").filter(|n| !n.is_null()).cloned(),
            ..Ruleset::default()
        })
    }

    /// The FORWARD verdict (iptables filter FORWARD, then any nftables forward hook with a
    /// drop policy or drop rule that iptables-nft did not write).
    /// The packet's family picks the iptables or ip6tables table.
    pub fn forward(&self, p: &Packet) -> Verdict {
        let filter = if p.v6() { &self.filter6 } else { &self.filter };
        self.verdict(filter.as_deref(), ("FORWARD", "forward"), p, Verdict::drops)
    }

    /// The nat POSTROUTING verdict (masquerade or not), of the packet's family.
    pub fn postrouting(&self, p: &Packet) -> Verdict {
        let nat = if p.v6() { &self.nat6 } else { &self.nat };
        self.verdict(nat.as_deref(), ("POSTROUTING", "postrouting"), p, Verdict::masquerades)
    }

    /// The verdict of the iptables chain in `table` when it `decides`, else of the nftables
    /// hook when that one decides, else the iptables chain's (the policy when there is none).
    fn verdict(
        &self,
        table: Option<&str>,
        (chain, hook): (&str, &str),
        p: &Packet,
        decides: fn(&Verdict) -> bool,
    ) -> Verdict {
        let ipt = table.map(|t| walk(t, chain, p));
        if let Some(v) = ipt.as_ref().filter(|v| decides(v)) {
            return v.clone();
        }
        if let Some(v) = self.nft.as_ref().and_then(|n| nft_hook(n, hook, p)).filter(decides) {
            return v;
        }
        ipt.unwrap_or(Verdict { verdict: "policy ACCEPT".into(), rule: None, skipped: vec![] })
    }
}

/// Splits an `iptables-save` rule line into words, keeping quoted comments whole.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut escaped = false;
    let mut any = false;
    for c in line.chars() {
        if escaped {
            cur.push(c);
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
            any = true;
        } else if c.is_whitespace() && !quoted {
            if any || !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
                any = false;
            }
        } else {
            cur.push(c);
        }
    }
    if any || !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// `spec` (an address or prefix of either family) holds `ip`; a prefix of the other family
/// never does.
fn net_matches(spec: &str, ip: IpAddr) -> bool {
    let net = if spec.contains('/') {
        spec.parse::<IpNetwork>().ok()
    } else {
        spec.parse::<IpAddr>().ok().map(IpNetwork::from)
    };
    net.is_some_and(|n| n.is_ipv6() == ip.is_ipv6() && n.contains(ip))
}

fn if_matches(spec: &str, name: Option<&str>) -> bool {
    let Some(name) = name else { return false };
    match spec.strip_suffix('+') {
        Some(prefix) => name.starts_with(prefix),
        None => name == spec,
    }
}

/// What one rule does with the packet.
enum RuleOutcome {
    NoMatch,
    Skipped,
    Target(String, bool),
}

fn rule_outcome(w: &[String], p: &Packet) -> RuleOutcome {
    let mut i = 0;
    let mut negate = false;
    let mut target = None;
    let mut goto = false;
    while let Some(word) = w.get(i) {
        let arg = w.get(i + 1).map(String::as_str).unwrap_or("");
        let ok = match word.as_str() {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" | "--source" => net_matches(arg, p.src),
            "-d" | "--destination" => net_matches(arg, p.dst),
            "-i" | "--in-interface" => if_matches(arg, p.iif),
            "-o" | "--out-interface" => if_matches(arg, p.oif),
            // Probe and ping traffic is ICMP (ICMPv6 for IPv6); a rule for another protocol
            // does not match it.
            "-p" | "--protocol" if p.v6() => {
                matches!(arg, "ipv6-icmp" | "icmpv6" | "icmp6" | "all" | "58")
            }
            "-p" | "--protocol" => matches!(arg, "icmp" | "all" | "1"),
            "-m" if arg == "comment" => {
                i += 2;
                continue;
            }
            "--comment" => {
                i += 2;
                continue;
            }
            "-j" | "-g" => {
                goto = word == "-g";
                target = Some(arg.to_string());
                // Target options (`--random-fully`, `--to-source` ...) follow; they do not match.
                break;
            }
            _ => return RuleOutcome::Skipped,
        };
        if ok == negate {
            return RuleOutcome::NoMatch;
        }
        negate = false;
        i += 2;
    }
    match target {
        Some(t) => RuleOutcome::Target(t, goto),
        None => RuleOutcome::NoMatch,
    }
}

/// Walks `chain` of an `iptables-save` table for `p`.
pub fn walk(saved: &str, chain: &str, p: &Packet) -> Verdict {
    let mut skipped = Vec::new();
    let policy = saved
        .lines()
        .find_map(|l| {
            l.strip_prefix(&format!(":{chain} "))
                .map(|r| r.split_whitespace().next().unwrap_or("-").to_string())
        })
        .unwrap_or_else(|| "ACCEPT".into());
    match walk_chain(saved, chain, p, &mut skipped, 0) {
        Some((verdict, rule)) => Verdict { verdict, rule: Some(rule), skipped },
        None => Verdict { verdict: format!("policy {policy}"), rule: None, skipped },
    }
}

fn walk_chain(
    saved: &str,
    chain: &str,
    p: &Packet,
    skipped: &mut Vec<String>,
    depth: usize,
) -> Option<(String, String)> {
    if depth > 16 {
        return None;
    }
    let prefix = format!("-A {chain} ");
    for line in saved.lines().filter(|l| l.starts_with(&prefix)) {
        let w = words(line.get(prefix.len()..).unwrap_or(""));
        match rule_outcome(&w, p) {
            RuleOutcome::NoMatch => {}
            RuleOutcome::Skipped => skipped.push(line.to_string()),
            RuleOutcome::Target(t, goto) => match t.as_str() {
                "ACCEPT" | "DROP" | "REJECT" | "MASQUERADE" | "SNAT" | "DNAT" => {
                    return Some((t, line.to_string()))
                }
                "RETURN" => return None,
                "LOG" | "MARK" | "CONNMARK" | "NFLOG" | "TRACE" | "CT" => {}
                user => {
                    if let Some(v) = walk_chain(saved, user, p, skipped, depth + 1) {
                        return Some(v);
                    }
                    if goto {
                        return None;
                    }
                }
            },
        }
    }
    None
}

/// Native nftables base chains on `hook` (tables not written by iptables-nft): the verdict of
/// the first rule whose `ip saddr`/`ip daddr`/`iifname`/`oifname` matches all hold, else the
/// chain policy. Rules with other matches are skipped (see the module doc).
fn nft_hook(ruleset: &Value, hook: &str, p: &Packet) -> Option<Verdict> {
    let items = ruleset.get("nftables")?.as_array()?;
    let mut result: Option<Verdict> = None;
    for chain in items.iter().filter_map(|i| i.get("chain")) {
        if chain.get("hook").and_then(Value::as_str) != Some(hook) {
            continue;
        }
        let family = chain.get("family").and_then(Value::as_str).unwrap_or("");
        let own = if p.v6() { "ip6" } else { "ip" };
        if family != own && family != "inet" {
            continue;
        }
        let (table, name) =
            (chain.get("table").and_then(Value::as_str)?, chain.get("name").and_then(Value::as_str)?);
        // iptables-nft's (ip6tables-nft's) own tables are judged from iptables-save
        // (ip6tables-save).
        if matches!(table, "filter" | "nat" | "mangle" | "raw" | "security") && family == own {
            continue;
        }
        let mut skipped = Vec::new();
        let v = nft_walk(items, family, table, name, p, &mut skipped, 0);
        let policy = chain.get("policy").and_then(Value::as_str).unwrap_or("accept");
        let verdict = match v {
            Some((verdict, rule)) => Verdict { verdict, rule: Some(rule), skipped },
            None => Verdict {
                verdict: format!("policy {}", policy.to_uppercase()),
                rule: Some(format!("{family} {table} {name}")),
                skipped,
            },
        };
        if verdict.drops() || verdict.masquerades() || result.is_none() {
            result = Some(verdict);
        }
        if result.as_ref().is_some_and(|r| r.drops() || r.masquerades()) {
            break;
        }
    }
    result
}

fn nft_walk(
    items: &[Value],
    family: &str,
    table: &str,
    chain: &str,
    p: &Packet,
    skipped: &mut Vec<String>,
    depth: usize,
) -> Option<(String, String)> {
    if depth > 16 {
        return None;
    }
    let rules = items.iter().filter_map(|i| i.get("rule")).filter(|r| {
        r.get("family").and_then(Value::as_str) == Some(family)
            && r.get("table").and_then(Value::as_str) == Some(table)
            && r.get("chain").and_then(Value::as_str) == Some(chain)
    });
    for rule in rules {
        let text = format!(
            "{family} {table} {chain}: {}",
            rule.get("expr").map(Value::to_string).unwrap_or_default()
        );
        let exprs = rule.get("expr").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut matched = true;
        let mut verdict: Option<(String, Option<String>)> = None;
        for e in &exprs {
            if let Some(m) = e.get("match") {
                match nft_match(m, p) {
                    Some(true) => {}
                    Some(false) => {
                        matched = false;
                        break;
                    }
                    None => {
                        skipped.push(text.clone());
                        matched = false;
                        break;
                    }
                }
            } else if e.get("accept").is_some() {
                verdict = Some(("ACCEPT".into(), None));
            } else if e.get("drop").is_some() {
                verdict = Some(("DROP".into(), None));
            } else if e.get("reject").is_some() {
                verdict = Some(("REJECT".into(), None));
            } else if e.get("masquerade").is_some() {
                verdict = Some(("MASQUERADE".into(), None));
            } else if e.get("snat").is_some() {
                verdict = Some(("SNAT".into(), None));
            } else if e.get("return").is_some() {
                verdict = Some(("RETURN".into(), None));
            } else if let Some(t) =
                e.pointer("/jump/target").or_else(|| e.pointer("/goto/target")).and_then(Value::as_str)
            {
                verdict = Some(("JUMP".into(), Some(t.to_string())));
            }
        }
        if !matched {
            continue;
        }
        match verdict {
            Some((v, _)) if v == "RETURN" => return None,
            Some((v, Some(target))) if v == "JUMP" => {
                if let Some(r) = nft_walk(items, family, table, &target, p, skipped, depth + 1) {
                    return Some(r);
                }
            }
            Some((v, _)) => return Some((v, text)),
            None => {}
        }
    }
    None
}

/// `Some(matches)` for the matches weft evaluates, `None` for others.
fn nft_match(m: &Value, p: &Packet) -> Option<bool> {
    let op = m.get("op").and_then(Value::as_str).unwrap_or("==");
    let left = m.get("left")?;
    let right = m.get("right")?;
    let field = left.pointer("/payload/field").and_then(Value::as_str);
    let proto = left.pointer("/payload/protocol").and_then(Value::as_str);
    let meta = left.pointer("/meta/key").and_then(Value::as_str);
    // An `ip` address match never holds for an IPv6 packet (in an `inet` table), nor `ip6` for
    // IPv4, whatever its operator: nft adds the implicit `meta nfproto` dependency.
    if matches!(proto, Some("ip" | "ip6")) && proto != Some(own_proto(p)) {
        return Some(false);
    }
    let hit = match (proto, field, meta) {
        (Some("ip" | "ip6"), Some("saddr"), _) => nft_net(right, p.src)?,
        (Some("ip" | "ip6"), Some("daddr"), _) => nft_net(right, p.dst)?,
        (_, _, Some("iifname")) => if_matches(&right.as_str()?.replace('*', "+"), p.iif),
        (_, _, Some("oifname")) => if_matches(&right.as_str()?.replace('*', "+"), p.oif),
        (_, _, Some("nfproto")) => right.as_str()? == if p.v6() { "ipv6" } else { "ipv4" },
        (_, _, Some("mark")) => right.as_u64()? == 0,
        _ => return None,
    };
    match op {
        "==" | "in" => Some(hit),
        "!=" => Some(!hit),
        _ => None,
    }
}

fn own_proto(p: &Packet) -> &'static str {
    if p.v6() {
        "ip6"
    } else {
        "ip"
    }
}

fn nft_net(v: &Value, ip: IpAddr) -> Option<bool> {
    if let Some(s) = v.as_str() {
        return Some(net_matches(s, ip));
    }
    let prefix = v.get("prefix")?;
    let addr = prefix.get("addr")?.as_str()?;
    let len = prefix.get("len")?.as_u64()?;
    Some(net_matches(&format!("{addr}/{len}"), ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAVED: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:FLANNEL-FWD - [0:0]\n\
-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A FLANNEL-FWD -s 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
-A FLANNEL-FWD -d 10.244.0.0/16 -m comment --comment \"flanneld forward\" -j ACCEPT\nCOMMIT\n";

    fn pkt(src: &str, dst: &str) -> Packet<'static> {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            iif: Some("cni0"),
            oif: Some("flannel.1"),
        }
    }

    #[test]
    fn forward_chain_accepts_pod_traffic_and_policy_drops_the_rest() {
        let v = walk(SAVED, "FORWARD", &pkt("10.244.1.2", "10.244.2.2"));
        assert_eq!(v.verdict, "ACCEPT");
        assert!(v.rule.unwrap().starts_with("-A FLANNEL-FWD -s 10.244.0.0/16"));
        let v = walk(SAVED, "FORWARD", &pkt("192.168.1.2", "192.168.2.2"));
        assert_eq!(v.verdict, "policy DROP");
        assert!(v.drops());
        assert_eq!(v.skipped.len(), 1);
    }

    #[test]
    fn masquerade_chain_with_negations() {
        let nat = "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n\
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n\
-A FLANNEL-POSTRTG -s 10.244.1.0/24 -d 10.244.0.0/16 -m comment --comment \"flanneld masq\" -j RETURN\n\
-A FLANNEL-POSTRTG -s 10.244.0.0/16 ! -d 224.0.0.0/4 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\nCOMMIT\n";
        assert_eq!(walk(nat, "POSTROUTING", &pkt("10.244.1.2", "198.18.0.99")).verdict, "MASQUERADE");
        assert_eq!(walk(nat, "POSTROUTING", &pkt("10.244.1.2", "10.244.2.2")).verdict, "policy ACCEPT");
        assert_eq!(walk(nat, "POSTROUTING", &pkt("10.244.1.2", "224.0.0.5")).verdict, "policy ACCEPT");
    }

    #[test]
    fn one_dump_is_split_into_its_tables() {
        let saved =
            "# Generated by iptables-save\n*mangle\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j DROP\nCOMMIT\n\
                     *filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 10.244.0.0/16 -j ACCEPT\nCOMMIT\n\
                     *nat\n:POSTROUTING ACCEPT [0:0]\n-A POSTROUTING -j MASQUERADE\nCOMMIT\n";
        let filter = table(saved, "filter").unwrap_or_default();
        assert!(filter.contains("-A FORWARD -s 10.244.0.0/16 -j ACCEPT"), "{filter}");
        assert!(!filter.contains("-j DROP") && !filter.contains("MASQUERADE"), "{filter}");
        assert!(table(saved, "nat").unwrap_or_default().contains("MASQUERADE"));
        assert_eq!(table(saved, "raw"), None);
    }

    #[test]
    fn iptables_decides_first_then_an_nftables_hook_then_the_iptables_policy() {
        let drop_all = serde_json::json!({"nftables": [
            {"chain": {"family": "inet", "table": "wtH11", "name": "fwd", "hook": "forward", "policy": "drop"}}
        ]});
        // iptables accepts pod traffic, an nftables forward hook drops it: the drop is the answer.
        let both = Ruleset { filter: Some(SAVED.into()), nft: Some(drop_all.clone()), ..Ruleset::default() };
        let v = both.forward(&pkt("10.244.1.2", "10.244.2.2"));
        assert_eq!((v.verdict.as_str(), v.rule.as_deref()), ("policy DROP", Some("inet wtH11 fwd")));
        // iptables drops on its own: its verdict, whatever nftables says.
        let v = both.forward(&pkt("192.168.1.2", "192.168.2.2"));
        assert_eq!((v.verdict.as_str(), v.rule), ("policy DROP", None));
        // No drop anywhere: iptables' accept; no rules at all: the default policy.
        let ipt_only = Ruleset { filter: Some(SAVED.into()), ..Ruleset::default() };
        assert_eq!(ipt_only.forward(&pkt("10.244.1.2", "10.244.2.2")).verdict, "ACCEPT");
        assert_eq!(Ruleset::default().forward(&pkt("10.244.1.2", "10.244.2.2")).verdict, "policy ACCEPT");
        // The nftables forward hook does not answer for POSTROUTING.
        assert_eq!(both.postrouting(&pkt("10.244.1.2", "198.18.0.99")).verdict, "policy ACCEPT");
    }

    const SAVED6: &str = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:FLANNEL-FWD - [0:0]\n\
-A FORWARD -m comment --comment \"flanneld forward\" -j FLANNEL-FWD\n\
-A FORWARD -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
-A FLANNEL-FWD -s fd00:5::/56 -m comment --comment \"flanneld forward\" -j ACCEPT\n\
-A FLANNEL-FWD -d fd00:5::/56 -m comment --comment \"flanneld forward\" -j ACCEPT\nCOMMIT\n";

    fn pkt6(src: &str, dst: &str) -> Packet<'static> {
        Packet {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            iif: Some("flannel-v6.1"),
            oif: Some("cni0"),
        }
    }

    #[test]
    fn ipv6_forward_accepts_pod_traffic_and_policy_drops_the_rest() {
        let v = walk(SAVED6, "FORWARD", &pkt6("fd00:5:0:1::2", "fd00:5:0:2::3"));
        assert_eq!(v.verdict, "ACCEPT");
        assert!(v.rule.unwrap().starts_with("-A FLANNEL-FWD -s fd00:5::/56"));
        let v = walk(SAVED6, "FORWARD", &pkt6("2001:db8::1", "2001:db8::2"));
        assert_eq!((v.verdict.as_str(), v.drops()), ("policy DROP", true));
        // An IPv4 prefix never matches an IPv6 packet (nor the reverse).
        let v4rules = "*filter\n:FORWARD DROP [0:0]\n-A FORWARD -s 0.0.0.0/0 -j ACCEPT\nCOMMIT\n";
        assert_eq!(walk(v4rules, "FORWARD", &pkt6("fd00:5:0:1::2", "fd00:5:0:2::3")).verdict, "policy DROP");
        assert_eq!(walk(SAVED6, "FORWARD", &pkt("10.244.1.2", "10.244.2.2")).verdict, "policy DROP");
    }

    #[test]
    fn ipv6_drop_rule_for_the_pod_pair_and_icmpv6_protocol() {
        // `ip6tables -I FORWARD -s <src6> -d <dst6> -j DROP` as ip6tables-save prints it.
        let drop = SAVED6.replace(
            ":FLANNEL-FWD - [0:0]\n",
            ":FLANNEL-FWD - [0:0]\n-A FORWARD -s fd00:5:0:1::2/128 -d fd00:5:0:2::3/128 -j DROP\n",
        );
        let v = walk(&drop, "FORWARD", &pkt6("fd00:5:0:1::2", "fd00:5:0:2::3"));
        assert_eq!(v.verdict, "DROP");
        assert_eq!(v.rule.as_deref(), Some("-A FORWARD -s fd00:5:0:1::2/128 -d fd00:5:0:2::3/128 -j DROP"));
        // Another pair passes the drop rule and is accepted.
        assert_eq!(walk(&drop, "FORWARD", &pkt6("fd00:5:0:1::2", "fd00:5:0:2::4")).verdict, "ACCEPT");
        // ICMPv6 rules match the (ICMPv6) probe packet; an `icmp` (v4) one does not.
        let icmp = "*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -p icmp -j ACCEPT\n\
                    -A FORWARD -p ipv6-icmp -j DROP\nCOMMIT\n";
        assert_eq!(walk(icmp, "FORWARD", &pkt6("fd00:5:0:1::2", "fd00:5:0:2::3")).verdict, "DROP");
        assert_eq!(walk(icmp, "FORWARD", &pkt("10.244.1.2", "10.244.2.2")).verdict, "ACCEPT");
    }

    #[test]
    fn ipv6_masquerade_present_and_missing() {
        let nat6 = "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n\
-A POSTROUTING -m comment --comment \"flanneld masq\" -j FLANNEL-POSTRTG\n\
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment \"flanneld masq\" -j RETURN\n\
-A FLANNEL-POSTRTG -s fd00:5:0:1::/64 -d fd00:5::/56 -m comment --comment \"flanneld masq\" -j RETURN\n\
-A FLANNEL-POSTRTG -s fd00:5::/56 ! -d ff00::/8 -m comment --comment \"flanneld masq\" -j MASQUERADE --random-fully\nCOMMIT\n";
        let with = Ruleset { nat6: Some(nat6.into()), ..Ruleset::default() };
        let out = Packet { oif: Some("eth0"), iif: None, ..pkt6("fd00:5:0:1::2", "2001:db8::99") };
        assert_eq!(with.postrouting(&out).verdict, "MASQUERADE");
        let inside =
            Packet { oif: Some("flannel-v6.1"), iif: None, ..pkt6("fd00:5:0:1::2", "fd00:5:0:2::3") };
        assert_eq!(with.postrouting(&inside).verdict, "policy ACCEPT");
        // The IPv4 nat table does not answer for IPv6: masquerade missing.
        let v4only = Ruleset { nat: Some(nat6.into()), ..Ruleset::default() };
        assert!(!v4only.postrouting(&out).masquerades());
        assert!(!Ruleset::default().postrouting(&out).masquerades());
    }

    #[test]
    fn ipv6_nftables_ip6_and_inet_hooks() {
        let rules = serde_json::json!({"nftables": [
            {"chain": {"family": "ip6", "table": "wtFV6", "name": "fwd", "hook": "forward", "policy": "accept"}},
            {"rule": {"family": "ip6", "table": "wtFV6", "chain": "fwd", "expr": [
                {"match": {"op": "==", "left": {"payload": {"protocol": "ip6", "field": "daddr"}},
                           "right": {"prefix": {"addr": "fd00:5:0:2::", "len": 64}}}},
                {"drop": null}]}},
            {"chain": {"family": "inet", "table": "wtFVi", "name": "fwd", "hook": "forward", "policy": "accept"}},
            {"rule": {"family": "inet", "table": "wtFVi", "chain": "fwd", "expr": [
                {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                           "right": "10.0.0.1"}},
                {"drop": null}]}},
            {"chain": {"family": "ip", "table": "wtFV4", "name": "fwd", "hook": "forward", "policy": "drop"}}
        ]});
        let r = Ruleset { filter6: Some(SAVED6.into()), nft: Some(rules), ..Ruleset::default() };
        let v = r.forward(&pkt6("fd00:5:0:1::2", "fd00:5:0:2::3"));
        assert_eq!(v.verdict, "DROP");
        assert!(v.rule.unwrap_or_default().starts_with("ip6 wtFV6 fwd"));
        // Another IPv6 destination: the `ip` family's drop policy and the inet table's `ip saddr`
        // rule do not apply to IPv6; ip6tables accepts.
        assert_eq!(r.forward(&pkt6("fd00:5:0:1::2", "fd00:5:0:3::3")).verdict, "ACCEPT");
        // For IPv4 the inet table's `ip saddr != 10.0.0.1` rule drops (the `ip6` table is not read).
        let v = r.forward(&pkt("10.244.1.2", "10.244.2.2"));
        assert_eq!(v.verdict, "DROP");
        assert!(v.rule.unwrap_or_default().starts_with("inet wtFVi fwd"));
    }
}
