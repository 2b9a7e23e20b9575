//! The data-path benchmark: pod → pod TCP throughput (iperf3) between two nodes over weft's
//! VXLAN (IPv4 and IPv6) and host-gw backends, beside a hand-built kernel VXLAN (plain, over
//! IPv4 and IPv6, and again with flanneld's firewall rules, to tell the rules' cost from weft's)
//! and the bare underlay, all in one run. Five labs live side by side (a 2-node flannel lab per
//! backend, and a dual-stack VXLAN one, one pod per node; and the two bare labs of
//! `datapath_handbuilt`, the plain one dual stack); the runs are interleaved round by round, so a
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
    /// The VXLAN lab with flanneld's `--ip-masq` off.
    vxlan_no_masq: Lab,
    /// Dual-stack VXLAN, for the IPv6 row only: its pods' MTU (1430, what fits both families)
    /// differs from the IPv4-only lab's 1450, so the IPv4 row keeps its own lab.
    vxlan_dual: Lab,
    host_gw: Lab,
    hand: HandBuilt,
    hand_rules: HandBuilt,
}

/// Pod 0 → pod 1 (on another node) of `lab`, over IPv4 or, with `ipv6`, over IPv6.
fn pod_ends(lab: &Lab, ipv6: bool) -> Result<Ends, LabError> {
    let (client, server) = (lab.pod(0)?, lab.pod(1)?);
    if client.node() == server.node() {
        return Err(LabError::Invalid("both pods on one node".into()));
    }
    let server_ip = if ipv6 {
        IpAddr::V6(
            server.ip6().ok_or_else(|| LabError::Invalid("the server pod has no IPv6 address".into()))?,
        )
    } else {
        IpAddr::V4(server.ip())
    };
    Ok(Ends {
        client_ns: client.ns().name().to_string(),
        server_ns: server.ns().name().to_string(),
        server_ip,
        mtu: client.mtu()?,
    })
}

impl Labs {
    fn build(prefix: &str) -> Result<Labs, LabError> {
        let spec = FlannelSpec { nodes: 2, pods_per_node: 1, etcd_members: 1 };
        eprintln!("datapath: building the weft VXLAN lab");
        let vxlan = Lab::flannel_backend(prefix, spec, Backend::Vxlan, &[])?;
        eprintln!("datapath: building the weft VXLAN lab with no masquerade anywhere");
        let vxlan_no_masq = Lab::flannel_without_masquerade(prefix, spec)?;
        for i in 0..spec.nodes {
            // Checked, not assumed: the pods' path must pass no nat rule on either node.
            let nat = vxlan_no_masq.node(i)?.ns().exec(&["iptables-save", "-t", "nat"]).stdout;
            if nat.contains("MASQUERADE") {
                return Err(LabError::parse(
                    "the lab with no masquerade",
                    format!("node {i} has nat rules:\n{nat}"),
                ));
            }
        }
        eprintln!("datapath: building the weft dual-stack VXLAN lab");
        let vxlan_dual = Lab::flannel_dual_stack(prefix, spec, &[])?;
        eprintln!("datapath: building the weft host-gw lab");
        let host_gw = Lab::flannel_backend(prefix, spec, Backend::HostGw, &[])?;
        eprintln!("datapath: building the hand-built VXLAN (IPv4 and IPv6)");
        let hand = HandBuilt::build(prefix, false, true)?;
        eprintln!("datapath: building the hand-built VXLAN (IPv4 and IPv6) with flanneld's firewall rules");
        let hand_rules = HandBuilt::build(prefix, true, true)?;
        Ok(Labs { vxlan, vxlan_no_masq, vxlan_dual, host_gw, hand, hand_rules })
    }

    fn plan(&self, path: PathKind) -> Result<Ends, LabError> {
        Ok(match path {
            PathKind::WeftVxlan4 => pod_ends(&self.vxlan, false)?,
            PathKind::WeftVxlanNoMasq4 => pod_ends(&self.vxlan_no_masq, false)?,
            PathKind::WeftVxlan6 => pod_ends(&self.vxlan_dual, true)?,
            PathKind::WeftHostGw4 => pod_ends(&self.host_gw, false)?,
            PathKind::HandVxlan4 => self.hand.vxlan_ends()?,
            PathKind::HandVxlan6 => self.hand.vxlan6_ends()?,
            PathKind::HandVxlanRules4 => self.hand_rules.vxlan_ends()?,
            PathKind::HandVxlanRules6 => self.hand_rules.vxlan6_ends()?,
            PathKind::Underlay4 => self.hand.underlay_ends()?,
        })
    }

    fn lab_of(&mut self, path: PathKind) -> &mut Lab {
        match path {
            PathKind::WeftVxlan4 => &mut self.vxlan,
            PathKind::WeftVxlanNoMasq4 => &mut self.vxlan_no_masq,
            PathKind::WeftVxlan6 => &mut self.vxlan_dual,
            PathKind::WeftHostGw4 => &mut self.host_gw,
            PathKind::HandVxlan4 | PathKind::HandVxlan6 | PathKind::Underlay4 => self.hand.lab_mut(),
            PathKind::HandVxlanRules4 | PathKind::HandVxlanRules6 => self.hand_rules.lab_mut(),
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
        let ends = labs.plan(path)?;
        rows.push(Row { path, outcome: Outcome::Measured { mtu: ends.mtu, samples: Vec::new() } });
        plans.push(ends);
    }
    for round in 1..=opts.runs {
        for (row, ends) in rows.iter_mut().zip(&plans) {
            let Outcome::Measured { samples, .. } = &mut row.outcome;
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
