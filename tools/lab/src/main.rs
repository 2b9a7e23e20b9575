//! `weft-lab`: the demo and cleanup commands scripts run.
//!
//! `weft-lab demo [--nodes 3 --pods 2] [--backend vxlan|host-gw] [--dual-stack]` builds a
//! flannel lab, pings every pod from every pod (with `--dual-stack`, over IPv4 and IPv6), prints
//! the pass matrix, `weft path` for a cross-node pair and
//! `weft doctor` for the cluster, breaks one FDB entry on purpose and shows `weft path` naming
//! it and flanneld healing it (host-gw: shows the peer routes, deletes one and shows flanneld
//! healing it), then tears down (also on
//! Ctrl-C/SIGTERM and on failure). Exit status 1 if any ping failed or the lab could not be
//! built. `weft-lab cleanup <prefix>` removes leftovers of an interrupted run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_lab::{cleanup_prefix, Backend, FlannelSpec, Lab, LabError};

/// `println!` that ignores a closed stdout (`weft-lab demo | head` must still tear down).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr.
macro_rules! esay {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// `print!` that ignores a closed stdout.
macro_rules! say_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout(), $($arg)*);
    }};
}

/// Namespace prefix of the demo's labs.
const DEMO_PREFIX: &str = "wdemo";

#[derive(Parser)]
#[command(name = "weft-lab", about = "weft's namespaced lab: demo and cleanup")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build a flannel lab, ping every pod pair, inspect every node, tear down.
    Demo {
        /// Number of nodes.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
        nodes: u16,
        /// Pods per node.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..=20))]
        pods: u16,
        /// etcd members (1 or 3).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=3))]
        etcd_members: u16,
        /// Namespace prefix (1-6 alphanumerics).
        #[arg(long, default_value = DEMO_PREFIX)]
        prefix: String,
        /// flannel backend: vxlan or host-gw.
        #[arg(long, default_value = "vxlan")]
        backend: Backend,
        /// Dual stack (either backend): IPv6 underlay in 2001:2::/48, pods with an IPv6 address
        /// too, and a second ping matrix over IPv6.
        #[arg(long)]
        dual_stack: bool,
    },
    /// Build a lab and keep it until Ctrl-C/SIGTERM (to poke at it with `ip netns exec`).
    Up {
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=50))]
        nodes: u16,
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(0..=20))]
        pods: u16,
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=3))]
        etcd_members: u16,
        /// Only nodes, underlay and etcd: no flanneld, no pods.
        #[arg(long)]
        bare: bool,
        #[arg(long, default_value = DEMO_PREFIX)]
        prefix: String,
        /// flannel backend: vxlan or host-gw.
        #[arg(long, default_value = "vxlan")]
        backend: Backend,
        /// Dual stack (either backend), as for `demo`.
        #[arg(long)]
        dual_stack: bool,
    },
    /// Remove namespaces, their processes and temp dirs whose names start with PREFIX.
    Cleanup {
        #[arg(default_value = DEMO_PREFIX)]
        prefix: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Demo { nodes, pods, etcd_members, prefix, backend, dual_stack } => {
            if let Err(e) = weft_lab::signals::install() {
                esay!("weft-lab: {e}");
                return ExitCode::FAILURE;
            }
            let spec = FlannelSpec {
                nodes: usize::from(nodes),
                pods_per_node: usize::from(pods),
                etcd_members: usize::from(etcd_members),
            };
            match demo(&prefix, spec, backend, dual_stack) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(LabError::Interrupted) => {
                    esay!("weft-lab: interrupted; lab torn down");
                    ExitCode::from(130)
                }
                Err(e) => {
                    esay!("weft-lab demo failed: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Cmd::Up { nodes, pods, etcd_members, bare, prefix, backend, dual_stack } => {
            if let Err(e) = weft_lab::signals::install() {
                esay!("weft-lab: {e}");
                return ExitCode::FAILURE;
            }
            let spec = FlannelSpec {
                nodes: usize::from(nodes),
                pods_per_node: usize::from(pods),
                etcd_members: usize::from(etcd_members),
            };
            match up(&prefix, spec, bare, backend, dual_stack) {
                Err(LabError::Interrupted) => {
                    say!("torn down");
                    ExitCode::from(130)
                }
                Err(e) => {
                    esay!("weft-lab up failed: {e}");
                    ExitCode::FAILURE
                }
                Ok(()) => ExitCode::SUCCESS,
            }
        }
        Cmd::Cleanup { prefix } => match cleanup_prefix(&prefix) {
            Ok(c) => {
                say!(
                    "removed {} namespaces, {} processes, {} temp dirs",
                    c.namespaces.len(),
                    c.pids.len(),
                    c.dirs.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                esay!("weft-lab cleanup: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs the demo; `Ok(false)` when some ping failed. The lab is dropped (torn down) on every
/// path out of this function.
fn demo(prefix: &str, spec: FlannelSpec, backend: Backend, dual_stack: bool) -> Result<bool, LabError> {
    say!(
        "building a lab: {} nodes × {} pods, etcd with {} member(s), flanneld ({}{}) on every node …",
        spec.nodes,
        spec.pods_per_node,
        spec.etcd_members,
        backend.type_name(),
        if dual_stack { ", dual stack" } else { "" }
    );
    // A short reconcile period, so the demo's deliberate break heals within seconds.
    let args = ["--reconcile-interval=2"];
    let lab = if dual_stack {
        Lab::flannel_dual_stack_backend(prefix, spec, backend, &args)?
    } else {
        Lab::flannel_backend(prefix, spec, backend, &args)?
    };
    say!("lab {} ready (state in {})", lab.id(), lab.dir().display());
    for p in lab.pods() {
        match p.ip6() {
            Some(ip6) => say!("  pod {} on node {}: {} {ip6}", p.ns().name(), p.node(), p.ip()),
            None => say!("  pod {} on node {}: {}", p.ns().name(), p.node(), p.ip()),
        }
    }
    let mut failures = report_matrix("ping matrix (every pod → every pod)", &lab.ping_matrix()?);
    if dual_stack {
        failures += report_matrix("IPv6 ping matrix (every pod → every pod)", &lab.ping_matrix6()?);
    }
    let seen = match backend {
        Backend::Vxlan => see_the_network(&lab)?,
        Backend::HostGw => see_host_gw(&lab)?,
    };
    if failures > 0 {
        esay!("{}", lab.diagnostics());
    }
    say!("tearing down lab {} …", lab.id());
    drop(lab);
    Ok(failures == 0 && seen)
}

/// Prints `title` and `matrix` with a one-line verdict; returns the number of failed pairs.
fn report_matrix(title: &str, matrix: &weft_lab::PingMatrix) -> usize {
    say!("\n{title}:");
    say_raw!("{matrix}");
    let failures = matrix.failures().len();
    if failures == 0 {
        say!("all {} pairs answered", matrix.labels.len() * matrix.labels.len().saturating_sub(1));
    } else {
        say!("{failures} pair(s) FAILED");
    }
    say!();
    failures
}

/// Prints a command as typed and its output.
fn show(cmd: &str, r: &weft_lab::cmd::Run) {
    say!("$ {cmd}");
    say_raw!("{}", r.stdout);
    if !r.stderr.trim().is_empty() {
        say_raw!("{}", r.stderr);
    }
    say!("(exit {})\n", r.status.map_or("?".into(), |c| c.to_string()));
}

/// `weft path` for pods `a` (node 0) → `b` (node 1) and `weft doctor`, shown; whether both
/// said healthy.
fn path_and_doctor(lab: &Lab, a: &str, b: &str, path_cmd: &str, doctor_cmd: &str) -> Result<bool, LabError> {
    say!("== the path from pod {a} (node 0) to pod {b} (node 1), asked of the kernels ==");
    let r = weft_lab::see::weft_path(lab, 0, &[a, b])?;
    show(path_cmd, &r);
    let ok = r.ok();
    say!("== every node against etcd (run on node 0) ==");
    let r = weft_lab::see::weft_doctor(lab, 0, &[])?;
    show(doctor_cmd, &r);
    Ok(ok && r.ok())
}

/// After a repair: `weft path --brief` for `a` → `b` and `weft doctor`, shown; whether both
/// said healthy.
fn healthy_again(lab: &Lab, a: &str, b: &str, doctor_cmd: &str) -> Result<bool, LabError> {
    let r = weft_lab::see::weft_path(lab, 0, &["--brief", a, b])?;
    show(&format!("weft path --brief {a} {b}"), &r);
    let ok = r.ok();
    let r = weft_lab::see::weft_doctor(lab, 0, &[])?;
    show(doctor_cmd, &r);
    Ok(ok && r.ok())
}

/// What an operator looks at instead of raw `ip` dumps: `weft path` for one cross-node pod
/// pair and `weft doctor` for the cluster; then one link broken on purpose (node 0's FDB entry
/// for node 1, with node 0's flanneld paused so the break holds), `weft path` naming it, and
/// flanneld healing it. `Ok(false)` when a step did not show what it should.
fn see_the_network(lab: &Lab) -> Result<bool, LabError> {
    use weft_lab::see::{weft_doctor, weft_path, Paused};
    let mut ok = true;
    let doctor_cmd = format!("weft doctor --etcd-endpoints {}", lab.etcd()?.endpoints());
    let src = lab.pods().iter().find(|p| p.node() == 0);
    let dst = lab.pods().iter().find(|p| p.node() == 1);
    let (Some(src), Some(dst)) = (src, dst) else {
        let r = weft_doctor(lab, 0, &[])?;
        say!("== weft doctor (on node 0) ==");
        show(&doctor_cmd, &r);
        return Ok(r.ok());
    };
    let (a, b) = (src.ip().to_string(), dst.ip().to_string());
    let path_cmd = format!("weft path {a} {b}");
    ok &= path_and_doctor(lab, &a, &b, &path_cmd, &doctor_cmd)?;

    let lease = lab.lease(1)?.ok_or_else(|| LabError::Invalid("node 1 has no lease".into()))?;
    let mac = lease.attrs["BackendData"]["VtepMAC"].as_str().unwrap_or_default().to_string();
    let peer = lab.node(1)?.ip().to_string();
    say!("== breaking one link on purpose: node 0 forgets node 1's VTEP (its flanneld paused) ==");
    let started;
    {
        let _paused = Paused::flanneld(lab, 0)?;
        let del =
            ["bridge", "fdb", "del", mac.as_str(), "dev", weft_lab::flannel::VXLAN_DEV, "dst", &peer, "self"];
        let r = lab.node(0)?.ns().exec(&del);
        show(&del.join(" "), &r);
        let r = weft_path(lab, 0, &[&a, &b])?;
        show(&path_cmd, &r);
        ok &= r.status == Some(1) && r.stdout.contains("FDB_MISSING");
        started = std::time::Instant::now();
    }
    say!("== flanneld on node 0 resumed: its reconciliation puts the entry back ==");
    let healed =
        weft_lab::wait::until_true("weft path reachable again", std::time::Duration::from_secs(30), || {
            Ok(weft_path(lab, 0, &[&a, &b])?.ok())
        });
    match healed {
        Ok(()) => say!("healed after {:.1} s\n", started.elapsed().as_secs_f64()),
        Err(e) => {
            say!("not healed: {e}\n");
            ok = false;
        }
    }
    Ok(ok && healthy_again(lab, &a, &b, &doctor_cmd)?)
}

/// host-gw: node 0's routes to its peers (`S via <peer> dev eth0`, no VXLAN device), `weft path`
/// for one cross-node pair and `weft doctor`, then one route deleted on purpose with node 0's
/// flanneld paused, a ping that fails and `weft path` naming it, and flanneld putting the route
/// back once resumed. `Ok(false)` when a step did not show what it should.
fn see_host_gw(lab: &Lab) -> Result<bool, LabError> {
    use weft_lab::see::{weft_path, Paused};
    let node0 = lab.node(0)?.ns();
    let routes_cmd = ["ip", "route", "show", "proto", "boot"];
    say!("== node 0's routes to the other nodes' subnets (host-gw: via their underlay address) ==");
    show(&routes_cmd.join(" "), &node0.exec(&routes_cmd));
    if lab.dual_stack() {
        let routes6_cmd = ["ip", "-6", "route", "show", "proto", "boot"];
        show(&routes6_cmd.join(" "), &node0.exec(&routes6_cmd));
    }
    let mut ok = !lab.has_vxlan_device(0)?;
    say!("flannel.1 on node 0: {}\n", if ok { "none (host-gw)" } else { "PRESENT" });
    let (Some(src), Some(dst)) =
        (lab.pods().iter().position(|p| p.node() == 0), lab.pods().iter().find(|p| p.node() == 1))
    else {
        return Ok(ok);
    };
    let to = dst.ip();
    let (a, b) = (lab.pod(src)?.ip().to_string(), to.to_string());
    let path_cmd = format!("weft path {a} {b}");
    let doctor_cmd = format!("weft doctor --etcd-endpoints {}", lab.etcd()?.endpoints());
    ok &= path_and_doctor(lab, &a, &b, &path_cmd, &doctor_cmd)?;
    let subnet = lab.node_subnet(1)?.to_string();
    say!("== breaking one route on purpose: node 0 forgets node 1's subnet (its flanneld paused) ==");
    let started;
    {
        let _paused = Paused::flanneld(lab, 0)?;
        let del = ["ip", "route", "del", subnet.as_str()];
        show(&del.join(" "), &node0.exec(&del));
        let answered = lab.pod(src)?.ping_once(to, None);
        say!("ping {to} from node 0: {}\n", if answered { "answered (unexpected)" } else { "no answer" });
        ok &= !answered;
        let r = weft_path(lab, 0, &[&a, &b])?;
        show(&path_cmd, &r);
        ok &= r.status == Some(1) && r.stdout.contains("NO_ROUTE");
        started = std::time::Instant::now();
    }
    say!("== flanneld on node 0 resumed: its reconciliation puts the route back ==");
    match lab.wait_ping(src, to, std::time::Duration::from_secs(30)) {
        Ok(()) => say!("healed after {:.1} s\n", started.elapsed().as_secs_f64()),
        Err(e) => {
            say!("not healed: {e}\n");
            ok = false;
        }
    }
    show(&routes_cmd.join(" "), &node0.exec(&routes_cmd));
    Ok(ok && healthy_again(lab, &a, &b, &doctor_cmd)?)
}

/// Builds a lab, prints how to reach it, and holds it until a signal arrives; always returns
/// `Err(Interrupted)` (or the build error) after tearing down.
fn up(
    prefix: &str,
    spec: FlannelSpec,
    bare: bool,
    backend: Backend,
    dual_stack: bool,
) -> Result<(), LabError> {
    let lab = if bare {
        let mut lab = Lab::new(prefix)?;
        lab.set_backend(backend);
        lab.set_dual_stack(dual_stack);
        for _ in 0..spec.nodes {
            lab.add_node()?;
        }
        lab.start_etcd(spec.etcd_members)?;
        lab.put_network_config()?;
        lab
    } else if dual_stack {
        Lab::flannel_dual_stack_backend(prefix, spec, backend, &[])?
    } else {
        Lab::flannel_backend(prefix, spec, backend, &[])?
    };
    for n in lab.nodes() {
        say!("node {}: ip netns exec {} …   (underlay {})", n.index(), n.ns().name(), n.ip());
    }
    for p in lab.pods() {
        match p.ip6() {
            Some(ip6) => {
                say!("pod on node {}: ip netns exec {} …   ({} {ip6})", p.node(), p.ns().name(), p.ip())
            }
            None => say!("pod on node {}: ip netns exec {} …   ({})", p.node(), p.ns().name(), p.ip()),
        }
    }
    say!("etcd: {}   state: {}", lab.etcd()?.endpoints(), lab.dir().display());
    say!("ready {}; Ctrl-C tears it down", lab.id());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        weft_lab::wait::hold(std::time::Duration::from_secs(3600))?;
    }
}
