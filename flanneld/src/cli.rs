//! The command line, compatible with upstream flanneld (reference/flannel.md §1).
//!
//! Go's `flag` package accepts `-name` and `--name`, `-name=value` and `-name value`, and
//! booleans only as `-name` or `-name=<bool>`; it stops at the first non-flag argument or `--`.
//! clap cannot do single-dash long options, so [`normalise`] rewrites argv into `--name=value`
//! form for the known flags first (and rejects unknown ones), then merges `FLANNELD_<NAME>`
//! environment variables for flags not given on the command line. clap does the typing.
//!
//! Unlike upstream, bad flags exit with status 2 (upstream exits 0, a quirk not worth copying).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{ArgAction, CommandFactory, Parser};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
    /// Repeatable: one value per occurrence (and exactly one from the environment).
    Repeat,
}

/// Every flag, by its upstream name.
pub const FLAGS: &[(&str, Kind)] = &[
    ("etcd-endpoints", Kind::Value),
    ("etcd-prefix", Kind::Value),
    ("etcd-keyfile", Kind::Value),
    ("etcd-certfile", Kind::Value),
    ("etcd-cafile", Kind::Value),
    ("etcd-username", Kind::Value),
    ("etcd-password", Kind::Value),
    ("iface", Kind::Repeat),
    ("iface-regex", Kind::Repeat),
    ("iface-can-reach", Kind::Value),
    ("public-ip", Kind::Value),
    ("public-ipv6", Kind::Value),
    ("subnet-file", Kind::Value),
    ("subnet-lease-renew-margin", Kind::Value),
    ("ip-masq", Kind::Bool),
    ("ip-masq-fully-random-disable", Kind::Bool),
    ("iptables-resync", Kind::Value),
    ("iptables-forward-rules", Kind::Bool),
    ("ip-blackhole-route", Kind::Bool),
    ("healthz-ip", Kind::Value),
    ("healthz-port", Kind::Value),
    ("kube-subnet-mgr", Kind::Bool),
    ("kube-api-url", Kind::Value),
    ("kubeconfig-file", Kind::Value),
    ("kube-annotation-prefix", Kind::Value),
    ("net-config-path", Kind::Value),
    ("set-node-network-unavailable", Kind::Bool),
    ("v", Kind::Value),
    ("vmodule", Kind::Value),
    ("log_backtrace_at", Kind::Value),
    ("version", Kind::Bool),
    // weft extras
    ("metrics", Kind::Bool),
    ("reconcile-interval", Kind::Value),
    ("vtep-mac-file", Kind::Value),
];

/// flanneld's flags (etcd mode, VXLAN backend).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flanneld",
    about = "weft flanneld: etcd subnet leases and the VXLAN overlay",
    args_override_self = true
)]
pub struct Cli {
    /// Comma-separated etcd endpoints.
    #[arg(long, default_value = "http://127.0.0.1:4001,http://127.0.0.1:2379")]
    pub etcd_endpoints: String,
    /// etcd key prefix.
    #[arg(long, default_value = "/coreos.com/network")]
    pub etcd_prefix: String,
    /// TLS client key for etcd.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
    /// TLS client certificate for etcd.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// TLS CA for etcd.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// etcd user name.
    #[arg(long)]
    pub etcd_username: Option<String>,
    /// etcd password.
    #[arg(long)]
    pub etcd_password: Option<String>,
    /// Interface (name or IP) for inter-host traffic; repeatable, first that resolves wins.
    #[arg(long, action = ArgAction::Append)]
    pub iface: Vec<String>,
    /// Regex matched against interface addresses, then names; repeatable.
    #[arg(long, action = ArgAction::Append)]
    pub iface_regex: Vec<String>,
    /// Use the interface (and source address) of the route to this IP.
    #[arg(long)]
    pub iface_can_reach: Option<Ipv4Addr>,
    /// IP published as PublicIP.
    #[arg(long)]
    pub public_ip: Option<Ipv4Addr>,
    /// IPv6 published as PublicIPv6 (IPv6 is not supported by weft yet).
    #[arg(long)]
    pub public_ipv6: Option<Ipv6Addr>,
    /// Where to write the subnet environment.
    #[arg(long, default_value = "/run/flannel/subnet.env")]
    pub subnet_file: PathBuf,
    /// Minutes before lease expiry to renew (1..1439).
    #[arg(long, default_value_t = 60, allow_negative_numbers = true)]
    pub subnet_lease_renew_margin: i64,
    /// Install masquerade rules for traffic leaving the overlay.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub ip_masq: bool,
    /// Use plain MASQUERADE even if --random-fully is supported.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub ip_masq_fully_random_disable: bool,
    /// Seconds between firewall rule checks.
    #[arg(long, default_value_t = 5)]
    pub iptables_resync: u64,
    /// Install FORWARD accept rules for the cluster network.
    #[arg(long, action = ArgAction::Set, default_value_t = true)]
    pub iptables_forward_rules: bool,
    /// Keep a blackhole route for the own subnet (not implemented by weft).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub ip_blackhole_route: bool,
    /// Address of the health server.
    #[arg(long, default_value = "0.0.0.0")]
    pub healthz_ip: String,
    /// Port of the health server; 0 disables it.
    #[arg(long, default_value_t = 0)]
    pub healthz_port: u16,
    /// Kubernetes mode (not supported by weft).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub kube_subnet_mgr: bool,
    /// Kubernetes mode only (ignored).
    #[arg(long, hide = true)]
    pub kube_api_url: Option<String>,
    /// Kubernetes mode only (ignored).
    #[arg(long, hide = true)]
    pub kubeconfig_file: Option<String>,
    /// Kubernetes mode only (ignored).
    #[arg(long, hide = true)]
    pub kube_annotation_prefix: Option<String>,
    /// Kubernetes mode only (ignored).
    #[arg(long, hide = true)]
    pub net_config_path: Option<String>,
    /// Kubernetes mode only (ignored).
    #[arg(long, hide = true, action = ArgAction::Set, default_value_t = true)]
    pub set_node_network_unavailable: bool,
    /// Log verbosity (0 info, 1+ debug, 5+ trace).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub v: i32,
    /// Accepted for compatibility (ignored).
    #[arg(long, hide = true)]
    pub vmodule: Option<String>,
    /// Accepted for compatibility (ignored).
    #[arg(long = "log_backtrace_at", hide = true)]
    pub log_backtrace_at: Option<String>,
    /// Print the version and exit.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub version: bool,
    /// weft: serve Prometheus metrics at /metrics on the health server.
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub metrics: bool,
    /// weft: seconds between kernel reconciliations.
    #[arg(long, default_value_t = 30)]
    pub reconcile_interval: u64,
    /// weft: where the VTEP MAC is persisted (default: next to the subnet file).
    #[arg(long)]
    pub vtep_mac_file: Option<PathBuf>,
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn kind_of(name: &str) -> Option<Kind> {
    FLAGS.iter().find(|(n, _)| *n == name).map(|(_, k)| *k)
}

/// The result of [`normalise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalised {
    /// argv for clap (program name first).
    pub args: Vec<String>,
    /// Flags given on the command line.
    pub given: Vec<String>,
    /// `-h`/`-help` was given.
    pub help: bool,
}

/// Rewrites Go-style argv into `--name=value` for clap. Errors are Go's messages.
pub fn normalise(argv: &[String]) -> Result<Normalised, String> {
    let mut out = vec![argv.first().cloned().unwrap_or_else(|| "flanneld".into())];
    let mut given = Vec::new();
    let mut help = false;
    let mut rest = argv.iter().skip(1);
    while let Some(arg) = rest.next() {
        // Parsing stops at "--" or the first non-flag; what follows is ignored (§1.1).
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            break;
        }
        let body = arg.strip_prefix("--").unwrap_or_else(|| arg.strip_prefix('-').unwrap_or(arg));
        if body.is_empty() || body.starts_with('-') || body.starts_with('=') {
            return Err(format!("bad flag syntax: {arg}"));
        }
        let (name, value) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (body, None),
        };
        if name == "h" || name == "help" {
            help = true;
            continue;
        }
        let kind = kind_of(name).ok_or_else(|| format!("flag provided but not defined: -{name}"))?;
        let value = match (kind, value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => parse_go_bool(v)
                .map(|b| b.to_string())
                .ok_or_else(|| format!("invalid boolean value {v:?} for -{name}: parse error"))?,
            (_, Some(v)) => v.to_string(),
            (_, None) => rest.next().cloned().ok_or_else(|| format!("flag needs an argument: -{name}"))?,
        };
        out.push(format!("--{name}={value}"));
        given.push(name.to_string());
    }
    Ok(Normalised { args: out, given, help })
}

/// Appends `FLANNELD_<NAME>` values for flags not given on the command line (command line
/// wins; empty values ignored). A bad boolean is reported in the returned warnings and skipped,
/// as upstream only logs it.
pub fn merge_env(n: &mut Normalised, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut warnings = Vec::new();
    for (name, kind) in FLAGS {
        if *name == "version" || n.given.iter().any(|g| g == name) {
            continue;
        }
        let var = format!("FLANNELD_{}", name.to_ascii_uppercase().replace('-', "_"));
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else { continue };
        let value = if *kind == Kind::Bool {
            match parse_go_bool(&value) {
                Some(b) => b.to_string(),
                None => {
                    warnings.push(format!("ignoring {var}={value:?}: not a boolean"));
                    continue;
                }
            }
        } else {
            value
        };
        n.args.push(format!("--{name}={value}"));
    }
    warnings
}

/// Usage text.
pub fn usage() -> String {
    Cli::command().render_help().to_string()
}

/// What `main` should do.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Cli>, Vec<String>),
    Help,
    Version,
    /// Bad flags: message (exit 2).
    Error(String),
}

/// Full parse: argv normalisation, `-version` (checked before env), env merge, clap.
pub fn parse(argv: &[String], env: impl Fn(&str) -> Option<String>) -> Parsed {
    let mut n = match normalise(argv) {
        Ok(n) => n,
        Err(e) => return Parsed::Error(e),
    };
    if n.help {
        return Parsed::Help;
    }
    if n.given.iter().any(|g| g == "version") && n.args.iter().any(|a| a == "--version=true") {
        return Parsed::Version;
    }
    let warnings = merge_env(&mut n, env);
    match Cli::try_parse_from(&n.args) {
        Ok(cli) => Parsed::Run(Box::new(cli), warnings),
        Err(e) => Parsed::Error(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        std::iter::once("flanneld").chain(s.split_whitespace()).map(String::from).collect()
    }

    fn run(s: &str, env: &[(&str, &str)]) -> Cli {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        match parse(&argv(s), |k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())) {
            Parsed::Run(c, _) => *c,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn single_and_double_dash_forms() {
        let c = run(
            "-etcd-endpoints=http://a:2379 --etcd-prefix /x -iface eth0 --iface=198.18.0.2 -ip-masq -iptables-forward-rules=false -subnet-lease-renew-margin 30 -v=2 -healthz-port 8471",
            &[],
        );
        assert_eq!(c.etcd_endpoints, "http://a:2379");
        assert_eq!(c.etcd_prefix, "/x");
        assert_eq!(c.iface, vec!["eth0", "198.18.0.2"]);
        assert!(c.ip_masq);
        assert!(!c.iptables_forward_rules);
        assert_eq!((c.subnet_lease_renew_margin, c.v, c.healthz_port), (30, 2, 8471));
        let d = run("", &[]);
        assert!(d.iptables_forward_rules && !d.ip_masq);
        assert_eq!(d.subnet_file, PathBuf::from("/run/flannel/subnet.env"));
        // Parsing stops at the first non-flag; `-ip-masq false` leaves ip-masq true.
        let e = run("-ip-masq false -v=3", &[]);
        assert!(e.ip_masq);
        assert_eq!(e.v, 0);
    }

    #[test]
    fn env_fills_only_missing_flags() {
        let c = run(
            "-etcd-prefix=/cli",
            &[
                ("FLANNELD_ETCD_PREFIX", "/env"),
                ("FLANNELD_ETCD_ENDPOINTS", "http://e:1"),
                ("FLANNELD_IP_MASQ", "True"),
                ("FLANNELD_IFACE", "eth1,eth2"),
                ("FLANNELD_PUBLIC_IP", ""),
                ("FLANNELD_IPTABLES_FORWARD_RULES", "maybe"),
            ],
        );
        assert_eq!(c.etcd_prefix, "/cli");
        assert_eq!(c.etcd_endpoints, "http://e:1");
        assert!(c.ip_masq);
        assert_eq!(c.iface, vec!["eth1,eth2"]);
        assert!(c.public_ip.is_none());
        assert!(c.iptables_forward_rules);
    }

    #[test]
    fn bad_flags_are_errors_and_help_version() {
        for bad in ["-nope", "-ip-masq=maybe", "-iface", "---x", "-public-ip=1.2.3", "-healthz-port=x"] {
            assert!(matches!(parse(&argv(bad), |_| None), Parsed::Error(_)), "{bad}");
        }
        assert!(matches!(parse(&argv("-h"), |_| None), Parsed::Help));
        assert!(matches!(parse(&argv("--help"), |_| None), Parsed::Help));
        assert!(matches!(parse(&argv("-version"), |_| None), Parsed::Version));
        assert!(matches!(parse(&argv("-version=false"), |_| None), Parsed::Run(..)));
    }

    #[test]
    fn flag_table_matches_clap() {
        let cmd = Cli::command();
        for (name, _) in FLAGS {
            assert!(cmd.get_arguments().any(|a| a.get_long() == Some(name)), "{name}");
        }
    }
}
