//! Health and readiness (docs/flannel.md §11) and the small HTTP server for `/healthz`,
//! `/readyz`, `/metrics` and any extra read-only routes (see [`Routes::route`]).
//!
//! The daemon loop publishes its state here; the server only reads it. Unlike upstream (which
//! always answers 200), `/healthz` reflects real state: lease held, etcd reachable and the mesh
//! programmed, else 503 with the reason. `/readyz` turns 200 once subnet.env is written.
//!
//! HTTP/1.1 is hyper's (already compiled in through tonic), one request per connection. The
//! server must never hurt the daemon: at most [`Limits::max_connections`] connections are served
//! at once (more wait in the kernel's accept queue), each gets [`Limits::request_timeout`], and a
//! failing `accept` (EMFILE, ENFILE, ENOBUFS...) backs off from 5 ms to 1 s instead of spinning,
//! as Go's `net/http` `Server.Serve` does, logging each distinct error once.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{debug, warn};
use weft_dataplane::view::FlanneldFacts;

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
    /// host-gw peers skipped because their PublicIP is not on the same L2 segment (no on-link
    /// route to it on the external interface), as `<subnet> via <PublicIP>`.
    pub peers_off_link: Vec<String>,
}

/// Shared health state, and the facts the daemon publishes for `/debug/dataplane`.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<HealthState>,
    facts: Mutex<FlanneldFacts>,
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

    /// Updates what the daemon holds (own lease, expected device, config), as served in the
    /// `flanneld` part of `/debug/dataplane`.
    pub fn update_facts(&self, f: impl FnOnce(&mut FlanneldFacts)) {
        let mut facts = self.facts.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut facts);
    }

    /// A copy of the published facts.
    pub fn facts(&self) -> FlanneldFacts {
        self.facts.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
        if !s.peers_off_link.is_empty() {
            why.push(format!(
                "host-gw peers not on the same L2 segment, not routed: {}",
                s.peers_off_link.join(", ")
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

/// One response: status, `Content-Type` and body. A `HEAD` request gets the same status and
/// headers without the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Reply {
    /// A `text/plain` reply.
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "text/plain; charset=utf-8", body: body.into() }
    }

    /// An `application/json` reply; `body` is JSON already.
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, content_type: "application/json", body: body.into() }
    }
}

/// The future an extra route's handler returns.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Reply> + Send>>;

/// An extra route's handler: called once per `GET`/`HEAD` of its path, with the request's
/// query string (if any).
pub type Handler = Arc<dyn Fn(Option<String>) -> ReplyFuture + Send + Sync>;

/// What the server answers: `/healthz` and `/readyz` always, `/metrics` when metrics are given,
/// and extra `GET`/`HEAD` routes added with [`Routes::route`], for example
///
/// ```
/// use weft_flanneld::health::{Health, Reply, Routes};
///
/// let routes = Routes::new(Health::new())
///     .route("/debug/dataplane", || async { Reply::json(200, r#"{"peers":[]}"#) });
/// ```
///
/// Any other path is 404; any other method 405 (with `Allow: GET, HEAD`).
#[derive(Clone)]
pub struct Routes {
    health: Arc<Health>,
    metrics: Option<Arc<Metrics>>,
    extra: Vec<(&'static str, Handler)>,
}

impl Routes {
    /// `/healthz` and `/readyz` from `health`.
    pub fn new(health: Arc<Health>) -> Routes {
        Routes { health, metrics: None, extra: Vec::new() }
    }

    /// Also serves `/metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Routes {
        self.metrics = Some(metrics);
        self
    }

    /// Also serves `path` (exact match, query string ignored) with `handler`. A path added twice,
    /// or one of the built-in paths, is answered by the built-in or first handler.
    pub fn route<F, Fut>(mut self, path: &'static str, handler: F) -> Routes
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |_| Box::pin(handler()) as ReplyFuture);
        self.extra.push((path, handler));
        self
    }

    /// Like [`Routes::route`], with the request's query string handed to `handler`.
    pub fn route_query<F, Fut>(mut self, path: &'static str, handler: F) -> Routes
    where
        F: Fn(Option<String>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |q| Box::pin(handler(q)) as ReplyFuture);
        self.extra.push((path, handler));
        self
    }

    /// The reply to `method` on `path` (no query string).
    pub async fn reply(&self, method: &Method, path: &str) -> Reply {
        self.reply_to(method, path, None).await
    }

    /// The reply to `method` on `path` with `query`.
    pub async fn reply_to(&self, method: &Method, path: &str, query: Option<&str>) -> Reply {
        if method != Method::GET && method != Method::HEAD {
            return Reply::text(405, "method not allowed\n");
        }
        match path {
            "/healthz" => {
                let (status, body) = self.health.healthz();
                Reply::text(status, body)
            }
            "/readyz" => {
                let (status, body) = self.health.readyz();
                Reply::text(status, body)
            }
            "/metrics" if self.metrics.is_some() => Reply {
                status: 200,
                content_type: "application/openmetrics-text; version=1.0.0; charset=utf-8",
                body: self.metrics.as_deref().map(Metrics::render).unwrap_or_default(),
            },
            _ => match self.extra.iter().find(|(p, _)| *p == path) {
                Some((_, handler)) => handler(query.map(String::from)).await,
                None => Reply::text(404, "not found\n"),
            },
        }
    }

    async fn respond(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let reply = self.reply_to(req.method(), req.uri().path(), req.uri().query()).await;
        let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
        *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(reply.content_type));
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        }
        resp
    }
}

/// How much the server takes on.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Connections served at once; further ones wait in the listen backlog until one ends.
    pub max_connections: usize,
    /// Time to read the request head.
    pub header_timeout: Duration,
    /// Whole-connection deadline (head, handler, response); the connection is dropped after it.
    pub request_timeout: Duration,
}

impl Default for Limits {
    /// 32 connections (probes and a scraper need a handful), 5 s for the head, 10 s in all.
    fn default() -> Self {
        Limits {
            max_connections: 32,
            header_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Serves `routes` on `listener` with the default [`Limits`] until `shutdown` completes.
pub async fn serve(listener: TcpListener, routes: Routes, shutdown: impl Future<Output = ()>) {
    serve_with(listener, routes, Limits::default(), shutdown).await
}

/// Serves `routes` on `listener` within `limits` until `shutdown` completes. Connections being
/// served when it completes finish on their own (bounded by `request_timeout`).
pub async fn serve_with(
    listener: TcpListener,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    serve_accepting(listener, routes, limits, shutdown).await
}

/// Where connections come from: a [`TcpListener`], or a test double that fails on demand.
trait Accept {
    fn accept_stream(&mut self) -> impl Future<Output = io::Result<TcpStream>> + Send;
}

impl Accept for TcpListener {
    async fn accept_stream(&mut self) -> io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

async fn serve_accepting(
    mut listener: impl Accept,
    routes: Routes,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut backoff = AcceptBackoff::default();
    loop {
        // A slot first: at the limit, new connections wait in the kernel's accept queue.
        let permit = tokio::select! {
            _ = &mut shutdown => return,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return, // never closed
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => return,
            a = listener.accept_stream() => a,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff.succeeded();
                stream
            }
            Err(e) => {
                drop(permit);
                let step = backoff.failed(&e);
                if step.log {
                    warn!(error = %e, retry_in = ?step.delay, "health server: accept failed");
                }
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = tokio::time::sleep(step.delay) => {}
                }
                continue;
            }
        };
        let routes = routes.clone();
        tokio::spawn(async move {
            let _permit = permit;
            serve_connection(stream, routes, limits).await;
        });
    }
}

async fn serve_connection(stream: TcpStream, routes: Routes, limits: Limits) {
    let service = hyper::service::service_fn(move |req| {
        let routes = routes.clone();
        async move { Ok::<_, Infallible>(routes.respond(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(false)
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(limits.request_timeout, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => debug!(error = %e, "health request failed"),
        Err(_) => debug!("health request timed out"),
    }
}

/// What to do after a failed `accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BackoffStep {
    delay: Duration,
    /// First failure of this kind since the last success or other error.
    log: bool,
}

/// Back-off for `accept` errors. An error about one connection (reset or aborted before it
/// was accepted) costs nothing; anything else (out of descriptors or memory) waits 5 ms, doubling
/// up to 1 s, until an `accept` succeeds, and is logged when it differs from the previous one.
#[derive(Debug, Default)]
struct AcceptBackoff {
    delay: Option<Duration>,
    last_logged: Option<(io::ErrorKind, Option<i32>)>,
}

impl AcceptBackoff {
    const FIRST: Duration = Duration::from_millis(5);
    const MAX: Duration = Duration::from_secs(1);

    fn succeeded(&mut self) {
        self.delay = None;
        self.last_logged = None;
    }

    fn failed(&mut self, e: &io::Error) -> BackoffStep {
        if matches!(
            e.kind(),
            io::ErrorKind::ConnectionAborted
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionRefused
        ) {
            return BackoffStep { delay: Duration::ZERO, log: false };
        }
        let delay = self.delay.map_or(Self::FIRST, |d| (d * 2).min(Self::MAX));
        self.delay = Some(delay);
        let id = Some((e.kind(), e.raw_os_error()));
        let log = self.last_logged != id;
        self.last_logged = id;
        BackoffStep { delay, log }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        request(addr, "GET", path).await
    }

    /// A server on a free port; dropping the sender stops it.
    async fn start(
        routes: Routes,
        limits: Limits,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_with(listener, routes, limits, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn endpoints_reflect_state() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let health = Health::new();
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let routes = Routes::new(health.clone()).with_metrics(metrics);
        let server = tokio::spawn(serve(listener, routes, async {
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
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\nflanneld is running\n"), "{r}");
        assert!(r.contains("content-type: text/plain; charset=utf-8\r\n"), "{r}");
        assert!(r.contains("content-length: 20\r\n"), "{r}");
        assert!(get(addr, "/readyz?verbose").await.starts_with("HTTP/1.1 200"));
        let r = get(addr, "/metrics").await;
        assert!(r.contains("flanneld_peers_programmed") && r.contains("application/openmetrics-text"), "{r}");
        assert!(get(addr, "/nope").await.starts_with("HTTP/1.1 404"));
        let r = request(addr, "HEAD", "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.ends_with("\r\n\r\n"), "{r}");
        assert!(r.contains("content-length: 20\r\n"), "HEAD keeps the GET length: {r}");
        // HTTP/1.0 without keep-alive, as weft-lab's bash /dev/tcp probe sends it.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /readyz HTTP/1.0\r\nHost: x\r\n\r\n").await.unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).await.unwrap();
        assert!(r.starts_with("HTTP/1.0 200") && r.ends_with("\r\n\r\nflanneld is ready\n"), "{r}");
        let r = request(addr, "POST", "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 405") && r.contains("allow: GET, HEAD\r\n"), "{r}");
        health.update(|s| s.route_conflicts = vec!["10.5.7.0/24".into()]);
        let r = get(addr, "/healthz").await;
        assert!(r.starts_with("HTTP/1.1 503") && r.contains("hold peer subnets 10.5.7.0/24"), "{r}");
        tx.send(()).unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn metrics_are_404_unless_enabled_and_extra_routes_answer() {
        let routes =
            Routes::new(Health::new()).route("/debug/thing", || async { Reply::json(200, r#"{"ok":true}"#) });
        let (addr, _stop) = start(routes, Limits::default()).await;
        assert!(get(addr, "/metrics").await.starts_with("HTTP/1.1 404"));
        let r = get(addr, "/debug/thing").await;
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("content-type: application/json\r\n"), "{r}");
        assert!(r.ends_with(r#"{"ok":true}"#), "{r}");
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_and_are_served_once_others_close() {
        let limits = Limits { max_connections: 2, ..Limits::default() };
        let (addr, _stop) = start(Routes::new(Health::new()), limits).await;
        // Two silent connections take both slots (three, to be sure one is past the limit).
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(TcpStream::connect(addr).await.unwrap());
        }
        // The kernel completes the handshake, but nobody reads the request yet.
        let waiting = tokio::spawn(get(addr, "/readyz"));
        let waited = tokio::time::timeout(Duration::from_millis(300), async {
            while !waiting.is_finished() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(waited.is_err(), "answered although every slot was taken");
        drop(idle);
        let r = tokio::time::timeout(Duration::from_secs(5), waiting).await.unwrap().unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_dropped_after_the_header_timeout() {
        let limits =
            Limits { max_connections: 1, header_timeout: Duration::from_millis(200), ..Limits::default() };
        let (addr, _stop) = start(Routes::new(Health::new()), limits).await;
        let mut idle = TcpStream::connect(addr).await.unwrap();
        let mut buf = Vec::new();
        // The server closes it (hyper may answer 408 first).
        tokio::time::timeout(Duration::from_secs(5), idle.read_to_end(&mut buf)).await.unwrap().unwrap();
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn backoff_grows_to_a_second_logs_each_distinct_error_once_and_resets_on_success() {
        let emfile = || io::Error::from_raw_os_error(nix::libc::EMFILE);
        let enfile = io::Error::from_raw_os_error(nix::libc::ENFILE);
        let mut b = AcceptBackoff::default();
        let steps: Vec<BackoffStep> = (0..10).map(|_| b.failed(&emfile())).collect();
        let delays: Vec<u64> = steps.iter().map(|s| s.delay.as_millis() as u64).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(steps.iter().filter(|s| s.log).count(), 1);
        assert!(steps[0].log);
        // Another error is logged once too; the delay keeps growing.
        assert_eq!(b.failed(&enfile), BackoffStep { delay: Duration::from_secs(1), log: true });
        assert!(!b.failed(&enfile).log);
        assert!(b.failed(&emfile()).log);
        // A reset connection costs nothing and does not disturb the state.
        let reset = io::Error::from(io::ErrorKind::ConnectionAborted);
        assert_eq!(b.failed(&reset), BackoffStep { delay: Duration::ZERO, log: false });
        b.succeeded();
        assert_eq!(b.failed(&emfile()), BackoffStep { delay: Duration::from_millis(5), log: true });
    }

    /// Fails `failures` times with EMFILE, recording when, then accepts for real.
    struct Flaky {
        listener: TcpListener,
        failures: usize,
        calls: Arc<Mutex<Vec<tokio::time::Instant>>>,
    }

    impl Accept for Flaky {
        async fn accept_stream(&mut self) -> io::Result<TcpStream> {
            if self.failures > 0 {
                self.failures -= 1;
                self.calls.lock().unwrap().push(tokio::time::Instant::now());
                return Err(io::Error::from_raw_os_error(nix::libc::EMFILE));
            }
            self.listener.accept_stream().await
        }
    }

    #[tokio::test]
    async fn accept_errors_back_off_instead_of_spinning_and_serving_resumes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let flaky = Flaky { listener, failures: 5, calls: calls.clone() };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(serve_accepting(flaky, Routes::new(Health::new()), Limits::default(), async {
            let _ = rx.await;
        }));
        let r = tokio::time::timeout(Duration::from_secs(5), get(addr, "/healthz")).await.unwrap();
        assert!(r.starts_with("HTTP/1.1 503"), "{r}");
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 5);
        // 5, 10, 20, 40 ms between the failed attempts.
        for (i, pair) in calls.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            assert!(gap >= Duration::from_millis(5 << i), "attempt {i}: only {gap:?} after the previous one");
        }
        tx.send(()).unwrap();
    }
}
