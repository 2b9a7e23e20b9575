//! Reading every node's kernel view from its flanneld: `GET http://<PublicIP>:<port>/debug/dataplane`,
//! all nodes at once, each bounded in time. A node that does not answer is an error string
//! naming the URL and the reason (it becomes a `REMOTE_VIEW_UNAVAILABLE` finding), never a panic.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_dataplane::view::DataplaneView;

/// The path flanneld serves with `-debug-dataplane`.
pub const DATAPLANE_PATH: &str = "/debug/dataplane";
/// Largest body accepted (a view of 5,000 peers is about 2 MB).
const MAX_BODY: usize = 64 << 20;

/// One HTTP/1.1 GET (the server closes the connection after the reply); status and body.
pub async fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.map_err(|e| format!("send request: {e}"))?;
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        loop {
            let n = s.read(&mut chunk).await.map_err(|e| format!("read reply: {e}"))?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
            if buf.len() > MAX_BODY {
                return Err(format!("reply larger than {MAX_BODY} bytes"));
            }
        }
        Ok(buf)
    };
    let buf = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("no reply within {} ms", timeout.as_millis()))??;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("reply has no HTTP header end")?;
    let head = String::from_utf8_lossy(buf.get(..split).unwrap_or_default()).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("not an HTTP reply: {:?}", head.lines().next().unwrap_or_default()))?;
    let mut body = buf.get(split + 4..).unwrap_or_default().to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or("malformed chunked body")?;
    }
    Ok((status, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size =
            usize::from_str_radix(std::str::from_utf8(b.get(..eol)?).ok()?.split(';').next()?.trim(), 16)
                .ok()?;
        b = b.get(eol + 2..)?;
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// The view without the filter rules (`?firewall=0`, `flanneld/src/debug.rs`): no check here
/// reads them, and leaving them out spares every node two processes per request. A flanneld
/// that predates the parameter ignores it and sends the full view, which parses the same.
const DATAPLANE_QUERY: &str = "/debug/dataplane?firewall=0";

/// Node `ip`'s view, or why not.
pub async fn fetch_view(ip: Ipv4Addr, port: u16, timeout: Duration) -> Result<DataplaneView, String> {
    let url = format!("http://{ip}:{port}{DATAPLANE_PATH}");
    let (status, body) = http_get(SocketAddr::from((ip, port)), DATAPLANE_QUERY, timeout)
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    match status {
        200 => serde_json::from_slice(&body).map_err(|e| format!("{url}: not a dataplane view: {e}")),
        404 => Err(format!("{url}: 404, flanneld runs without -debug-dataplane")),
        other => Err(format!("{url}: HTTP {other}")),
    }
}

/// Every node's view, fetched concurrently.
pub async fn fetch_all(
    ips: &[Ipv4Addr],
    port: u16,
    timeout: Duration,
) -> BTreeMap<Ipv4Addr, Result<DataplaneView, String>> {
    let mut set = tokio::task::JoinSet::new();
    for ip in ips {
        let ip = *ip;
        set.spawn(async move { (ip, fetch_view(ip, port, timeout).await) });
    }
    let mut out = BTreeMap::new();
    while let Some(done) = set.join_next().await {
        if let Ok((ip, r)) = done {
            out.insert(ip, r);
        }
    }
    for ip in ips {
        out.entry(*ip)
            .or_insert_with(|| Err(format!("http://{ip}:{port}{DATAPLANE_PATH}: fetch task failed")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n").as_deref(), Some(&b"abcde"[..]));
        assert_eq!(dechunk(b"zz\r\n"), None);
    }

    #[tokio::test]
    async fn unreachable_endpoint_is_an_error_naming_the_url() {
        // A port nobody listens on (bound, then closed).
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = fetch_view(Ipv4Addr::LOCALHOST, port, Duration::from_secs(2)).await.unwrap_err();
        assert!(e.starts_with(&format!("http://127.0.0.1:{port}/debug/dataplane: connect")), "{e}");
    }
}
