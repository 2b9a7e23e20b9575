//! weft-bench: measures weft against the reference implementations in one run.
//!
//! `weft-bench plugins` runs bridge + host-local (+ ipMasq) ADD/DEL sequences with our
//! binaries and the reference ones alternately in the same namespace topology and prints
//! median per-operation times and the ratios. Nothing here touches the root namespace: the
//! benchmark enters a namespace it created before it spawns any plugin.

mod datapath;
mod datapath_handbuilt;
mod datapath_handbuilt_v6;
mod datapath_table;
mod flanneld;
mod flanneld_floor;
mod flanneld_monitor;
mod flanneld_peers;
mod flanneld_peers_v6;
mod plugins;
mod rss;
mod see;
mod stats;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "weft-bench", about = "side-by-side benchmarks of weft against the reference")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// bridge + host-local + ipMasq: sequential ADD/DEL, parallel ADD/DEL, peak RSS.
    Plugins(plugins::Options),
    /// flanneld: start to N peers programmed, new-lease-to-route latency, peak RSS.
    Flanneld(flanneld::Options),
    /// Pod → pod TCP throughput (iperf3) over weft's VXLAN and host-gw, a hand-built kernel
    /// VXLAN and the bare underlay, side by side.
    Datapath(datapath::Options),
    /// `weft path` and `weft doctor` beside the by-hand `ip`/`bridge`/`etcdctl` commands.
    See(see::Options),
    /// Internal: run one command and print the peak RSS (KiB) of it and its descendants.
    #[command(hide = true)]
    RssProbe {
        #[arg(trailing_var_arg = true, required = true)]
        argv: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Plugins(opts) => match plugins::run(&opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("weft-bench plugins: {e}");
                1
            }
        },
        Cmd::Flanneld(opts) => match flanneld::run(&opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("weft-bench flanneld: {e}");
                1
            }
        },
        Cmd::Datapath(opts) => match datapath::run(&opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("weft-bench datapath: {e}");
                1
            }
        },
        Cmd::See(opts) => match see::run(&opts) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("weft-bench see: {e}");
                1
            }
        },
        Cmd::RssProbe { argv } => plugins::rss_probe(&argv),
    };
    std::process::exit(code);
}
