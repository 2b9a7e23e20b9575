//! The kernel's drop reasons during `weft path --probe` (this node) and during flanneld's
//! `/debug/capture` (the remote node), from the `skb:kfree_skb` tracepoint read through tracefs
//! (no eBPF): its `reason` field (kernel ≥ 5.17, `include/net/dropreason-core.h`) names why a
//! packet was freed (`NETFILTER_DROP`, `IP_RPFILTER`, `OTHERHOST`, `NEIGH_FAILED`...).
//!
//! Nothing global is changed: the event is enabled in a tracing *instance* of our own
//! (`instances/<name>`, e.g. `weft-probe-<pid>` or `flanneld-capture-<pid>-<id>`; its own ring
//! buffer, event switches and filters, `Documentation/trace/ftrace.rst` "Instances"), filtered to
//! IPv4 and IPv6 packets (`protocol == 2048 || protocol == 34525`: probes of both families, and
//! VXLAN over either underlay), and the instance is removed afterwards. If tracefs is not
//! mounted, it is mounted on a temporary directory (inside `ip netns exec`'s private mount
//! namespace when run there) and unmounted afterwards. Cleanup runs on every path, also on
//! error and on unwinding ([`Drop`]).
//!
//! `skb:kfree_skb` carries no addresses, only the socket buffer's address, its protocol and
//! where it was freed, and it is machine-wide. The probe's own drops are found through the
//! buffer: the probe's packets have a length of their own (`weft path` pads them to one that
//! ordinary traffic rarely has), and `net:netif_receive_skb`, filtered to that length (and to
//! the length of a VXLAN packet carrying it), records the address of every buffer that carries
//! one into a device, on each hop; a `kfree_skb` of such an address afterwards, with no
//! `skb:consume_skb` of it in between (a buffer freed normally may carry another packet next),
//! is a drop of a probe packet (the same buffer travels through veths, bridges and VXLAN
//! encapsulation). The events print the address hashed the same way, which is all the match
//! needs. Every IP drop of the window is reported as well (`reasons`), the probe's own in
//! `probe`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where tracefs is usually mounted.
const TRACEFS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
const EVENT: &str = "events/skb/kfree_skb";
/// Where a buffer enters a device (`__netif_receive_skb_core`): its address and `skb->len`.
const RX_EVENT: &str = "events/net/netif_receive_skb";
/// A buffer freed normally (delivered, transmitted): its address may now carry another packet.
const CONSUME_EVENT: &str = "events/skb/consume_skb";
/// Ring buffer of an instance that follows buffers, all CPUs together (KiB): `consume_skb`
/// fires for every packet the machine handles, and the window's probe events should not be
/// overwritten (a CPU's oldest events go first: a probe drop can then be missed, or, rarely, a
/// reused buffer's drop counted). Spread over the CPUs, at most 8 MiB each, and never below the
/// kernel's default (1408 KiB per CPU).
const TRACKING_BUFFER_TOTAL_KB: usize = 64 * 1024;
/// `ETH_P_IP` or `ETH_P_IPV6` as the tracepoint records them (host order).
const FILTER: &str = "protocol == 2048 || protocol == 34525";

/// One drop reason seen, with where the kernel freed the packets.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReasonCount {
    pub reason: String,
    pub location: String,
    pub count: u32,
}

/// The drop reasons seen during the probe (or capture) window.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DropReport {
    pub event: String,
    /// Most frequent first.
    pub reasons: Vec<ReasonCount>,
    /// Whether the probe's own packets were followed (`probe` is then their drops).
    pub correlated: bool,
    /// The drops of the probe's own packets (by reason and location), when `correlated`.
    #[serde(default)]
    pub probe: Vec<ReasonCount>,
    pub note: String,
}

/// An enabled `skb:kfree_skb` in a private tracing instance.
pub struct DropWatch {
    instance: PathBuf,
    /// Whether `net:netif_receive_skb` follows the probe's buffers (see the module note).
    tracking: bool,
    /// The temporary mount point, when tracefs had to be mounted.
    mounted: Option<PathBuf>,
    cleaned: bool,
}

fn write(path: &Path, what: &str) -> Result<(), String> {
    fs::write(path, what).map_err(|e| format!("write {what:?} to {}: {e}", path.display()))
}

fn mount_tracefs(name: &str) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("{name}-tracefs"));
    fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let r =
        nix::mount::mount(Some("nodev"), &dir, Some("tracefs"), nix::mount::MsFlags::empty(), None::<&str>);
    if let Err(e) = r {
        let _ = fs::remove_dir(&dir);
        return Err(format!("tracefs is not mounted and mounting it failed: {e}"));
    }
    Ok(dir)
}

impl DropWatch {
    /// Enables the event in the tracing instance `name` (unique to the caller: its pid and,
    /// in a long-lived process, a request number); the error says why drop reasons are
    /// unavailable.
    pub fn start(name: &str) -> Result<DropWatch, String> {
        DropWatch::start_tracking(name, &[])
    }

    /// [`DropWatch::start`], and with `lens` (the `skb->len` of the probe's packets as they
    /// enter a device) also follows the buffers of that length to their drop.
    pub fn start_tracking(name: &str, lens: &[u32]) -> Result<DropWatch, String> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("{name:?} is not a tracing instance name"));
        }
        let (root, mounted) = match TRACEFS.iter().map(Path::new).find(|r| r.join("events").is_dir()) {
            Some(r) => (r.to_path_buf(), None),
            None => {
                let m = mount_tracefs(name)?;
                (m.clone(), Some(m))
            }
        };
        let instance = root.join("instances").join(name);
        let mut w = DropWatch { instance: instance.clone(), tracking: false, mounted, cleaned: false };
        let format = fs::read_to_string(root.join(EVENT).join("format"))
            .map_err(|e| format!("this kernel has no skb:kfree_skb tracepoint: {e}"))?;
        if !format.contains("reason;") {
            return Err("this kernel's skb:kfree_skb has no reason field (needs 5.17 or later)".into());
        }
        fs::create_dir(&instance)
            .map_err(|e| format!("create tracing instance {}: {e}", instance.display()))?;
        let ev = instance.join(EVENT);
        write(&ev.join("filter"), FILTER)?;
        let rx_format = fs::read_to_string(root.join(RX_EVENT).join("format")).unwrap_or_default();
        if !lens.is_empty() && rx_format.contains("skbaddr;") && rx_format.contains(" len;") {
            // Without them the drops are still reported, machine-wide.
            let rx = instance.join(RX_EVENT);
            let cpus = std::thread::available_parallelism().map_or(1, usize::from);
            let per_cpu = (TRACKING_BUFFER_TOTAL_KB / cpus).min(8192);
            if per_cpu > 1408 {
                let _ = write(&instance.join("buffer_size_kb"), &per_cpu.to_string());
            }
            w.tracking = write(&rx.join("filter"), &len_filter(lens))
                .and_then(|()| write(&instance.join(CONSUME_EVENT).join("enable"), "1"))
                .and_then(|()| write(&rx.join("enable"), "1"))
                .is_ok();
        }
        write(&ev.join("enable"), "1")?;
        Ok(w)
    }

    /// Disables the event, reads what it recorded and removes everything; `window` names the
    /// time the event was on, for the report's note.
    pub fn finish(mut self, window: &str) -> DropReport {
        let _ = write(&self.instance.join(EVENT).join("enable"), "0");
        let _ = write(&self.instance.join(RX_EVENT).join("enable"), "0");
        let _ = write(&self.instance.join(CONSUME_EVENT).join("enable"), "0");
        let text = fs::read_to_string(self.instance.join("trace")).unwrap_or_default();
        self.cleanup();
        let note = match self.tracking {
            true => format!(
                "every IP (IPv4 and IPv6) drop of the machine during {window}; `probe`: those of buffers seen \
                 entering a device with the probe's length (net:netif_receive_skb), the probe's own packets"
            ),
            false => format!(
                "machine-wide IP (IPv4 and IPv6) drops during {window}; the event carries no addresses, so these \
                 are not tied to the probe's own packets"
            ),
        };
        DropReport {
            event: "skb:kfree_skb".into(),
            reasons: parse_trace(&text),
            correlated: self.tracking,
            probe: if self.tracking { probe_drops(&text) } else { Vec::new() },
            note,
        }
    }

    fn cleanup(&mut self) {
        if self.cleaned {
            return;
        }
        self.cleaned = true;
        if self.instance.is_dir() {
            for ev in [EVENT, RX_EVENT, CONSUME_EVENT].map(|e| self.instance.join(e)) {
                let _ = write(&ev.join("enable"), "0");
                let _ = write(&ev.join("filter"), "0");
            }
            let _ = fs::remove_dir(&self.instance);
        }
        if let Some(m) = self.mounted.take() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            let _ = fs::remove_dir(&m);
        }
    }
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Removes the tracing instances `<prefix><pid>-…` (or `<prefix><pid>`) whose process is gone,
/// left by a process killed before its cleanup ran (SIGKILL), from the tracefs mounted at its
/// usual place; returns their names. Nothing is mounted for this: without a mounted tracefs
/// nothing is removed. An instance of a live process is never touched.
pub fn remove_stale_instances(prefix: &str) -> Vec<String> {
    TRACEFS
        .iter()
        .map(Path::new)
        .find(|r| r.join("instances").is_dir())
        .map(|r| remove_stale_in(&r.join("instances"), prefix))
        .unwrap_or_default()
}

fn remove_stale_in(instances: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(instances) else { return Vec::new() };
    let mut removed = Vec::new();
    for name in entries.flatten().filter_map(|e| e.file_name().into_string().ok()) {
        let pid = name.strip_prefix(prefix).and_then(|r| r.split('-').next()).filter(|p| !p.is_empty());
        let Some(pid) = pid.filter(|p| p.bytes().all(|b| b.is_ascii_digit())) else { continue };
        if !Path::new("/proc").join(pid).exists() && fs::remove_dir(instances.join(&name)).is_ok() {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

/// The drop reasons in a `/debug/capture/result` answer (its `drops` field); the error says why
/// there are none: the node's `drops_unavailable` (no tracefs, old kernel...), a flanneld that
/// does not report them, or a malformed field.
pub fn from_capture_result(v: &Value) -> Result<DropReport, String> {
    match (v.get("drops").filter(|d| !d.is_null()), v.get("drops_unavailable").and_then(Value::as_str)) {
        (Some(d), _) => {
            DropReport::deserialize(d).map_err(|e| format!("the capture's drop reasons are malformed: {e}"))
        }
        (None, Some(why)) => Err(why.to_string()),
        (None, None) => Err("the node's flanneld does not report drop reasons (an older version)".into()),
    }
}

/// The `netif_receive_skb` filter: any of the lengths.
fn len_filter(lens: &[u32]) -> String {
    lens.iter().map(|l| format!("len == {l}")).collect::<Vec<_>>().join(" || ")
}

/// `reason: X` and `location=Y` of a `kfree_skb` line.
fn drop_of(line: &str) -> Option<(String, String)> {
    let reason = line.split("reason: ").nth(1).and_then(|r| r.split_whitespace().next())?;
    let location = line
        .split("location=")
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .map(|l| l.split('+').next().unwrap_or(l).to_string())
        .unwrap_or_default();
    Some((reason.to_string(), location))
}

/// The `skbaddr=` of a trace line.
fn skbaddr(line: &str) -> Option<&str> {
    line.split("skbaddr=").nth(1).and_then(|a| a.split_whitespace().next())
}

fn trace_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.starts_with('#'))
}

/// Counts `reason: X` (with `location=Y`) of the trace's `kfree_skb` lines.
fn parse_trace(text: &str) -> Vec<ReasonCount> {
    count(trace_lines(text).filter(|l| l.contains("kfree_skb:")).filter_map(drop_of))
}

/// The drops of the buffers a `netif_receive_skb` line (the probe's length) saw: the trace is
/// in time order, so a drop counts when its buffer was seen entering a device and has not been
/// freed since (a `consume_skb` of the address ends the match: the memory may then carry
/// another packet).
fn probe_drops(text: &str) -> Vec<ReasonCount> {
    let mut seen = std::collections::BTreeSet::new();
    let mut drops = Vec::new();
    for line in trace_lines(text) {
        if line.contains("netif_receive_skb:") {
            seen.extend(skbaddr(line));
        } else if line.contains("consume_skb:") {
            if let Some(a) = skbaddr(line) {
                seen.remove(a);
            }
        } else if line.contains("kfree_skb:") && skbaddr(line).is_some_and(|a| seen.remove(a)) {
            drops.extend(drop_of(line));
        }
    }
    count(drops.into_iter())
}

fn count(drops: impl Iterator<Item = (String, String)>) -> Vec<ReasonCount> {
    let mut counts: BTreeMap<(String, String), u32> = BTreeMap::new();
    for d in drops {
        *counts.entry(d).or_default() += 1;
    }
    let mut out: Vec<ReasonCount> = counts
        .into_iter()
        .map(|((reason, location), count)| ReasonCount { reason, location, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_capture_result_gives_its_drops_or_says_why_not() {
        let report = DropReport {
            event: "skb:kfree_skb".into(),
            reasons: vec![ReasonCount {
                reason: "NETFILTER_DROP".into(),
                location: "nf_hook_slow".into(),
                count: 3,
            }],
            correlated: false,
            probe: Vec::new(),
            note: "machine-wide".into(),
        };
        let v = serde_json::json!({ "id": 1, "ifaces": [], "drops": report });
        assert_eq!(from_capture_result(&v).unwrap(), report);
        let none =
            serde_json::json!({ "id": 1, "drops": null, "drops_unavailable": "tracefs is not mounted" });
        assert_eq!(from_capture_result(&none).unwrap_err(), "tracefs is not mounted");
        let old = serde_json::json!({ "id": 1, "ifaces": [] });
        assert!(from_capture_result(&old).unwrap_err().contains("older version"));
        let bad = serde_json::json!({ "drops": { "event": 7 } });
        assert!(from_capture_result(&bad).unwrap_err().contains("malformed"));
    }

    /// Only instances of the prefix whose process is gone are removed (in a plain directory
    /// standing for `instances/`).
    #[test]
    fn stale_instances_of_ended_processes_are_removed_and_live_ones_kept() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let me = std::process::id();
        let dir = tempfile::tempdir().unwrap();
        let names = [
            format!("flanneld-capture-{dead}-3"),
            format!("flanneld-capture-{me}-4"),
            format!("weft-probe-{dead}"),
            "flanneld-capture-x-1".to_string(),
        ];
        for n in &names {
            fs::create_dir(dir.path().join(n)).unwrap();
        }
        assert_eq!(remove_stale_in(dir.path(), "flanneld-capture-"), [names[0].clone()]);
        assert_eq!(remove_stale_in(dir.path(), "weft-probe-"), [names[2].clone()]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, [names[1].clone(), names[3].clone()]);
    }

    #[test]
    fn instance_names_are_checked_before_anything_is_touched() {
        for bad in ["", "../x", "a/b", "a b"] {
            assert!(DropWatch::start(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn reasons_are_counted_by_reason_and_location() {
        let t = "# tracer: nop\n\
            #\n\
            ping-1 [000] b..1. 1.0: kfree_skb: skbaddr=0000 rx_sk=0000 protocol=2048 location=nf_hook_slow+0x9c/0xb0 reason: NETFILTER_DROP\n\
            ping-1 [000] b..1. 1.1: kfree_skb: skbaddr=0001 rx_sk=0000 protocol=2048 location=nf_hook_slow+0x9c/0xb0 reason: NETFILTER_DROP\n\
            x-2 [001] b..1. 1.2: kfree_skb: skbaddr=0002 protocol=2048 location=ip_rcv_finish_core+0x1/0x2 reason: IP_RPFILTER\n\
            garbage line kfree_skb: no reason here\n";
        let r = parse_trace(t);
        assert_eq!(
            r,
            [
                ReasonCount { reason: "NETFILTER_DROP".into(), location: "nf_hook_slow".into(), count: 2 },
                ReasonCount { reason: "IP_RPFILTER".into(), location: "ip_rcv_finish_core".into(), count: 1 },
            ]
        );
        assert!(parse_trace("").is_empty());
    }

    /// A drop counts as the probe's when its buffer was seen entering a device with the
    /// probe's length before and not consumed since (and only once per sighting).
    #[test]
    fn probe_drops_follow_the_buffers_seen_with_the_probes_length() {
        let t = "# tracer: nop\n\
            ping-1 [000] b..1. 1.0: netif_receive_skb: dev=veth1 skbaddr=000000aa len=489\n\
            x-2 [001] b..1. 1.1: kfree_skb: skbaddr=000000bb rx_sk=0 protocol=2048 location=tcp_v4_rcv+0x1/0x2 reason: NO_SOCKET\n\
            ping-1 [000] b..1. 1.2: netif_receive_skb: dev=cni0 skbaddr=000000aa len=489\n\
            ping-1 [000] b..1. 1.3: kfree_skb: skbaddr=000000aa rx_sk=0 protocol=2048 location=nf_hook_slow+0x9c/0xb0 reason: NETFILTER_DROP\n\
            y-3 [001] b..1. 1.4: kfree_skb: skbaddr=000000aa rx_sk=0 protocol=2048 location=ip_rcv+0x1/0x2 reason: OTHERHOST\n\
            ping-1 [000] b..1. 1.5: netif_receive_skb: dev=eth0 skbaddr=000000cc len=539\n\
            ping-1 [000] b..1. 1.6: consume_skb: skbaddr=000000cc location=vxlan_rcv+0x1/0x2\n\
            z-4 [001] b..1. 1.7: kfree_skb: skbaddr=000000cc rx_sk=0 protocol=2048 location=tcp_v4_rcv+0x1/0x2 reason: NO_SOCKET\n";
        assert_eq!(
            probe_drops(t),
            [ReasonCount { reason: "NETFILTER_DROP".into(), location: "nf_hook_slow".into(), count: 1 }]
        );
        // The last buffer was consumed before that address was freed again: another packet's.
        let all = parse_trace(t);
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[0],
            ReasonCount { reason: "NO_SOCKET".into(), location: "tcp_v4_rcv".into(), count: 2 }
        );
        assert_eq!(len_filter(&[489, 539]), "len == 489 || len == 539");
    }
}
