//! The command line, compatible with upstream flanneld (docs/flannel.md §1).
//!
//! Go's `flag` package accepts `-name` and `--name`, `-name=value` and `-name value`, and
//! booleans only as `-name` or `-name=<bool>`; it stops at the first non-flag argument or `--`.
//! clap cannot do single-dash long options, so [`normalise`] rewrites argv into `--name=value`
//! form for the known flags first (and rejects unknown ones), then merges `FLANNELD_<NAME>`
//! environment variables for flags not given on the command line. clap does the typing.
//!
//! Unlike upstream, bad flags exit with status 2 (upstream exits 0, a quirk not worth copying),
//! and so does only one of `--etcd-username`/`--etcd-password` ([`Cli::check`]). Settings that
//! are accepted but have no effect are reported by [`Cli::startup_warnings`].

use std::any::TypeId;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, CommandFactory, Parser};

use crate::daemon::FirewallOpts;
use crate::registry::etcd::{EtcdOptions, EtcdTls};

/// How a flag takes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Value,
    /// Repeatable: one value per occurrence (and exactly one from the environment).
    Repeat,
}

/// Every flag of [`Cli`] by its (upstream) name, and how it takes its value, read from the clap
/// definition so that the two cannot disagree: a flag whose value clap parses as `bool` is a
/// boolean (Go's `-name` alone means true), one that appends is repeatable, any other takes a
/// value. clap's own help flag is left out ([`normalise`] handles `-h`/`-help`).
pub fn flags() -> Vec<(String, Kind)> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| {
            let name = a.get_long()?;
            let kind = match a.get_action() {
                ArgAction::Help | ArgAction::HelpShort | ArgAction::HelpLong | ArgAction::Version => {
                    return None
                }
                ArgAction::Append => Kind::Repeat,
                _ if a.get_value_parser().type_id() == TypeId::of::<bool>() => Kind::Bool,
                _ => Kind::Value,
            };
            Some((name.to_string(), kind))
        })
        .collect()
}

/// flanneld's flags (etcd mode, VXLAN backend).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "flanneld",
    about = "weft flanneld: etcd subnet leases and the VXLAN overlay",
    args_override_self = true
)]
pub struct Cli {
    /// etcd connection (shared with `weft doctor`).
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// Interface (name or IP) for inter-host traffic; repeatable, first that resolves wins.
    #[arg(long, action = ArgAction::Append)]
    pub iface: Vec<String>,
    /// Regex matched against interface addresses, then names; repeatable.
    #[arg(long, action = ArgAction::Append)]
    pub iface_regex: Vec<String>,
    /// Use the interface of the route to this IP (IPv4 or IPv6).
    #[arg(long)]
    pub iface_can_reach: Option<IpAddr>,
    /// IP published as PublicIP.
    #[arg(long)]
    pub public_ip: Option<Ipv4Addr>,
    /// IPv6 published as PublicIPv6 (with EnableIPv6; must be an IPv6 address).
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
    /// Keep a blackhole route for the own subnet (checked every `iptables_resync` seconds).
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
    /// weft: serve Prometheus metrics at /metrics on the health server (needs --healthz-port).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub metrics: bool,
    /// weft: seconds between kernel reconciliations.
    #[arg(long, default_value_t = 30)]
    pub reconcile_interval: u64,
    /// weft: where the VTEP MAC is persisted (default: next to the subnet file).
    #[arg(long)]
    pub vtep_mac_file: Option<PathBuf>,
    /// weft: serve this node's kernel view as JSON at /debug/dataplane on the health server
    /// (read-only, for `weft doctor` and `weft path`; needs --healthz-port).
    #[arg(long, action = ArgAction::Set, default_value_t = false)]
    pub debug_dataplane: bool,
}

/// The etcd flags, one struct for every binary that reads flanneld's etcd: `flanneld` and
/// `weft doctor` flatten it (`#[command(flatten)]`), so both take the same `-etcd-*` flags and,
/// through [`normalise`]/[`merge_env`] or [`etcd_args_from_env`], the same `FLANNELD_ETCD_*`
/// variables.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct EtcdArgs {
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
    /// etcd user name (needs --etcd-password).
    #[arg(long)]
    pub etcd_username: Option<String>,
    /// etcd password (needs --etcd-username).
    #[arg(long)]
    pub etcd_password: Option<String>,
}

/// The etcd flags' names (upstream spelling), read from [`EtcdArgs`]'s clap definition.
pub fn etcd_flags() -> Vec<String> {
    <EtcdArgs as clap::Args>::augment_args(clap::Command::new("etcd"))
        .get_arguments()
        .filter_map(|a| a.get_long().map(String::from))
        .collect()
}

impl EtcdArgs {
    /// Checks clap cannot express; an error is a bad command line (exit 2).
    pub fn check(&self) -> Result<(), String> {
        // etcd's Go client authenticates only when both are non-empty, so upstream runs
        // unauthenticated with just one of them: almost certainly a broken config, refused here.
        match (set(&self.etcd_username), set(&self.etcd_password)) {
            (true, false) => Err("--etcd-username is set but --etcd-password is empty: etcd authentication \
                 needs both --etcd-username and --etcd-password"
                .into()),
            (false, true) => Err("--etcd-password is set but --etcd-username is empty: etcd authentication \
                 needs both --etcd-username and --etcd-password"
                .into()),
            _ => Ok(()),
        }
    }

    /// etcd credentials to use: both or neither (empty values count as unset).
    pub fn credentials(&self) -> Option<(String, String)> {
        match (&self.etcd_username, &self.etcd_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u.clone(), p.clone())),
            _ => None,
        }
    }

    /// The TLS files, and a warning when some but not both of key and cert are given: upstream
    /// builds a TLS config only with both, else connects without TLS.
    pub fn tls(&self) -> (Option<EtcdTls>, Option<String>) {
        match (&self.etcd_keyfile, &self.etcd_certfile) {
            (Some(key), Some(cert)) => {
                (Some(EtcdTls { cert: cert.clone(), key: key.clone(), ca: self.etcd_cafile.clone() }), None)
            }
            _ if self.etcd_cafile.is_some()
                || self.etcd_keyfile.is_some()
                || self.etcd_certfile.is_some() =>
            {
                (
                    None,
                    Some(
                        "etcd TLS needs both --etcd-keyfile and --etcd-certfile; connecting without TLS"
                            .into(),
                    ),
                )
            }
            _ => (None, None),
        }
    }

    /// Connection options for [`crate::registry::etcd::EtcdRegistry::connect`]; the TLS files
    /// are read here (the error names the file).
    pub fn options(&self, tls: Option<&EtcdTls>) -> Result<EtcdOptions, String> {
        let creds = self.credentials();
        Ok(EtcdOptions {
            endpoints: self
                .etcd_endpoints
                .split(',')
                .filter(|e| !e.trim().is_empty())
                .map(String::from)
                .collect(),
            username: creds.as_ref().map(|(u, _)| u.clone()),
            password: creds.map(|(_, p)| p),
            tls: tls.map(EtcdTls::load).transpose().map_err(|e| format!("etcd TLS: {e}"))?,
        })
    }
}

/// For a program that flattens [`EtcdArgs`] (`weft doctor`): rewrites flanneld's single-dash
/// spelling of the etcd flags (`-etcd-prefix=/x`, `-etcd-prefix /x`) into clap's `--` form and
/// appends `FLANNELD_ETCD_*` values for etcd flags not on the command line, exactly as
/// flanneld takes them (command line wins, empty values ignored).
pub fn etcd_args_from_env(argv: &[String], env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut out: Vec<String> = argv
        .iter()
        .map(|a| match a.strip_prefix("-etcd-") {
            Some(rest) if !a.starts_with("--") => format!("--etcd-{rest}"),
            _ => a.clone(),
        })
        .collect();
    for name in etcd_flags() {
        let flag = format!("--{name}");
        let given = out.iter().any(|a| *a == flag || a.starts_with(&format!("{flag}=")));
        if given {
            continue;
        }
        let var = format!("FLANNELD_{}", name.to_ascii_uppercase().replace('-', "_"));
        if let Some(value) = env(&var).filter(|v| !v.is_empty()) {
            out.push(format!("{flag}={value}"));
        }
    }
    out
}

/// Upstream's default of `--kube-annotation-prefix` (ignored by weft; only another value is
/// worth a warning).
const KUBE_ANNOTATION_PREFIX: &str = "flannel.alpha.coreos.com";
/// Upstream's default of `--net-config-path` (ignored by weft, likewise).
const NET_CONFIG_PATH: &str = "/etc/kube-flannel/net-conf.json";

impl Cli {
    /// Startup checks that clap cannot express; an error is a bad command line (exit 2).
    pub fn check(&self) -> Result<(), String> {
        self.etcd.check()
    }

    /// etcd credentials to use: both or neither (empty values count as unset).
    pub fn etcd_credentials(&self) -> Option<(String, String)> {
        self.etcd.credentials()
    }

    /// Warnings about settings that are accepted but have no effect.
    pub fn startup_warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.metrics && self.healthz_port == 0 {
            w.push(
                "--metrics has no effect: /metrics is served by the health server, which is off \
                 with --healthz-port 0; set --healthz-port to a port to serve metrics"
                    .to_string(),
            );
        }
        if self.debug_dataplane && self.healthz_port == 0 {
            w.push(
                "--debug-dataplane has no effect: /debug/dataplane is served by the health server, \
                 which is off with --healthz-port 0; set --healthz-port to a port to serve it"
                    .to_string(),
            );
        }
        let ignored = self.ignored_flags();
        if !ignored.is_empty() {
            w.push(format!(
                "ignoring flags that weft flanneld (etcd mode) accepts but does not use: {}",
                ignored.join(", ")
            ));
        }
        w
    }

    /// The accepted-but-ignored flags (Kubernetes mode, klog) set to a non-default value, as
    /// `-name=value`.
    fn ignored_flags(&self) -> Vec<String> {
        let strings: [(&str, &Option<String>, &[&str]); 6] = [
            ("kube-api-url", &self.kube_api_url, &[""]),
            ("kubeconfig-file", &self.kubeconfig_file, &[""]),
            ("kube-annotation-prefix", &self.kube_annotation_prefix, &["", KUBE_ANNOTATION_PREFIX]),
            ("net-config-path", &self.net_config_path, &["", NET_CONFIG_PATH]),
            ("vmodule", &self.vmodule, &[""]),
            // klog prints the unset value as ":0".
            ("log_backtrace_at", &self.log_backtrace_at, &["", ":0"]),
        ];
        let mut out: Vec<String> = strings
            .iter()
            .filter_map(|(name, value, defaults)| {
                let v = value.as_deref()?;
                (!defaults.contains(&v)).then(|| format!("-{name}={v}"))
            })
            .collect();
        if !self.set_node_network_unavailable {
            out.push("-set-node-network-unavailable=false".into());
        }
        out
    }

    /// The firewall settings for the daemon.
    pub fn firewall_opts(&self) -> FirewallOpts {
        FirewallOpts {
            forward: self.iptables_forward_rules,
            fully_random: !self.ip_masq_fully_random_disable,
            resync: Duration::from_secs(self.iptables_resync.max(1)),
        }
    }
}

/// A string flag given with a non-empty value.
fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// Go's `strconv.ParseBool`.
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
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
    let flags = flags();
    let kind_of = |name: &str| flags.iter().find(|(n, _)| n == name).map(|(_, k)| *k);
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
    for (name, kind) in flags() {
        if name == "version" || n.given.contains(&name) {
            continue;
        }
        let var = format!("FLANNELD_{}", name.to_ascii_uppercase().replace('-', "_"));
        let Some(value) = env(&var).filter(|v| !v.is_empty()) else { continue };
        let value = if kind == Kind::Bool {
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

/// Full parse: argv normalisation, `-version` (checked before env), env merge, clap, then
/// [`Cli::check`]; the warnings include [`Cli::startup_warnings`].
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
    let mut warnings = merge_env(&mut n, env);
    let cli = match Cli::try_parse_from(&n.args) {
        Ok(cli) => cli,
        Err(e) => return Parsed::Error(e.to_string()),
    };
    if let Err(e) = cli.check() {
        return Parsed::Error(e);
    }
    warnings.extend(cli.startup_warnings());
    Parsed::Run(Box::new(cli), warnings)
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
        assert_eq!(c.etcd.etcd_endpoints, "http://a:2379");
        assert_eq!(c.etcd.etcd_prefix, "/x");
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
        assert_eq!(c.etcd.etcd_prefix, "/cli");
        assert_eq!(c.etcd.etcd_endpoints, "http://e:1");
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
    fn flag_kinds_come_from_clap() {
        let flags = flags();
        let kind = |n: &str| flags.iter().find(|(f, _)| f == n).map(|(_, k)| *k);
        assert_eq!(kind("ip-masq"), Some(Kind::Bool));
        assert_eq!(kind("set-node-network-unavailable"), Some(Kind::Bool));
        assert_eq!(kind("iface"), Some(Kind::Repeat));
        assert_eq!(kind("iface-regex"), Some(Kind::Repeat));
        assert_eq!(kind("etcd-endpoints"), Some(Kind::Value), "flattened etcd flags included");
        assert_eq!(kind("log_backtrace_at"), Some(Kind::Value));
        assert_eq!(kind("v"), Some(Kind::Value));
        assert_eq!(kind("help"), None);
        let bools: Vec<&str> =
            flags.iter().filter(|(_, k)| *k == Kind::Bool).map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            bools,
            [
                "ip-masq",
                "ip-masq-fully-random-disable",
                "iptables-forward-rules",
                "ip-blackhole-route",
                "kube-subnet-mgr",
                "set-node-network-unavailable",
                "version",
                "metrics",
                "debug-dataplane"
            ]
        );
    }

    #[test]
    fn ipv6_flags() {
        let c = run("-public-ipv6=fd18::2 -iface-can-reach fd19::5 -iface fd18::2", &[]);
        assert_eq!(c.public_ipv6, Some("fd18::2".parse().unwrap()));
        assert_eq!(c.iface_can_reach, Some("fd19::5".parse().unwrap()));
        assert_eq!(c.iface, vec!["fd18::2"]);
        assert_eq!(
            run("-iface-can-reach=198.19.5.5", &[]).iface_can_reach,
            Some("198.19.5.5".parse().unwrap())
        );
        let c = run("", &[("FLANNELD_PUBLIC_IPV6", "2001:db8::1")]);
        assert_eq!(c.public_ipv6, Some("2001:db8::1".parse().unwrap()));
        for bad in [
            "-public-ipv6=198.18.0.2",
            "-public-ipv6=fd18:::2",
            "-iface-can-reach=nope",
            "-public-ip=fd18::2",
        ] {
            assert!(matches!(parse(&argv(bad), |_| None), Parsed::Error(_)), "{bad}");
        }
    }

    fn warnings(s: &str, env: &[(&str, &str)]) -> Vec<String> {
        match parse(&argv(s), |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())) {
            Parsed::Run(_, w) => w,
            other => panic!("{s}: {other:?}"),
        }
    }

    fn error(s: &str, env: &[(&str, &str)]) -> String {
        match parse(&argv(s), |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())) {
            Parsed::Error(e) => e,
            other => panic!("{s}: expected an error, got {other:?}"),
        }
    }

    #[test]
    fn fully_random_disable_reaches_the_firewall_options() {
        let fw = run("-iptables-forward-rules=false -iptables-resync=7", &[]).firewall_opts();
        assert!(fw.fully_random, "upstream default: fully random");
        assert!(!fw.forward);
        assert_eq!(fw.resync, Duration::from_secs(7));
        assert!(!run("-ip-masq -ip-masq-fully-random-disable", &[]).firewall_opts().fully_random);
        assert!(run("--ip-masq-fully-random-disable=false", &[]).firewall_opts().fully_random);
        let env = [("FLANNELD_IP_MASQ_FULLY_RANDOM_DISABLE", "true")];
        assert!(!run("", &env).firewall_opts().fully_random);
        // The command line wins over the environment.
        assert!(run("-ip-masq-fully-random-disable=0", &env).firewall_opts().fully_random);
    }

    #[test]
    fn etcd_username_and_password_go_together() {
        let both = "needs both --etcd-username and --etcd-password";
        for (args, env) in [
            ("-etcd-username=flannel", &[][..]),
            ("-etcd-username=flannel -etcd-password=", &[][..]),
            ("-etcd-password=secret", &[][..]),
            ("-etcd-username= -etcd-password=secret", &[][..]),
            ("", &[("FLANNELD_ETCD_USERNAME", "flannel")][..]),
            ("-etcd-password secret", &[("FLANNELD_ETCD_USERNAME", "")][..]),
        ] {
            let e = error(args, env);
            assert!(e.contains(both), "{args} {env:?}: {e}");
        }
        assert!(error("-etcd-username=u", &[]).starts_with("--etcd-username is set"));
        assert!(error("-etcd-password=p", &[]).starts_with("--etcd-password is set"));
        let c = run("-etcd-username=flannel", &[("FLANNELD_ETCD_PASSWORD", "secret")]);
        assert_eq!(c.etcd_credentials(), Some(("flannel".into(), "secret".into())));
        assert_eq!(run("", &[]).etcd_credentials(), None);
        assert_eq!(run("-etcd-username= -etcd-password=", &[]).etcd_credentials(), None);
    }

    #[test]
    fn etcd_args_for_other_programs_take_flanneld_spelling_and_env() {
        let argv: Vec<String> = ["weft", "doctor", "-etcd-prefix=/x", "-etcd-cafile", "/ca.pem", "--json"]
            .map(String::from)
            .to_vec();
        let env = [
            ("FLANNELD_ETCD_PREFIX", "/env"),
            ("FLANNELD_ETCD_ENDPOINTS", "http://e:1"),
            ("FLANNELD_ETCD_USERNAME", ""),
        ];
        let out =
            etcd_args_from_env(&argv, |k| env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()));
        assert_eq!(
            out,
            [
                "weft",
                "doctor",
                "--etcd-prefix=/x",
                "--etcd-cafile",
                "/ca.pem",
                "--json",
                "--etcd-endpoints=http://e:1"
            ]
            .map(String::from)
            .to_vec()
        );
        #[derive(Parser)]
        struct Other {
            #[command(flatten)]
            etcd: EtcdArgs,
        }
        let o = Other::try_parse_from(["x", "--etcd-username=u", "--etcd-password=p"]).unwrap();
        assert_eq!(o.etcd.credentials(), Some(("u".into(), "p".into())));
        assert_eq!(o.etcd.etcd_prefix, "/coreos.com/network");
        assert!(o.etcd.options(None).unwrap().endpoints.len() == 2);
    }

    #[test]
    fn metrics_without_health_server_warns() {
        let w = warnings("-metrics", &[]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("--metrics has no effect") && w[0].contains("--healthz-port"), "{w:?}");
        assert!(warnings("-metrics -healthz-port=8471", &[]).is_empty());
        assert!(warnings("", &[]).is_empty());
        assert_eq!(run("", &[]).healthz_port, 0, "upstream default kept");
    }

    #[test]
    fn ignored_flags_with_non_default_values_give_one_warning() {
        let w = warnings(
            "-kube-api-url=https://k8s:6443 -kubeconfig-file /etc/k.conf -kube-annotation-prefix=x.io \
             -net-config-path=/n.json -set-node-network-unavailable=false -vmodule=foo=3 -log_backtrace_at=a.go:1",
            &[],
        );
        assert_eq!(w.len(), 1, "{w:?}");
        for flag in [
            "-kube-api-url=https://k8s:6443",
            "-kubeconfig-file=/etc/k.conf",
            "-kube-annotation-prefix=x.io",
            "-net-config-path=/n.json",
            "-set-node-network-unavailable=false",
            "-vmodule=foo=3",
            "-log_backtrace_at=a.go:1",
        ] {
            assert!(w[0].contains(flag), "{flag} missing: {w:?}");
        }
        // Only what was set to a non-default value is named, also when it came from the env.
        let w = warnings("-vmodule=x=1", &[("FLANNELD_KUBE_API_URL", "https://k8s")]);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("-vmodule=x=1") && w[0].contains("-kube-api-url=https://k8s"), "{w:?}");
        assert!(!w[0].contains("kubeconfig") && !w[0].contains("net-config-path"), "{w:?}");
        // Upstream's defaults given explicitly are not worth a warning.
        assert!(warnings(
            "-kube-annotation-prefix=flannel.alpha.coreos.com -net-config-path=/etc/kube-flannel/net-conf.json \
             -set-node-network-unavailable=true -vmodule= -log_backtrace_at=:0 -kube-api-url=",
            &[],
        )
        .is_empty());
    }
}
