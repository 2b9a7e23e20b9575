//! Prometheus metrics (a weft extra; upstream has no metrics endpoint, §11). Served on the
//! healthz server at `/metrics` when `--metrics` is given.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The daemon's metrics. Cheap to update from the daemon loop (atomics).
pub struct Metrics {
    registry: Registry,
    /// Lease records known under `<prefix>/subnets` (own included), as of the last event.
    pub leases_known: Gauge,
    /// Peers whose neighbour/FDB/route are programmed.
    pub peers_programmed: Gauge,
    /// Dual stack: peers whose IPv6 neighbour/FDB/route (on `flannel-v6`) are programmed.
    pub peers_programmed_v6: Gauge,
    /// Seconds from daemon start until the first complete mesh (0 until then).
    pub time_to_full_mesh_seconds: Gauge<f64, AtomicU64>,
    /// Kernel entries added or removed by periodic reconciliation.
    pub reconcile_corrections: Counter,
    /// Failed etcd operations.
    pub etcd_errors: Counter,
    /// Failed netlink operations.
    pub netlink_errors: Counter,
    /// Unix time of the last successful lease acquisition or renewal.
    pub last_renewal_timestamp_seconds: Gauge,
    /// Peer routes not programmed because a route flanneld did not make holds the destination.
    pub route_conflicts: Gauge,
    /// host-gw peers not routed because their PublicIP is not on the same L2 segment.
    pub peers_off_link: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// All metrics registered under the `flanneld_` prefix.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flanneld");
        let m = Metrics {
            registry: Registry::default(),
            leases_known: Gauge::default(),
            peers_programmed: Gauge::default(),
            peers_programmed_v6: Gauge::default(),
            time_to_full_mesh_seconds: Gauge::default(),
            reconcile_corrections: Counter::default(),
            etcd_errors: Counter::default(),
            netlink_errors: Counter::default(),
            last_renewal_timestamp_seconds: Gauge::default(),
            route_conflicts: Gauge::default(),
            peers_off_link: Gauge::default(),
        };
        registry.register("leases_known", "Lease records known in etcd", m.leases_known.clone());
        registry.register("peers_programmed", "Peers programmed in the kernel", m.peers_programmed.clone());
        registry.register(
            "peers_programmed_v6",
            "Peers whose IPv6 side is programmed in the kernel (dual stack)",
            m.peers_programmed_v6.clone(),
        );
        registry.register(
            "time_to_full_mesh_seconds",
            "Seconds from start until all peers were first programmed",
            m.time_to_full_mesh_seconds.clone(),
        );
        registry.register(
            "reconcile_corrections",
            "Kernel entries corrected by reconciliation",
            m.reconcile_corrections.clone(),
        );
        registry.register("etcd_errors", "Failed etcd operations", m.etcd_errors.clone());
        registry.register("netlink_errors", "Failed netlink operations", m.netlink_errors.clone());
        registry.register(
            "last_renewal_timestamp_seconds",
            "Unix time of the last lease acquisition or renewal",
            m.last_renewal_timestamp_seconds.clone(),
        );
        registry.register(
            "route_conflicts",
            "Peer routes not programmed because a route flanneld did not make holds the destination",
            m.route_conflicts.clone(),
        );
        registry.register(
            "peers_off_link",
            "host-gw peers not routed because their PublicIP is not on the same L2 segment",
            m.peers_off_link.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_names() {
        let m = Metrics::new();
        m.etcd_errors.inc();
        m.peers_programmed.set(3);
        let text = m.render();
        assert!(text.contains("flanneld_etcd_errors_total 1"), "{text}");
        assert!(text.contains("flanneld_peers_programmed 3"), "{text}");
        assert!(text.contains("flanneld_last_renewal_timestamp_seconds 0"), "{text}");
        assert!(text.contains("flanneld_route_conflicts 0"), "{text}");
    }
}
