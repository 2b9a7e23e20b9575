//! The kernel floor of the flanneld benchmark: how long `ip -batch` (and, for VXLAN's FDB
//! entries, `bridge -batch`) takes to install the same N peers' entries in a fresh namespace.
//! weft's start → all-routes figure is printed beside it with the ratio.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use weft_common::netns::NetNs;
use weft_lab::ns::Netns;

use crate::flanneld_peers::{add_underlay, public_ip, subnet, vtep_mac, Backend, NODE_IP, UNDERLAY};

/// The VXLAN device the floor makes by hand (flanneld's is `flannel.1`, VNI 1, port 8472).
const VXLAN_DEV: &str = "flannel.1";

/// The batch files for N peers: `ip -batch` lines, and `bridge -batch` lines (VXLAN's FDB).
fn batches(backend: Backend, peers: u32) -> (String, String) {
    let (mut ip, mut bridge) = (String::new(), String::new());
    for i in 1..=peers {
        let (net, gw) = (subnet(i), public_ip(backend, i));
        // Writing to a String cannot fail.
        match backend {
            Backend::Vxlan => {
                let mac = vtep_mac(i);
                let _ = writeln!(ip, "neigh add {net} lladdr {mac} dev {VXLAN_DEV} nud permanent");
                let _ = writeln!(bridge, "fdb add {mac} dev {VXLAN_DEV} dst {gw} self permanent");
                let _ = writeln!(ip, "route add {net}/24 via {net} dev {VXLAN_DEV} onlink");
            }
            Backend::HostGw => {
                let _ = writeln!(ip, "route add {net}/24 via {gw} dev {UNDERLAY}");
            }
        }
    }
    (ip, bridge)
}

/// Runs `tool -batch file` in the calling thread's namespace and returns its wall time.
fn timed_batch(tool: &str, file: &Path) -> Result<Duration, String> {
    let start = Instant::now();
    let out = Command::new(tool)
        .arg("-batch")
        .arg(file)
        .stdout(Stdio::null())
        .output()
        .map_err(|e| format!("run {tool} -batch: {e}"))?;
    let took = start.elapsed();
    if !out.status.success() {
        return Err(format!("{tool} -batch failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(took)
}

/// The floor for N peers: a fresh namespace with the same veth underlay (and, for VXLAN, a
/// hand-made `flannel.1`), then the timed batches. The namespace is removed on return.
pub fn measure(backend: Backend, peers: u32) -> Result<Duration, String> {
    let node = Netns::unique("wbf");
    add_underlay(&node);
    if backend == Backend::Vxlan {
        let local = NODE_IP.to_string();
        node.exec(&[
            "ip",
            "link",
            "add",
            VXLAN_DEV,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dev",
            UNDERLAY,
            "dstport",
            "8472",
            "nolearning",
        ])
        .expect_ok();
        node.exec(&["ip", "link", "set", VXLAN_DEV, "up"]).expect_ok();
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (ip, bridge) = batches(backend, peers);
    let (ip_file, bridge_file) = (dir.path().join("ip.batch"), dir.path().join("bridge.batch"));
    std::fs::write(&ip_file, ip).map_err(|e| e.to_string())?;
    std::fs::write(&bridge_file, &bridge).map_err(|e| e.to_string())?;
    let ns = NetNs::open(node.path()).map_err(|e| e.to_string())?;
    // A thread of its own enters the namespace, so the caller's stays where it was; the
    // batch tools it starts inherit the namespace without an `ip netns exec` in the timing.
    std::thread::scope(|s| {
        s.spawn(|| {
            let _inside = ns.enter().map_err(|e| e.to_string())?;
            let mut took = timed_batch("ip", &ip_file)?;
            if !bridge.is_empty() {
                took += timed_batch("bridge", &bridge_file)?;
            }
            Ok(took)
        })
        .join()
        .map_err(|_| "floor thread panicked".to_string())?
    })
}
