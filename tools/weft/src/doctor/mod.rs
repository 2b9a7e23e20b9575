//! `weft doctor`: desired state (the leases and network config in etcd, read with flanneld's
//! own flags, codec and registry) against every node's kernel view (its flanneld's
//! `/debug/dataplane`), with desired state computed by flanneld's own planning function so the
//! dry run is exactly what each node's next reconcile would change.
//!
//! - [`check`]: the pure diagnosis ([`check::diagnose`]).
//! - [`fetch`]: the views over HTTP.
//! - [`render`]: text, JSON and Graphviz output.
//!
//! Exit status: 0 healthy (warnings allowed), 1 findings, 2 etcd unreachable or bad input.

pub mod check;
pub mod fetch;
pub mod ipv6;
pub mod render;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::Duration;

use weft_flanneld::lease::{config_key, parse_lease_path, subnets_dir, LeaseAttrs};
use weft_flanneld::network::parse_config;
use weft_flanneld::registry::etcd::EtcdRegistry;
use weft_flanneld::registry::Registry;

use crate::cli::DoctorArgs;
use crate::exit;
use check::Cluster;

/// How long reading etcd may take in all before doctor gives up (exit 2).
const ETCD_DEADLINE: Duration = Duration::from_secs(15);

/// Runs `weft doctor`; returns the exit status.
pub fn run(args: &DoctorArgs) -> i32 {
    if let Err(e) = args.etcd.check() {
        eprintln!("weft doctor: {e}");
        return exit::ERROR;
    }
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("weft doctor: start tokio runtime: {e}");
            return exit::ERROR;
        }
    };
    let cluster = match rt.block_on(gather(args)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("weft doctor: {e}");
            return exit::ERROR;
        }
    };
    let report = check::diagnose(&cluster);
    let out = if args.json {
        render::json(&report)
    } else if args.dot {
        render::dot(&report)
    } else {
        render::text(&report)
    };
    print!("{out}");
    if report.healthy {
        exit::OK
    } else {
        exit::BROKEN
    }
}

/// Reads etcd (config and every lease) and then every node's view.
pub async fn gather(args: &DoctorArgs) -> Result<Cluster, String> {
    let prefix = args.etcd.etcd_prefix.trim_end_matches('/').to_string();
    let (tls, warning) = args.etcd.tls();
    if let Some(w) = warning {
        eprintln!("weft doctor: warning: {w}");
    }
    let opts = args.etcd.options(tls.as_ref())?;
    let endpoints = opts.endpoints.join(",");
    let read = async {
        let registry = EtcdRegistry::connect(&opts).await.map_err(|e| e.to_string())?;
        let key = config_key(&prefix);
        let dir = subnets_dir(&prefix);
        // Both reads at once: one round trip less.
        let (config, listed) = tokio::join!(registry.get(&key), registry.list(&dir));
        let config =
            config.map_err(|e| e.to_string())?.ok_or_else(|| format!("network config {key} not found"))?;
        let spec = parse_config(&config).map_err(|e| format!("{key}: {e}"))?;
        let (records, revision) = listed.map_err(|e| e.to_string())?;
        Ok::<_, String>((spec, records, revision))
    };
    let (spec, records, revision) = tokio::time::timeout(ETCD_DEADLINE, read)
        .await
        .map_err(|_| {
            format!("cannot read etcd at {endpoints}: no answer within {} s", ETCD_DEADLINE.as_secs())
        })?
        .map_err(|e| format!("cannot read etcd at {endpoints}: {e}"))?;
    let dir = subnets_dir(&prefix);
    let ips: Vec<Ipv4Addr> = records
        .iter()
        .filter(|r| parse_lease_path(&dir, &r.key).is_ok())
        .filter_map(|r| LeaseAttrs::parse(&r.value).ok())
        .filter(|a| check::of_backend(a, spec.backend_type))
        .map(|a| a.public_ip)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let timeout = Duration::from_millis(args.timeout_ms.max(1));
    let views = fetch::fetch_all(&ips, args.healthz_port, timeout).await;
    Ok(Cluster { prefix, spec, records, revision, views })
}
