//! 64 parallel ADDs into one network, then 64 parallel DELs, five rounds: every pod gets a
//! distinct address and answers ping; afterwards no veth, no IP file and no masquerade rule
//! is left. The same with the nftables masquerade backend (two rounds), whose ADDs share the
//! `postrouting` chain of one table. Runs the built `bridge` and `host-local` binaries in
//! namespaces of its own.

// Helpers outside #[test] functions: clippy's allow-unwrap-in-tests does not cover them.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use weft_lab::bins::{bin, bin_dir};
use weft_lab::ns::{require_root, Netns};

const PODS: usize = 64;
const ROUNDS: usize = 5;

fn conf(data_dir: &Path, backend: Option<&str>) -> String {
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "conc",
        "type": "bridge",
        "bridge": "cni0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.77.0.0/24"}]],
            "dataDir": data_dir.display().to_string()
        }
    });
    if let Some(backend) = backend {
        conf["ipMasqBackend"] = backend.into();
    }
    conf.to_string()
}

fn spawn(host: &Netns, cmd: &str, cid: &str, netns: &str, conf: &str) -> Child {
    let bridge = bin("bridge");
    let mut child = Command::new("ip")
        .args(["netns", "exec", host.name()])
        .arg(&bridge)
        .env("CNI_COMMAND", cmd)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_NETNS", netns)
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", bin_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn bridge");
    child.stdin.take().unwrap().write_all(conf.as_bytes()).unwrap();
    child
}

fn wait_all(children: Vec<(String, Child)>) -> Vec<(String, String)> {
    children
        .into_iter()
        .map(|(cid, child)| {
            let out = child.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(out.status.success(), "{cid} failed: {stdout} {}", String::from_utf8_lossy(&out.stderr));
            (cid, stdout)
        })
        .collect()
}

#[test]
fn parallel_adds_and_dels_leave_distinct_addresses_and_nothing_behind() {
    rounds(None, ROUNDS);
}

#[test]
fn parallel_adds_and_dels_with_nftables_masquerade() {
    rounds(Some("nftables"), 2);
}

fn rounds(backend: Option<&str>, rounds: usize) {
    require_root();
    let _ = bin("host-local");
    let host = Netns::unique("wtcc");
    let pods: Vec<Netns> = (0..PODS).map(|_| Netns::unique("wtcp")).collect();
    let data = tempfile::tempdir().unwrap();
    let conf = conf(data.path(), backend);
    let net_dir = data.path().join("conc");

    for round in 0..rounds {
        let adds = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let cid = format!("r{round}p{i}");
                let child = spawn(&host, "ADD", &cid, &pod.path(), &conf);
                (cid, child)
            })
            .collect();
        let results = wait_all(adds);
        let mut ips = HashSet::new();
        for (cid, stdout) in &results {
            let v: serde_json::Value = serde_json::from_str(stdout).unwrap();
            let addr = v["ips"][0]["address"].as_str().unwrap_or_else(|| panic!("{cid}: no ip in {stdout}"));
            let ip = addr.split('/').next().unwrap().to_string();
            assert!(ips.insert(ip.clone()), "round {round}: {ip} handed out twice");
        }
        assert_eq!(ips.len(), PODS);
        for ip in &ips {
            host.exec(&["ping", "-c", "1", "-W", "2", ip]).expect_ok();
        }
        if backend == Some("nftables") {
            // One rule per pod, and the shared base chain holds its three rules exactly once.
            let list = |chain: &str| {
                let argv = ["nft", "list", "chain", "inet", "cni_plugins_masquerade", chain];
                host.exec(&argv).expect_ok().stdout
            };
            assert_eq!(list("masq_checks").matches("masquerade comment").count(), PODS);
            let post = list("postrouting");
            assert_eq!(
                post.matches("return").count() + post.matches("goto masq_checks").count(),
                3,
                "{post}"
            );
        }
        let ip_files = std::fs::read_dir(&net_dir).unwrap().count();
        assert_eq!(ip_files, PODS + 2, "one file per pod plus lock and last_reserved_ip.0");

        let dels = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let cid = format!("r{round}p{i}");
                let child = spawn(&host, "DEL", &cid, &pod.path(), &conf);
                (cid, child)
            })
            .collect();
        wait_all(dels);

        let veths = host.ip_json(&["link", "show", "type", "veth"]);
        assert_eq!(veths.as_array().map(Vec::len), Some(0), "round {round}: veths left: {veths}");
        let mut left: Vec<String> = std::fs::read_dir(&net_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["last_reserved_ip.0", "lock"], "round {round}: IP files left");
        let nat = host.exec(&["iptables-save", "-t", "nat"]);
        assert!(!nat.stdout.contains("CNI-"), "round {round}: iptables rules left:\n{}", nat.stdout);
        // The shared table and its comments stay (as with the reference); no masquerade rule may.
        let nft = host.exec(&["nft", "list", "ruleset"]);
        let rules =
            nft.stdout.lines().map(str::trim).filter(|l| {
                !l.starts_with("table ") && !l.starts_with("comment ") && l.contains("masquerade")
            });
        assert_eq!(rules.count(), 0, "round {round}: nft rules left:\n{}", nft.stdout);
    }
}
