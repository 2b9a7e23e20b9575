//! flanneld's masquerade and forward rules (reference/flannel.md §9), in the nftables or the
//! iptables layout of upstream, applied with one transaction per table and checked for drift.
//!
//! The tools run as child processes and inherit the calling thread's network namespace. IPv4
//! only (this daemon programs no IPv6 network); in nftables mode the empty `flannel-ipv6` table
//! is still created, as upstream does.
//!
//! Divergences (safe, §15): the nftables objects are written in one atomic `nft -f -`
//! transaction instead of several; in iptables mode an existing jump rule is left in place
//! instead of being deleted and appended again; switching `ip_masq`/`forward` off removes the
//! corresponding chain.

mod iptables;
mod nft;

use std::io::Write;
use std::process::{Command, Stdio};

use ipnetwork::Ipv4Network;

/// Which firewall layout to use (`EnableNFTables` in the network config).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirewallMode {
    Nftables,
    Iptables,
}

/// The rules flanneld wants for one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlannelRules {
    /// The cluster network `C`.
    pub network: Ipv4Network,
    /// The node's own lease subnet `L`.
    pub subnet: Ipv4Network,
    /// `--ip-masq`: install the masquerade chain.
    pub ip_masq: bool,
    /// Install the forward-accept chain (upstream default on).
    pub forward: bool,
    /// Masquerade with fully random source ports (`--random-fully` / `fully-random`); upstream
    /// uses it unless `--ip-masq-fully-random-disable` is given (§9.1, §9.4).
    pub fully_random: bool,
    pub mode: FirewallMode,
}

impl FlannelRules {
    /// `C` and `L` with host bits cleared, as the tools print them.
    fn nets(&self) -> (Ipv4Network, Ipv4Network) {
        let norm = |n: Ipv4Network| Ipv4Network::new(n.network(), n.prefix()).unwrap_or(n);
        (norm(self.network), norm(self.subnet))
    }
}

/// Installs the rules of `rules.mode` and removes the other mode's objects. Idempotent: the
/// flannel chains are rebuilt in place (flushed and refilled in the same transaction).
pub fn apply_rules(rules: &FlannelRules) -> Result<(), String> {
    match rules.mode {
        FirewallMode::Nftables => {
            iptables::remove_all()?;
            nft::apply(rules)
        }
        FirewallMode::Iptables => {
            nft::remove_all()?;
            iptables::apply(rules)
        }
    }
}

/// True when any wanted rule or chain is missing or different (or an unwanted flannel chain
/// exists) in the active mode; the caller then calls [`apply_rules`] again.
pub fn check_drift(rules: &FlannelRules) -> Result<bool, String> {
    match rules.mode {
        FirewallMode::Nftables => nft::drift(rules),
        FirewallMode::Iptables => iptables::drift(rules),
    }
}

/// Output of a finished tool.
struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tool args…` with `stdin`; Err only when it cannot be started.
fn run(tool: &str, args: &[&str], stdin: &str) -> Result<Output, std::io::Error> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let Some(mut input) = child.stdin.take() {
        // Scripts are a few KiB at most, below the pipe buffer: no deadlock with the output.
        input.write_all(stdin.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    Ok(Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

/// Runs a tool that must succeed; the error names the tool, its arguments and its stderr.
fn run_ok(tool: &str, args: &[&str], stdin: &str) -> Result<String, String> {
    let out = run(tool, args, stdin).map_err(|e| format!("{tool}: cannot run: {e}"))?;
    if out.ok {
        Ok(out.stdout)
    } else {
        Err(format!("{tool} {} failed: {}\ninput:\n{stdin}", args.join(" "), out.stderr))
    }
}
