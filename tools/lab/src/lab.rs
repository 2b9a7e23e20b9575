//! The lab: an underlay "switch" namespace with a Linux bridge, node namespaces wired to it by
//! veths, etcd on the underlay, and a per-lab temp dir for every file. Everything is named
//! `<id>…` where `id` = the caller's prefix plus a random tag, and everything is removed when
//! the [`Lab`] drops (also while a test panics); [`crate::cleanup::cleanup_prefix`] removes
//! what an interrupted process left behind.
//!
//! Names: switch `<id>sw`, nodes `<id>n<i>`, pods `<id>n<i>p<j>` (`id` ≤ 9 bytes keeps every
//! name within the kernel's 15). Underlay 198.18.0.0/24: etcd members .2–.4, node i .(10+i).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use rand::Rng;

use crate::cni::NodeCniDirs;
use crate::daemon::Daemon;
use crate::error::{LabError, Result};
use crate::etcd::Etcd;
use crate::ns::Netns;
use crate::pods::Pod;

/// Underlay prefix length (198.18.0.0/24 inside the reserved 198.18.0.0/15).
pub const UNDERLAY_PREFIX: u8 = 24;
/// Underlay MTU on every veth.
pub const UNDERLAY_MTU: u32 = 1500;
/// The node-side underlay interface (flanneld's `--iface`).
pub const NODE_IFACE: &str = "eth0";
/// Bridge in the switch namespace.
pub const SWITCH_BRIDGE: &str = "br0";
/// Default flannel etcd prefix.
pub const DEFAULT_ETCD_PREFIX: &str = "/coreos.com/network";
/// Network config used when `test-configs/flannel-network-config.json` does not exist.
pub const DEFAULT_NETWORK_CONFIG: &str = r#"{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}"#;
/// Root of all lab temp dirs (`<tmp>/weft-lab/<id>`).
pub const LAB_TMP: &str = "weft-lab";
/// Most nodes a lab can have (addresses .10 … .209).
pub const MAX_NODES: usize = 200;

/// Underlay address of node `i`.
pub fn node_ip(i: usize) -> Option<Ipv4Addr> {
    (i < MAX_NODES).then(|| u8::try_from(10 + i).ok()).flatten().map(|o| Ipv4Addr::new(198, 18, 0, o))
}

/// Underlay address of etcd member `m` (at most 3 members: .2, .3, .4).
pub fn etcd_ip(m: usize) -> Option<Ipv4Addr> {
    (m < 3).then(|| u8::try_from(2 + m).ok()).flatten().map(|o| Ipv4Addr::new(198, 18, 0, o))
}

/// One node: a namespace with `eth0` on the underlay, its files, and its flanneld.
#[derive(Debug)]
pub struct Node {
    pub(crate) index: usize,
    pub(crate) ns: Netns,
    pub(crate) ip: Ipv4Addr,
    pub(crate) dir: PathBuf,
    pub(crate) cni: NodeCniDirs,
    /// `CNI_PATH` for this node's conflist, set when a conflist is installed.
    pub(crate) cni_path: Option<String>,
    pub(crate) flanneld: Option<Daemon>,
    pub(crate) pods: usize,
}

impl Node {
    /// Position in the lab.
    pub fn index(&self) -> usize {
        self.index
    }
    /// The node's namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }
    /// Underlay (public) address.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// The node's directory in the lab temp dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// CNI and flannel state locations.
    pub fn cni_dirs(&self) -> &NodeCniDirs {
        &self.cni
    }
    /// flanneld's `--subnet-file`.
    pub fn subnet_file(&self) -> &Path {
        &self.cni.subnet_file
    }
    /// flanneld's log (appended across restarts).
    pub fn flanneld_log_path(&self) -> PathBuf {
        self.dir.join("flanneld.log")
    }
    /// flanneld's log so far.
    pub fn flanneld_log(&self) -> String {
        std::fs::read(self.flanneld_log_path())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
    /// flanneld's PID while it runs.
    pub fn flanneld_pid(&self) -> Option<u32> {
        self.flanneld.as_ref().map(Daemon::pid)
    }
}

/// A running lab. See the module doc.
#[derive(Debug)]
pub struct Lab {
    pub(crate) id: String,
    pub(crate) dir: PathBuf,
    pub(crate) etcd_prefix: String,
    pub(crate) flanneld_args: Vec<String>,
    /// The backend network configs and route checks use.
    pub(crate) backend: crate::backend::Backend,
    /// Dual stack (`crate::dual`): IPv6 underlay, `EnableIPv6`, `--public-ipv6`.
    pub(crate) dual_stack: bool,
    /// The flannel conflist's delegate `ipMasq`, when set (else the plugin's `!FLANNEL_IPMASQ`).
    pub(crate) delegate_ip_masq: Option<bool>,
    pub(crate) extra: Vec<Option<Daemon>>,
    pub(crate) pods: Vec<Pod>,
    pub(crate) nodes: Vec<Node>,
    pub(crate) etcd: Option<Etcd>,
    pub(crate) switch: Option<Netns>,
}

const TAG_CHARS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

impl Lab {
    /// Creates an empty lab: temp dir and the switch namespace with its bridge.
    ///
    /// `prefix` (1–6 ASCII alphanumerics, e.g. `wtlab`) starts every name the lab creates, so
    /// `cleanup_prefix(prefix)` can find leftovers.
    pub fn new(prefix: &str) -> Result<Lab> {
        if prefix.is_empty() || prefix.len() > 6 || !prefix.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(LabError::Invalid(format!("lab prefix {prefix:?} must be 1-6 ASCII alphanumerics")));
        }
        crate::signals::check()?;
        let root = std::env::temp_dir().join(LAB_TMP);
        let existing = crate::cleanup::netns_names()?;
        let mut rng = rand::rng();
        let id = loop {
            let tag: String = (0..3)
                .map(|_| {
                    char::from(TAG_CHARS.get(rng.random_range(0..TAG_CHARS.len())).copied().unwrap_or(b'x'))
                })
                .collect();
            let id = format!("{prefix}{tag}");
            // The shared root is made again each time: another lab's teardown removes it when
            // it is left empty, possibly between our two calls.
            std::fs::create_dir_all(&root).map_err(LabError::io("create", &root))?;
            // A fresh id shares no namespace or directory with another lab (or its leftovers).
            if !existing.iter().any(|n| n.starts_with(&id)) && std::fs::create_dir(root.join(&id)).is_ok() {
                break id;
            }
        };
        let mut lab = Lab {
            dir: root.join(&id),
            id,
            etcd_prefix: DEFAULT_ETCD_PREFIX.to_string(),
            flanneld_args: Vec::new(),
            delegate_ip_masq: None,
            backend: crate::backend::Backend::default(),
            dual_stack: false,
            extra: Vec::new(),
            pods: Vec::new(),
            nodes: Vec::new(),
            etcd: None,
            switch: None,
        };
        let sw = Netns::try_create(&format!("{}sw", lab.id))?;
        sw.run(&["ip", "link", "add", SWITCH_BRIDGE, "type", "bridge"])?;
        sw.run(&["ip", "link", "set", SWITCH_BRIDGE, "up"])?;
        lab.switch = Some(sw);
        Ok(lab)
    }

    /// The unique id (prefix + tag) every name starts with.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The lab's temp dir (logs, etcd data, subnet files, CNI state).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The switch namespace (bridge `br0`, etcd members).
    pub fn switch(&self) -> Result<&Netns> {
        self.switch.as_ref().ok_or_else(|| LabError::Invalid("lab has been torn down".into()))
    }

    /// flannel's etcd prefix (default `/coreos.com/network`).
    pub fn etcd_prefix(&self) -> &str {
        &self.etcd_prefix
    }

    /// Uses another etcd prefix (before starting flanneld).
    pub fn set_etcd_prefix(&mut self, prefix: &str) {
        self.etcd_prefix = prefix.trim_end_matches('/').to_string();
    }

    /// Extra flags appended to every later flanneld start (e.g. weft's `--reconcile-interval=5`).
    pub fn set_flanneld_args(&mut self, args: &[&str]) {
        self.flanneld_args = args.iter().map(|a| a.to_string()).collect();
    }

    /// Adds a node: namespace `<id>n<i>`, veth `eth0` ↔ switch port `n<i>`, address
    /// 198.18.0.(10+i)/24, MTU 1500. Returns its index.
    pub fn add_node(&mut self) -> Result<usize> {
        crate::signals::check()?;
        let i = self.nodes.len();
        let ip = node_ip(i).ok_or_else(|| LabError::Invalid(format!("at most {MAX_NODES} nodes")))?;
        let sw_name = self.switch()?.name().to_string();
        let ns = Netns::try_create(&format!("{}n{i}", self.id))?;
        let port = format!("n{i}");
        let mtu = UNDERLAY_MTU.to_string();
        // Both ends are created from inside the node namespace, the peer directly in the
        // switch namespace: the root namespace never sees either.
        ns.run(&[
            "ip", "link", "add", NODE_IFACE, "mtu", &mtu, "type", "veth", "peer", "name", &port, "mtu", &mtu,
            "netns", &sw_name,
        ])?;
        let sw = self.switch()?;
        sw.run(&["ip", "link", "set", &port, "master", SWITCH_BRIDGE])?;
        sw.run(&["ip", "link", "set", &port, "up"])?;
        let cidr = format!("{ip}/{UNDERLAY_PREFIX}");
        ns.run(&["ip", "addr", "add", &cidr, "dev", NODE_IFACE])?;
        if self.dual_stack {
            let ip6 = crate::dual::node_ip6(i)
                .ok_or_else(|| LabError::Invalid(format!("at most {MAX_NODES} nodes")))?;
            let cidr6 = format!("{ip6}/{}", crate::dual::UNDERLAY_PREFIX_V6);
            ns.run(&["ip", "-6", "addr", "add", &cidr6, "dev", NODE_IFACE, "nodad"])?;
        }
        ns.run(&["ip", "link", "set", NODE_IFACE, "up"])?;
        let dir = self.dir.join(format!("n{i}"));
        std::fs::create_dir_all(&dir).map_err(LabError::io("create", &dir))?;
        let cni = NodeCniDirs {
            netconf: dir.join("net.d"),
            cache: dir.join("cni-cache"),
            flannel_data: dir.join("flannel-data"),
            ipam_data: dir.join("ipam"),
            subnet_file: dir.join("run-flannel").join("subnet.env"),
        };
        self.nodes.push(Node { index: i, ns, ip, dir, cni, cni_path: None, flanneld: None, pods: 0 });
        Ok(i)
    }

    /// Node `i`.
    pub fn node(&self, i: usize) -> Result<&Node> {
        self.nodes.get(i).ok_or_else(|| LabError::Invalid(format!("no node {i} (have {})", self.nodes.len())))
    }

    pub(crate) fn node_mut(&mut self, i: usize) -> Result<&mut Node> {
        let n = self.nodes.len();
        self.nodes.get_mut(i).ok_or_else(|| LabError::Invalid(format!("no node {i} (have {n})")))
    }

    /// All nodes.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Starts etcd with `members` (1 or 3) members on the underlay (198.18.0.2…) in the switch
    /// namespace, and waits until it is healthy.
    pub fn start_etcd(&mut self, members: usize) -> Result<()> {
        crate::signals::check()?;
        if self.etcd.is_some() {
            return Err(LabError::Invalid("etcd already started".into()));
        }
        let ips: Vec<Ipv4Addr> = (0..members)
            .map(|m| etcd_ip(m).ok_or_else(|| LabError::Invalid("at most 3 etcd members".into())))
            .collect::<Result<_>>()?;
        let sw = self.switch()?;
        for ip in &ips {
            sw.run(&["ip", "addr", "add", &format!("{ip}/{UNDERLAY_PREFIX}"), "dev", SWITCH_BRIDGE])?;
        }
        let etcd = Etcd::start(sw.name(), &self.dir, &self.id, &ips)?;
        self.etcd = Some(etcd);
        Ok(())
    }

    /// The lab's etcd.
    pub fn etcd(&self) -> Result<&Etcd> {
        self.etcd.as_ref().ok_or_else(|| LabError::Invalid("etcd not started".into()))
    }

    /// The lab's etcd, mutably (stop/kill/restart members).
    pub fn etcd_mut(&mut self) -> Result<&mut Etcd> {
        self.etcd.as_mut().ok_or_else(|| LabError::Invalid("etcd not started".into()))
    }

    /// Writes `<prefix>/config`: `test-configs/flannel-network-config.json` when it exists,
    /// else [`DEFAULT_NETWORK_CONFIG`], with the lab's backend ([`Lab::set_backend`]) unless it
    /// is the default vxlan (then the file as it is). Returns the JSON written.
    pub fn put_network_config(&self) -> Result<String> {
        let shipped = crate::workspace_root().join("test-configs").join("flannel-network-config.json");
        let config = if shipped.is_file() {
            std::fs::read_to_string(&shipped).map_err(LabError::io("read", &shipped))?
        } else {
            DEFAULT_NETWORK_CONFIG.to_string()
        };
        let config = match self.backend {
            crate::backend::Backend::Vxlan => config,
            other => other.apply_to(&config)?,
        };
        let config = if self.dual_stack { crate::dual::with_ipv6(&config)? } else { config };
        self.put_network_config_json(&config)?;
        Ok(config)
    }

    /// Writes `<prefix>/config` with the given JSON.
    pub fn put_network_config_json(&self, json: &str) -> Result<()> {
        self.etcd()?.put(&format!("{}/config", self.etcd_prefix), json.trim())
    }

    /// Starts an extra process in namespace `netns` that the lab ends on drop (e.g. an iperf3
    /// server). Returns its handle index for [`Lab::stop_extra`].
    pub fn spawn_extra(&mut self, label: &str, netns: &str, argv: &[&str]) -> Result<usize> {
        let log = self.dir.join(format!("extra{}.log", self.extra.len()));
        self.extra.push(Some(Daemon::spawn(label, netns, argv, &[], &log)?));
        Ok(self.extra.len() - 1)
    }

    /// Ends an extra process (SIGTERM, then SIGKILL); returns its exit code and log.
    pub fn stop_extra(&mut self, handle: usize) -> Result<(Option<i32>, String)> {
        let d = self
            .extra
            .get_mut(handle)
            .and_then(Option::take)
            .ok_or_else(|| LabError::Invalid(format!("no running extra process {handle}")))?;
        let log = d.log();
        Ok((d.stop(), log))
    }

    /// Log tails of every daemon, for failure reports.
    pub fn diagnostics(&self) -> String {
        let mut out = format!("lab {} in {}\n", self.id, self.dir.display());
        for n in &self.nodes {
            out.push_str(&format!(
                "--- flanneld on node {} ({}) ---\n{}\n",
                n.index,
                n.ip,
                crate::etcd::tail(&n.flanneld_log(), 30)
            ));
        }
        if let Some(e) = &self.etcd {
            out.push_str(&e.log_tails(15));
        }
        out
    }

    /// Tears everything down now (also what drop does): extra processes, pods, flanneld,
    /// etcd, node namespaces, the switch, the temp dir (kept if `WEFT_LAB_KEEP` is set).
    pub fn teardown(&mut self) {
        for d in self.extra.drain(..).flatten() {
            d.kill();
        }
        self.pods.clear();
        for n in &mut self.nodes {
            if let Some(d) = n.flanneld.take() {
                d.stop();
            }
        }
        self.etcd = None;
        // Anything our daemons left running inside the lab's namespaces (children outliving
        // a SIGKILLed parent) would keep a deleted namespace alive: end it by PID.
        let names: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.ns.name().to_string())
            .chain(self.switch.as_ref().map(|s| s.name().to_string()))
            .collect();
        let stray: Vec<i32> = names.iter().flat_map(|n| crate::cleanup::pids_in(n)).collect();
        crate::cleanup::end_pids(&stray);
        self.nodes.clear();
        self.switch = None;
        if std::env::var_os("WEFT_LAB_KEEP").is_none() && self.dir.exists() {
            let _ = std::fs::remove_dir_all(&self.dir);
            crate::cleanup::remove_root_if_empty();
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() && self.switch.is_some() {
            // Never panic inside a drop that runs during a panic (that aborts): ignore a closed stderr.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("{}\n", self.diagnostics()).as_bytes(),
            );
        }
        self.teardown();
    }
}
