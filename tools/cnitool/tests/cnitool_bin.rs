//! The built `cnitool` binary: a chain of recording fake plugins (order, prevResult,
//! runtimeConfig, cache, GC, STATUS; no root needed) and the stock flannel conflist from
//! test-configs with flannel, bridge/host-local and the reference portmap in lab
//! namespaces (root).
//!
//! The flannel chain needs the `flannel` binary built (`cargo build --workspace --bins`;
//! `cargo test --workspace` does it). Delegates: our `bridge`/`host-local` when built, else
//! the reference ones; `WEFT_TEST_REFERENCE_DELEGATES=1` forces the reference.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use weft_cnitool::cli::container_id;
use weft_lab::bins::REFERENCE_DIR;
use weft_lab::cmd::{run, Run};
use weft_lab::ns::{require_root, Netns};

fn test_configs() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-configs"))
}

fn cnitool(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut argv = vec![env!("CARGO_BIN_EXE_cnitool")];
    argv.extend_from_slice(args);
    run(&argv, env, b"", Duration::from_secs(60))
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Two recording plugins `rec1`, `rec2`: each saves its stdin as `<name>-<COMMAND>.json`,
/// logs `<name> <COMMAND> <CNI_ARGS>` to `calls`; on ADD rec1 prints a result and rec2
/// passes its prevResult through.
struct Recorders {
    dir: tempfile::TempDir,
}

impl Recorders {
    fn new(version: &str) -> Recorders {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        std::fs::create_dir(dir.path().join("net.d")).unwrap();
        let script = format!(
            r#"#!/bin/sh
name=$(basename "$0")
in=$(cat)
printf '%s' "$in" > {d}/$name-$CNI_COMMAND.json
echo "$name $CNI_COMMAND $CNI_ARGS" >> {d}/calls
if [ "$CNI_COMMAND" = ADD ]; then
  if [ "$name" = rec1 ]; then
    echo '{{"cniVersion":"{version}","interfaces":[{{"name":"eth0","sandbox":"'"$CNI_NETNS"'"}}],"ips":[{{"address":"10.1.2.3/24","interface":0}}]}}'
  else
    printf '%s' "$in" | jq -c .prevResult
  fi
fi
"#
        );
        write_exec(&dir.path().join("bin/rec1"), &script);
        write_exec(&dir.path().join("bin/rec2"), &script);
        let list = json!({
            "cniVersion": version, "name": "recnet",
            "plugins": [
                {"type": "rec1", "capabilities": {"portMappings": true}},
                {"type": "rec2", "opaque": {"b": 1, "a": 2}}
            ]
        });
        std::fs::write(dir.path().join("net.d/10-rec.conflist"), serde_json::to_vec_pretty(&list).unwrap())
            .unwrap();
        Recorders { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("NETCONFPATH".into(), self.path("net.d").display().to_string()),
            ("CNI_PATH".into(), self.path("bin").display().to_string()),
            ("CNI_CACHE_DIR".into(), self.path("cache").display().to_string()),
            ("CNI_ARGS".into(), "IgnoreUnknown=1;K8S_POD_NAME=p1".into()),
            (
                "CAP_ARGS".into(),
                r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],"bandwidth":{}}"#
                    .into(),
            ),
        ]
    }

    fn run(&self, verb: &str) -> Run {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        cnitool(&[verb, "recnet", "/run/netns/wtfl-fake"], &env)
    }

    fn calls(&self) -> Vec<String> {
        let text = std::fs::read_to_string(self.path("calls")).unwrap_or_default();
        let calls = text.lines().map(String::from).collect();
        let _ = std::fs::remove_file(self.path("calls"));
        calls
    }

    fn stdin_of(&self, plugin: &str, command: &str) -> Value {
        serde_json::from_slice(&std::fs::read(self.path(&format!("{plugin}-{command}.json"))).unwrap())
            .unwrap()
    }

    fn cache_file(&self) -> PathBuf {
        self.path(&format!("cache/results/recnet-{}-eth0", container_id("/run/netns/wtfl-fake")))
    }
}

#[test]
fn add_in_order_del_in_reverse_with_cached_prev_result() {
    let rec = Recorders::new("1.0.0");
    let add = rec.run("add").expect_ok();
    assert_eq!(
        rec.calls(),
        ["rec1 ADD IgnoreUnknown=1;K8S_POD_NAME=p1", "rec2 ADD IgnoreUnknown=1;K8S_POD_NAME=p1"]
    );
    // 4-space indent, no trailing newline, the final result.
    assert!(add.stdout.starts_with("{\n    \"cniVersion\": \"1.0.0\""), "{}", add.stdout);
    assert!(!add.stdout.ends_with('\n'));
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result["ips"][0]["address"], "10.1.2.3/24");

    // Requests: name/cniVersion injected, keys sorted compact, capabilities filtered.
    let first = std::fs::read_to_string(rec.path("rec1-ADD.json")).unwrap();
    assert_eq!(
        first,
        r#"{"capabilities":{"portMappings":true},"cniVersion":"1.0.0","name":"recnet","runtimeConfig":{"portMappings":[{"containerPort":80,"hostPort":8080,"protocol":"tcp"}]},"type":"rec1"}"#
    );
    let second = rec.stdin_of("rec2", "ADD");
    assert_eq!(second["prevResult"], result);
    assert!(second.get("runtimeConfig").is_none());

    // The cache entry, in libcni's format.
    let cached: Value = serde_json::from_slice(&std::fs::read(rec.cache_file()).unwrap()).unwrap();
    assert_eq!(cached["kind"], "cniCacheV1");
    assert_eq!(cached["containerId"], container_id("/run/netns/wtfl-fake"));
    assert_eq!(cached["netns"], "/run/netns/wtfl-fake");
    assert_eq!(cached["ifName"], "eth0");
    assert_eq!(cached["networkName"], "recnet");
    assert_eq!(cached["cniArgs"], json!([["IgnoreUnknown", "1"], ["K8S_POD_NAME", "p1"]]));
    assert_eq!(cached["result"], result);
    let list_bytes = std::fs::read(rec.path("net.d/10-rec.conflist")).unwrap();
    assert_eq!(cached["config"], weft_cnitool::cache::encode_config(&list_bytes).as_str());

    // CHECK: list order, cached result as prevResult.
    rec.run("check").expect_ok();
    assert_eq!(rec.calls().iter().map(|c| &c[..10]).collect::<Vec<_>>(), ["rec1 CHECK", "rec2 CHECK"]);
    assert_eq!(rec.stdin_of("rec1", "CHECK")["prevResult"], result);

    // DEL: reverse order, cached result as prevResult, cache removed.
    rec.run("del").expect_ok();
    assert_eq!(rec.calls().iter().map(|c| &c[..8]).collect::<Vec<_>>(), ["rec2 DEL", "rec1 DEL"]);
    assert_eq!(rec.stdin_of("rec1", "DEL")["prevResult"], result);
    assert!(!rec.cache_file().exists());

    // DEL again: no cache, so no prevResult; still succeeds.
    rec.run("del").expect_ok();
    assert!(rec.stdin_of("rec2", "DEL").get("prevResult").is_none());
}

#[test]
fn gc_deletes_every_cached_attachment_then_sends_gc() {
    let rec = Recorders::new("1.1.0");
    rec.run("add").expect_ok();
    rec.calls();
    rec.run("gc").expect_ok();
    let calls: Vec<String> =
        rec.calls().iter().map(|c| c.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(calls, ["rec2 DEL", "rec1 DEL", "rec1 GC", "rec2 GC"]);
    assert!(!rec.cache_file().exists());
    let gc = rec.stdin_of("rec1", "GC");
    assert!(gc.get("cni.dev/valid-attachments").is_none() && gc.get("runtimeConfig").is_none());
    assert_eq!((gc["name"].as_str(), gc["cniVersion"].as_str()), (Some("recnet"), Some("1.1.0")));

    rec.run("status").expect_ok();
    let calls: Vec<String> =
        rec.calls().iter().map(|c| c.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
    assert_eq!(calls, ["rec1 STATUS", "rec2 STATUS"]);
}

#[test]
fn errors_go_to_stderr_with_exit_1() {
    let rec = Recorders::new("0.3.1");
    let out = rec.run("check");
    assert_eq!(out.status, Some(1));
    assert!(
        out.stderr.contains(r#"configuration version "0.3.1" does not support the CHECK command"#),
        "{out}"
    );
    assert!(out.stdout.is_empty());
    let env = rec.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let out = cnitool(&["add", "nosuchnet", "/run/netns/x"], &env);
    assert_eq!(out.status, Some(1));
    assert!(out.stderr.contains("no net configuration"), "{out}");
    let out = cnitool(&["gc", "recnet"], &env);
    assert_eq!(out.status, Some(1));
    assert!(out.stderr.contains("add"), "usage expected: {out}");
    // A failing plugin: its error, in libcni's wording; nothing cached.
    write_exec(&rec.path("bin/rec2"), "#!/bin/sh\necho '{\"code\":11,\"msg\":\"later\"}'\nexit 1\n");
    let out = rec.run("add");
    assert_eq!(out.status, Some(1));
    assert!(out.stderr.contains(r#"plugin type="rec2" failed (add): later"#), "{out}");
    assert!(!rec.cache_file().exists());
}

// ---- the stock flannel conflist, for real (root) ----

/// True when our `bridge` and `host-local` are built and not overridden: then the chain
/// uses them, else the reference ones.
fn use_our_delegates() -> bool {
    let ours = weft_lab::bins::bin_dir();
    std::env::var_os("WEFT_TEST_REFERENCE_DELEGATES").is_none()
        && ours.join("bridge").is_file()
        && ours.join("host-local").is_file()
}

struct FlannelLab {
    host: Netns,
    pod: Netns,
    dir: tempfile::TempDir,
    cni_path: String,
    reference: bool,
    cap_args: &'static str,
}

impl FlannelLab {
    /// Copies test-configs/10-flannel.conflist into a temp NETCONFPATH with its paths
    /// pointed into the temp dir (and `cniVersion` replaced when given).
    fn new(version: Option<&str>) -> FlannelLab {
        require_root();
        let dir = tempfile::tempdir().unwrap();
        // CNI_PATH: flannel first, then our bridge/host-local (same directory) or the
        // reference ones; portmap always comes from the reference directory.
        let reference = !use_our_delegates();
        let cni_path = if reference {
            // flannel alone in a directory of its own, so that our bridge is not picked up.
            let only = dir.path().join("flannel-only");
            std::fs::create_dir(&only).unwrap();
            std::fs::copy(weft_lab::bins::bin("flannel"), only.join("flannel")).unwrap();
            format!("{}:{REFERENCE_DIR}", only.display())
        } else {
            format!("{}:{REFERENCE_DIR}", weft_lab::bins::bin("flannel").parent().unwrap().display())
        };
        std::fs::write(
            dir.path().join("subnet.env"),
            "FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
        )
        .unwrap();
        let mut list: Value =
            serde_json::from_slice(&std::fs::read(test_configs().join("10-flannel.conflist")).unwrap())
                .unwrap();
        let flannel = &mut list["plugins"][0];
        flannel["subnetFile"] = json!(dir.path().join("subnet.env"));
        flannel["dataDir"] = json!(dir.path().join("flannel"));
        flannel["ipam"] = json!({"dataDir": dir.path().join("ipam")});
        if let Some(v) = version {
            list["cniVersion"] = json!(v);
        }
        std::fs::create_dir(dir.path().join("net.d")).unwrap();
        std::fs::write(
            dir.path().join("net.d/10-flannel.conflist"),
            serde_json::to_vec_pretty(&list).unwrap(),
        )
        .unwrap();
        let cap_args = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}"#;
        FlannelLab {
            host: Netns::unique("wtflh"),
            pod: Netns::unique("wtflp"),
            dir,
            cni_path,
            reference,
            cap_args,
        }
    }

    fn run(&self, verb: &str) -> Run {
        let netconf = self.dir.path().join("net.d").display().to_string();
        let cache = self.dir.path().join("cache").display().to_string();
        let env = [
            ("NETCONFPATH", netconf.as_str()),
            ("CNI_PATH", self.cni_path.as_str()),
            ("CNI_CACHE_DIR", cache.as_str()),
            ("CAP_ARGS", self.cap_args),
        ];
        let netns = self.pod.path();
        self.host.exec_with(&[env!("CARGO_BIN_EXE_cnitool"), verb, "cbr0", &netns], &env, b"")
    }

    fn cid(&self) -> String {
        container_id(&self.pod.path())
    }

    fn cache_file(&self) -> PathBuf {
        self.dir.path().join(format!("cache/results/cbr0-{}-eth0", self.cid()))
    }

    fn saved_delegate(&self) -> PathBuf {
        self.dir.path().join("flannel").join(self.cid())
    }

    fn nat_rules(&self) -> String {
        self.host.exec(&["iptables", "-t", "nat", "-S"]).expect_ok().stdout
    }
}

#[test]
fn stock_flannel_conflist_add_del_with_portmap() {
    let lab = FlannelLab::new(None);
    let add = lab.run("add").expect_ok();
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    assert_eq!(result["cniVersion"], "0.3.1", "{add}");
    assert_eq!(result["ips"][0]["address"], "10.244.1.2/24");
    assert!(lab.pod.has_link("eth0"));
    assert!(lab.saved_delegate().is_file(), "flannel saves its delegate config");
    let cached: Value = serde_json::from_slice(&std::fs::read(lab.cache_file()).unwrap()).unwrap();
    assert_eq!(
        (cached["kind"].as_str(), cached["netns"].as_str()),
        (Some("cniCacheV1"), Some(lab.pod.path().as_str()))
    );
    assert_eq!(cached["result"], result);
    assert_eq!(cached["capabilityArgs"]["portMappings"][0]["hostPort"], 8080);
    // portmap got the result and its capability: DNAT for 8080 → the pod's address.
    let nat = lab.nat_rules();
    assert!(nat.contains("8080") && nat.contains("10.244.1.2:80"), "{nat}");

    // CHECK is refused for a 0.3.1 list, as libcni does.
    let check = lab.run("check");
    assert_eq!(check.status, Some(1));
    assert!(check.stderr.contains("does not support the CHECK command"), "{check}");

    lab.run("del").expect_ok();
    assert!(!lab.pod.has_link("eth0"));
    assert!(!lab.cache_file().exists());
    assert!(!lab.saved_delegate().exists());
    let nat = lab.nat_rules();
    assert!(!nat.contains("10.244.1.2:80"), "portmap DEL must remove its DNAT: {nat}");
}

#[test]
fn flannel_chain_check_and_gc_at_1_0_0() {
    let mut lab = FlannelLab::new(Some("1.0.0"));
    // Reference portmap 1.1.1 cannot CHECK port mappings of a v4-only pod on a host with
    // ip6tables ("could not check ipv6 dnat"); without mappings it checks nothing.
    lab.cap_args = "";
    lab.run("add").expect_ok();
    let check = lab.run("check");
    if lab.reference {
        // Reference bridge 1.1.1 fails CHECK on routes without gw (docs/cni.md §7.7);
        // the error comes back through flannel and cnitool unchanged.
        assert_eq!(check.status, Some(1));
        assert!(check.stderr.contains(r#"plugin type="flannel" failed (check)"#), "{check}");
        assert!(check.stderr.contains("10.244.0.0"), "{check}");
    } else {
        check.expect_ok();
    }
    // gc: every cached attachment of cbr0 is DELeted with its cached netns.
    lab.run("gc").expect_ok();
    assert!(!lab.pod.has_link("eth0"));
    assert!(!lab.cache_file().exists());
    assert!(!lab.saved_delegate().exists());
}

// ---- our bridge + host-local followed by the reference portmap and bandwidth ----

#[test]
fn our_bridge_then_reference_portmap_and_bandwidth_in_one_chain() {
    require_root();
    assert!(
        weft_lab::bins::bin("bridge").is_file() && weft_lab::bins::bin("host-local").is_file(),
        "build our bridge and host-local first (cargo build --workspace --bins)"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut list: Value =
        serde_json::from_slice(&std::fs::read(test_configs().join("30-bridge-portmap.conflist")).unwrap())
            .unwrap();
    list["plugins"][0]["ipam"]["dataDir"] = json!(dir.path().join("ipam"));
    std::fs::create_dir(dir.path().join("net.d")).unwrap();
    std::fs::write(dir.path().join("net.d/30-bridge-portmap.conflist"), serde_json::to_vec(&list).unwrap())
        .unwrap();
    let (host, pod) = (Netns::unique("wtflh"), Netns::unique("wtflp"));
    let ours = weft_lab::bins::bin("bridge").parent().unwrap().display().to_string();
    let cni_path = format!("{ours}:{REFERENCE_DIR}");
    let netconf = dir.path().join("net.d").display().to_string();
    let cache = dir.path().join("cache").display().to_string();
    let cap_args = r#"{"portMappings":[{"hostPort":8081,"containerPort":81,"protocol":"tcp"}],
        "bandwidth":{"ingressRate":8000000,"ingressBurst":80000,"egressRate":8000000,"egressBurst":80000}}"#;
    let env = [
        ("NETCONFPATH", netconf.as_str()),
        ("CNI_PATH", cni_path.as_str()),
        ("CNI_CACHE_DIR", cache.as_str()),
        ("CAP_ARGS", cap_args),
    ];
    let netns = pod.path();
    let cnitool = |verb: &str| {
        host.exec_with(&[env!("CARGO_BIN_EXE_cnitool"), verb, "weft-portmap", &netns], &env, b"")
    };

    let add = cnitool("add").expect_ok();
    let result: Value = serde_json::from_str(&add.stdout).unwrap();
    let host_veth = result["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["sandbox"].is_null() && i["name"] != "weft2")
        .and_then(|i| i["name"].as_str())
        .unwrap_or_else(|| panic!("no host veth in {result}"))
        .to_string();
    let addr = result["ips"][0]["address"].as_str().unwrap().split('/').next().unwrap().to_string();
    // portmap: a DNAT to the pod; bridge: its masquerade chain; bandwidth: a tbf on the host
    // veth (ingress) and an ifb device for egress.
    let nat = host.exec(&["iptables", "-t", "nat", "-S"]).expect_ok().stdout;
    assert!(nat.contains(&format!("{addr}:81")), "{nat}");
    assert!(nat.contains("-A POSTROUTING") && nat.contains("CNI-"), "{nat}");
    let qdisc = host.exec(&["tc", "qdisc", "show", "dev", &host_veth]).expect_ok().stdout;
    assert!(qdisc.contains("tbf"), "bandwidth must shape the host veth: {qdisc}");
    let links = host.exec(&["ip", "-o", "link", "show", "type", "ifb"]).expect_ok().stdout;
    assert!(!links.trim().is_empty(), "bandwidth must create its ifb device");

    cnitool("del").expect_ok();
    assert!(!pod.has_link("eth0"));
    assert!(!host.has_link(&host_veth));
    let nat = host.exec(&["iptables", "-t", "nat", "-S"]).expect_ok().stdout;
    assert!(!nat.contains(&format!("{addr}:81")), "{nat}");
    // portmap keeps its shared CNI-HOSTPORT-* chains; per-pod chains must all be gone.
    let per_pod = nat.lines().filter(|l| l.starts_with("-N CNI-") && !l.starts_with("-N CNI-HOSTPORT"));
    assert_eq!(per_pod.count(), 0, "{nat}");
    let links = host.exec(&["ip", "-o", "link", "show", "type", "ifb"]).expect_ok().stdout;
    assert!(links.trim().is_empty(), "bandwidth DEL must remove its ifb device: {links}");
    let leftover: Vec<_> = std::fs::read_dir(dir.path().join("ipam/weft-portmap"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.parse::<std::net::IpAddr>().is_ok())
        .collect();
    assert!(leftover.is_empty(), "IP files left: {leftover:?}");
}
