//! Asking another node's flanneld (on its `-healthz-ip`/`-healthz-port` listener, started with
//! `-debug-dataplane`): `GET /debug/dataplane` for its kernel view, and `GET /debug/capture`
//! plus `GET /debug/capture/result` for `weft path --probe`'s remote capture.
//!
//! A plain HTTP/1.0 request over one TCP connection with short timeouts: the endpoint is
//! local to the cluster and answers with one small JSON document.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Connect and write timeout; the read timeout of a plain request.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest view accepted (a view of thousands of peers is well below this).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// The view's URL for a node.
pub fn url(ip: IpAddr, port: u16) -> String {
    format!("http://{}/debug/dataplane", SocketAddr::new(ip, port))
}

/// `GET path` (with its query) and the JSON answer; the error says what failed (connect,
/// status with the server's message, JSON).
fn get_json(ip: IpAddr, port: u16, path: &str, read_timeout: Duration) -> Result<Value, String> {
    let addr = SocketAddr::new(ip, port);
    let u = format!("http://{addr}{path}");
    let mut s = TcpStream::connect_timeout(&addr, TIMEOUT).map_err(|e| format!("connect to {u}: {e}"))?;
    let _ = s.set_read_timeout(Some(read_timeout));
    let _ = s.set_write_timeout(Some(TIMEOUT));
    let req = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\nAccept: application/json\r\n\r\n");
    s.write_all(req.as_bytes()).map_err(|e| format!("send request to {u}: {e}"))?;
    let mut buf = Vec::new();
    s.take(MAX_BODY).read_to_end(&mut buf).map_err(|e| format!("read answer of {u}: {e}"))?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("{u}: malformed HTTP answer"))?;
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()).unwrap_or(0);
    match status {
        200 => serde_json::from_str(body).map_err(|e| format!("{u}: answer is not JSON: {e}")),
        404 => Err(format!("{u}: 404 (is flanneld started with -debug-dataplane?)")),
        other => Err(format!("{u}: HTTP status {other}: {}", body.trim())),
    }
}

/// Fetches and parses the view; the error says what failed (connect, status, JSON).
pub fn fetch_view(ip: IpAddr, port: u16) -> Result<Value, String> {
    get_json(ip, port, "/debug/dataplane", TIMEOUT)
}

/// Starts a capture on the node (`query` as flanneld's capture endpoint reads it); answers
/// once its packet socket is open, with the capture's `id`.
pub fn start_capture(ip: IpAddr, port: u16, query: &str) -> Result<u64, String> {
    let v = get_json(ip, port, &format!("/debug/capture?{query}"), TIMEOUT)?;
    v.get("id").and_then(Value::as_u64).ok_or_else(|| format!("capture on {ip}: answer has no id: {v}"))
}

/// Ends capture `id` and returns what it saw (per interface).
pub fn capture_result(ip: IpAddr, port: u16, id: u64) -> Result<Value, String> {
    get_json(ip, port, &format!("/debug/capture/result?id={id}"), Duration::from_secs(5))
}
