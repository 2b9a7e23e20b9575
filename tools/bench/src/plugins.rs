//! The plugin benchmark: bridge + host-local + ipMasq, ours against the reference.
//!
//! Both implementations get the same config (bridge, gateway, masquerade, host-local with
//! its own dataDir) in the same host namespace, and are run alternately so that machine
//! noise hits both alike. Times are wall-clock per process invocation as a runtime sees it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weft_common::netlink::{Netlink, VethSpec};
use weft_common::netns::NetNs;
use weft_lab::ns::{require_root, Netns};

use crate::rss;
use crate::stats::{median, ms};

/// Options of `weft-bench plugins`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// Directory with our binaries (default: $WEFT_BIN_DIR or target/debug).
    #[arg(long)]
    ours: Option<PathBuf>,
    /// Directory with the reference plugins.
    #[arg(long, default_value = weft_lab::bins::REFERENCE_DIR)]
    reference: PathBuf,
    /// Sequential ADD+DEL pairs per implementation.
    #[arg(long, default_value_t = 100)]
    sequential: usize,
    /// Parallel ADDs (then DELs) per batch.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Parallel batches per implementation (the median is reported).
    #[arg(long, default_value_t = 3)]
    batches: usize,
    /// Masquerade backend for our bridge (`ipMasqBackend`); unset = auto.
    #[arg(long)]
    masq_backend: Option<String>,
    /// Dual stack: an IPv6 range (fd00:99::/64) beside the IPv4 one, so every ADD masquerades both.
    #[arg(long)]
    dual_stack: bool,
}

struct Impl {
    label: &'static str,
    dir: PathBuf,
    conf: Vec<u8>,
}

impl Impl {
    fn env<'a>(&'a self, cmd: &'a str, cid: &'a str, netns: &'a str) -> Vec<(&'a str, String)> {
        vec![
            ("CNI_COMMAND", cmd.to_string()),
            ("CNI_CONTAINERID", cid.to_string()),
            ("CNI_NETNS", netns.to_string()),
            ("CNI_IFNAME", "eth0".to_string()),
            ("CNI_PATH", self.dir.display().to_string()),
        ]
    }

    fn spawn(
        &self,
        cmd: &str,
        cid: &str,
        netns: &str,
        program: &Path,
        extra: &[&str],
    ) -> std::io::Result<Child> {
        let mut c = Command::new(program);
        c.args(extra).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in self.env(cmd, cid, netns) {
            c.env(k, v);
        }
        let mut child = c.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&self.conf)?;
        }
        Ok(child)
    }

    fn bridge(&self) -> PathBuf {
        self.dir.join("bridge")
    }
}

fn finish(child: Child, what: &str) -> Result<(), String> {
    let out = child.wait_with_output().map_err(|e| format!("{what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn timed(imp: &Impl, cmd: &str, cid: &str, netns: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let child = imp.spawn(cmd, cid, netns, &imp.bridge(), &[]).map_err(|e| e.to_string())?;
    finish(child, &format!("{} {cmd} {cid}", imp.label))?;
    Ok(start.elapsed())
}

fn parallel(imp: &Impl, cmd: &str, pods: &[Netns], tag: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut children = Vec::new();
    for (i, pod) in pods.iter().enumerate() {
        let cid = format!("{tag}-{i}");
        children.push((
            cid.clone(),
            imp.spawn(cmd, &cid, &pod.path(), &imp.bridge(), &[]).map_err(|e| e.to_string())?,
        ));
    }
    let mut first_err = None;
    for (cid, child) in children {
        if let Err(e) = finish(child, &format!("{} {cmd} {cid}", imp.label)) {
            first_err.get_or_insert(e);
        }
    }
    let elapsed = start.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(elapsed),
    }
}

/// Peak RSS of one ADD's process tree (see `rss`): the largest process's peak in KiB, and
/// each process's as the probe printed them.
fn peak_rss_kib(imp: &Impl, netns: &str) -> Result<(u64, String), String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let bridge = imp.bridge();
    let args = ["rss-probe", bridge.to_str().unwrap_or_default()];
    let child = imp.spawn("ADD", "bench-rss", netns, &me, &args).map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let field = |name: &str| stderr.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let kib = field("RSS_KIB=")
        .and_then(|v| v.parse().ok())
        .filter(|_| out.status.success())
        .ok_or_else(|| format!("rss probe for {} failed: {stderr}", imp.label))?;
    let each = field("RSS_EACH_KIB=").unwrap_or_default().to_string();
    let del = imp.spawn("DEL", "bench-rss", netns, &bridge, &[]).map_err(|e| e.to_string())?;
    finish(del, "DEL after rss probe")?;
    Ok((kib, each))
}

/// The kernel's share of a DEL, with no plugin around it: `rounds` times, a veth pair like an
/// attachment's (host end on the bridge, both ends up) is made, then its container end deleted
/// from inside the pod namespace, as DEL does; the delete alone is timed.
fn veth_delete_floor(pod: &Netns, bridge: &str, rounds: usize) -> Result<Vec<Duration>, String> {
    let e = |e: weft_common::netlink::Error| e.to_string();
    let pod_ns = NetNs::open(pod.path()).map_err(|e| e.to_string())?;
    let mut host = Netlink::open().map_err(e)?;
    let mut ctr = Netlink::open_in(&pod_ns).map_err(e)?;
    let master = host.link_by_name(bridge).map_err(e)?.index;
    let mut out = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let spec = VethSpec {
            name: "wbfloor0".into(),
            peer_name: "eth0".into(),
            peer_netns: Some(&pod_ns),
            ..VethSpec::default()
        };
        host.create_veth(&spec).map_err(e)?;
        let veth = host.link_by_name("wbfloor0").map_err(e)?.index;
        host.set_master(veth, master).map_err(e)?;
        host.set_up(veth).map_err(e)?;
        let peer = ctr.link_by_name("eth0").map_err(e)?.index;
        ctr.set_up(peer).map_err(e)?;
        let start = Instant::now();
        ctr.del_link(peer).map_err(e)?;
        out.push(start.elapsed());
    }
    Ok(out)
}

/// `rss-probe`: runs argv with our stdin/stdout and reports the peak RSS of the process tree:
/// the largest of each process's own `VmHWM` (see `rss`), and every process's on stderr.
pub fn rss_probe(argv: &[String]) -> i32 {
    match rss::trace_peaks(argv) {
        Ok(t) => {
            let each = describe_peaks(&t.processes);
            eprintln!("RSS_EACH_KIB={each}");
            eprintln!("RSS_KIB={}", t.max_kib());
            t.exit_code
        }
        Err(e) => {
            eprintln!("rss-probe: {e}");
            2
        }
    }
}

/// One line for a tree's peaks, in the order the processes ended: `comm KiB (anon + file at
/// exit)` for a command seen once, `comm ×N min–max KiB` for one run several times.
fn describe_peaks(processes: &[rss::ProcessPeak]) -> String {
    let mut order: Vec<&str> = Vec::new();
    for p in processes {
        if !order.contains(&p.comm.as_str()) {
            order.push(&p.comm);
        }
    }
    let parts: Vec<String> = order
        .iter()
        .map(|comm| {
            let runs: Vec<&rss::ProcessPeak> = processes.iter().filter(|p| p.comm == *comm).collect();
            match runs.as_slice() {
                [p] => format!(
                    "{comm} {} KiB ({} anon + {} file at exit)",
                    p.vm_hwm_kib, p.rss_anon_kib, p.rss_file_kib
                ),
                _ => {
                    let min = runs.iter().map(|p| p.vm_hwm_kib).min().unwrap_or(0);
                    let max = runs.iter().map(|p| p.vm_hwm_kib).max().unwrap_or(0);
                    format!("{comm} ×{} {min}–{max} KiB", runs.len())
                }
            }
        })
        .collect();
    parts.join(", ")
}

fn conf(dir: &Path, backend: Option<&str>, dual_stack: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "benchnet",
        "type": "bridge",
        "bridge": "cnibench0",
        "isGateway": true,
        "ipMasq": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": "10.99.0.0/16"}]],
            "dataDir": dir.display().to_string()
        }
    });
    if let Some(b) = backend {
        v["ipMasqBackend"] = serde_json::Value::String(b.to_string());
    }
    if dual_stack {
        v["ipam"]["ranges"] = serde_json::json!([[{"subnet": "10.99.0.0/16"}], [{"subnet": "fd00:99::/64"}]]);
    }
    v.to_string().into_bytes()
}

/// Runs the whole benchmark and prints the table.
pub fn run(opts: &Options) -> Result<(), String> {
    require_root();
    let ours_dir = opts.ours.clone().unwrap_or_else(weft_lab::bins::bin_dir);
    for dir in [&ours_dir, &opts.reference] {
        for b in ["bridge", "host-local"] {
            if !dir.join(b).is_file() {
                return Err(format!("{} is missing", dir.join(b).display()));
            }
        }
    }
    let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
    let ours = Impl {
        label: "weft",
        dir: ours_dir,
        conf: conf(&tmp.path().join("ours"), opts.masq_backend.as_deref(), opts.dual_stack),
    };
    let reference = Impl {
        label: "reference",
        dir: opts.reference.clone(),
        conf: conf(&tmp.path().join("ref"), None, opts.dual_stack),
    };

    let host = Netns::unique("wbh");
    let single = Netns::unique("wbc");
    let pods: Vec<Netns> = (0..opts.parallel).map(|_| Netns::unique("wbp")).collect();
    let host_ns = NetNs::open(host.path()).map_err(|e| e.to_string())?;
    // Every plugin process is spawned from this thread, so it inherits the host namespace.
    let _inside = host_ns.enter().map_err(|e| e.to_string())?;

    let imps = [&ours, &reference];
    // Warm-up: create the bridge and page in both binaries.
    for imp in imps {
        timed(imp, "ADD", "bench-warm", &single.path())?;
        timed(imp, "DEL", "bench-warm", &single.path())?;
    }

    let mut add = [Vec::new(), Vec::new()];
    let mut del = [Vec::new(), Vec::new()];
    for i in 0..opts.sequential {
        for (k, imp) in imps.iter().enumerate() {
            let cid = format!("bench-seq-{i}");
            add[k].push(timed(imp, "ADD", &cid, &single.path())?);
            del[k].push(timed(imp, "DEL", &cid, &single.path())?);
        }
    }

    let mut padd = [Vec::new(), Vec::new()];
    let mut pdel = [Vec::new(), Vec::new()];
    for b in 0..opts.batches {
        for (k, imp) in imps.iter().enumerate() {
            let tag = format!("bench-par{b}");
            padd[k].push(parallel(imp, "ADD", &pods, &tag)?);
            pdel[k].push(parallel(imp, "DEL", &pods, &tag)?);
        }
    }

    let rss = [peak_rss_kib(&ours, &single.path())?, peak_rss_kib(&reference, &single.path())?];
    let floor = veth_delete_floor(&single, "cnibench0", opts.sequential.clamp(1, 50))?;

    let row = |name: String, o: Duration, r: Duration| {
        let ratio = if r.is_zero() { 0.0 } else { o.as_secs_f64() / r.as_secs_f64() };
        println!("| {name} | {} | {} | {:.3} (1/{:.1}) |", ms(o), ms(r), ratio, 1.0 / ratio.max(1e-9));
    };
    let stack = if opts.dual_stack { ", dual stack" } else { "" };
    println!("| bridge + host-local + ipMasq (cniVersion 0.4.0{stack}) | weft | reference | ratio |");
    println!("|---|---|---|---|");
    row(format!("sequential ADD, median of {}", opts.sequential), median(&add[0]), median(&add[1]));
    row(format!("sequential DEL, median of {}", opts.sequential), median(&del[0]), median(&del[1]));
    row(
        format!("{} parallel ADDs, wall time (median of {})", opts.parallel, opts.batches),
        median(&padd[0]),
        median(&padd[1]),
    );
    row(
        format!("{} parallel DELs, wall time (median of {})", opts.parallel, opts.batches),
        median(&pdel[0]),
        median(&pdel[1]),
    );
    println!(
        "| kernel floor of a DEL: deleting one attached veth, no plugin (median of {}) | {} | | |",
        floor.len(),
        ms(median(&floor))
    );
    let ratio = rss[0].0 as f64 / (rss[1].0.max(1)) as f64;
    println!(
        "| peak RSS of one ADD (largest VmHWM in the process tree) | {} KiB | {} KiB | {:.3} (1/{:.1}) |",
        rss[0].0,
        rss[1].0,
        ratio,
        1.0 / ratio.max(1e-9)
    );
    println!();
    println!("Peak RSS (VmHWM) of each process of one ADD: weft: {}; reference: {}.", rss[0].1, rss[1].1);
    Ok(())
}
