//! Pods: namespaces `<id>n<i>p<j>` attached on their node through a conflist (cnitool, or the
//! lab's own runner until cnitool is built), their IP taken from the CNI result, and pings
//! between them.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnetwork::Ipv4Network;
use serde_json::Value;

use crate::cni::{self, Invocation, Runner};
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::ns::Netns;
use crate::wait;

/// One pod.
#[derive(Debug)]
pub struct Pod {
    pub(crate) node: usize,
    pub(crate) ns: Netns,
    pub(crate) ip: Ipv4Addr,
    /// Its IPv6 address, in a dual-stack lab.
    pub(crate) ip6: Option<std::net::Ipv6Addr>,
    pub(crate) container_id: String,
    pub(crate) result: Value,
    pub(crate) runner: Runner,
}

impl Pod {
    /// The node it runs on.
    pub fn node(&self) -> usize {
        self.node
    }
    /// Its namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// Its IPv4 address (from the CNI result).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// Its IPv6 address (from the CNI result; dual-stack labs).
    pub fn ip6(&self) -> Option<std::net::Ipv6Addr> {
        self.ip6
    }
    /// The CNI result of its ADD.
    pub fn result(&self) -> &Value {
        &self.result
    }
    /// MTU of the pod's `eth0`.
    pub fn mtu(&self) -> Result<u32> {
        let v = self.ns.try_ip_json(&["link", "show", "dev", cni::POD_IFNAME])?;
        v.pointer("/0/mtu")
            .and_then(Value::as_u64)
            .and_then(|m| u32::try_from(m).ok())
            .ok_or_else(|| LabError::parse("ip link mtu", v.to_string()))
    }
    /// One `ping -c 1 -W 1` (optionally with payload `size` and DF set), true on a reply.
    pub fn ping_once(&self, to: Ipv4Addr, size: Option<u32>) -> bool {
        self.ping_once_ip(IpAddr::V4(to), size)
    }
    /// [`Pod::ping_once`] to an IPv4 or IPv6 address.
    pub fn ping_once_ip(&self, to: IpAddr, size: Option<u32>) -> bool {
        let to = to.to_string();
        let size = size.map(|s| s.to_string());
        let mut argv = vec!["ping", "-n", "-q", "-c", "1", "-W", "1"];
        if let Some(s) = &size {
            argv.extend_from_slice(&["-M", "do", "-s", s]);
        }
        argv.push(&to);
        self.ns.exec(&argv).ok()
    }
}

/// Result of pinging every pod from every other pod (or of a TCP transfer between them,
/// [`Lab::tcp_matrix`]).
#[derive(Debug, Clone)]
pub struct PingMatrix {
    /// Pod labels (`n0p1 10.244.3.2`).
    pub labels: Vec<String>,
    /// `ok[from][to]`; the diagonal is `true`.
    pub ok: Vec<Vec<bool>>,
}

impl PingMatrix {
    /// Pairs that failed, as `(from, to)` indices.
    pub fn failures(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (f, row) in self.ok.iter().enumerate() {
            for (t, ok) in row.iter().enumerate() {
                if !ok {
                    out.push((f, t));
                }
            }
        }
        out
    }
    /// True when every pair answered.
    pub fn all_ok(&self) -> bool {
        self.failures().is_empty()
    }
}

impl std::fmt::Display for PingMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = self.labels.iter().map(String::len).max().unwrap_or(0).max(9);
        write!(f, "{:w$} ", "from \\ to")?;
        for (t, _) in self.labels.iter().enumerate() {
            write!(f, " {t:>4}")?;
        }
        writeln!(f)?;
        for (i, row) in self.ok.iter().enumerate() {
            let label = self.labels.get(i).map(String::as_str).unwrap_or("");
            write!(f, "{label:w$} ")?;
            for (t, ok) in row.iter().enumerate() {
                let cell = if t == i {
                    "-"
                } else if *ok {
                    "ok"
                } else {
                    "FAIL"
                };
                write!(f, " {cell:>4}")?;
            }
            writeln!(f, "   [{i}]")?;
        }
        Ok(())
    }
}

/// How long one pod pair may take to answer in a matrix (first packets may wait for ARP).
const PAIR_TIMEOUT: Duration = Duration::from_secs(5);

impl Lab {
    /// Installs the stock flannel conflist on node `i` (state paths in the lab dir); plugins
    /// come from the weft bin dir first, then `/usr/lib/cni` (for `portmap`).
    pub fn use_flannel_cni(&mut self, i: usize) -> Result<()> {
        crate::bins::require(&["flannel", "bridge", "host-local"])?;
        let cni_path = format!("{}:{}", crate::bins::bin_dir().display(), crate::bins::REFERENCE_DIR);
        let ip_masq = self.delegate_ip_masq;
        let node = self.node_mut(i)?;
        let mut conf = cni::flannel_conflist(&node.cni)?;
        if let Some(on) = ip_masq {
            cni::set_delegate(&mut conf, "ipMasq", serde_json::json!(on))?;
        }
        cni::write_conflist(&node.cni, &conf)?;
        node.cni_path = Some(cni_path);
        Ok(())
    }

    /// Installs a flannel-less bridge + host-local conflist on node `i` that uses `subnet`
    /// inside `network`, run with the given `CNI_PATH` (e.g. the reference plugins).
    pub fn use_plain_cni(
        &mut self,
        i: usize,
        network: Ipv4Network,
        subnet: Ipv4Network,
        mtu: u32,
        cni_path: &str,
    ) -> Result<()> {
        let node = self.node_mut(i)?;
        let conf = cni::plain_bridge_conflist(&node.cni, network, subnet, mtu);
        cni::write_conflist(&node.cni, &conf)?;
        node.cni_path = Some(cni_path.to_string());
        Ok(())
    }

    /// Creates pod namespace `<id>n<i>p<j>` and attaches it with the node's conflist. Returns
    /// the pod's index in [`Lab::pods`].
    pub fn add_pod(&mut self, node: usize) -> Result<usize> {
        self.add_pod_with(node, &Runner::detect())
    }

    /// [`Lab::add_pod`] with an explicit runner.
    pub fn add_pod_with(&mut self, node: usize, runner: &Runner) -> Result<usize> {
        crate::signals::check()?;
        let id = self.id.clone();
        let n = self.node_mut(node)?;
        let cni_path = n.cni_path.clone().ok_or_else(|| {
            LabError::Invalid(format!("node {node} has no conflist (use_flannel_cni/use_plain_cni)"))
        })?;
        let ns = Netns::try_create(&format!("{id}n{node}p{}", n.pods))?;
        n.pods += 1;
        let container_id = format!("weftlab-{}", ns.name());
        let path = ns.path();
        let inv = Invocation {
            dirs: &n.cni,
            cni_path: &cni_path,
            netns: &path,
            container_id: &container_id,
            node_netns: n.ns.name(),
        };
        let result = cni::add(runner, &inv)?;
        let ip = cni::result_ip(&result)
            .ok_or_else(|| LabError::parse("CNI result", format!("no IPv4 address in {result}")))?;
        let ip6 = crate::dual::result_ip6(&result);
        if self.dual_stack && ip6.is_none() {
            return Err(LabError::parse("CNI result", format!("no IPv6 address in {result}")));
        }
        self.pods.push(Pod { node, ns, ip, ip6, container_id, result, runner: runner.clone() });
        Ok(self.pods.len() - 1)
    }

    /// Runs the CNI CHECK for pod `p`.
    pub fn check_pod(&self, p: usize) -> Result<()> {
        self.with_invocation(p, |pod, inv| cni::check(&pod.runner, inv, Some(&pod.result)))
    }

    /// Runs the CNI DEL for pod `p` and removes its namespace.
    pub fn del_pod(&mut self, p: usize) -> Result<()> {
        self.with_invocation(p, |pod, inv| cni::del(&pod.runner, inv, Some(&pod.result)))?;
        self.pods.remove(p);
        Ok(())
    }

    /// Calls `f` with pod `p` and the CNI invocation that addresses it on its node.
    fn with_invocation<T>(&self, p: usize, f: impl FnOnce(&Pod, &Invocation<'_>) -> Result<T>) -> Result<T> {
        let pod = self.pod(p)?;
        let node = self.node(pod.node)?;
        let cni_path = node.cni_path.clone().unwrap_or_default();
        let path = pod.ns.path();
        let inv = Invocation {
            dirs: &node.cni,
            cni_path: &cni_path,
            netns: &path,
            container_id: &pod.container_id,
            node_netns: node.ns.name(),
        };
        f(pod, &inv)
    }

    /// Pod `p`.
    pub fn pod(&self, p: usize) -> Result<&Pod> {
        self.pods.get(p).ok_or_else(|| LabError::Invalid(format!("no pod {p} (have {})", self.pods.len())))
    }

    /// All pods, in creation order.
    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    /// Waits until pod `from` gets a ping reply from `to`.
    pub fn wait_ping(&self, from: usize, to: Ipv4Addr, timeout: Duration) -> Result<()> {
        let pod = self.pod(from)?;
        let what = format!("ping {} → {to}", pod.ns.name());
        wait::until_true(&what, timeout, || Ok(pod.ping_once(to, None)))
    }

    /// Pings every pod from every other pod: one thread per source pod, each pair retried
    /// until it answers once or 5 s have passed (first packets may wait for ARP), so a broken
    /// overlay costs seconds, not minutes.
    pub fn ping_matrix(&self) -> Result<PingMatrix> {
        let targets: Vec<IpAddr> = self.pods.iter().map(|p| IpAddr::V4(p.ip)).collect();
        self.ping_matrix_to(&targets)
    }

    /// [`Lab::ping_matrix`] with pod `i` reached at `targets[i]`.
    pub(crate) fn ping_matrix_to(&self, targets: &[IpAddr]) -> Result<PingMatrix> {
        crate::signals::check()?;
        let labels = self
            .pods
            .iter()
            .zip(targets)
            .map(|(p, ip)| {
                let name = p.ns.name().strip_prefix(self.id.as_str()).unwrap_or(p.ns.name());
                format!("{name} {ip}")
            })
            .collect();
        let ok = std::thread::scope(|scope| {
            let rows: Vec<_> = self
                .pods
                .iter()
                .enumerate()
                .map(|(f, from)| {
                    let targets = &targets;
                    scope.spawn(move || {
                        let deadline = std::time::Instant::now() + PAIR_TIMEOUT;
                        let mut row: Vec<bool> = (0..targets.len()).map(|t| t == f).collect();
                        loop {
                            for (t, to) in targets.iter().enumerate() {
                                if !row.get(t).copied().unwrap_or(true) && from.ping_once_ip(*to, None) {
                                    if let Some(cell) = row.get_mut(t) {
                                        *cell = true;
                                    }
                                }
                            }
                            let done = row.iter().all(|c| *c);
                            if done || std::time::Instant::now() >= deadline || crate::signals::interrupted()
                            {
                                return row;
                            }
                        }
                    })
                })
                .collect();
            // A pinger thread that panicked counts as all of its pairs failing.
            let n = targets.len();
            rows.into_iter().map(|h| h.join().unwrap_or_else(|_| vec![false; n])).collect::<Vec<Vec<bool>>>()
        });
        crate::signals::check()?;
        Ok(PingMatrix { labels, ok })
    }

    /// A one-line summary of the pods (`n0p0=10.244.5.2 …`).
    pub fn pod_summary(&self) -> String {
        let mut out = String::new();
        for p in &self.pods {
            let _ = write!(out, "{}={} ", p.ns.name(), p.ip);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_reports_failed_pairs_and_marks_them() {
        let m = PingMatrix {
            labels: vec!["n0p0 10.244.1.2".into(), "n1p0 10.244.2.2".into()],
            ok: vec![vec![true, true], vec![false, true]],
        };
        assert_eq!(m.failures(), vec![(1, 0)]);
        assert!(!m.all_ok());
        let text = m.to_string();
        assert!(text.contains("FAIL") && text.contains("ok"), "{text}");
        assert_eq!(text.lines().count(), 3);
    }
}
