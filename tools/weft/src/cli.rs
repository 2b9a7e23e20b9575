//! The command line: `weft pods`, `weft path`, `weft doctor`.
//!
//! Exit status is a fixed interface (see [`crate::exit`]): 0 healthy/reachable, 1 broken,
//! 2 bad input or something could not be read.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// weft: see the network.
#[derive(Debug, Parser)]
#[command(
    name = "weft",
    about = "weft: see the network (pods, the path a packet takes, the cluster's health)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every pod attachment on this node, read from the kernel outward and matched to on-disk state.
    Pods(PodsArgs),
    /// The chain of hops the kernel will take from SRC to DST, and the first broken link.
    Path(PathArgs),
    /// Desired state (etcd leases, subnet.env) against every node's kernel view.
    Doctor(DoctorArgs),
}

/// Where the CNI state lives on this node (defaults: the standard paths).
#[derive(Debug, Clone, Args)]
pub struct CniDirs {
    /// libcni/cnitool result cache directory (holds `results/<net>-<ctr>-<if>`).
    #[arg(long, env = "WEFT_CNI_CACHE_DIR", default_value = "/var/lib/cni")]
    pub cni_cache_dir: PathBuf,
    /// host-local's data directory (holds `<network>/<ip>` reservations).
    #[arg(long, env = "WEFT_IPAM_DATA_DIR", default_value = "/var/lib/cni/networks")]
    pub ipam_data_dir: PathBuf,
    /// flanneld's subnet file.
    #[arg(long, env = "WEFT_SUBNET_FILE", default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,
}

#[derive(Debug, Args)]
pub struct PodsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub dirs: CniDirs,
}

/// Protocol of `--probe` packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proto {
    Icmp,
    Udp,
    Tcp,
}

impl From<Proto> for weft_common::capture::ProbeProto {
    fn from(p: Proto) -> Self {
        match p {
            Proto::Icmp => Self::Icmp,
            Proto::Udp => Self::Udp,
            Proto::Tcp => Self::Tcp,
        }
    }
}

#[derive(Debug, Args)]
pub struct PathArgs {
    /// Print JSON (`verdict`, `cause`, `hops`).
    #[arg(long)]
    pub json: bool,
    /// Minimal stable text (for golden tests): one line per hop, no timings or counters.
    #[arg(long)]
    pub brief: bool,
    /// Send real packets and report where they were seen.
    #[arg(long)]
    pub probe: bool,
    /// Destination port of UDP/TCP probes.
    #[arg(long)]
    pub port: Option<u16>,
    /// Probe protocol.
    #[arg(long, value_enum, default_value = "icmp")]
    pub proto: Proto,
    /// Port of the remote flanneld's health listener serving `/debug/dataplane`.
    #[arg(long, env = "WEFT_REMOTE_PORT", default_value_t = 10256)]
    pub remote_port: u16,
    /// Address family to walk when SRC and DST are no addresses (container IDs, netns paths):
    /// 4 or 6. An IPv6 SRC or DST address selects 6 by itself.
    #[arg(long, value_parser = clap::value_parser!(u8).range(4..=6))]
    pub family: Option<u8>,
    /// Comma-separated etcd endpoints; leases are read from etcd when given.
    #[arg(long, env = "FLANNELD_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// etcd key prefix.
    #[arg(long, env = "FLANNELD_ETCD_PREFIX", default_value = "/coreos.com/network")]
    pub etcd_prefix: String,
    /// TLS client key for etcd (with --etcd-certfile).
    #[arg(long, env = "FLANNELD_ETCD_KEYFILE")]
    pub etcd_keyfile: Option<PathBuf>,
    /// TLS client certificate for etcd (with --etcd-keyfile).
    #[arg(long, env = "FLANNELD_ETCD_CERTFILE")]
    pub etcd_certfile: Option<PathBuf>,
    /// TLS CA for etcd.
    #[arg(long, env = "FLANNELD_ETCD_CAFILE")]
    pub etcd_cafile: Option<PathBuf>,
    /// etcd user name (with --etcd-password).
    #[arg(long, env = "FLANNELD_ETCD_USERNAME")]
    pub etcd_username: Option<String>,
    /// etcd password (with --etcd-username).
    #[arg(long, env = "FLANNELD_ETCD_PASSWORD", hide_env_values = true)]
    pub etcd_password: Option<String>,
    #[command(flatten)]
    pub dirs: CniDirs,
    /// Source: pod IP, container ID or netns path.
    pub src: String,
    /// Destination: pod IP, container ID, netns path, node IP or outside address.
    pub dst: String,
}

/// flanneld's default health port is 0 (server off), which cannot be asked; doctor uses the port
/// the weft lab and `weft path` use. `FLANNELD_HEALTHZ_PORT` (flanneld's own variable) overrides it.
pub const DEFAULT_HEALTHZ_PORT: u16 = 10256;

#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// Print JSON (`healthy`, `findings` with `cause` and `nodes`, `dry_run`, `nodes`).
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print a Graphviz graph of nodes, subnets, VTEPs and overlay links (broken ones red).
    #[arg(long)]
    pub dot: bool,
    /// Port of every node's flanneld health server (`-healthz-port`) serving /debug/dataplane.
    #[arg(long, env = "FLANNELD_HEALTHZ_PORT", default_value_t = DEFAULT_HEALTHZ_PORT)]
    pub healthz_port: u16,
    /// Time allowed for each node's view, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub timeout_ms: u64,
    /// etcd: flanneld's flags (`-etcd-endpoints`, `-etcd-prefix`, TLS, user/password) and
    /// `FLANNELD_ETCD_*` variables.
    #[command(flatten)]
    pub etcd: weft_flanneld::cli::EtcdArgs,
}
