//! `weft path` judging the *destination* node's filters from its flanneld's view (two-node
//! VXLAN lab, weft flanneld with `-debug-dataplane`): a FORWARD DROP rule for pod traffic on
//! node 1 only is named `FORWARD_DROP` at node 1's `remote-firewall` hop, and strict
//! `rp_filter` on node 1 with its route back to the source pod leaving by another device is
//! `RP_FILTER` at node 1's `remote-route` hop; each repaired → `reachable`. No probe: the
//! verdicts come from node 1's rules and sysctls as its view carries them. node 1's flanneld
//! keeps running (it serves the view); the breaks are ones it does not repair.
//! Needs root and the built binaries; never skipped. Lab namespaces start with `wtVR`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_broken, assert_reachable, on, path};
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

const PREFIX: &str = "wtVR";

#[test]
fn remote_forward_drop_and_rp_filter_are_named_on_the_remote_node() {
    require_root();
    let lab = Lab::flannel(PREFIX, FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 }).unwrap();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(1).unwrap().ip().to_string();
    let n1 = lab.node(1).unwrap().ip().to_string();
    assert_reachable(&lab, 0, &src, &dst);
    let (_, v, _) = path(&lab, 0, &src, &dst);
    let fw = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "remote-firewall").unwrap().clone();
    assert_eq!(fw["node"], n1.as_str(), "{fw}");
    assert!(fw["object"].as_str().unwrap().starts_with("FORWARD flannel.1 → cni0"), "{fw}");

    // F7 on node 1 only: a DROP rule for the source pod ahead of flanneld's accept rules.
    let rule = ["FORWARD", "-s", &src, "-d", &dst, "-j", "DROP"];
    on(&lab, 1, &[&["iptables", "-I"][..], &rule[..]].concat());
    let v = assert_broken(&lab, 0, &src, &dst, "remote-firewall", "FORWARD_DROP");
    let hop = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap().clone();
    assert_eq!(hop["node"], n1.as_str(), "{hop}");
    assert!(hop["object"].as_str().unwrap().contains("DROP"), "{hop}");
    assert!(v["hint"].as_str().unwrap().contains("FORWARD"), "{v}");
    // Node 0's own FORWARD hop is fine: the break is the remote node's.
    let local = v["hops"].as_array().unwrap().iter().find(|h| h["step"] == "forward").unwrap().clone();
    assert_eq!(local["ok"], true, "{local}");
    on(&lab, 1, &[&["iptables", "-D"][..], &rule[..]].concat());
    assert_reachable(&lab, 0, &src, &dst);

    // F10 on node 1: strict rp_filter, and its route back to the source pod leaves by eth0.
    let before = on(&lab, 1, &["sysctl", "-n", "net.ipv4.conf.all.rp_filter"]).trim().to_string();
    on(&lab, 1, &["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"]);
    on(&lab, 1, &["ip", "route", "add", &format!("{src}/32"), "dev", "eth0"]);
    let v = assert_broken(&lab, 0, &src, &dst, "remote-route", "RP_FILTER");
    let hop = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap().clone();
    assert_eq!(hop["node"], n1.as_str(), "{hop}");
    assert!(hop["detail"].as_str().unwrap().contains("dev eth0"), "{hop}");
    // Strict alone is fine while the route back goes through flannel.1.
    on(&lab, 1, &["ip", "route", "del", &format!("{src}/32"), "dev", "eth0"]);
    assert_reachable(&lab, 0, &src, &dst);
    on(&lab, 1, &["sysctl", "-qw", &format!("net.ipv4.conf.all.rp_filter={before}")]);
    assert_reachable(&lab, 0, &src, &dst);
}
