//! Test harness: a fresh host namespace (where the plugin runs, as `ip netns exec`), a
//! `CNI_PATH` directory with the plugins under test, a host-local data dir, and helpers to
//! run commands and read kernel state back with `ip -j`. Everything is removed on drop.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use weft_lab::bins::{bin_dir, REFERENCE_DIR};
use weft_lab::cmd::Run;
use weft_lab::ns::{require_root, Netns};

/// Namespace name prefix of these tests (`weft-lab` cleanup can remove leftovers by it).
pub const PREFIX: &str = "wtbr";

/// Which implementation of a plugin a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    Weft,
    Reference,
}

/// Path of a plugin binary of the given implementation.
pub fn plugin(name: &str, which: Impl) -> PathBuf {
    let p = match which {
        Impl::Weft => bin_dir().join(name),
        Impl::Reference => Path::new(REFERENCE_DIR).join(name),
    };
    assert!(
        p.is_file(),
        "{} missing (build with `cargo build -p weft-bridge -p weft-host-local`)",
        p.display()
    );
    p
}

/// A host namespace with a bridge plugin and a host-local plugin in its `CNI_PATH`.
pub struct Env {
    pub host: Netns,
    pub dir: tempfile::TempDir,
    pub bridge: PathBuf,
}

impl Env {
    /// Our bridge with our host-local.
    pub fn new() -> Env {
        Env::with(Impl::Weft, Impl::Weft)
    }

    pub fn with(bridge: Impl, ipam: Impl) -> Env {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        let cni = dir.path().join("cni");
        std::fs::create_dir(&cni).unwrap();
        let bridge_bin = plugin("bridge", bridge);
        std::os::unix::fs::symlink(&bridge_bin, cni.join("bridge")).unwrap();
        std::os::unix::fs::symlink(plugin("host-local", ipam), cni.join("host-local")).unwrap();
        Env { host: Netns::unique(PREFIX), dir, bridge: cni.join("bridge") }
    }

    pub fn cni_path(&self) -> String {
        self.dir.path().join("cni").display().to_string()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ipam")
    }

    /// A host-local IPAM config over `subnets` (one range set each) with our data dir.
    pub fn ipam(&self, subnets: &[&str]) -> Value {
        let ranges: Vec<Value> = subnets.iter().map(|s| json!([{"subnet": s}])).collect();
        json!({"type": "host-local", "ranges": ranges, "dataDir": self.data_dir().display().to_string()})
    }

    /// A bridge config at `version` with network `net`, plus `extra` keys.
    pub fn conf(&self, version: &str, net: &str, extra: Value) -> Value {
        let mut c = json!({"cniVersion": version, "name": net, "type": "bridge", "bridge": "br0"});
        if let (Some(obj), Value::Object(more)) = (c.as_object_mut(), extra) {
            obj.extend(more);
        }
        c
    }

    /// Runs the bridge plugin in the host namespace with `CNI_*` variables and `stdin`.
    pub fn run_raw(&self, vars: &[(&str, &str)], stdin: &[u8]) -> Run {
        let mut env: Vec<(&str, &str)> = vec![("CNI_PATH", "")];
        let path = self.cni_path();
        env[0].1 = &path;
        env.extend_from_slice(vars);
        self.host.exec_with(&[self.bridge.to_str().unwrap()], &env, stdin)
    }

    /// Runs `cmd` for container `cid` in `netns` with interface `ifname`.
    pub fn run(&self, cmd: &str, cid: &str, netns: &str, ifname: &str, conf: &Value) -> Run {
        let stdin = conf.to_string();
        self.run_raw(
            &[("CNI_COMMAND", cmd), ("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname)],
            stdin.as_bytes(),
        )
    }

    /// ADD that must succeed; returns the result.
    pub fn add(&self, cid: &str, pod: &Netns, conf: &Value) -> Value {
        let r = self.run("ADD", cid, &pod.path(), "eth0", conf);
        assert!(r.ok(), "ADD failed: {r}");
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("ADD output not JSON ({e}): {r}"))
    }

    /// `conf` with `prevResult` set (what the runtime sends on CHECK and DEL).
    pub fn with_prev(conf: &Value, prev: &Value) -> Value {
        let mut c = conf.clone();
        c["prevResult"] = prev.clone();
        c
    }

    /// Names of the veth links in the host namespace.
    pub fn host_veths(&self) -> Vec<String> {
        names(&self.host.ip_json(&["link", "show", "type", "veth"]))
    }

    /// Files in host-local's directory for `net` (none when it does not exist).
    pub fn ip_files(&self, net: &str) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(self.data_dir().join(net))
            .map(|d| d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        out.retain(|f| f != "lock" && !f.starts_with("last_reserved_ip"));
        out.sort();
        out
    }
}

/// `ifname` of each entry of an `ip -j link` listing.
pub fn names(links: &Value) -> Vec<String> {
    links
        .as_array()
        .map(|a| a.iter().filter_map(|l| l["ifname"].as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

/// `local/prefixlen` of the global addresses of `dev` in `ns`.
pub fn addresses(ns: &Netns, dev: &str) -> Vec<String> {
    let v = ns.ip_json(&["addr", "show", "dev", dev, "scope", "global"]);
    let mut out = Vec::new();
    for link in v.as_array().cloned().unwrap_or_default() {
        for a in link["addr_info"].as_array().cloned().unwrap_or_default() {
            if let Some(local) = a["local"].as_str() {
                out.push(format!("{local}/{}", a["prefixlen"]));
            }
        }
    }
    out
}

/// One link of `ns` as `ip -j -d link show dev` reports it.
pub fn link(ns: &Netns, dev: &str) -> Value {
    ns.ip_json(&["-d", "link", "show", "dev", dev])[0].clone()
}

/// The error document of a failed run, checking the exit status.
pub fn error_of(r: &Run) -> Value {
    assert!(!r.ok(), "expected failure, got success: {r}");
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("error output not JSON ({e}): {r}"))
}

/// Address (without prefix) of `ips[i]` of a result.
pub fn ip_of(result: &Value, i: usize) -> String {
    result["ips"][i]["address"].as_str().unwrap().split('/').next().unwrap().to_string()
}

/// `ping -c1` from `ns` to `dst`.
pub fn ping(ns: &Netns, dst: &str) -> Run {
    ns.exec(&["ping", "-c", "1", "-W", "2", dst])
}

/// Polls `cond` every 10 ms for up to 5 s; true once it holds.
pub fn eventually(mut cond: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(5) {
        if cond() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    cond()
}

/// A second environment sharing `env`'s host namespace and data dir but running the other
/// bridge implementation.
pub fn other_bridge(env: &Env, which: Impl) -> std::path::PathBuf {
    let p = env.dir.path().join(format!("cni-{which:?}"));
    std::fs::create_dir_all(&p).unwrap();
    let _ = std::os::unix::fs::symlink(plugin("bridge", which), p.join("bridge"));
    p.join("bridge")
}
