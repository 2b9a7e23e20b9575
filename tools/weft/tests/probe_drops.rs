//! The remote node's kernel drop reasons in `weft path --probe`: node 1's firewall drops VXLAN
//! arriving on its underlay (UDP 8472), and the remote capture (flanneld's `/debug/capture`)
//! carries the `skb:kfree_skb` reasons seen on node 1 during its window, read from a tracing
//! instance flanneld creates and removes within the request. Which branch is asserted follows
//! what this kernel offers (tracefs mountable, the event's `reason` field, `NETFILTER_DROP` in
//! its reason table); no tracing instance is left behind either way. Needs root and the built
//! binaries.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_reachable, on, weft};
use serde_json::Value;
use weft_lab::ns::require_root;
use weft_lab::{FlannelSpec, Lab};

const PREFIX: &str = "wtDR";

/// What tracefs offers on node `i`, read through a private mount (the node's `ip netns exec`
/// mount namespace): `None` when it cannot be mounted, else the event's format (empty when
/// the kernel has no `skb:kfree_skb`) and the instance listing.
fn tracefs(lab: &Lab, i: usize) -> Option<(String, Vec<String>)> {
    let sh =
        "d=$(mktemp -d) && mount -t tracefs nodev $d && { cat $d/events/skb/kfree_skb/format 2>/dev/null; \
              echo '--instances--'; ls $d/instances; }; r=$?; umount $d; rmdir $d; exit $r";
    let run = lab.node(i).unwrap().ns().exec(&["sh", "-c", sh]);
    if !run.ok() {
        eprintln!("tracefs cannot be mounted on node {i}: {}", run.stderr.trim());
        return None;
    }
    let (format, instances) = run.stdout.split_once("--instances--\n").unwrap_or((&run.stdout, ""));
    Some((format.to_string(), instances.lines().map(str::to_string).collect()))
}

/// Instances left by a capture or probe: flanneld's of node 1 (its capture has ended once the
/// result is read), and any `weft-probe-<pid>`/`flanneld-capture-<pid>-<id>` whose process is
/// gone (other labs' live ones are theirs).
fn leftovers(instances: &[String], flanneld_pid: u32) -> Vec<String> {
    let ours = format!("flanneld-capture-{flanneld_pid}-");
    instances
        .iter()
        .filter(|n| {
            let pid = n
                .strip_prefix("weft-probe-")
                .or_else(|| n.strip_prefix("flanneld-capture-").and_then(|r| r.split('-').next()));
            n.starts_with(&ours) || pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists())
        })
        .cloned()
        .collect()
}

#[test]
fn remote_capture_carries_the_remote_nodes_drop_reasons_and_leaves_no_instance() {
    require_root();
    let lab = Lab::flannel(PREFIX, FlannelSpec { nodes: 2, pods_per_node: 2, etcd_members: 1 }).unwrap();
    let src = lab.pod(0).unwrap().ip().to_string();
    let dst = lab.pod(2).unwrap().ip().to_string();
    let n1 = lab.node(1).unwrap().ip().to_string();
    let flanneld_pid = lab.node(1).unwrap().flanneld_pid().unwrap();
    assert_reachable(&lab, 0, &src, &dst);
    let offered = tracefs(&lab, 1);

    let rule = ["INPUT", "-i", "eth0", "-p", "udp", "--dport", "8472", "-j", "DROP"];
    let mut add = vec!["iptables", "-I"];
    add.extend_from_slice(&rule);
    on(&lab, 1, &add);
    let run = weft(&lab, 0, "path", &["--probe", "--json", &src, &dst]);
    let mut del = vec!["iptables", "-D"];
    del.extend_from_slice(&rule);
    on(&lab, 1, &del);
    let out = format!("{}\n{}", run.stdout, run.stderr);
    let v: Value = serde_json::from_str(&run.stdout).unwrap_or(Value::Null);
    assert_eq!(run.status, Some(1), "{out}");
    assert_eq!(v["probe"]["remote_watched"], true, "{out}");
    assert_eq!(v["probe"]["last_seen"], format!("underlay (eth0) of {n1}"), "{out}");
    let remote = &v["probe"]["remote_drops"];
    let notes: Vec<&str> = v["probe"]["notes"].as_array().unwrap().iter().filter_map(Value::as_str).collect();

    match &offered {
        Some((format, _)) if format.contains("reason;") => {
            assert_eq!(remote["event"], "skb:kfree_skb", "{out}");
            // The probe's length was sent along (`lens`): node 1 follows the probe's buffers.
            assert_eq!(remote["correlated"], true, "{out}");
            assert!(remote["note"].as_str().unwrap().contains("the probe's own packets"), "{out}");
            let reasons = remote["reasons"].as_array().unwrap();
            // The kernel names netfilter drops NETFILTER_DROP when its reason table has it
            // (`include/net/dropreason-core.h`, used by `nf_hook_slow`); the rule dropped
            // every probe's VXLAN packet on node 1 during the window.
            if format.contains("NETFILTER_DROP") {
                let nf = reasons.iter().find(|r| r["reason"] == "NETFILTER_DROP");
                let nf = nf.unwrap_or_else(|| panic!("no NETFILTER_DROP on {n1}: {out}"));
                assert!(nf["count"].as_u64().unwrap() >= 3, "{out}");
                // The probe's own: its VXLAN packets (the probe's length + 50) dropped there.
                let own =
                    remote["probe"].as_array().unwrap().iter().find(|r| r["reason"] == "NETFILTER_DROP");
                let own =
                    own.unwrap_or_else(|| panic!("no NETFILTER_DROP of the probe's packets on {n1}: {out}"));
                assert!(own["count"].as_u64().unwrap() >= 3, "{out}");
                let failing = v["hops"].as_array().unwrap().iter().find(|h| h["ok"] == false).unwrap();
                let want = "the kernel dropped the probe's packets on the remote node: NETFILTER_DROP";
                assert!(failing["detail"].as_str().unwrap().contains(want), "{out}");
            } else {
                eprintln!("this kernel's skb:kfree_skb has no NETFILTER_DROP reason; list: {reasons:?}");
            }
            assert!(!notes.iter().any(|n| n.contains("drop reasons of")), "{out}");
            // The text form (healthy again) has the remote node's drop line(s) too.
            let text = weft(&lab, 0, "path", &["--probe", &src, &dst]);
            let of_n1 = format!(" of {n1}");
            assert!(
                text.stdout.lines().any(|l| l.trim_start().starts_with("kernel drop") && l.contains(&of_n1)),
                "{}",
                text.stdout
            );
        }
        _ => {
            // No tracefs or no reason field: the result says so, nothing invented.
            assert!(remote.is_null(), "{out}");
            let why = format!("drop reasons of {n1} unavailable: ");
            assert!(notes.iter().any(|n| n.starts_with(&why)), "{out}");
        }
    }

    // Nothing left behind on node 1: no instance of its flanneld, none of a probe that ended.
    // The kernel is shared with whatever else runs on this machine: an instance already there
    // before this test is not ours, and one listed while its process was ending is listed again.
    if let Some((_, instances)) = tracefs(&lab, 1) {
        let before = offered.as_ref().map(|(_, i)| i.clone()).unwrap_or_default();
        let new: Vec<String> =
            leftovers(&instances, flanneld_pid).into_iter().filter(|n| !before.contains(n)).collect();
        let again = if new.is_empty() { Vec::new() } else { tracefs(&lab, 1).unwrap().1 };
        let left: Vec<&String> = new.iter().filter(|n| again.contains(n)).collect();
        assert!(left.is_empty(), "tracing instances left behind: {left:?}");
    }
    assert_reachable(&lab, 0, &src, &dst);
}
