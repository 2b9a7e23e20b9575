//! A bounded TCP stream between two pods with iperf3: the server runs in the receiving pod
//! (started and ended by PID), the client sends for a few seconds and reports JSON.

use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::run;
use crate::error::{LabError, Result};
use crate::lab::Lab;
use crate::wait;

/// iperf3's port inside the server pod.
pub const IPERF_PORT: u16 = 5201;

/// What the client reported.
#[derive(Debug, Clone)]
pub struct IperfReport {
    /// Receiver-side throughput.
    pub bits_per_second: f64,
    /// Bytes the receiver got.
    pub bytes_received: u64,
    /// TCP retransmissions seen by the sender (absent on some kernels).
    pub retransmits: Option<u64>,
}

impl Lab {
    /// Streams TCP from pod `client` to pod `server` for `seconds`.
    pub fn iperf(&mut self, client: usize, server: usize, seconds: u32) -> Result<IperfReport> {
        let (srv_ns, srv_ip) = {
            let p = self.pod(server)?;
            (p.ns().name().to_string(), IpAddr::V4(p.ip()))
        };
        let cli_ns = self.pod(client)?.ns().name().to_string();
        self.iperf_between(&cli_ns, &srv_ns, srv_ip, seconds)
    }

    /// Streams TCP for `seconds` from namespace `client_ns` to an iperf3 server the lab starts
    /// in namespace `server_ns`, bound to `server_ip`, and ends by PID afterwards (any
    /// namespace that can reach the address: a pod, a node's underlay address, a hand-built
    /// endpoint).
    pub fn iperf_between(
        &mut self,
        client_ns: &str,
        server_ns: &str,
        server_ip: IpAddr,
        seconds: u32,
    ) -> Result<IperfReport> {
        crate::signals::check()?;
        let handle = self.start_iperf_server(server_ns, server_ip, true)?;
        let timeout = Duration::from_secs(u64::from(seconds) + 30);
        let report = self.iperf_client(client_ns, server_ip, &["-t", &seconds.to_string()], timeout);
        let (_, server_log) = self.stop_extra(handle)?;
        report.map_err(|e| LabError::Invalid(format!("{e}\n--- iperf3 server log ---\n{server_log}")))
    }

    /// Starts an iperf3 server in `server_ns` bound to `server_ip` (for one test when `once`,
    /// else until stopped) and waits until it listens; returns its [`Lab::spawn_extra`] handle.
    pub(crate) fn start_iperf_server(
        &mut self,
        server_ns: &str,
        server_ip: IpAddr,
        once: bool,
    ) -> Result<usize> {
        let srv_ip = server_ip.to_string();
        let port = IPERF_PORT.to_string();
        let mut argv = vec!["iperf3", "-s", "-B", &srv_ip, "-p", &port];
        if once {
            argv.push("-1");
        }
        let handle = self.spawn_extra(&format!("iperf3 server in {server_ns}"), server_ns, &argv)?;
        let listen_addr = std::net::SocketAddr::new(server_ip, IPERF_PORT).to_string();
        let listening = wait::until_true("iperf3 server listening", Duration::from_secs(10), || {
            let r = run(&["ip", "netns", "exec", server_ns, "ss", "-Htln"], &[], b"", Duration::from_secs(5));
            Ok(r.stdout.contains(&listen_addr))
        });
        match listening {
            Ok(()) => Ok(handle),
            Err(e) => {
                let (_, log) = self.stop_extra(handle)?;
                Err(LabError::Invalid(format!("{e}\n--- iperf3 server log ---\n{log}")))
            }
        }
    }

    /// Runs an iperf3 client in `client_ns` against `server_ip` with `extra` arguments (`-t`
    /// or `-n`), ended after `timeout`, and reads its report.
    pub(crate) fn iperf_client(
        &self,
        client_ns: &str,
        server_ip: IpAddr,
        extra: &[&str],
        timeout: Duration,
    ) -> Result<IperfReport> {
        let srv_ip = server_ip.to_string();
        let port = IPERF_PORT.to_string();
        let mut argv = vec!["ip", "netns", "exec", client_ns, "iperf3", "-J", "-c", &srv_ip, "-p", &port];
        argv.extend_from_slice(extra);
        let r = run(&argv, &[], b"", timeout).check("iperf3 client")?;
        parse_report(&r.stdout)
    }
}

/// Reads the receiver totals out of `iperf3 -J` output.
pub fn parse_report(json: &str) -> Result<IperfReport> {
    let v: Value = serde_json::from_str(json).map_err(|e| LabError::parse("iperf3 json", e))?;
    if let Some(err) = v.get("error").and_then(Value::as_str) {
        return Err(LabError::Invalid(format!("iperf3: {err}")));
    }
    let recv = v
        .pointer("/end/sum_received")
        .ok_or_else(|| LabError::parse("iperf3 json", "no end.sum_received"))?;
    Ok(IperfReport {
        bits_per_second: recv.get("bits_per_second").and_then(Value::as_f64).unwrap_or(0.0),
        bytes_received: recv.get("bytes").and_then(Value::as_u64).unwrap_or(0),
        retransmits: v.pointer("/end/sum_sent/retransmits").and_then(Value::as_u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_receiver_totals_and_errors() {
        let ok =
            r#"{"end":{"sum_sent":{"retransmits":3},"sum_received":{"bytes":1000,"bits_per_second":8e9}}}"#;
        let r = parse_report(ok).unwrap();
        assert_eq!(r.bytes_received, 1000);
        assert_eq!(r.retransmits, Some(3));
        assert!((r.bits_per_second - 8e9).abs() < 1.0);
        let err = parse_report(r#"{"error":"unable to connect to server"}"#).unwrap_err();
        assert!(err.to_string().contains("unable to connect"), "{err}");
    }
}
