//! flanneld in the lab: start/stop/SIGKILL/restart per node (by PID, logs to a file), wait for
//! its subnet.env and for routes to every other node, and read back what an operator inspects:
//! the node's lease in etcd and the routes, neighbours and FDB entries on `flannel.1`.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::time::Duration;

use ipnetwork::{IpNetwork, Ipv4Network};
use serde_json::Value;
use weft_common::flannel::SubnetEnv;

use crate::daemon::Daemon;
use crate::error::{LabError, Result};
use crate::lab::{Lab, NODE_IFACE};
use crate::wait;

/// flanneld's VXLAN device (VNI 1).
pub const VXLAN_DEV: &str = "flannel.1";
/// Port of flanneld's health server inside each node namespace.
pub const HEALTHZ_PORT: u16 = 10256;
/// How long flanneld may take to write subnet.env.
pub const SUBNET_ENV_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the nodes may take to program routes to each other.
pub const CONVERGE_TIMEOUT: Duration = Duration::from_secs(60);

/// The binaries a flannel lab needs in the weft bin dir.
pub const FLANNEL_BINS: &[&str] = &["flanneld", "flannel", "bridge", "host-local"];

/// One of the `show_*` inspection helpers.
type Show = fn(&Lab, usize) -> Result<String>;

/// One lease as stored in etcd.
#[derive(Debug, Clone)]
pub struct Lease {
    /// `<prefix>/subnets/<a.b.c.d>-<len>` (dual stack: `…&<ipv6>-<len6>`).
    pub key: String,
    /// The IPv4 subnet the key names.
    pub subnet: Ipv4Network,
    /// The `LeaseAttrs` JSON value.
    pub attrs: Value,
    /// The value exactly as stored.
    pub raw: String,
}

impl Lab {
    /// Starts flanneld on node `i` with the upstream flags (`--etcd-endpoints`, `--etcd-prefix`,
    /// `--iface=eth0`, `--public-ip`, `--subnet-file`, `--ip-masq`, `--healthz-port`) and weft's
    /// `--debug-dataplane`.
    pub fn start_flanneld(&mut self, i: usize) -> Result<()> {
        crate::signals::check()?;
        crate::bins::require(&["flanneld"])?;
        let flanneld = crate::bins::bin_dir().join("flanneld").display().to_string();
        let endpoints = self.etcd()?.endpoints();
        let prefix = self.etcd_prefix.clone();
        let extra = self.flanneld_args.clone();
        let ip6 = if self.dual_stack { crate::dual::node_ip6(i) } else { None };
        let node = self.node_mut(i)?;
        if node.flanneld.as_mut().is_some_and(Daemon::is_running) {
            return Err(LabError::Invalid(format!("flanneld already runs on node {i}")));
        }
        if let Some(parent) = node.cni.subnet_file.parent() {
            std::fs::create_dir_all(parent).map_err(LabError::io("create", parent))?;
        }
        let log = node.flanneld_log_path();
        let marker = format!("===== weft-lab: starting flanneld on node {i} =====\n");
        let _ = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .and_then(|mut f| std::io::Write::write_all(&mut f, marker.as_bytes()));
        let args = [
            flanneld,
            format!("--etcd-endpoints={endpoints}"),
            format!("--etcd-prefix={prefix}"),
            format!("--iface={NODE_IFACE}"),
            format!("--public-ip={}", node.ip),
            format!("--subnet-file={}", node.cni.subnet_file.display()),
            "--ip-masq".to_string(),
            format!("--healthz-port={HEALTHZ_PORT}"),
            // The node's kernel view for `weft doctor` / `weft path` (read-only).
            "--debug-dataplane".to_string(),
        ];
        let public_ipv6: Vec<String> = ip6.map(|a| format!("--public-ipv6={a}")).into_iter().collect();
        let argv: Vec<&str> = args.iter().chain(&public_ipv6).chain(&extra).map(String::as_str).collect();
        let label = format!("flanneld on {}", node.ns.name());
        let env = [("RUST_LOG", "info"), ("RUST_BACKTRACE", "1"), ("NO_COLOR", "1")];
        node.flanneld = Some(Daemon::spawn(&label, node.ns.name(), &argv, &env, &log)?);
        Ok(())
    }

    /// SIGTERM flanneld on node `i` (clean shutdown); returns its exit code.
    pub fn stop_flanneld(&mut self, i: usize) -> Result<Option<i32>> {
        Ok(self.node_mut(i)?.flanneld.take().and_then(Daemon::stop))
    }

    /// SIGKILL flanneld on node `i` (a crash).
    pub fn kill_flanneld(&mut self, i: usize) -> Result<Option<i32>> {
        Ok(self.node_mut(i)?.flanneld.take().and_then(Daemon::kill))
    }

    /// SIGKILL then start again; waits for its subnet.env.
    pub fn restart_flanneld(&mut self, i: usize) -> Result<SubnetEnv> {
        self.kill_flanneld(i)?;
        self.start_flanneld(i)?;
        self.wait_subnet_env(i)
    }

    /// True while flanneld runs on node `i`.
    pub fn flanneld_running(&mut self, i: usize) -> Result<bool> {
        Ok(self.node_mut(i)?.flanneld.as_mut().is_some_and(Daemon::is_running))
    }

    /// Exit code if flanneld on node `i` has exited (it stays recorded until stopped).
    pub fn flanneld_exited(&mut self, i: usize) -> Result<Option<i32>> {
        Ok(self.node_mut(i)?.flanneld.as_mut().and_then(Daemon::exited))
    }

    /// `GET <path>` on node `i`'s flanneld health server (`/healthz`, `/readyz`): status code
    /// and body. Done with bash's `/dev/tcp` inside the node namespace (no HTTP client needed).
    pub fn flanneld_http(&self, i: usize, path: &str) -> Result<(u16, String)> {
        let node = self.node(i)?;
        let script = format!(
            "exec 3<>/dev/tcp/127.0.0.1/{HEALTHZ_PORT} && printf 'GET {path} HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
        );
        let r = node.ns.run(&["bash", "-c", &script])?;
        let (head, body) = r.stdout.split_once("\r\n\r\n").unwrap_or((r.stdout.as_str(), ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| LabError::parse(format!("HTTP response from node {i}"), head))?;
        Ok((code, body.to_string()))
    }

    /// Node `i`'s subnet.env, if present and valid.
    pub fn subnet_env(&self, i: usize) -> Result<Option<SubnetEnv>> {
        let path = &self.node(i)?.cni.subnet_file;
        if !path.exists() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(path).map_err(LabError::io("read", path))?;
        SubnetEnv::parse(&text, &path.display().to_string())
            .map(Some)
            .map_err(|e| LabError::parse("subnet.env", e))
    }

    /// Waits until node `i`'s subnet.env exists and parses and, while flanneld runs there, its
    /// `/readyz` answers 200 (fails early if flanneld exits): a subnet.env left by an earlier
    /// run is there at once, and so are its routes, while the new flanneld is still starting.
    pub fn wait_subnet_env(&mut self, i: usize) -> Result<SubnetEnv> {
        let res = wait::until(
            &format!("subnet.env of node {i}"),
            SUBNET_ENV_TIMEOUT,
            Duration::from_millis(100),
            || {
                if let Some(code) = self.flanneld_exited(i)? {
                    return Err(LabError::Hopeless(format!("flanneld on node {i} exited with {code}")));
                }
                let Some(env) = self.subnet_env(i)? else { return Ok(None) };
                if self.flanneld_running(i)?
                    && !self.flanneld_http(i, "/readyz").is_ok_and(|(code, _)| code == 200)
                {
                    return Ok(None);
                }
                Ok(Some(env))
            },
        );
        res.map_err(|e| self.with_flanneld_log(i, e))
    }

    fn with_flanneld_log(&self, i: usize, e: LabError) -> LabError {
        let log = self.node(i).map(|n| crate::etcd::tail(&n.flanneld_log(), 30)).unwrap_or_default();
        match e {
            LabError::Interrupted => e,
            other => LabError::Invalid(format!("{other}\n--- flanneld log of node {i} ---\n{log}")),
        }
    }

    /// Node `i`'s subnet (FLANNEL_SUBNET reduced to its network).
    pub fn node_subnet(&self, i: usize) -> Result<Ipv4Network> {
        let env =
            self.subnet_env(i)?.ok_or_else(|| LabError::Invalid(format!("node {i} has no subnet.env")))?;
        match env.subnet_network() {
            Some(IpNetwork::V4(n)) => Ok(n),
            other => Err(LabError::parse("FLANNEL_SUBNET", format!("{other:?} is not an IPv4 subnet"))),
        }
    }

    /// Destinations routed via `flannel.1` on node `i` (empty if the device is absent).
    pub fn flannel_routes(&self, i: usize) -> Result<Vec<Ipv4Network>> {
        self.routes_on(i, "-4", VXLAN_DEV)
    }

    /// Destinations of the `family` (`-4`, `-6`) routes on device `dev` of node `i` (empty if
    /// the device is absent), from `ip -j route`.
    pub(crate) fn routes_on<T: std::str::FromStr>(
        &self,
        i: usize,
        family: &str,
        dev: &str,
    ) -> Result<Vec<T>> {
        let node = self.node(i)?;
        if !node.ns.has_link(dev) {
            return Ok(Vec::new());
        }
        let v = node.ns.try_ip_json(&[family, "route", "show", "dev", dev])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("dst").and_then(Value::as_str))
            .filter_map(|d| d.parse::<T>().ok())
            .collect())
    }

    /// Waits until node `on` has (`present`) or no longer has a route to `subnet` the lab's
    /// backend's way ([`Lab::peer_routes`]).
    pub fn wait_route(&self, on: usize, subnet: Ipv4Network, present: bool, timeout: Duration) -> Result<()> {
        let what =
            format!("route to {subnet} on node {on} {}", if present { "to appear" } else { "to vanish" });
        wait::until_true(&what, timeout, || Ok(self.peer_routes(on)?.contains(&subnet) == present))
    }

    /// Waits until every node whose flanneld runs has a subnet.env and a route to every other
    /// such node's subnet ([`Lab::peer_routes`]). Nodes never started or stopped through the lab are left
    /// out; a flanneld that exited on its own is an error (with its log).
    pub fn wait_converged(&mut self) -> Result<()> {
        let mut running = Vec::new();
        for i in 0..self.nodes.len() {
            // A flanneld that was started and died is a failure, not a node to leave out.
            if let Some(code) = self.flanneld_exited(i)? {
                let e = LabError::Invalid(format!("flanneld on node {i} exited with {code}"));
                return Err(self.with_flanneld_log(i, e));
            }
            if self.flanneld_running(i)? {
                self.wait_subnet_env(i)?;
                running.push(i);
            }
        }
        let subnets: Vec<(usize, Ipv4Network)> =
            running.iter().map(|&i| Ok((i, self.node_subnet(i)?))).collect::<Result<_>>()?;
        let mut missing = String::new();
        let res = wait::until_true("routes between all nodes", CONVERGE_TIMEOUT, || {
            missing.clear();
            for &on in &running {
                let routes = self.peer_routes(on)?;
                for (other, subnet) in &subnets {
                    if *other != on && !routes.contains(subnet) {
                        let _ = write!(missing, "node {on} lacks {subnet} (node {other}); ");
                    }
                }
            }
            Ok(missing.is_empty())
        });
        res.map_err(|e| match e {
            LabError::Timeout { what, waited, .. } => {
                LabError::Timeout { what, waited, last: format!("{missing}\n{}", self.diagnostics()) }
            }
            other => other,
        })
    }

    /// All leases under `<prefix>/subnets/`.
    pub fn leases(&self) -> Result<Vec<Lease>> {
        let prefix = format!("{}/subnets/", self.etcd_prefix);
        let mut out = Vec::new();
        for (key, value) in self.etcd()?.get_prefix(&prefix)? {
            let name = key.strip_prefix(&prefix).unwrap_or(&key);
            // A dual-stack key is `<v4>-<len>&<v6>-<len6>`: the IPv4 part names the subnet.
            let v4 = name.split('&').next().unwrap_or(name);
            let subnet =
                v4.replacen('-', "/", 1).parse::<Ipv4Network>().map_err(|e| LabError::parse(&key, e))?;
            let attrs = serde_json::from_str(&value).map_err(|e| LabError::parse(&key, e))?;
            out.push(Lease { key, subnet, attrs, raw: value });
        }
        Ok(out)
    }

    /// Node `i`'s lease: the one whose `PublicIP` is the node's underlay address.
    pub fn lease(&self, i: usize) -> Result<Option<Lease>> {
        let ip = self.node(i)?.ip.to_string();
        Ok(self
            .leases()?
            .into_iter()
            .find(|l| l.attrs.get("PublicIP").and_then(Value::as_str) == Some(ip.as_str())))
    }

    /// Deletes node `i`'s lease key from etcd (what leaving the cluster amounts to upstream,
    /// where a clean shutdown keeps the key). Returns the deleted lease.
    pub fn delete_lease(&self, i: usize) -> Result<Option<Lease>> {
        let lease = self.lease(i)?;
        if let Some(l) = &lease {
            self.etcd()?.del(&l.key)?;
        }
        Ok(lease)
    }

    /// `ip route show dev flannel.1` on node `i` (host-gw: `ip route show dev eth0`).
    pub fn show_routes(&self, i: usize) -> Result<String> {
        if self.backend == crate::backend::Backend::HostGw {
            return Ok(self.node(i)?.ns.run(&["ip", "route", "show", "dev", NODE_IFACE])?.stdout);
        }
        self.show(i, &["ip", "route", "show", "dev", VXLAN_DEV])
    }

    /// `ip neigh show dev flannel.1` on node `i`.
    pub fn show_neighbours(&self, i: usize) -> Result<String> {
        self.show(i, &["ip", "neigh", "show", "dev", VXLAN_DEV])
    }

    /// `bridge fdb show dev flannel.1` on node `i`.
    pub fn show_fdb(&self, i: usize) -> Result<String> {
        self.show(i, &["bridge", "fdb", "show", "dev", VXLAN_DEV])
    }

    /// `ip -d link show flannel.1` plus its addresses on node `i`.
    pub fn show_vxlan(&self, i: usize) -> Result<String> {
        self.show(i, &["ip", "-d", "addr", "show", "dev", VXLAN_DEV])
    }

    fn show(&self, i: usize, argv: &[&str]) -> Result<String> {
        let node = self.node(i)?;
        if !node.ns.has_link(VXLAN_DEV) {
            return Ok(format!("({VXLAN_DEV} does not exist)\n"));
        }
        Ok(node.ns.run(argv)?.stdout)
    }

    /// Everything an operator would look at on node `i`, as text.
    pub fn inspect(&self, i: usize) -> Result<String> {
        let node = self.node(i)?;
        let mut out = format!("== node {i}: {} (underlay {}) ==\n", node.ns.name(), node.ip);
        match self.lease(i)? {
            Some(l) => {
                let _ = writeln!(out, "$ etcdctl get {}\n{}", l.key, l.raw);
            }
            None => out.push_str("(no lease in etcd)\n"),
        }
        let cmds: [(&str, Show); 3] = [
            ("ip route show dev flannel.1", Lab::show_routes),
            ("ip neigh show dev flannel.1", Lab::show_neighbours),
            ("bridge fdb show dev flannel.1", Lab::show_fdb),
        ];
        for (cmd, f) in cmds {
            let _ = write!(out, "$ {cmd}\n{}", f(self, i)?);
        }
        let _ = writeln!(out, "$ curl http://127.0.0.1:{HEALTHZ_PORT}/healthz");
        match self.flanneld_http(i, "/healthz") {
            Ok((code, body)) => {
                let _ = writeln!(out, "{code} {}", body.trim());
            }
            Err(_) => out.push_str("(no answer)\n"),
        }
        Ok(out)
    }

    /// The flannel.1 address (own subnet network /32) on node `i`, if the device exists.
    pub fn vxlan_address(&self, i: usize) -> Result<Option<Ipv4Addr>> {
        let node = self.node(i)?;
        if !node.ns.has_link(VXLAN_DEV) {
            return Ok(None);
        }
        let v = node.ns.try_ip_json(&["-4", "addr", "show", "dev", VXLAN_DEV])?;
        Ok(v.pointer("/0/addr_info/0/local").and_then(Value::as_str).and_then(|a| a.parse().ok()))
    }
}
