//! Reading another node's kernel view from its flanneld: `GET /debug/dataplane` on the
//! `-healthz-ip`/`-healthz-port` listener (flanneld started with `-debug-dataplane`).
//!
//! A plain HTTP/1.0 request over one TCP connection with short timeouts: the endpoint is
//! local to the cluster and answers with one small JSON document.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Connect, read and write timeout.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest view accepted (a view of thousands of peers is well below this).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// The view's URL for a node.
pub fn url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/debug/dataplane", SocketAddr::new(ip, port))
}

/// Fetches and parses the view; the error says what failed (connect, status, JSON).
pub fn fetch_view(ip: IpAddr, port: u16) -> Result<Value, String> {
    let addr = SocketAddr::new(ip, port);
    let u = url(ip, port);
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect to {u}: {e}"))?;
    let _ = s.set_read_timeout(Some(TIMEOUT));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    let req = format!("GET /debug/dataplane HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("send request to {u}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut buf).map_err(|e| format!("read answer of {u}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{u}: malformed HTTP answer"))?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
    match status {
        200 => serde_json::from_str(body).map_err(|e| format!("{u}: answer is not JSON: {e}")),
        404 => Err(format!("{u}: 404 (is flanneld started with -debug-dataplane?)")),
        other => Err(format!("{u}: HTTP status {other}")),
    }
}
