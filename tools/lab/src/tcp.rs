//! TCP between every pair of pods: a short iperf3 transfer from every pod to every other pod,
//! over IPv4 or IPv6, the TCP counterpart of [`Lab::ping_matrix`]. A pair passes when iperf3
//! completed the transfer without error and the receiver reported bytes. (The receiver's total
//! can be short of what was sent: iperf3 ends a `-n` test once the sender has written its
//! bytes, so the last ones may still be in flight when the receiver reports.)

use std::net::IpAddr;
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::pods::PingMatrix;

/// Bytes each pair sends: enough for several round trips of a full window, small enough that a
/// pair takes a fraction of a second, most of it iperf3's own start and report.
const PAIR_BYTES: u64 = 1 << 20;
/// How long a pair's transfer may take before it counts as failed (a converged path moves the
/// bytes in milliseconds; the rest is iperf3's own start and report).
const PAIR_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a pair's client waits for the connection, in iperf3's milliseconds.
const CONNECT_TIMEOUT_MS: &str = "3000";

impl Lab {
    /// A TCP transfer from every pod to every other pod's IPv4 address.
    pub fn tcp_matrix(&mut self) -> Result<PingMatrix> {
        let targets: Vec<IpAddr> = self.pods.iter().map(|p| IpAddr::V4(p.ip)).collect();
        self.tcp_matrix_to(&targets)
    }

    /// A TCP transfer from every pod to every other pod's IPv6 address (dual-stack labs).
    pub fn tcp_matrix6(&mut self) -> Result<PingMatrix> {
        let targets = self
            .pods
            .iter()
            .map(|p| {
                p.ip6.map(IpAddr::V6).ok_or_else(|| LabError::Invalid(format!("{} has no IPv6", p.ns.name())))
            })
            .collect::<Result<Vec<IpAddr>>>()?;
        self.tcp_matrix_to(&targets)
    }

    /// [`Lab::tcp_matrix`] with pod `i` reached at `targets[i]`: one iperf3 server per pod,
    /// then the pairs one after another (an iperf3 server takes one test at a time), then the
    /// servers ended by PID. A pair whose client fails is reported, not retried: unlike the
    /// first ping, nothing on a converged path needs a second try.
    fn tcp_matrix_to(&mut self, targets: &[IpAddr]) -> Result<PingMatrix> {
        crate::signals::check()?;
        let pods: Vec<String> = self.pods.iter().map(|p| p.ns.name().to_string()).collect();
        let mut servers = Vec::new();
        let mut started = Ok(());
        for (ns, ip) in pods.iter().zip(targets) {
            match self.start_iperf_server(ns, *ip, false) {
                Ok(h) => servers.push(h),
                Err(e) => {
                    started = Err(e);
                    break;
                }
            }
        }
        let ok = started.map(|()| {
            let bytes = PAIR_BYTES.to_string();
            pods.iter()
                .enumerate()
                .map(|(f, from)| {
                    targets
                        .iter()
                        .enumerate()
                        .map(|(t, to)| {
                            t == f
                                || self
                                    .iperf_client(
                                        from,
                                        *to,
                                        &["-n", &bytes, "--connect-timeout", CONNECT_TIMEOUT_MS],
                                        PAIR_TIMEOUT,
                                    )
                                    .is_ok_and(|r| r.bytes_received > 0)
                        })
                        .collect()
                })
                .collect()
        });
        for h in servers {
            self.stop_extra(h)?;
        }
        let labels = pods
            .iter()
            .zip(targets)
            .map(|(ns, ip)| format!("{} {ip}", ns.strip_prefix(self.id.as_str()).unwrap_or(ns)))
            .collect();
        Ok(PingMatrix { labels, ok: ok? })
    }
}
