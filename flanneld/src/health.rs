//! Health and readiness (reference/flannel.md §11) and a tiny HTTP/1.0-style server for
//! `/healthz`, `/readyz` and `/metrics`.
//!
//! The daemon loop publishes its state here; the server only reads it. Unlike upstream (which
//! always answers 200), `/healthz` reflects real state: lease held, etcd reachable and the mesh
//! programmed, else 503 with the reason. `/readyz` turns 200 once subnet.env is written.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::metrics::Metrics;

/// What the daemon reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthState {
    pub lease_held: bool,
    pub etcd_reachable: bool,
    pub mesh_programmed: bool,
    /// subnet.env written (upstream's readiness).
    pub ready: bool,
    /// Peer routes (destinations) not programmed because a route flanneld did not make holds
    /// the destination (it is left alone).
    pub route_conflicts: Vec<String>,
}

/// Shared health state.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
}

impl Health {
    /// A new handle, nothing healthy yet.
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Updates the state.
    pub fn update(&self, f: impl FnOnce(&mut HealthState)) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut st);
    }

    /// A copy of the state.
    pub fn get(&self) -> HealthState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Status and body of `/healthz`.
    pub fn healthz(&self) -> (u16, String) {
        let s = self.get();
        let mut why = Vec::new();
        if !s.lease_held {
            why.push("no subnet lease held".to_string());
        }
        if !s.etcd_reachable {
            why.push("etcd unreachable".to_string());
        }
        if !s.mesh_programmed {
            why.push("peer routes not fully programmed".to_string());
        }
        if !s.route_conflicts.is_empty() {
            why.push(format!(
                "routes flanneld did not make hold peer subnets {} (left alone)",
                s.route_conflicts.join(" ")
            ));
        }
        if why.is_empty() {
            (200, "flanneld is running\n".into())
        } else {
            (503, format!("flanneld is unhealthy: {}\n", why.join(", ")))
        }
    }

    /// Status and body of `/readyz`.
    pub fn readyz(&self) -> (u16, String) {
        if self.get().ready {
            (200, "flanneld is ready\n".into())
        } else {
            (503, "flanneld is not ready yet\n".into())
        }
    }
}

/// Serves until `shutdown` completes. `metrics` enables `/metrics`.
pub async fn serve(
    listener: TcpListener,
    health: Arc<Health>,
    metrics: Option<Arc<Metrics>>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let (h, m) = (health.clone(), metrics.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &h, m.as_deref()).await {
                        debug!(error = %e, "health request failed");
                    }
                });
            }
        }
    }
}

async fn handle(mut stream: TcpStream, health: &Health, metrics: Option<&Metrics>) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
        Ok::<(), std::io::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(5), read)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "request timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let mut parts = text.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/healthz") => with_type(health.healthz()),
        ("GET" | "HEAD", "/readyz") => with_type(health.readyz()),
        ("GET" | "HEAD", "/metrics") if metrics.is_some() => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.map(Metrics::render).unwrap_or_default(),
        ),
        ("GET" | "HEAD", _) => (404, "text/plain; charset=utf-8", "not found\n".into()),
        _ => (405, "text/plain; charset=utf-8", "method not allowed\n".into()),
    };
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

fn with_type((status, body): (u16, String)) -> (u16, &'static str, String) {
    (status, "text/plain; charset=utf-8", body)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn endpoints_reflect_state() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, health.clone(), Some(metrics), async {
            let _ = rx.await;
        }));
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503") && r.contains("no subnet lease held"), "{r}");
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 503"));
        health.update(|s| {
            *s = HealthState {
                lease_held: true,
                etcd_reachable: true,
                mesh_programmed: true,
                ready: true,
                ..HealthState::default()
            }
        });
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("flanneld is running\n"), "{r}");
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        assert!(get(addr, "/metrics").await.contains("flanneld_peers_programmed"));
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        health.update(|s| s.route_conflicts = vec!["10.5.7.0/24".into()]);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503") && r.contains("hold peer subnets 10.5.7.0/24"), "{r}");
        tx.send(()).unwrap();
        server.await.unwrap();
    }
}
