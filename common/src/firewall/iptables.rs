//! iptables masquerade backend, the reference's layout (cni.md §7.4) with few processes:
//! ADD tries one `iptables-restore --noflush` that creates the chain (`-N`) and appends the rules;
//! if the chain already exists that transaction fails as a whole and we read `iptables-save -t nat`
//! and append only what is missing. On an iptables-nft host, ADD (per family) and DEL (all
//! families at once) first try the same transaction in-process ([`super::iptables_nft`]); the
//! tools here run only when that does not apply. This DEL reads `iptables-save -t nat` once per
//! family and, if anything is there, removes every POSTROUTING jump to the chain (any `-s` form,
//! so the legacy `-s ip/prefix` too, and without needing the addresses), flushes and deletes the
//! chain in one transaction.

use ipnetwork::IpNetwork;

use super::{naming, FirewallError, MasqTarget};
use crate::process::{self, ToolError};

/// An address family and its tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    V4,
    V6,
}

impl Family {
    pub(crate) fn of(addr: &IpNetwork) -> Family {
        if addr.is_ipv4() {
            Family::V4
        } else {
            Family::V6
        }
    }
    fn save_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-save",
            Family::V6 => "ip6tables-save",
        }
    }
    pub(crate) fn restore_tool(self) -> &'static str {
        match self {
            Family::V4 => "iptables-restore",
            Family::V6 => "ip6tables-restore",
        }
    }
    /// Multicast is never masqueraded, so pods can reach local multicast groups.
    fn multicast(self) -> &'static str {
        match self {
            Family::V4 => "224.0.0.0/4",
            Family::V6 => "ff00::/8",
        }
    }
}

const RESTORE_ARGS: &[&str] = &["--noflush", "-w"];
const SAVE_ARGS: &[&str] = &["-t", "nat"];

/// The rule lines (without `-A`) one attachment needs, in the reference's `AppendUnique` order, as
/// `iptables-save` prints them (so they compare equal to a saved line).
pub(crate) fn plan_rules(chain: &str, comment: &str, addrs: &[IpNetwork]) -> Vec<String> {
    let quoted = save_quote(comment);
    let mut rules: Vec<String> = Vec::new();
    for addr in addrs {
        let host = IpNetwork::new(addr.ip(), if addr.is_ipv4() { 32 } else { 128 });
        let host = host.map(|h| h.to_string()).unwrap_or_else(|_| addr.ip().to_string());
        let subnet = format!("{}/{}", addr.network(), addr.prefix());
        let mcast = Family::of(addr).multicast();
        for rule in [
            format!("{chain} -d {subnet} -m comment --comment {quoted} -j ACCEPT"),
            format!("{chain} ! -d {mcast} -m comment --comment {quoted} -j MASQUERADE"),
            format!("POSTROUTING -s {host} -m comment --comment {quoted} -j {chain}"),
        ] {
            if !rules.contains(&rule) {
                rules.push(rule);
            }
        }
    }
    rules
}

/// `iptables-save`'s quoting of a match argument (`xtables_save_string`): wrapped in `"`, with `"`
/// and `\` escaped. The same text is accepted by `iptables-restore`.
fn save_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// What `iptables-save -t nat` shows of one chain.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Saved {
    pub chain_exists: bool,
    /// Rule lines without the leading `-A `.
    pub rules: Vec<String>,
    /// POSTROUTING rules (without `-A `) that jump to the chain.
    pub jumps: Vec<String>,
}

/// Parses the `*nat` section of `iptables-save` output for `chain`.
pub(crate) fn parse_save(text: &str, chain: &str) -> Saved {
    let mut saved = Saved::default();
    let declaration = format!(":{chain} ");
    let jump = format!(" -j {chain}");
    for line in text.lines() {
        if line.starts_with(&declaration) {
            saved.chain_exists = true;
        } else if let Some(rule) = line.strip_prefix("-A ") {
            if rule.starts_with("POSTROUTING ")
                && (rule.ends_with(&jump) || rule.contains(&format!("{jump} ")))
            {
                saved.jumps.push(rule.to_string());
            }
            saved.rules.push(rule.to_string());
        }
    }
    saved
}

/// The restore script appending the `wanted` rules that `saved` lacks; `None` when nothing is missing.
pub(crate) fn plan_add(chain: &str, wanted: &[String], saved: &Saved) -> Option<String> {
    let missing: Vec<&String> = wanted.iter().filter(|r| !saved.rules.contains(r)).collect();
    if saved.chain_exists && missing.is_empty() {
        return None;
    }
    let mut script = String::from("*nat\n");
    if !saved.chain_exists {
        // `-N` (not a `:chain` declaration, which flushes an existing chain under --noflush) so a
        // concurrent creator makes this transaction fail instead of losing its rules.
        script.push_str(&format!("-N {chain}\n"));
    }
    for rule in missing {
        script.push_str(&format!("-A {rule}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// The restore script removing every jump to `chain` and the chain; `None` when none is there.
pub(crate) fn plan_del(chain: &str, saved: &Saved) -> Option<String> {
    if !saved.chain_exists && saved.jumps.is_empty() {
        return None;
    }
    let mut script = String::from("*nat\n");
    for jump in &saved.jumps {
        script.push_str(&format!("-D {jump}\n"));
    }
    if saved.chain_exists {
        script.push_str(&format!("-F {chain}\n-X {chain}\n"));
    }
    script.push_str("COMMIT\n");
    Some(script)
}

/// ADD for the addresses of one family.
pub(crate) fn setup(family: Family, t: &MasqTarget, addrs: &[IpNetwork]) -> Result<(), FirewallError> {
    if addrs.is_empty() {
        return Ok(());
    }
    let chain = naming::chain_name(t.network, t.container_id);
    let comment = naming::iptables_comment(t.network, t.container_id);
    // Fastest path: an iptables-nft host whose nat table of this family exists, no process at all.
    if super::iptables_nft::try_add(&chain, &comment, addrs) {
        return Ok(());
    }
    let wanted = plan_rules(&chain, &comment, addrs);
    // Fast path: a new attachment, so the chain does not exist yet: one process.
    if let Some(script) = plan_add(&chain, &wanted, &Saved::default()) {
        match process::run(family.restore_tool(), RESTORE_ARGS, &script) {
            Ok(_) => return Ok(()),
            Err(e @ ToolError::Spawn { .. }) => return Err(e.into()),
            Err(e) => tracing::debug!(error = %e, "fast masquerade add failed, reading the nat table"),
        }
    }
    // The chain exists (repeated ADD, or a second interface of the container on this network).
    // One retry covers a concurrent change between our read and our write.
    let mut last = None;
    for _ in 0..2 {
        let saved = parse_save(&process::run(family.save_tool(), SAVE_ARGS, "")?, &chain);
        let Some(script) = plan_add(&chain, &wanted, &saved) else { return Ok(()) };
        match process::run(family.restore_tool(), RESTORE_ARGS, &script) {
            Ok(_) => return Ok(()),
            Err(e) => last = Some(e.into()),
        }
    }
    Err(last.unwrap_or(FirewallError::Unavailable { backend: "iptables" }))
}

/// Starts the `*-save` read of one family (so both families can be read concurrently).
pub(crate) fn start_read(family: Family) -> Result<process::Pending, FirewallError> {
    Ok(process::start(family.save_tool(), SAVE_ARGS, "")?)
}

/// DEL, first step for one family: reads its `nat` table (started by [`start_read`]) and starts the
/// removal transaction if anything is there. Returns the running write, if any, so that both
/// families' writes (each waiting for the kernel's commit) run concurrently.
pub(crate) fn start_teardown(
    family: Family,
    t: &MasqTarget,
    read: process::Pending,
) -> Result<Option<process::Pending>, FirewallError> {
    let chain = naming::chain_name(t.network, t.container_id);
    let saved = parse_save(&read.wait()?, &chain);
    let Some(script) = plan_del(&chain, &saved) else { return Ok(None) };
    Ok(Some(process::start(family.restore_tool(), RESTORE_ARGS, &script)?))
}

/// DEL, second step: waits for the write; on failure (a rule changed since our read) reads again
/// and retries once.
pub(crate) fn finish_teardown(
    family: Family,
    t: &MasqTarget,
    write: process::Pending,
) -> Result<(), FirewallError> {
    if let Err(first) = write.wait() {
        tracing::debug!(error = %first, "masquerade removal failed, reading the nat table again");
        let chain = naming::chain_name(t.network, t.container_id);
        let saved = parse_save(&process::run(family.save_tool(), SAVE_ARGS, "")?, &chain);
        if let Some(script) = plan_del(&chain, &saved) {
            process::run(family.restore_tool(), RESTORE_ARGS, &script)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAIN: &str = "CNI-9cccacf967e00a3c04e26966";

    fn comment() -> String {
        naming::iptables_comment("cbr0", "ctr1")
    }

    #[test]
    fn rules_match_reference_save_lines() {
        let addrs: Vec<IpNetwork> = vec!["10.244.1.2/24".parse().unwrap(), "fd00:1::5/64".parse().unwrap()];
        let rules = plan_rules(CHAIN, &comment(), &addrs);
        let c = r#""name: \"cbr0\" id: \"ctr1\"""#;
        assert_eq!(
            rules,
            vec![
                format!("{CHAIN} -d 10.244.1.0/24 -m comment --comment {c} -j ACCEPT"),
                format!("{CHAIN} ! -d 224.0.0.0/4 -m comment --comment {c} -j MASQUERADE"),
                format!("POSTROUTING -s 10.244.1.2/32 -m comment --comment {c} -j {CHAIN}"),
                format!("{CHAIN} -d fd00:1::/64 -m comment --comment {c} -j ACCEPT"),
                format!("{CHAIN} ! -d ff00::/8 -m comment --comment {c} -j MASQUERADE"),
                format!("POSTROUTING -s fd00:1::5/128 -m comment --comment {c} -j {CHAIN}"),
            ]
        );
    }

    #[test]
    fn parse_finds_chain_and_all_jump_forms() {
        let text = format!(
            "*nat\n:POSTROUTING ACCEPT [0:0]\n:{CHAIN} - [0:0]\n:CNI-other - [0:0]\n\
             -A POSTROUTING -s 10.244.1.2/32 -m comment --comment \"x\" -j {CHAIN}\n\
             -A POSTROUTING -s 10.244.1.2/24 -m comment --comment \"x\" -j {CHAIN}\n\
             -A POSTROUTING -s 10.244.1.3/32 -j CNI-other\n\
             -A POSTROUTING -s 10.244.1.4/32 -j {CHAIN}0\n\
             -A {CHAIN} -d 10.244.1.0/24 -j ACCEPT\nCOMMIT\n"
        );
        let saved = parse_save(&text, CHAIN);
        assert!(saved.chain_exists);
        assert_eq!(saved.jumps.len(), 2);
        let script = plan_del(CHAIN, &saved).unwrap();
        assert_eq!(
            script,
            format!(
                "*nat\n-D POSTROUTING -s 10.244.1.2/32 -m comment --comment \"x\" -j {CHAIN}\n\
                 -D POSTROUTING -s 10.244.1.2/24 -m comment --comment \"x\" -j {CHAIN}\n\
                 -F {CHAIN}\n-X {CHAIN}\nCOMMIT\n"
            )
        );
        assert_eq!(plan_del(CHAIN, &parse_save("*nat\nCOMMIT\n", CHAIN)), None);
    }

    #[test]
    fn add_appends_only_missing_rules() {
        let addrs: Vec<IpNetwork> = vec!["10.244.1.2/24".parse().unwrap()];
        let wanted = plan_rules(CHAIN, &comment(), &addrs);
        let fresh = plan_add(CHAIN, &wanted, &Saved::default()).unwrap();
        assert!(fresh.starts_with(&format!("*nat\n-N {CHAIN}\n-A {CHAIN} -d 10.244.1.0/24")));
        let text: String = std::iter::once(format!(":{CHAIN} - [0:0]\n"))
            .chain(wanted.iter().map(|r| format!("-A {r}\n")))
            .collect();
        assert_eq!(plan_add(CHAIN, &wanted, &parse_save(&text, CHAIN)), None);
        let partial = parse_save(&format!(":{CHAIN} - [0:0]\n-A {}\n", wanted[0]), CHAIN);
        let script = plan_add(CHAIN, &wanted, &partial).unwrap();
        assert_eq!(script, format!("*nat\n-A {}\n-A {}\nCOMMIT\n", wanted[1], wanted[2]));
    }
}
