//! [`Registry`] over etcd v3 (`etcd-client`). One client for all endpoints (gRPC balances and
//! fails over); every call has a timeout so an unreachable etcd surfaces as
//! [`RegistryError::Unavailable`] instead of hanging the daemon.

use std::path::PathBuf;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, PutOptions,
    TlsOptions, Txn, TxnOp, WatchOptions, WatchResponseStream,
};

use super::{Expect, Record, Registry, RegistryError, WatchEvent, WatchStream};

/// Connection settings.
#[derive(Debug, Clone, Default)]
pub struct EtcdOptions {
    pub endpoints: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Client-certificate TLS (upstream builds TLS only when both key and cert are given),
    /// loaded with [`EtcdTls::load`].
    pub tls: Option<TlsOptions>,
}

/// TLS files (PEM).
#[derive(Debug, Clone)]
pub struct EtcdTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Server CA; the system roots when absent.
    pub ca: Option<PathBuf>,
}

impl EtcdTls {
    /// Reads the PEM files; the error names the file.
    pub fn load(&self) -> Result<TlsOptions, String> {
        let read = |p: &PathBuf| std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()));
        let identity = Identity::from_pem(read(&self.cert)?, read(&self.key)?);
        let tls = TlsOptions::new().identity(identity);
        Ok(match &self.ca {
            Some(ca) => tls.ca_certificate(Certificate::from_pem(read(ca)?)),
            None => tls.with_native_roots(),
        })
    }
}

/// etcd v3 registry.
#[derive(Clone)]
pub struct EtcdRegistry {
    client: Client,
}

/// etcd's message for a read or watch at a compacted revision (gRPC `OutOfRange`, which etcd
/// also uses for a future revision: the message tells the two apart). etcd `api/v3rpc/rpctypes`
/// `ErrGRPCCompacted`.
const COMPACTED_TEXT: &str = "compacted";

/// hyper-util's message for a failed TCP connect (`HttpConnector`), used only as a fallback by
/// [`never_sent`].
const CONNECT_TEXT: &str = "tcp connect error";

/// The registry's view of an etcd-client error. Decided on the gRPC status code; the message is
/// read only to tell compaction from etcd's other `OutOfRange` error (a future revision), and,
/// as a fallback, to recognise compaction reported under another code.
fn map_err(e: &etcd_client::Error) -> RegistryError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let compacted = s.message().contains(COMPACTED_TEXT);
            match s.code() {
                tonic::Code::OutOfRange if compacted => RegistryError::Compacted(0),
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::Aborted => RegistryError::Unavailable(s.message().to_string()),
                // Fallback: compaction reported under another code (a proxy in between).
                _ if compacted => RegistryError::Compacted(0),
                _ => RegistryError::Other(format!("{}: {}", s.code(), s.message())),
            }
        }
        E::TransportError(t) => RegistryError::Unavailable(t.to_string()),
        E::IoError(io) => RegistryError::Unavailable(io.to_string()),
        E::WatchError(w) => RegistryError::Unavailable(w.clone()),
        other => RegistryError::Other(other.to_string()),
    }
}

/// True when the call failed before any request left this process: the channel could not
/// connect (or finish its TLS handshake) to the endpoint the balancer picked.
///
/// Decided on types, walking the error's `source()` chain: tonic wraps every failure of its
/// connector in [`tonic::ConnectError`] (its documented marker for "an error occurs during the
/// connection process"), and an `io::Error` whose kind only a connect can give (refused,
/// host or network unreachable, no local address) means the same. An `io::Error` that can
/// also end an established connection (reset, timed out, broken pipe) does not count: the
/// request may have reached etcd. Fallback, should a future tonic drop the wrapper: the
/// message hyper-util's connector gives ([`CONNECT_TEXT`]).
fn never_sent(e: &etcd_client::Error) -> bool {
    use etcd_client::Error as E;
    let top: &(dyn std::error::Error + 'static) = match e {
        E::GRpcStatus(s) => s,
        E::TransportError(t) => t,
        E::IoError(io) => io,
        _ => return false,
    };
    let mut next = Some(top);
    while let Some(err) = next {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if connect_only(io.kind()) {
                return true;
            }
        }
        next = err.source();
    }
    matches!(e, E::GRpcStatus(s) if s.code() == tonic::Code::Unavailable && s.message().contains(CONNECT_TEXT))
}

/// I/O error kinds only a connect attempt gives.
fn connect_only(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind as K;
    matches!(kind, K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable)
}

/// Whether a read may be retried at once (etcd unavailable, another endpoint may answer).
fn unavailable(e: &etcd_client::Error) -> bool {
    matches!(map_err(e), RegistryError::Unavailable(_))
}

/// The end of a watch a response announces: compaction (etcd sets `compact_revision` and
/// cancels the watch; the cancel reason's text is only a fallback) or another cancellation.
fn watch_ended(compact_revision: i64, canceled: bool, cancel_reason: &str) -> Option<RegistryError> {
    if compact_revision > 0 {
        return Some(RegistryError::Compacted(compact_revision));
    }
    if !canceled {
        return None;
    }
    if cancel_reason.contains(COMPACTED_TEXT) {
        return Some(RegistryError::Compacted(0));
    }
    Some(RegistryError::Unavailable(format!("watch canceled: {cancel_reason}")))
}

impl EtcdRegistry {
    /// Builds the client. Without credentials this does not contact etcd yet (channels connect
    /// lazily), so a down etcd at startup is handled by the callers' retries.
    pub async fn connect(opts: &EtcdOptions) -> Result<EtcdRegistry, RegistryError> {
        let mut co = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            // Detects a dead server under an idle watch stream.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(true);
        if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
            co = co.with_user(u.clone(), p.clone());
        }
        let scheme = if let Some(tls) = &opts.tls {
            co = co.with_tls(tls.clone());
            "https"
        } else {
            "http"
        };
        let endpoints: Vec<String> = opts.endpoints.iter().map(|e| normalise_endpoint(e, scheme)).collect();
        let client = Client::connect(endpoints, Some(co)).await.map_err(|e| map_err(&e))?;
        Ok(EtcdRegistry { client })
    }
}

/// Read-only calls are retried a few times when etcd is unavailable: with several endpoints
/// the gRPC balancer may still send a call to a dead one, and the next try goes elsewhere.
/// Writes are retried only when they were never sent ([`retry_unsent`]): a lost reply could
/// make a retried conditional write look like a lost race; the daemon retries those with its
/// own back-off.
async fn retry_reads<T, F, Fut>(call: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    retry_while(call, unavailable, 5, Duration::from_millis(50)).await.map_err(|e| map_err(&e))
}

/// Repeats a call, a write included, that failed before any request left this process
/// ([`never_sent`]). With one member of three down, the balancer picks the dead one for about
/// a third of all calls; without this, a lease grant followed by a put failed about half the
/// time.
async fn retry_unsent<T, F, Fut>(call: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    // Each try picks again among the endpoints; no need to wait for anything.
    retry_while(call, never_sent, 12, Duration::from_millis(5)).await.map_err(|e| map_err(&e))
}

async fn retry_while<T, F, Fut>(
    mut call: F,
    retry: fn(&etcd_client::Error) -> bool,
    retries: u32,
    pause: Duration,
) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if attempt < retries && retry(&e) => {
                attempt += 1;
                tokio::time::sleep(pause).await;
            }
            other => return other,
        }
    }
}

/// etcd-client wants a scheme; upstream accepts bare `host:port` too.
fn normalise_endpoint(e: &str, scheme: &str) -> String {
    let e = e.trim();
    if e.contains("://") {
        e.to_string()
    } else {
        format!("{scheme}://{e}")
    }
}

fn record(kv: &etcd_client::KeyValue) -> Record {
    Record {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: kv.value().to_vec(),
        lease: kv.lease(),
        mod_revision: kv.mod_revision(),
    }
}

impl Registry for EtcdRegistry {
    type Watch = EtcdWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        let resp = retry_reads(|| async { self.client.kv_client().get(key, None).await }).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, i64), RegistryError> {
        let resp = retry_reads(|| async {
            self.client.kv_client().get(prefix, Some(GetOptions::new().with_prefix())).await
        })
        .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(record).collect(), rev))
    }

    async fn grant(&self, ttl_secs: i64) -> Result<i64, RegistryError> {
        let resp = retry_unsent(|| async { self.client.lease_client().grant(ttl_secs, None).await }).await?;
        Ok(resp.id())
    }

    async fn revoke(&self, lease: i64) -> Result<(), RegistryError> {
        retry_unsent(|| async { self.client.lease_client().revoke(lease).await }).await?;
        Ok(())
    }

    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        expect: Expect,
    ) -> Result<Option<i64>, RegistryError> {
        let cmp = match expect {
            Expect::Absent => Compare::version(key, CompareOp::Equal, 0),
            Expect::ModRevision(r) => Compare::mod_revision(key, CompareOp::Equal, r),
            Expect::Lease(l) => Compare::lease(key, CompareOp::Equal, l),
        };
        let opts = (lease != 0).then(|| PutOptions::new().with_lease(lease));
        let txn = Txn::new().when([cmp]).and_then([TxnOp::put(key, value.to_vec(), opts)]);
        let resp = retry_unsent(|| async { self.client.kv_client().txn(txn.clone()).await }).await?;
        Ok(resp.succeeded().then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, RegistryError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::delete(key, None)]);
        let resp = retry_unsent(|| async { self.client.kv_client().txn(txn.clone()).await }).await?;
        Ok(resp.succeeded())
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<EtcdWatch, RegistryError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream =
            retry_reads(|| async { self.client.watch_client().watch(prefix, Some(opts.clone())).await })
                .await?;
        // Keep the request half alive: dropping it would end the watch.
        let (sender, responses) = stream.split();
        Ok(EtcdWatch { _sender: sender, responses })
    }
}

/// An etcd watch stream.
pub struct EtcdWatch {
    _sender: etcd_client::WatchRequestSender,
    responses: WatchResponseStream,
}

impl WatchStream for EtcdWatch {
    async fn next(&mut self) -> Result<Vec<WatchEvent>, RegistryError> {
        loop {
            let Some(resp) = self.responses.message().await.map_err(|e| map_err(&e))? else {
                return Err(RegistryError::Unavailable("watch stream closed".into()));
            };
            if let Some(end) = watch_ended(resp.compact_revision(), resp.canceled(), resp.cancel_reason()) {
                return Err(end);
            }
            let events: Vec<WatchEvent> = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    let kv = ev.kv()?;
                    Some(match ev.event_type() {
                        EventType::Put => WatchEvent::Put(record(kv)),
                        EventType::Delete => WatchEvent::Delete {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            mod_revision: kv.mod_revision(),
                        },
                    })
                })
                .collect();
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn status_from(source: impl std::error::Error + Send + Sync + 'static) -> etcd_client::Error {
        // What tonic builds from a failed call (`Status::from_error` walks the chain).
        etcd_client::Error::GRpcStatus(tonic::Status::from_error(Box::new(source)))
    }

    #[test]
    fn a_failed_connect_was_never_sent_whatever_the_message() {
        // tonic's connector wraps hyper-util's error, which wraps the io::Error.
        let refused = io::Error::new(io::ErrorKind::ConnectionRefused, "worded differently");
        let e = status_from(tonic::ConnectError(Box::new(refused)));
        assert!(matches!(&e, etcd_client::Error::GRpcStatus(s) if s.code() == tonic::Code::Unavailable));
        assert!(never_sent(&e));
        // A connect that timed out or failed its TLS handshake: still tonic's ConnectError.
        let timed_out = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
        assert!(never_sent(&status_from(tonic::ConnectError(Box::new(timed_out)))));
        assert!(never_sent(&status_from(tonic::ConnectError("tls handshake eof".into()))));
        // Without the wrapper, an io::Error only a connect gives.
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::HostUnreachable,
            io::ErrorKind::NetworkUnreachable,
        ] {
            let status = tonic::Status::from_error(Box::new(io::Error::from(kind)));
            assert!(never_sent(&etcd_client::Error::GRpcStatus(status)), "{kind:?}");
            assert!(never_sent(&etcd_client::Error::IoError(io::Error::from(kind))), "{kind:?}");
        }
        // All of these are "unavailable": reads retry them too.
        assert!(unavailable(&e));
    }

    /// The real chain etcd-client and tonic give for a refused connection (no etcd needed).
    #[tokio::test]
    async fn a_real_refused_connection_is_recognised_as_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let opts = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let client = Client::connect([format!("http://127.0.0.1:{port}")], Some(opts)).await.unwrap();
        let e = client.kv_client().get("k", None).await.unwrap_err();
        assert!(never_sent(&e), "{e:?}");
        // Through the type, not the fallback text: tonic's marker is in the chain.
        let etcd_client::Error::GRpcStatus(s) = &e else { panic!("{e:?}") };
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(s);
        let mut marked = false;
        while let Some(err) = next {
            marked |= err.is::<tonic::ConnectError>();
            next = err.source();
        }
        assert!(marked, "{e:?}");
    }

    #[test]
    fn a_call_that_may_have_reached_etcd_is_not_repeated() {
        // The per-call deadline: the request was sent, etcd may have applied it.
        let timeout = status_from(tonic::TimeoutExpired(()));
        assert!(!never_sent(&timeout));
        assert!(unavailable(&timeout), "reads still retry it");
        // An established connection that broke.
        for kind in [io::ErrorKind::ConnectionReset, io::ErrorKind::TimedOut, io::ErrorKind::BrokenPipe] {
            assert!(!never_sent(&etcd_client::Error::IoError(io::Error::from(kind))), "{kind:?}");
        }
        assert!(!never_sent(&etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "etcdserver: leader changed"
        ))));
        assert!(!never_sent(&etcd_client::Error::WatchError("tcp connect error".into())));
    }

    #[test]
    fn connect_text_is_only_a_fallback_for_an_unavailable_status_without_a_source() {
        assert!(never_sent(&etcd_client::Error::GRpcStatus(tonic::Status::unavailable("tcp connect error"))));
        assert!(!never_sent(&etcd_client::Error::GRpcStatus(tonic::Status::internal("tcp connect error"))));
    }

    #[test]
    fn compaction_is_out_of_range_with_etcds_message() {
        let compacted = tonic::Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(map_err(&etcd_client::Error::GRpcStatus(compacted)), RegistryError::Compacted(0));
        // etcd's other OutOfRange error is not a compaction.
        let future = tonic::Status::out_of_range("etcdserver: mvcc: required revision is a future revision");
        assert!(
            matches!(map_err(&etcd_client::Error::GRpcStatus(future)), RegistryError::Other(m) if m.contains("future"))
        );
        // Fallback: the text under another code.
        let other = tonic::Status::failed_precondition("required revision has been compacted");
        assert_eq!(map_err(&etcd_client::Error::GRpcStatus(other)), RegistryError::Compacted(0));
        assert!(matches!(
            map_err(&etcd_client::Error::GRpcStatus(tonic::Status::unavailable("no leader"))),
            RegistryError::Unavailable(m) if m == "no leader"
        ));
    }

    #[test]
    fn a_watch_ends_on_its_compact_revision_or_cancellation() {
        assert_eq!(watch_ended(0, false, ""), None);
        // etcd sets the compact revision (and cancels): the reason's text does not matter.
        assert_eq!(watch_ended(42, true, "anything"), Some(RegistryError::Compacted(42)));
        // Fallback: cancelled with compaction only in the reason.
        assert_eq!(
            watch_ended(0, true, "mvcc: required revision has been compacted"),
            Some(RegistryError::Compacted(0))
        );
        assert_eq!(
            watch_ended(0, true, "permission denied"),
            Some(RegistryError::Unavailable("watch canceled: permission denied".into()))
        );
    }

    #[tokio::test]
    async fn a_write_is_repeated_only_while_it_was_never_sent() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let calls = AtomicU32::new(0);
        let r: Result<u32, RegistryError> = retry_unsent(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 | 1 => Err(status_from(tonic::ConnectError(Box::new(io::Error::from(
                    io::ErrorKind::ConnectionRefused,
                ))))),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(r, Ok(2));
        calls.store(0, Ordering::SeqCst);
        let r: Result<u32, RegistryError> = retry_unsent(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status_from(tonic::TimeoutExpired(())))
        })
        .await;
        assert!(matches!(r, Err(RegistryError::Unavailable(_))), "{r:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a call that may have been applied is not repeated");
    }
}
