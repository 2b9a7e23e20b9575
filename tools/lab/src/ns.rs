//! Named network namespaces (`ip netns`) that delete themselves when dropped.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::cmd::{run, sh, Run};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique name `<prefix><pid-ish><n>` that fits in 15 bytes with room for suffixes.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id() % 100_000;
    format!("{prefix}{pid}x{n}")
}

/// Fails the calling test unless it runs as root (namespace tests are never silently skipped).
pub fn require_root() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root (run scripts/test.sh as root)");
}

/// A network namespace created with `ip netns add`, deleted (with everything in it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `name` and brings its loopback up.
    pub fn create(name: &str) -> Netns {
        sh(&["ip", "netns", "add", name]).expect_ok();
        let ns = Netns { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"]).expect_ok();
        ns
    }

    /// Creates a namespace with a unique name built from `prefix`.
    pub fn unique(prefix: &str) -> Netns {
        Netns::create(&unique_name(prefix))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `/run/netns/<name>`, the path runtimes pass as `CNI_NETNS`.
    pub fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }

    /// Runs `argv` inside the namespace.
    pub fn exec(&self, argv: &[&str]) -> Run {
        self.exec_with(argv, &[], b"")
    }

    /// Runs `argv` inside the namespace with extra environment and stdin.
    pub fn exec_with(&self, argv: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Run {
        let mut full = vec!["ip", "netns", "exec", self.name.as_str()];
        full.extend_from_slice(argv);
        run(&full, env, stdin, std::time::Duration::from_secs(60))
    }

    /// `ip -j <args>` inside the namespace, parsed.
    pub fn ip_json(&self, args: &[&str]) -> serde_json::Value {
        let mut argv = vec!["ip", "-j"];
        argv.extend_from_slice(args);
        let out = self.exec(&argv).expect_ok();
        if out.stdout.trim().is_empty() {
            return serde_json::Value::Array(Vec::new());
        }
        serde_json::from_str(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    /// True when a link named `ifname` exists in the namespace.
    pub fn has_link(&self, ifname: &str) -> bool {
        self.exec(&["ip", "link", "show", "dev", ifname]).ok()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh(&["ip", "netns", "del", &self.name]);
    }
}

impl Netns {
    /// Like [`Netns::create`], but returns the failure instead of panicking (for the lab and
    /// the demo, which must tear down cleanly rather than panic).
    pub fn try_create(name: &str) -> crate::error::Result<Netns> {
        if name.len() > 15 {
            return Err(crate::error::LabError::Invalid(format!("namespace name {name:?} is over 15 bytes")));
        }
        sh(&["ip", "netns", "add", name]).check(&format!("create namespace {name}"))?;
        let ns = Netns { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"]).check(&format!("set lo up in {name}"))?;
        Ok(ns)
    }

    /// Runs `argv` inside the namespace; a failure becomes a [`crate::error::LabError`].
    pub fn run(&self, argv: &[&str]) -> crate::error::Result<Run> {
        let r = self.exec(argv);
        let what = format!("in {}", self.name);
        r.check(&what)
    }

    /// `ip -j <args>` inside the namespace, parsed; failures are errors, not panics.
    pub fn try_ip_json(&self, args: &[&str]) -> crate::error::Result<serde_json::Value> {
        let mut argv = vec!["ip", "-j"];
        argv.extend_from_slice(args);
        let out = self.run(&argv)?;
        if out.stdout.trim().is_empty() {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_str(&out.stdout).map_err(|e| crate::error::LabError::parse(argv.join(" "), e))
    }
}

/// Whether this kernel supports bridge VLAN filtering (`CONFIG_BRIDGE_VLAN_FILTERING`), probed
/// once per process: in a throwaway namespace named from `prefix`, create a bridge with
/// `vlan_filtering 1` using the `ip` tool (independent of the code under test) and read the
/// setting back. Tests use it to assert the branch the kernel implies instead of accepting
/// either outcome.
pub fn kernel_has_bridge_vlan_filtering(prefix: &str) -> bool {
    static PROBED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PROBED.get_or_init(|| {
        require_root();
        let ns = Netns::unique(prefix);
        if !ns.exec(&["ip", "link", "add", "vlanprobe", "type", "bridge", "vlan_filtering", "1"]).ok() {
            return false;
        }
        let link = ns.ip_json(&["-d", "link", "show", "dev", "vlanprobe"]);
        link[0]["linkinfo"]["info_data"]["vlan_filtering"] == 1
    })
}
