//! The data-path benchmark: pod → pod TCP throughput (iperf3) between two nodes over weft's
//! VXLAN and host-gw backends, beside a hand-built kernel VXLAN (plain, and again with
//! flanneld's firewall rules, to tell the rules' cost from weft's) and the bare underlay, all in
//! one run. Four labs live side by side (a 2-node flannel lab per backend, one pod per node,
//! and the two bare labs of `datapath_handbuilt`); the runs are interleaved round by round, so a
//! slow moment on the shared machine falls on every path alike. Every namespace is the labs'
//! own and is removed on exit, error or Ctrl-C (the lab's signal flag); iperf3 servers are
//! started and ended by PID (`Lab::iperf_between`).

use std::net::IpAddr;

use weft_lab::{Backend, FlannelSpec, Lab, LabError};

use crate::datapath_handbuilt::{link_mtu, Ends, HandBuilt};
use crate::datapath_table::{render, verdict, Outcome, PathKind, Row, Sample};

/// Options of `weft-bench datapath`.
#[derive(clap::Args, Debug)]
pub struct Options {
    /// iperf3 runs per path (the table shows each and their median).
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Length of one iperf3 run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u32,
    /// Start of every namespace name (1–6 ASCII alphanumerics; the labs add a random tag).
    #[arg(long, default_value = "wtDP")]
    prefix: String,
}

/// The labs the paths run in.
struct Labs {
    vxlan: Lab,
    host_gw: Lab,
    hand: HandBuilt,
    hand_rules: HandBuilt,
}

/// Where a path's two ends are, or why it cannot be measured on this build.
enum Plan {
    Run(Ends),
    Skip(String),
}

/// Why the IPv6 row has no figure: flanneld does not program `flannel-v6.1` yet, and weft-lab's
/// underlay and pods are IPv4 only, so there is nothing to send over.
const NO_IPV6: &str = "flanneld IPv6 data plane not on this build";

fn pod_ends(lab: &Lab) -> Result<Ends, LabError> {
    let (client, server) = (lab.pod(0)?, lab.pod(1)?);
    if client.node() == server.node() {
        return Err(LabError::Invalid("both pods on one node".into()));
    }
    Ok(Ends {
        client_ns: client.ns().name().to_string(),
        server_ns: server.ns().name().to_string(),
        server_ip: IpAddr::V4(server.ip()),
        mtu: client.mtu()?,
    })
}

impl Labs {
    fn build(prefix: &str) -> Result<Labs, LabError> {
        let spec = FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 };
        eprintln!("datapath: building the weft VXLAN lab");
        let vxlan = Lab::flannel_backend(prefix, spec, Backend::Vxlan, &[])?;
        eprintln!("datapath: building the weft host-gw lab");
        let host_gw = Lab::flannel_backend(prefix, spec, Backend::HostGw, &[])?;
        eprintln!("datapath: building the hand-built VXLAN");
        let hand = HandBuilt::build(prefix, false)?;
        eprintln!("datapath: building the hand-built VXLAN with flanneld's firewall rules");
        let hand_rules = HandBuilt::build(prefix, true)?;
        Ok(Labs { vxlan, host_gw, hand, hand_rules })
    }

    fn plan(&self, path: PathKind) -> Result<Plan, LabError> {
        Ok(match path {
            PathKind::WeftVxlan4 => Plan::Run(pod_ends(&self.vxlan)?),
            PathKind::WeftVxlan6 => Plan::Skip(NO_IPV6.to_string()),
            PathKind::WeftHostGw4 => Plan::Run(pod_ends(&self.host_gw)?),
            PathKind::HandVxlan4 => Plan::Run(self.hand.vxlan_ends()?),
            PathKind::HandVxlanRules4 => Plan::Run(self.hand_rules.vxlan_ends()?),
            PathKind::Underlay4 => Plan::Run(self.hand.underlay_ends()?),
        })
    }

    fn lab_of(&mut self, path: PathKind) -> &mut Lab {
        match path {
            PathKind::WeftVxlan4 | PathKind::WeftVxlan6 => &mut self.vxlan,
            PathKind::WeftHostGw4 => &mut self.host_gw,
            PathKind::HandVxlan4 | PathKind::Underlay4 => self.hand.lab_mut(),
            PathKind::HandVxlanRules4 => self.hand_rules.lab_mut(),
        }
    }

    /// What each path runs over, for the record printed before the table.
    fn describe(&self) -> Result<String, LabError> {
        let flannel_dev = self.vxlan.node(0)?.ns().run(&["ip", "-d", "link", "show", "dev", "flannel.1"])?;
        let node = self.host_gw.node(0)?;
        Ok(format!(
            "weft VXLAN, node 0 `ip -d link show flannel.1`:\n{}\
             hand-built, node 0 `ip -d link show vx0`:\n{}\
             weft host-gw, node 0 routes to its peer: {:?}; underlay MTU {}\n",
            flannel_dev.stdout,
            self.hand.device_details()?,
            self.host_gw.host_gw_routes(0)?,
            link_mtu(node.ns(), weft_lab::lab::NODE_IFACE)?,
        ))
    }
}

fn measure(opts: &Options) -> Result<Vec<Row>, LabError> {
    let mut labs = Labs::build(&opts.prefix)?;
    eprint!("{}", labs.describe()?);
    let mut rows = Vec::new();
    let mut plans = Vec::new();
    for path in PathKind::ALL {
        match labs.plan(path)? {
            Plan::Run(ends) => {
                rows.push(Row { path, outcome: Outcome::Measured { mtu: ends.mtu, samples: Vec::new() } });
                plans.push(Some(ends));
            }
            Plan::Skip(why) => {
                rows.push(Row { path, outcome: Outcome::NotMeasured(why) });
                plans.push(None);
            }
        }
    }
    for round in 1..=opts.runs {
        for (row, ends) in rows.iter_mut().zip(&plans) {
            let (Some(ends), Outcome::Measured { samples, .. }) = (ends, &mut row.outcome) else {
                continue;
            };
            let r = labs.lab_of(row.path).iperf_between(
                &ends.client_ns,
                &ends.server_ns,
                ends.server_ip,
                opts.seconds,
            )?;
            eprintln!(
                "datapath: round {round}/{}: {}: {:.2} Gbit/s, retransmits {:?}",
                opts.runs,
                row.path.label(),
                r.bits_per_second / 1e9,
                r.retransmits
            );
            samples.push(Sample { bits_per_second: r.bits_per_second, retransmits: r.retransmits });
        }
    }
    Ok(rows)
}

/// `weft-bench datapath`.
pub fn run(opts: &Options) -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (it creates network namespaces)".into());
    }
    if opts.runs == 0 || opts.seconds == 0 {
        return Err("--runs and --seconds must be at least 1".into());
    }
    weft_lab::signals::install().map_err(|e| e.to_string())?;
    let rows = measure(opts).map_err(|e| e.to_string())?;
    println!("{}", render(&rows, opts.seconds));
    println!("{}", verdict(&rows));
    Ok(())
}
