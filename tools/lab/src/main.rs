//! `weft-lab`: the demo and cleanup commands scripts run.
//!
//! `weft-lab demo [--nodes 3 --pods 2]` builds a flannel lab, pings every pod from every pod,
//! prints the pass matrix and what an operator inspects on each node, then tears down (also on
//! Ctrl-C/SIGTERM and on failure). Exit status 1 if any ping failed or the lab could not be
//! built. `weft-lab cleanup <prefix>` removes leftovers of an interrupted run.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use weft_lab::{cleanup_prefix, FlannelSpec, Lab, LabError};

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
        Cmd::Demo { nodes, pods, etcd_members, prefix } => {
            if let Err(e) = weft_lab::signals::install() {
                esay!("weft-lab: {e}");
                return ExitCode::FAILURE;
            }
            let spec = FlannelSpec {
                nodes: usize::from(nodes),
                pods_per_node: usize::from(pods),
                etcd_members: usize::from(etcd_members),
            };
            match demo(&prefix, spec) {
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
        Cmd::Up { nodes, pods, etcd_members, bare, prefix } => {
            if let Err(e) = weft_lab::signals::install() {
                esay!("weft-lab: {e}");
                return ExitCode::FAILURE;
            }
            let spec = FlannelSpec {
                nodes: usize::from(nodes),
                pods_per_node: usize::from(pods),
                etcd_members: usize::from(etcd_members),
            };
            match up(&prefix, spec, bare) {
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
fn demo(prefix: &str, spec: FlannelSpec) -> Result<bool, LabError> {
    say!(
        "building a lab: {} nodes × {} pods, etcd with {} member(s), flanneld on every node …",
        spec.nodes,
        spec.pods_per_node,
        spec.etcd_members
    );
    let lab = Lab::flannel(prefix, spec)?;
    say!("lab {} ready (state in {})", lab.id(), lab.dir().display());
    for p in lab.pods() {
        say!("  pod {} on node {}: {}", p.ns().name(), p.node(), p.ip());
    }
    say!("\nping matrix (every pod → every pod):");
    let matrix = lab.ping_matrix()?;
    say_raw!("{matrix}");
    let failures = matrix.failures();
    if failures.is_empty() {
        say!("all {} pairs answered", matrix.labels.len() * matrix.labels.len().saturating_sub(1));
    } else {
        say!("{} pair(s) FAILED", failures.len());
    }
    say!();
    for i in 0..lab.nodes().len() {
        say!("{}", lab.inspect(i)?);
    }
    if !failures.is_empty() {
        esay!("{}", lab.diagnostics());
    }
    say!("tearing down lab {} …", lab.id());
    drop(lab);
    Ok(failures.is_empty())
}

/// Builds a lab, prints how to reach it, and holds it until a signal arrives; always returns
/// `Err(Interrupted)` (or the build error) after tearing down.
fn up(prefix: &str, spec: FlannelSpec, bare: bool) -> Result<(), LabError> {
    let lab = if bare {
        let mut lab = Lab::new(prefix)?;
        for _ in 0..spec.nodes {
            lab.add_node()?;
        }
        lab.start_etcd(spec.etcd_members)?;
        lab.put_network_config()?;
        lab
    } else {
        Lab::flannel(prefix, spec)?
    };
    for n in lab.nodes() {
        say!("node {}: ip netns exec {} …   (underlay {})", n.index(), n.ns().name(), n.ip());
    }
    for p in lab.pods() {
        say!("pod on node {}: ip netns exec {} …   ({})", p.node(), p.ns().name(), p.ip());
    }
    say!("etcd: {}   state: {}", lab.etcd()?.endpoints(), lab.dir().display());
    say!("ready {}; Ctrl-C tears it down", lab.id());
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    loop {
        weft_lab::wait::hold(std::time::Duration::from_secs(3600))?;
    }
}
