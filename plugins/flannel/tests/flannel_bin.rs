//! The built `flannel` binary against real delegates, in lab namespaces (root).
//!
//! Each test makes a "host" namespace (where the bridge plugin creates cni0) and a "pod"
//! namespace (CNI_NETNS); the plugin runs inside the host namespace through `ip netns exec`.
//! Delegates: our `bridge`/`host-local` when built (target/debug or $WEFT_BIN_DIR), else the
//! reference ones in /usr/lib/cni; `WEFT_TEST_REFERENCE_DELEGATES=1` forces the reference.
//! All state (subnet.env, dataDir, host-local's dataDir) lives in a temp directory.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use weft_lab::bins::REFERENCE_DIR;
use weft_lab::cmd::Run;
use weft_lab::ns::{require_root, Netns};

const SUBNET_ENV: &str =
    "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n";

/// `CNI_PATH` for the delegates.
fn delegate_path() -> String {
    let ours = weft_lab::bins::bin_dir();
    let use_ours = std::env::var_os("WEFT_TEST_REFERENCE_DELEGATES").is_none()
        && ours.join("bridge").is_file()
        && ours.join("host-local").is_file();
    if use_ours {
        format!("{}:{REFERENCE_DIR}", ours.display())
    } else {
        REFERENCE_DIR.to_string()
    }
}

struct Lab {
    host: Netns,
    pod: Netns,
    dir: tempfile::TempDir,
    cni_path: String,
}

impl Lab {
    fn new() -> Lab {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("subnet.env"), SUBNET_ENV).unwrap();
        Lab { host: Netns::unique("wtflh"), pod: Netns::unique("wtflp"), dir, cni_path: delegate_path() }
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("flannel")
    }

    fn subnet_file(&self) -> PathBuf {
        self.dir.path().join("subnet.env")
    }

    /// The flannel entry of test-configs/10-flannel.conflist as libcni sends it, with every
    /// path pointed into the temp directory.
    fn conf(&self, version: &str) -> Value {
        let list: Value = serde_json::from_str(
            &std::fs::read_to_string(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../test-configs/10-flannel.conflist"
            ))
            .unwrap(),
        )
        .unwrap();
        let mut conf = list["plugins"][0].clone();
        conf["name"] = list["name"].clone();
        conf["cniVersion"] = json!(version);
        conf["subnetFile"] = json!(self.subnet_file());
        conf["dataDir"] = json!(self.data_dir());
        conf["ipam"] = json!({ "dataDir": self.dir.path().join("ipam") });
        conf
    }

    fn run(&self, command: &str, cid: &str, conf: &Value) -> Run {
        self.run_with_path(command, cid, conf, &self.cni_path)
    }

    fn run_with_path(&self, command: &str, cid: &str, conf: &Value, cni_path: &str) -> Run {
        let bin = env!("CARGO_BIN_EXE_flannel");
        let netns = self.pod.path();
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", cid),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_PATH", cni_path),
        ];
        self.host.exec_with(&[bin], &env, conf.to_string().as_bytes())
    }
}

fn error_of(run: &Run) -> Value {
    assert_eq!(run.status, Some(1), "expected a CNI error: {run}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("error is not JSON ({e}): {run}"))
}

/// The IPv4 addresses of `ifname` (IPv6 link-local ones come and go with the kernel).
fn addresses(ns: &Netns, ifname: &str) -> Vec<String> {
    let v = ns.ip_json(&["-4", "addr", "show", "dev", ifname]);
    v[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[test]
fn add_creates_pod_interface_and_del_replays_the_saved_config() {
    let lab = Lab::new();
    let conf = lab.conf("0.3.1");
    let add = lab.run("ADD", "ctr-one", &conf).expect_ok();
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result["cniVersion"], "0.3.1", "{add}");
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/24");
    assert_eq!(result["ips"][0]["gateway"], "10.244.1.1");

    // The pod got its interface from the bridge delegate, with flannel's MTU.
    assert_eq!(addresses(&lab.pod, "eth0"), ["10.244.1.2/24"]);
    assert_eq!(lab.pod.ip_json(&["link", "show", "dev", "eth0"])[0]["mtu"], 1450);
    assert!(addresses(&lab.host, "cni0").contains(&"10.244.1.1/24".to_string()));
    // isDefaultGateway from the stock delegate block.
    let routes = lab.pod.ip_json(&["route", "show", "default"]);
    assert_eq!(routes[0]["gateway"], "10.244.1.1");

    // The exact delegate config is saved, 0600.
    let saved_path = lab.data_dir().join("ctr-one");
    let saved: Value = serde_json::from_slice(&std::fs::read(&saved_path).unwrap()).unwrap();
    let expected = json!({
        "cniVersion": "0.3.1", "hairpinMode": true, "ipMasq": false, "isDefaultGateway": true,
        "isGateway": true, "mtu": 1450, "name": "cbr0", "type": "bridge",
        "ipam": {"dataDir": lab.dir.path().join("ipam"), "ranges": [[{"subnet": "10.244.1.0/24"}]],
                 "routes": [{"dst": "10.244.0.0/16"}], "type": "host-local"}
    });
    assert_eq!(saved, expected);
    assert_eq!(std::fs::metadata(&saved_path).unwrap().permissions().mode() & 0o777, 0o600);

    // DEL must not consult subnet.env: make it useless, then DEL.
    std::fs::remove_file(lab.subnet_file()).unwrap();
    lab.run("DEL", "ctr-one", &conf).expect_ok();
    assert!(!saved_path.exists(), "saved config must be removed after a successful DEL");
    assert!(!lab.pod.has_link("eth0"), "DEL must remove the pod interface");
    let ipam_dir = lab.dir.path().join("ipam/cbr0");
    assert!(!ipam_dir.join("10.244.1.2").exists(), "DEL must release the address");

    // A second DEL finds nothing and succeeds.
    lab.run("DEL", "ctr-one", &conf).expect_ok();
}

#[test]
fn check_replays_the_saved_config_with_the_prev_result() {
    let lab = Lab::new();
    // The reference bridge speaks up to 1.0.0; CHECK needs ≥ 0.4.0.
    let mut conf = lab.conf("1.0.0");
    let add = lab.run("ADD", "ctr-check", &conf).expect_ok();
    conf["prevResult"] = serde_json::from_str(&add.stdout).unwrap();
    let check = lab.run("CHECK", "ctr-check", &conf);
    if lab.cni_path == REFERENCE_DIR {
        // Reference bridge 1.1.1 cannot CHECK a route without `gw` (docs/cni.md §7.7
        // [1.1.1]); its error reaching us proves the saved config and prevResult got there
        // (without prevResult it would say "Required prevResult missing").
        let err = error_of(&check);
        assert!(err["msg"].as_str().unwrap().contains("10.244.0.0"), "{err}");
    } else {
        check.expect_ok();
    }

    // Once the pod interface is gone the delegate's CHECK fails and says so.
    lab.pod.exec(&["ip", "link", "del", "eth0"]).expect_ok();
    let err = error_of(&lab.run("CHECK", "ctr-check", &conf));
    assert!(err["msg"].as_str().is_some(), "{err}");

    // CHECK of an unknown container is an error naming the missing file.
    let err = error_of(&lab.run("CHECK", "ctr-unknown", &conf));
    assert!(err["msg"].as_str().unwrap().contains("ctr-unknown"), "{err}");
    lab.run("DEL", "ctr-check", &conf).expect_ok();
}

#[test]
fn missing_subnet_env_is_try_again_later_and_touches_nothing() {
    let lab = Lab::new();
    std::fs::remove_file(lab.subnet_file()).unwrap();
    let err = error_of(&lab.run("ADD", "ctr-two", &lab.conf("0.3.1")));
    assert_eq!(err["code"], 11);
    let msg = format!(
        "{} not found: flanneld has not written it yet (is flanneld running on this node?)",
        lab.subnet_file().display()
    );
    assert_eq!(err["msg"], msg.as_str());
    assert!(!lab.data_dir().exists());
    assert!(!lab.pod.has_link("eth0"));
}

#[test]
fn malformed_subnet_env_names_the_key() {
    let lab = Lab::new();
    std::fs::write(lab.subnet_file(), SUBNET_ENV.replace("FLANNEL_MTU=1450", "FLANNEL_MTU=\"1450\""))
        .unwrap();
    let err = error_of(&lab.run("ADD", "ctr-three", &lab.conf("0.3.1")));
    assert_eq!(err["code"], 999);
    assert!(err["msg"].as_str().unwrap().contains("FLANNEL_MTU"), "{err}");
    std::fs::write(lab.subnet_file(), "FLANNEL_NETWORK=10.244.0.0/16\n").unwrap();
    let err = error_of(&lab.run("ADD", "ctr-three", &lab.conf("0.3.1")));
    assert!(err["msg"].as_str().unwrap().contains("FLANNEL_SUBNET, FLANNEL_MTU, FLANNEL_IPMASQ"), "{err}");
    assert!(!lab.data_dir().exists());
}

#[test]
fn delegate_with_name_is_invalid_config() {
    let lab = Lab::new();
    let mut conf = lab.conf("0.3.1");
    conf["delegate"]["name"] = json!("other");
    let err = error_of(&lab.run("ADD", "ctr-four", &conf));
    assert_eq!((err["code"].as_u64(), err["msg"].as_str()), (Some(7), Some("invalid delegate.name")));
    assert!(!lab.data_dir().exists());
}

/// A fake delegate: logs each command to `calls`, fails ADD and DEL with code 42 while the
/// file `fail-<COMMAND>` exists, and otherwise prints a minimal result.
fn fake_delegate(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = format!(
        "#!/bin/sh\ncat >/dev/null\necho \"$CNI_COMMAND\" >> {d}/calls\n\
         if [ -e {d}/fail-$CNI_COMMAND ]; then\n\
         echo '{{\"cniVersion\":\"0.3.1\",\"code\":42,\"msg\":\"fake delegate says no\"}}'; exit 1; fi\n\
         if [ \"$CNI_COMMAND\" = ADD ]; then echo '{{\"cniVersion\":\"0.3.1\",\"ips\":[{{\"version\":\"4\",\"address\":\"10.244.1.9/24\"}}]}}'; fi\n",
        d = dir.display()
    );
    let path = bin.join("fake");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin.display().to_string()
}

fn calls(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("calls")).unwrap_or_default().lines().map(String::from).collect()
}

#[test]
fn delegate_failure_passes_its_code_through_and_leaves_no_saved_file() {
    let lab = Lab::new();
    let path = fake_delegate(lab.dir.path());
    std::fs::write(lab.dir.path().join("fail-ADD"), "").unwrap();
    let mut conf = lab.conf("0.3.1");
    conf["delegate"]["type"] = json!("fake");
    let err = error_of(&lab.run_with_path("ADD", "ctr-five", &conf, &path));
    assert_eq!((err["code"].as_u64(), err["msg"].as_str()), (Some(42), Some("fake delegate says no")));
    assert!(!lab.data_dir().join("ctr-five").exists());
    // The delegate was asked to clean up what it may have done.
    assert_eq!(calls(lab.dir.path()), ["ADD", "DEL"]);
}

#[test]
fn failed_delegate_del_keeps_the_saved_file_for_a_retry() {
    let lab = Lab::new();
    let path = fake_delegate(lab.dir.path());
    let mut conf = lab.conf("0.3.1");
    conf["delegate"]["type"] = json!("fake");
    let add = lab.run_with_path("ADD", "ctr-six", &conf, &path).expect_ok();
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.244.1.9/24");
    let saved = lab.data_dir().join("ctr-six");
    assert!(saved.exists());

    std::fs::write(lab.dir.path().join("fail-DEL"), "").unwrap();
    let err = error_of(&lab.run_with_path("DEL", "ctr-six", &conf, &path));
    assert_eq!(err["code"], 42);
    assert!(saved.exists(), "a failed DEL must keep the config so that a retry can finish");

    std::fs::remove_file(lab.dir.path().join("fail-DEL")).unwrap();
    lab.run_with_path("DEL", "ctr-six", &conf, &path).expect_ok();
    assert!(!saved.exists());
    assert_eq!(calls(lab.dir.path()), ["ADD", "DEL", "DEL"]);
}

#[test]
fn status_without_subnet_env_is_not_available_and_gc_is_a_no_op() {
    let lab = Lab::new();
    std::fs::remove_file(lab.subnet_file()).unwrap();
    let conf = lab.conf("1.1.0");
    let err = error_of(&lab.run("STATUS", "", &conf));
    assert_eq!(err["code"], 50);
    assert!(err["msg"].as_str().unwrap().contains("flanneld has not written it yet"), "{err}");
    lab.run("GC", "", &conf).expect_ok();
    assert!(!lab.data_dir().exists());
}
