//! Helpers for the binary tests: run `host-local` (ours or the reference) with CNI_* env.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::{json, Value};
pub use weft_lab::ns::{require_root, Netns};

/// Our binary.
pub const OURS: &str = env!("CARGO_BIN_EXE_host-local");
/// The reference binary (Debian's v1.1.1, speaks up to 1.0.0).
pub const REFERENCE: &str = "/usr/lib/cni/host-local";
/// Namespace prefix of this crate's tests.
pub const NS_PREFIX: &str = "wthl";

/// One finished invocation.
#[derive(Debug)]
pub struct Out {
    pub exit: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// stdout as JSON (`Null` when empty or unparsable).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or(Value::Null)
    }

    /// The error code, panicking with the whole record when this is not an error document.
    pub fn code(&self) -> u64 {
        assert_ne!(self.exit, Some(0), "expected failure: {self:?}");
        self.json()["code"].as_u64().unwrap_or_else(|| panic!("no error code: {self:?}"))
    }

    pub fn msg(&self) -> String {
        self.json()["msg"].as_str().unwrap_or_default().to_string()
    }

    pub fn ok(self) -> Out {
        assert_eq!(self.exit, Some(0), "expected success: {self:?}");
        self
    }

    /// The addresses of an ADD result (1.x/0.3+/0.4 shapes).
    pub fn ips(&self) -> Vec<String> {
        self.json()["ips"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i["address"].as_str().map(String::from)).collect())
            .unwrap_or_default()
    }
}

/// A CNI invocation being prepared.
#[derive(Debug, Clone)]
pub struct Call {
    pub bin: String,
    pub command: String,
    pub id: String,
    pub ifname: String,
    pub netns: String,
    pub args: String,
    pub stdin: String,
}

impl Call {
    pub fn new(bin: &str, command: &str, id: &str, netns: &str, stdin: &str) -> Call {
        Call {
            bin: bin.to_string(),
            command: command.to_string(),
            id: id.to_string(),
            ifname: "eth0".to_string(),
            netns: netns.to_string(),
            args: String::new(),
            stdin: stdin.to_string(),
        }
    }

    pub fn ifname(mut self, ifname: &str) -> Call {
        self.ifname = ifname.to_string();
        self
    }

    pub fn cni_args(mut self, args: &str) -> Call {
        self.args = args.to_string();
        self
    }

    /// Starts the process with stdin written and closed.
    pub fn spawn(&self) -> Child {
        let mut cmd = Command::new(&self.bin);
        cmd.env_clear()
            .env("CNI_COMMAND", &self.command)
            .env("CNI_CONTAINERID", &self.id)
            .env("CNI_IFNAME", &self.ifname)
            .env("CNI_NETNS", &self.netns)
            .env("CNI_ARGS", &self.args)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin));
        if let Some(mut input) = child.stdin.take() {
            // A plugin that fails on its environment exits without reading stdin (EPIPE).
            let _ = input.write_all(self.stdin.as_bytes());
        }
        child
    }

    pub fn run(&self) -> Out {
        finish(self.spawn())
    }
}

/// Waits for `child` and collects its output.
pub fn finish(child: Child) -> Out {
    let out = child.wait_with_output().expect("wait");
    Out {
        exit: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A network config for host-local with `ipam` extended by `ipam_extra` and `dataDir` set.
pub fn conf(version: &str, name: &str, data: &Path, ipam_extra: Value) -> String {
    let mut ipam = json!({"type": "host-local", "dataDir": data});
    if let (Some(m), Some(extra)) = (ipam.as_object_mut(), ipam_extra.as_object()) {
        m.extend(extra.clone());
    }
    json!({"cniVersion": version, "name": name, "type": "host-local", "ipam": ipam}).to_string()
}

/// Sorted entry names of a directory (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().into_string().ok()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Names of address files in `dir`.
pub fn ip_files(dir: &Path) -> Vec<String> {
    entries(dir).into_iter().filter(|n| n.parse::<std::net::IpAddr>().is_ok()).collect()
}

/// A lab namespace (for CNI_NETNS) and a temporary data dir, both removed on drop.
pub struct Lab {
    pub ns: Netns,
    pub data: tempfile::TempDir,
}

impl Lab {
    pub fn new() -> Lab {
        require_root();
        Lab { ns: Netns::unique(NS_PREFIX), data: tempfile::tempdir().expect("tempdir") }
    }

    pub fn netns(&self) -> String {
        self.ns.path()
    }

    pub fn dir(&self, network: &str) -> PathBuf {
        self.data.path().join(network)
    }
}
