//! [`Lab::iperf`] over IPv6: the same bounded iperf3 stream between two pods of a dual-stack
//! lab, to the server pod's IPv6 address (`crate::dual`).

use std::net::IpAddr;

use crate::error::{LabError, Result};
use crate::iperf::IperfReport;
use crate::lab::Lab;

impl Lab {
    /// Streams TCP over IPv6 from pod `client` to pod `server` for `seconds`.
    pub fn iperf6(&mut self, client: usize, server: usize, seconds: u32) -> Result<IperfReport> {
        let (srv_ns, srv_ip) = {
            let p = self.pod(server)?;
            let ip6 = p.ip6().ok_or_else(|| LabError::Invalid(format!("{} has no IPv6", p.ns().name())))?;
            (p.ns().name().to_string(), IpAddr::V6(ip6))
        };
        let cli_ns = self.pod(client)?.ns().name().to_string();
        self.iperf_between(&cli_ns, &srv_ns, srv_ip, seconds)
    }
}
