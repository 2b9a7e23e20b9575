//! Running `weft` inside a lab node, and freezing flanneld while a break is asserted.

#![allow(clippy::unwrap_used, dead_code)]

use std::time::{Duration, Instant};

use serde_json::Value;
use weft_lab::cmd::Run;
use weft_lab::Lab;

pub const PREFIX: &str = "wtsp";

/// `weft <sub> <args>` inside node `i`'s namespace, with the node's CNI directories.
pub fn weft(lab: &Lab, i: usize, sub: &str, args: &[&str]) -> Run {
    weft_lab::see::weft_on_node(lab, i, env!("CARGO_BIN_EXE_weft"), sub, args).unwrap()
}

/// `weft path --json SRC DST` on node `i`: (exit status, parsed report).
pub fn path(lab: &Lab, i: usize, src: &str, dst: &str) -> (i32, Value, Run) {
    let run = weft(lab, i, "path", &["--json", src, dst]);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.status.unwrap_or(-1), v, run)
}

/// Asserts `path` says reachable (exit 0, no cause).
pub fn assert_reachable(lab: &Lab, i: usize, src: &str, dst: &str) {
    let (code, v, run) = path(lab, i, src, dst);
    assert_eq!(code, 0, "weft path {src} {dst} on node {i} not reachable:\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(v["verdict"], "reachable");
    assert!(v["cause"].is_null());
}

/// Waits (up to 30 s) until `path` says reachable again.
pub fn wait_reachable(lab: &Lab, i: usize, src: &str, dst: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, _, run) = path(lab, i, src, dst);
        if code == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "path {src} → {dst} never healed:\n{}\n{}",
            run.stdout,
            lab.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Asserts `path` is broken (exit 1) at `step` with `cause`; returns the report.
pub fn assert_broken(lab: &Lab, i: usize, src: &str, dst: &str, step: &str, cause: &str) -> Value {
    let (code, v, run) = path(lab, i, src, dst);
    assert_eq!(code, 1, "weft path {src} {dst}: want exit 1 ({cause}):\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(v["verdict"], "broken", "{}", run.stdout);
    assert_eq!(v["cause"], cause, "{}", run.stdout);
    let failing: Vec<&Value> = v["hops"].as_array().unwrap().iter().filter(|h| h["ok"] == false).collect();
    assert_eq!(
        failing.first().map(|h| h["step"].clone()),
        Some(Value::from(step)),
        "first broken hop:\n{}",
        run.stdout
    );
    // The brief text form names the same link.
    let brief = weft(lab, i, "path", &["--brief", src, dst]);
    assert!(brief.stdout.contains(&format!("✗ {step}")) && brief.stdout.contains(cause), "{}", brief.stdout);
    v
}

/// Stops flanneld on the given nodes (SIGSTOP) so a break holds; resumes them on drop.
pub struct Freeze(Vec<i32>);

impl Freeze {
    pub fn new(lab: &Lab, nodes: &[usize]) -> Freeze {
        let pids: Vec<i32> = nodes
            .iter()
            .map(|i| i32::try_from(lab.node(*i).unwrap().flanneld_pid().expect("flanneld runs")).unwrap())
            .collect();
        for p in &pids {
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGSTOP)
                .unwrap();
        }
        Freeze(pids)
    }
}

impl Drop for Freeze {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*p), nix::sys::signal::Signal::SIGCONT);
        }
    }
}

/// Runs `argv` in node `i`, asserting success.
pub fn on(lab: &Lab, i: usize, argv: &[&str]) -> String {
    let r = lab.node(i).unwrap().ns().exec(argv);
    assert!(r.ok(), "{}: {}", r.cmdline, r.stderr);
    r.stdout
}

/// (cause, nodes) of each error finding of `weft doctor --json`.
pub type Findings = Vec<(String, Vec<String>)>;

/// The error findings of a `weft doctor --json` report.
pub fn error_findings(v: &Value) -> Findings {
    v["findings"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["severity"] == "error")
        .map(|f| {
            let nodes =
                f["nodes"].as_array().into_iter().flatten().filter_map(|n| n.as_str().map(String::from));
            (f["cause"].as_str().unwrap_or_default().to_string(), nodes.collect())
        })
        .collect()
}

/// `weft path --probe --json` on node 0: (exit status, report, stdout and stderr).
pub fn probe(lab: &Lab, src: &str, dst: &str, extra: &[&str]) -> (Option<i32>, Value, String) {
    let mut args = vec!["--probe", "--json"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[src, dst]);
    let run = weft(lab, 0, "path", &args);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    (run.status, v, format!("{}\n{}", run.stdout, run.stderr))
}

/// The probe's hop at `place` on `node` (`local` or an address).
pub fn probe_hop<'a>(v: &'a Value, node: &str, place: &str) -> &'a Value {
    v["probe"]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["node"] == node && h["place"] == place)
        .unwrap_or_else(|| panic!("no probe hop {place} on {node}: {v}"))
}

/// Asserts a host-gw probe's hops (`probe` of a `--probe --json` report): seen in order on the
/// pod, its veth, the bridge and the uplink of this node, then node `n1`'s uplink, bridge and
/// the destination's veth, at least 3 requests each.
pub fn assert_host_gw_probe_hops(p: &Value, n1: &str) {
    let places: Vec<(String, String)> = p["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["node"].as_str().unwrap().to_string(), h["place"].as_str().unwrap().to_string()))
        .collect();
    let at = |n: &str, s: &str| (n.to_string(), s.to_string());
    let expected = [
        at("local", "pod"),
        at("local", "veth"),
        at("local", "bridge"),
        at("local", "underlay"),
        at(n1, "underlay"),
        at(n1, "bridge"),
        at(n1, "dst-veth"),
    ];
    assert_eq!(places, expected, "{p}");
    assert!(p["hops"].as_array().unwrap().iter().all(|h| h["requests"].as_u64().unwrap() >= 3), "{p}");
}
