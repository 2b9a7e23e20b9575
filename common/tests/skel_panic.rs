//! A plugin that panics still answers the runtime (issue: a panic used to leave stdout empty).
//!
//! This test binary is its own plugin: run with `WEFT_TEST_PANICKING_PLUGIN=1` it is a CNI
//! plugin whose commands panic; run by `cargo test` (no libtest harness, so nothing else is
//! printed on the child's stdout) it execs itself as that plugin and checks the answer. No root.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;
use weft_common::cni::error::CniError;
use weft_common::cni::result::CniResult;
use weft_common::cni::skel::{self, CmdArgs, Plugin};

const CHILD: &str = "WEFT_TEST_PANICKING_PLUGIN";

struct Panicking;

impl Plugin for Panicking {
    fn add(&self, _args: &CmdArgs) -> Result<CniResult, CniError> {
        unreachable!("ADD is not exercised")
    }
    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let empty: Vec<u8> = Vec::new();
        // A formatted message (a `String` payload), as an indexing bug gives.
        panic!("index {} out of range for {}", args.ifname.len(), empty.len())
    }
    fn check(&self, _args: &CmdArgs) -> Result<(), CniError> {
        // A `&'static str` payload.
        panic!("check exploded")
    }
}

/// Runs this binary as the plugin; returns (stdout, stderr, exit code).
fn invoke(command: &str, version: &str) -> (String, String, Option<i32>) {
    let exe = std::env::current_exe().expect("own path");
    let mut child = Command::new(exe)
        .env(CHILD, "1")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "c1")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/nonexistent")
        // CHECK needs a namespace that is not the plugin's own, unless overridden.
        .env("CNI_NETNS", "/proc/self/ns/net")
        .env("CNI_NETNS_OVERRIDE", "1")
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the plugin");
    let conf = format!(r#"{{"cniVersion":"{version}","name":"n","type":"panicking"}}"#);
    child.stdin.take().expect("stdin").write_all(conf.as_bytes()).expect("write stdin");
    let out = child.wait_with_output().expect("wait for the plugin");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

fn panic_answers_with_code_999_message_and_location() {
    let (stdout, stderr, code) = invoke("DEL", "0.4.0");
    assert_eq!(code, Some(1), "exit status; stderr: {stderr}");
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!(v["code"], 999, "{stdout}");
    assert_eq!(v["cniVersion"], "0.4.0", "the request's version: {stdout}");
    assert_eq!(v["msg"], "internal error: plugin panicked", "{stdout}");
    let details = v["details"].as_str().unwrap_or_default();
    assert!(details.starts_with("index 4 out of range for 0 (at "), "{details}");
    assert!(details.contains("skel_panic.rs:"), "location: {details}");
    // The default hook's report still goes to stderr, for the runtime's log.
    assert!(stderr.contains("index 4 out of range"), "{stderr}");

    let (stdout, _, code) = invoke("CHECK", "1.1.0");
    assert_eq!(code, Some(1));
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!((v["code"].as_u64(), v["cniVersion"].as_str()), (Some(999), Some("1.1.0")), "{stdout}");
    assert!(v["details"].as_str().unwrap_or_default().starts_with("check exploded (at "), "{stdout}");
}

fn main() {
    if std::env::var_os(CHILD).is_some() {
        skel::run(Panicking, "panicking");
    }
    // `cargo test -- --list` (used by some tools) must not run anything.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    panic_answers_with_code_999_message_and_location();
    println!("test panic_answers_with_code_999_message_and_location ... ok");
}
