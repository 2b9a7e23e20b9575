//! `flanneld`: parse flags, set up logging, pick the external interface, build the etcd
//! registry and the netlink dataplane, serve health, and hand over to `daemon::run`.
//!
//! Exit statuses (docs/flannel.md §1.4): 0 on SIGINT/SIGTERM, `-h` and `-version`; 2 for
//! bad flags; 1 for startup failures (renew margin, no interface, device, firewall, files).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;
use weft_dataplane::netlink::NetlinkDataplane;
use weft_flanneld::cli::{self, Cli, Parsed};
use weft_flanneld::daemon::{self, DaemonConfig};
use weft_flanneld::health::{self, Health};
use weft_flanneld::iface::{self, IfaceOpts};
use weft_flanneld::metrics::Metrics;
use weft_flanneld::registry::etcd::{EtcdRegistry, EtcdTls};
use weft_flanneld::state;

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args_os().map(|a| a.to_string_lossy().into_owned()).collect();
    let cli = match cli::parse(&argv, |k| std::env::var(k).ok()) {
        Parsed::Run(cli, warnings) => {
            init_logging(cli.v);
            for w in warnings {
                warn!("{w}");
            }
            cli
        }
        Parsed::Help => {
            eprintln!("{}", cli::usage());
            return ExitCode::SUCCESS;
        }
        Parsed::Version => {
            eprintln!("{}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Parsed::Error(msg) => {
            eprintln!("{}\n\n{}", msg.trim_end(), cli::usage());
            return ExitCode::from(2);
        }
    };
    match run(*cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(v: i32) {
    let level = match v {
        i32::MIN..=0 => "info",
        1..=4 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
}

fn run(cli: Cli) -> Result<(), String> {
    if !(1..=1439).contains(&cli.subnet_lease_renew_margin) {
        return Err(format!(
            "invalid --subnet-lease-renew-margin {}: must be 1..1439 minutes",
            cli.subnet_lease_renew_margin
        ));
    }
    if cli.kube_subnet_mgr {
        return Err("--kube-subnet-mgr is not supported by weft flanneld (etcd mode only)".into());
    }
    let (tls, tls_warning) = cli.etcd.tls();
    if let Some(w) = tls_warning {
        warn!("{w}");
    }
    // The interface is chosen before the network config is read, as for IPv4 only (so the
    // IPv4 choice never depends on IPv6); then, when the dual-stack selection lands on the same
    // interface, its IPv6 address (`--public-ipv6` or the interface's) is kept for `EnableIPv6`.
    // The daemon refuses `EnableIPv6` without one (`DaemonError::NoPublicIpv6`).
    let opts = IfaceOpts {
        ifaces: cli.iface.clone(),
        regexes: cli.iface_regex.clone(),
        can_reach: cli.iface_can_reach,
        public_ip: cli.public_ip,
        public_ipv6: None,
        ipv6: false,
    };
    let kernel = iface::Kernel::read().map_err(|e| format!("{e}"))?;
    let mut ext = kernel.select(&opts).map_err(|e| format!("{e}"))?;
    match kernel.select(&IfaceOpts { public_ipv6: cli.public_ipv6, ipv6: true, ..opts }) {
        Ok(dual) if dual.index == ext.index => {
            ext.iface_addr_v6 = dual.iface_addr_v6;
            ext.public_ipv6 = dual.public_ipv6;
        }
        Ok(dual) => warn!(iface = %ext.name, ipv6_iface = %dual.name,
            "the IPv6 selection found another interface; IPv4 only (EnableIPv6 will be refused)"),
        Err(e6) if cli.public_ipv6.is_some() => {
            warn!(error = %e6, "no IPv6 external interface for --public-ipv6; IPv4 only (EnableIPv6 will be refused)")
        }
        Err(e6) => info!(reason = %e6, "no IPv6 external address; IPv4 only (EnableIPv6 will be refused)"),
    }
    info!(iface = %ext.name, iface_addr = %ext.iface_addr, public_ip = %ext.public_ip,
        public_ipv6 = ?ext.public_ipv6.map(|a| a.to_string()), mtu = ext.mtu, "external interface");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("start tokio runtime: {e}"))?;
    runtime.block_on(serve(cli, ext, tls))
}

async fn serve(cli: Cli, ext: iface::External, tls: Option<EtcdTls>) -> Result<(), String> {
    let health = Health::new();
    health.update_facts(|f| {
        f.version = env!("CARGO_PKG_VERSION").to_string();
        f.public_ip = Some(ext.public_ip);
        f.underlay_index = Some(ext.index);
        f.subnet_file = Some(cli.subnet_file.clone());
    });
    let metrics = Arc::new(Metrics::new());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    if cli.healthz_port > 0 {
        let addr = format!("{}:{}", cli.healthz_ip, cli.healthz_port);
        let listener = TcpListener::bind(&addr).await.map_err(|e| format!("listen on {addr}: {e}"))?;
        info!(addr = %addr, metrics = cli.metrics, debug_dataplane = cli.debug_dataplane, "health server listening");
        let mut routes = health::Routes::new(health.clone());
        if cli.metrics {
            routes = routes.with_metrics(metrics.clone());
        }
        if cli.debug_dataplane {
            routes = weft_flanneld::debug::with_dataplane(routes, health.clone());
            routes = weft_flanneld::capture::with_capture(routes, weft_flanneld::capture::Captures::new());
            // A capture's tracing instance outlives a flanneld killed mid-capture; remove those.
            for name in weft_common::capture::dropwatch::remove_stale_instances("flanneld-capture-") {
                info!(instance = %name, "removed a tracing instance left by an ended flanneld capture");
            }
        }
        tokio::spawn(health::serve(listener, routes, stopped()));
    }

    let opts = cli.etcd.options(tls.as_ref())?;
    let mut backoff = Duration::from_millis(500);
    let registry = loop {
        tokio::select! {
            r = EtcdRegistry::connect(&opts) => match r {
                Ok(r) => break r,
                Err(e) => {
                    metrics.etcd_errors.inc();
                    warn!(error = %e, "connecting to etcd failed, retrying");
                }
            },
            _ = stopped() => return Ok(()),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(10));
    };
    let dataplane = NetlinkDataplane::new().map_err(|e| format!("open netlink: {e}"))?;

    let mac_file = cli.vtep_mac_file.clone().unwrap_or_else(|| state::mac_file_for(&cli.subnet_file));
    let config = DaemonConfig {
        etcd_prefix: cli.etcd.etcd_prefix.clone(),
        public_ip: ext.public_ip,
        public_ipv6: ext.public_ipv6,
        underlay_index: ext.index,
        underlay_mtu: ext.mtu,
        subnet_file: cli.subnet_file.clone(),
        mac_file,
        renew_margin: Duration::from_secs(u64::try_from(cli.subnet_lease_renew_margin).unwrap_or(60) * 60),
        ip_masq: cli.ip_masq,
        reconcile_interval: Duration::from_secs(cli.reconcile_interval.max(1)),
        health,
        metrics,
        firewall: Some(cli.firewall_opts()),
        blackhole_every: cli.ip_blackhole_route.then(|| Duration::from_secs(cli.iptables_resync.max(1))),
    };
    daemon::run(config, registry, dataplane, stopped()).await.map_err(|e| {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!(": {s}"));
            src = s.source();
        }
        msg
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    info!("signal received, shutting down");
}
