//! etcd inside the lab: Debian's `/usr/bin/etcd`, one member or a cluster, each member a
//! process (by PID) listening on its own underlay address in the lab's switch namespace, with
//! its data dir under the lab's temp dir. Readiness is `etcdctl endpoint health`, not a sleep.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cmd::{run, Run};
use crate::daemon::Daemon;
use crate::error::{LabError, Result};
use crate::wait;

/// Debian's etcd server and client.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";
/// Client and peer ports (each member has its own address, so the ports are fixed).
pub const CLIENT_PORT: u16 = 2379;
pub const PEER_PORT: u16 = 2380;

/// How long a (re)started cluster may take to become healthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// One etcd member.
#[derive(Debug)]
pub struct Member {
    name: String,
    ip: Ipv4Addr,
    data_dir: PathBuf,
    log: PathBuf,
    daemon: Option<Daemon>,
}

impl Member {
    /// `m0`, `m1`, …
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Underlay address the member listens on.
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }
    /// `http://<ip>:2379`.
    pub fn client_url(&self) -> String {
        format!("http://{}:{CLIENT_PORT}", self.ip)
    }
    /// True while its process runs.
    pub fn is_running(&mut self) -> bool {
        self.daemon.as_mut().is_some_and(Daemon::is_running)
    }
    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
    }
}

/// An etcd cluster of one or more members running in namespace `netns`.
#[derive(Debug)]
pub struct Etcd {
    netns: String,
    token: String,
    members: Vec<Member>,
}

impl Etcd {
    /// Starts one member per address in `ips` inside `netns` (addresses must already be
    /// configured there) and waits until every member reports healthy.
    pub fn start(netns: &str, dir: &Path, token: &str, ips: &[Ipv4Addr]) -> Result<Etcd> {
        for (bin, what) in [(ETCD_BIN, "etcd"), (ETCDCTL_BIN, "etcdctl")] {
            if !Path::new(bin).is_file() {
                return Err(LabError::Missing {
                    what: what.into(),
                    path: bin.into(),
                    hint: "run scripts/install-deps.sh (Debian etcd-server, etcd-client)".into(),
                });
            }
        }
        if ips.is_empty() {
            return Err(LabError::Invalid("an etcd cluster needs at least one member".into()));
        }
        let members = ips
            .iter()
            .enumerate()
            .map(|(i, ip)| Member {
                name: format!("m{i}"),
                ip: *ip,
                data_dir: dir.join(format!("etcd-m{i}")),
                log: dir.join(format!("etcd-m{i}.log")),
                daemon: None,
            })
            .collect();
        let mut etcd = Etcd { netns: netns.to_string(), token: token.to_string(), members };
        for i in 0..etcd.members.len() {
            etcd.spawn_member(i)?;
        }
        etcd.wait_healthy()?;
        Ok(etcd)
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Every member's client URL, comma-separated (flanneld's `--etcd-endpoints`).
    pub fn endpoints(&self) -> String {
        self.members.iter().map(Member::client_url).collect::<Vec<_>>().join(",")
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://{}:{PEER_PORT}", m.name, m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn member(&mut self, i: usize) -> Result<&mut Member> {
        let n = self.members.len();
        self.members.get_mut(i).ok_or_else(|| LabError::Invalid(format!("no etcd member {i} (have {n})")))
    }

    fn spawn_member(&mut self, i: usize) -> Result<()> {
        let cluster = self.initial_cluster();
        let (netns, token) = (self.netns.clone(), self.token.clone());
        let m = self.member(i)?;
        if m.is_running() {
            return Ok(());
        }
        std::fs::create_dir_all(&m.data_dir).map_err(LabError::io("create", &m.data_dir))?;
        // etcd refuses data dirs readable by others.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&m.data_dir, std::fs::Permissions::from_mode(0o700))
            .map_err(LabError::io("chmod", &m.data_dir))?;
        let client = m.client_url();
        let peer = format!("http://{}:{PEER_PORT}", m.ip);
        let data_dir = m.data_dir.display().to_string();
        let argv = [
            ETCD_BIN,
            "--name",
            &m.name,
            "--data-dir",
            &data_dir,
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
            "--initial-cluster",
            &cluster,
            "--initial-cluster-state",
            "new",
            "--initial-cluster-token",
            &token,
            "--log-level",
            "warn",
        ];
        let label = format!("etcd {} in {netns}", m.name);
        m.daemon = Some(Daemon::spawn(&label, &netns, &argv, &[], &m.log)?);
        Ok(())
    }

    /// Runs `etcdctl` (API v3) in the lab against the given endpoints.
    pub fn ctl_at(&self, endpoints: &str, args: &[&str]) -> Run {
        let ep = format!("--endpoints={endpoints}");
        let mut argv = vec!["ip", "netns", "exec", &self.netns, ETCDCTL_BIN, &ep, "--dial-timeout=2s"];
        argv.extend_from_slice(args);
        run(&argv, &[("ETCDCTL_API", "3")], b"", Duration::from_secs(15))
    }

    /// Runs `etcdctl` against every member (the client fails over between them).
    pub fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_at(&self.endpoints(), args)
    }

    fn running_endpoints(&mut self) -> String {
        let mut eps = Vec::new();
        for m in &mut self.members {
            if m.is_running() {
                eps.push(m.client_url());
            }
        }
        eps.join(",")
    }

    /// Waits until every running member answers `endpoint health`.
    pub fn wait_healthy(&mut self) -> Result<()> {
        let eps = self.running_endpoints();
        if eps.is_empty() {
            return Err(LabError::Invalid("no etcd member is running".into()));
        }
        let mut last = String::new();
        let res = wait::until_true("etcd endpoint health", HEALTH_TIMEOUT, || {
            for m in &mut self.members {
                if m.daemon.is_some() && !m.is_running() {
                    return Err(LabError::Hopeless(format!(
                        "etcd {} exited; log tail:\n{}",
                        m.name,
                        tail(&m.log(), 20)
                    )));
                }
            }
            let r = self.ctl_at(&eps, &["endpoint", "health"]);
            last = r.to_string();
            Ok(r.ok())
        });
        res.map_err(|e| match e {
            LabError::Timeout { what, waited, .. } => LabError::Timeout { what, waited, last },
            other => other,
        })
    }

    /// Index of the current leader (asks every running member).
    pub fn leader(&mut self) -> Result<usize> {
        let eps = self.running_endpoints();
        let r = self.ctl_at(&eps, &["endpoint", "status", "-w", "json"]).check("etcdctl endpoint status")?;
        let v: serde_json::Value =
            serde_json::from_str(&r.stdout).map_err(|e| LabError::parse("endpoint status json", e))?;
        for st in v.as_array().into_iter().flatten() {
            let id = st.pointer("/Status/header/member_id").and_then(serde_json::Value::as_u64);
            let leader = st.pointer("/Status/leader").and_then(serde_json::Value::as_u64);
            if id.is_some() && id == leader {
                let ep = st.get("Endpoint").and_then(serde_json::Value::as_str).unwrap_or("");
                if let Some(i) = self.members.iter().position(|m| m.client_url() == ep) {
                    return Ok(i);
                }
            }
        }
        Err(LabError::parse("endpoint status", format!("no member is leader: {}", r.stdout)))
    }

    /// SIGTERM member `i` (waits for it to exit).
    pub fn stop_member(&mut self, i: usize) -> Result<()> {
        if let Some(d) = self.member(i)?.daemon.take() {
            d.stop();
        }
        Ok(())
    }

    /// SIGKILL member `i`.
    pub fn kill_member(&mut self, i: usize) -> Result<()> {
        if let Some(d) = self.member(i)?.daemon.take() {
            d.kill();
        }
        Ok(())
    }

    /// Restarts member `i` from its data dir (no wait; see [`Etcd::wait_healthy`]).
    pub fn start_member(&mut self, i: usize) -> Result<()> {
        self.spawn_member(i)
    }

    /// Stops every member.
    pub fn stop(&mut self) {
        for m in &mut self.members {
            if let Some(d) = m.daemon.take() {
                d.stop();
            }
        }
    }

    /// Restarts every stopped member and waits until all are healthy.
    pub fn restart(&mut self) -> Result<()> {
        for i in 0..self.members.len() {
            self.spawn_member(i)?;
        }
        self.wait_healthy()
    }

    /// `etcdctl put key value`.
    pub fn put(&self, key: &str, value: &str) -> Result<()> {
        self.ctl(&["put", key, value]).check(&format!("etcdctl put {key}"))?;
        Ok(())
    }

    /// `etcdctl get key` → value, `None` when absent.
    pub fn get(&self, key: &str) -> Result<Option<String>> {
        let r = self.ctl(&["get", "--print-value-only", key]).check(&format!("etcdctl get {key}"))?;
        let v = r.stdout.trim_end_matches('\n');
        Ok((!v.is_empty()).then(|| v.to_string()))
    }

    /// `etcdctl get --prefix` → (key, value) pairs in key order.
    pub fn get_prefix(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let r = self.ctl(&["get", "--prefix", prefix]).check(&format!("etcdctl get --prefix {prefix}"))?;
        // Plain output alternates key and value lines; keys and flannel's compact JSON values
        // contain no newlines.
        let lines: Vec<&str> = r.stdout.lines().collect();
        Ok(lines.chunks(2).filter_map(|c| Some((c.first()?.to_string(), c.get(1)?.to_string()))).collect())
    }

    /// `etcdctl del key`; returns how many keys were deleted.
    pub fn del(&self, key: &str) -> Result<u64> {
        let r = self.ctl(&["del", key]).check(&format!("etcdctl del {key}"))?;
        r.stdout.trim().parse().map_err(|e| LabError::parse("etcdctl del output", e))
    }

    /// Last `n` lines of every member's log (for failure reports).
    pub fn log_tails(&self, n: usize) -> String {
        self.members.iter().map(|m| format!("--- etcd {} ---\n{}\n", m.name, tail(&m.log(), n))).collect()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
