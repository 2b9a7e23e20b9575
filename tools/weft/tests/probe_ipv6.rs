//! `weft path --probe` over IPv6 in a dual-stack VXLAN lab (root): two nodes with weft's
//! flanneld (`flannel-v6.1` on each, VXLAN over the IPv6 underlay), two pods per node. From
//! pod 0 on node 0 to an IPv6 pod on node 1: ICMPv6 echoes carrying the probe's marker are
//! seen on every hop of node 0 and, through node 1's flanneld `/debug/capture`, on node 1
//! (outer IPv6/UDP 8472 on `eth0`, inner IPv6 on `flannel-v6.1`, the bridge and the pod's
//! veth), answered, and the echo of exactly the pod MTU is answered; UDP and TCP probes to a
//! closed port are seen and answered (ICMPv6 port unreachable, RST). Then node 1 drops VXLAN
//! over IPv6 on arrival (`ip6tables -A INPUT -p udp --dport 8472 -j DROP`): not answered, node 0's
//! `eth0` saw it leave, node 1's `flannel-v6.1` never saw it. The switch port toward node 1
//! at MTU 1400: small probes answered, the echo of the pod MTU not (`MTU_MISMATCH`). Each
//! repaired → answered.
//! Namespaces: `wtP6`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_reachable, on, probe, probe_hop};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

const PREFIX: &str = "wtP6";

fn requests(v: &Value, node: &str, place: &str) -> u64 {
    probe_hop(v, node, place)["requests"].as_u64().unwrap()
}

#[test]
fn ipv6_probe_sees_every_hop_then_finds_vxlan_dropped_on_the_remote_underlay() {
    require_root();
    let spec = FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 };
    let lab = Lab::flannel_dual_stack(PREFIX, spec, &["--reconcile-interval=3600"]).unwrap();
    let on_node =
        |n: usize| (0..lab.pods().len()).filter(|p| lab.pod(*p).unwrap().node() == n).collect::<Vec<_>>();
    let (a, b) = (on_node(0)[0], on_node(1)[0]);
    let src = lab.pod(a).unwrap().ip6().unwrap().to_string();
    let dst = lab.pod(b).unwrap().ip6().unwrap().to_string();
    let n1 = lab.node(1).unwrap().ip().to_string();
    let (l, r) = ("local", n1.as_str());
    assert_reachable(&lab, 0, &src, &dst);

    // Healthy: every hop on both nodes saw the echoes and their replies.
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert_eq!(code, Some(0), "{out}");
    let p = &v["probe"];
    assert_eq!(p["proto"], "icmp", "{out}");
    assert_eq!(p["answered"], true, "{out}");
    assert_eq!(p["remote_watched"], true, "{out}");
    assert_eq!(p["df_answered"], true, "an echo of exactly the pod MTU fits: {out}");
    let places: Vec<(&str, &str, &str)> = p["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["node"].as_str().unwrap(), h["place"].as_str().unwrap(), h["ifname"].as_str().unwrap()))
        .map(|(n, p, i)| (n, p, if p.ends_with("veth") || p == "pod" { "-" } else { i }))
        .collect();
    assert_eq!(
        places,
        [
            (l, "pod", "-"),
            (l, "veth", "-"),
            (l, "bridge", "cni0"),
            (l, "vtep", "flannel-v6.1"),
            (l, "underlay", "eth0"),
            (r, "underlay", "eth0"),
            (r, "vtep", "flannel-v6.1"),
            (r, "bridge", "cni0"),
            (r, "dst-veth", "-"),
        ],
        "{out}"
    );
    for h in p["hops"].as_array().unwrap() {
        assert!(h["requests"].as_u64().unwrap() >= 3 && h["replies"].as_u64().unwrap() >= 3, "{h}: {out}");
    }
    assert!(p["last_seen"].as_str().unwrap().starts_with("dst-veth ("), "{out}");
    // The underlay frames really were VXLAN over IPv6: the remote side counted them on its
    // eth0 only by opening outer IPv6/UDP 8472 (no inner address is on eth0).
    assert!(requests(&v, r, "underlay") >= 3, "{out}");

    // UDP to a closed port: seen out, answered by ICMPv6 port unreachable.
    let (code, v, out) = probe(&lab, &src, &dst, &["--proto", "udp", "--port", "9"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["probe"]["answered"], true, "{out}");
    assert!(requests(&v, r, "dst-veth") >= 3, "{out}");
    // TCP to a closed port: the SYN seen on node 1's pod veth, answered by a RST.
    let (code, v, out) = probe(&lab, &src, &dst, &["--proto", "tcp", "--port", "9"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["probe"]["answered"], true, "{out}");
    assert!(requests(&v, r, "dst-veth") >= 1, "{out}");

    // Node 1 drops VXLAN over IPv6 on arrival. Packet taps run before the firewall, so its
    // eth0 still sees the frames; its flannel-v6.1 never does.
    let rule = ["INPUT", "-p", "udp", "--dport", "8472", "-j", "DROP"];
    let mut add = vec!["ip6tables", "-A"];
    add.extend_from_slice(&rule);
    on(&lab, 1, &add);
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    let mut del = vec!["ip6tables", "-D"];
    del.extend_from_slice(&rule);
    on(&lab, 1, &del);
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["probe"]["answered"], false, "{out}");
    assert!(requests(&v, l, "underlay") >= 3, "{out}");
    assert_eq!(requests(&v, r, "vtep"), 0, "{out}");
    assert_eq!(requests(&v, r, "dst-veth"), 0, "{out}");
    assert_eq!(v["probe"]["last_seen"], format!("underlay (eth0) of {n1}"), "{out}");
    assert_eq!(v["cause"], "UNDERLAY_LOSS", "{out}");

    // F8 over IPv6: the switch port toward node 1 carries 1400 bytes, less than an echo of
    // exactly the pod MTU (1430) inside VXLAN over IPv6 (+70): small probes are answered, the
    // DF-equivalent one (IPV6_DONTFRAG; IPv6 is never fragmented in transit) is not.
    let sw = lab.switch().unwrap();
    assert!(sw.exec(&["ip", "link", "set", "n1", "mtu", "1400"]).ok());
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert!(sw.exec(&["ip", "link", "set", "n1", "mtu", "1500"]).ok());
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(v["cause"], "MTU_MISMATCH", "{out}");
    assert_eq!(v["probe"]["answered"], true, "{out}");
    assert_eq!(v["probe"]["df_probe_size"], 1430, "{out}");
    assert_eq!(v["probe"]["df_answered"], false, "{out}");

    // Removed: answered again, and nothing was left behind (a new remote capture starts).
    let (code, v, out) = probe(&lab, &src, &dst, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(v["probe"]["answered"], true, "{out}");
    assert!(!out.contains("remote capture"), "{out}");
}
