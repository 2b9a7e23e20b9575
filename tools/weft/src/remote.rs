//! Asking another node's flanneld (on its `-healthz-ip`/`-healthz-port` listener, started with
//! `-debug-dataplane`): `GET /debug/dataplane` for its kernel view, and `GET /debug/capture`
//! plus `GET /debug/capture/result` for `weft path --probe`'s remote capture.
//!
//! A plain HTTP/1.0 request over one TCP connection with short timeouts: the endpoint is
//! local to the cluster and answers with one small JSON document.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::{Mutex, PoisonError};
use std::thread::JoinHandle;
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

/// A view requested ahead: the node, the port, the thread reading it.
type Ahead = (IpAddr, u16, JoinHandle<Result<Value, String>>);

/// Views requested ahead ([`request_view_ahead`]) and not yet taken by [`fetch_view`].
static AHEAD: Mutex<Vec<Ahead>> = Mutex::new(Vec::new());

/// Starts reading a node's view on its own thread, while the caller does other slow work (its
/// own firewall read); the next [`fetch_view`] of that node returns its answer. Without a
/// thread nothing is requested ahead.
pub fn request_view_ahead(ip: IpAddr, port: u16) {
    let thread = std::thread::Builder::new()
        .name("weft-view-ahead".into())
        .spawn(move || get_json(ip, port, "/debug/dataplane", TIMEOUT));
    if let Ok(handle) = thread {
        AHEAD.lock().unwrap_or_else(PoisonError::into_inner).push((ip, port, handle));
    }
}

/// Fetches and parses the view (the one requested ahead, once, when there is one); the error
/// says what failed (connect, status, JSON).
pub fn fetch_view(ip: IpAddr, port: u16) -> Result<Value, String> {
    let ahead = {
        let mut pending = AHEAD.lock().unwrap_or_else(PoisonError::into_inner);
        let at = pending.iter().position(|(i, p, _)| (*i, *p) == (ip, port));
        at.map(|at| pending.swap_remove(at).2)
    };
    match ahead.map(JoinHandle::join) {
        Some(Ok(answer)) => answer,
        // Not requested ahead, or its thread panicked: ask now.
        _ => get_json(ip, port, "/debug/dataplane", TIMEOUT),
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    /// A view endpoint on 127.0.0.1 answering `{"n":N}` to its Nth request; each request's
    /// number is sent to the returned channel once answered.
    fn serve() -> (u16, mpsc::Receiver<u64>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for (n, conn) in (1u64..).zip(listener.incoming()) {
                let mut conn = conn.unwrap();
                let mut line = String::new();
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                while reader.read_line(&mut line).unwrap() > 2 {
                    line.clear();
                }
                let body = format!("{{\"n\":{n}}}");
                write!(conn, "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}").unwrap();
                drop(conn);
                if tx.send(n).is_err() {
                    return;
                }
            }
        });
        (port, rx)
    }

    #[test]
    fn a_view_requested_ahead_is_the_next_fetch_of_that_node_and_only_that_one() {
        let (port, served) = serve();
        let here = IpAddr::from([127, 0, 0, 1]);
        request_view_ahead(here, port);
        // Asked and answered before anyone fetches it.
        assert_eq!(served.recv_timeout(Duration::from_secs(10)).unwrap(), 1);
        // The answer of the first request, not of a new one.
        assert_eq!(fetch_view(here, port).unwrap()["n"], 1);
        // Taken once: the next fetch asks again.
        assert_eq!(fetch_view(here, port).unwrap()["n"], 2);
    }

    #[test]
    fn an_error_requested_ahead_is_the_error_of_a_fetch() {
        // A port nobody listens on (bound, then closed).
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let here = IpAddr::from([127, 0, 0, 1]);
        let now = fetch_view(here, port).unwrap_err();
        request_view_ahead(here, port);
        assert_eq!(fetch_view(here, port).unwrap_err(), now);
    }
}
