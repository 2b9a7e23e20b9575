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

fn map_err(e: etcd_client::Error) -> RegistryError {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            if s.message().contains("compacted") {
                return RegistryError::Compacted(0);
            }
            match s.code() {
                tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Cancelled
                | tonic::Code::Unknown
                | tonic::Code::Aborted => RegistryError::Unavailable(s.message().to_string()),
                _ => RegistryError::Other(format!("{}: {}", s.code(), s.message())),
            }
        }
        E::TransportError(t) => RegistryError::Unavailable(t.to_string()),
        E::IoError(io) => RegistryError::Unavailable(io.to_string()),
        E::WatchError(w) => RegistryError::Unavailable(w),
        other => RegistryError::Other(other.to_string()),
    }
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
        let client = Client::connect(endpoints, Some(co)).await.map_err(map_err)?;
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
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    retry_while(call, |e| matches!(e, RegistryError::Unavailable(_)), 5, Duration::from_millis(50)).await
}

/// Repeats a call, a write included, that failed before any request left this process: the
/// connection to the endpoint the balancer picked could not be made. With one member of
/// three down, the balancer picks the dead one for about a third of all calls; without this,
/// a lease grant followed by a put failed about half the time.
async fn retry_unsent<T, F, Fut>(call: F) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
{
    // Each try picks again among the endpoints; no need to wait for anything.
    retry_while(call, never_sent, 12, Duration::from_millis(5)).await
}

/// The error tonic reports when the channel could not connect (hyper-util's connector).
fn never_sent(e: &RegistryError) -> bool {
    matches!(e, RegistryError::Unavailable(m) if m.contains("tcp connect error"))
}

async fn retry_while<T, F, Fut>(
    mut call: F,
    retry: fn(&RegistryError) -> bool,
    retries: u32,
    pause: Duration,
) -> Result<T, RegistryError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, RegistryError>>,
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
        let resp =
            retry_reads(|| async { self.client.kv_client().get(key, None).await.map_err(map_err) }).await?;
        Ok(resp.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, i64), RegistryError> {
        let resp = retry_reads(|| async {
            self.client.kv_client().get(prefix, Some(GetOptions::new().with_prefix())).await.map_err(map_err)
        })
        .await?;
        let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
        Ok((resp.kvs().iter().map(record).collect(), rev))
    }

    async fn grant(&self, ttl_secs: i64) -> Result<i64, RegistryError> {
        let resp = retry_unsent(|| async {
            self.client.lease_client().grant(ttl_secs, None).await.map_err(map_err)
        })
        .await?;
        Ok(resp.id())
    }

    async fn revoke(&self, lease: i64) -> Result<(), RegistryError> {
        retry_unsent(|| async { self.client.lease_client().revoke(lease).await.map_err(map_err) }).await?;
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
        let resp = retry_unsent(|| async { self.client.kv_client().txn(txn.clone()).await.map_err(map_err) })
            .await?;
        Ok(resp.succeeded().then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, RegistryError> {
        let txn = Txn::new()
            .when([Compare::mod_revision(key, CompareOp::Equal, mod_revision)])
            .and_then([TxnOp::delete(key, None)]);
        let resp = retry_unsent(|| async { self.client.kv_client().txn(txn.clone()).await.map_err(map_err) })
            .await?;
        Ok(resp.succeeded())
    }

    async fn watch(&self, prefix: &str, from: i64) -> Result<EtcdWatch, RegistryError> {
        let opts = WatchOptions::new().with_prefix().with_start_revision(from);
        let stream = retry_reads(|| async {
            self.client.watch_client().watch(prefix, Some(opts.clone())).await.map_err(map_err)
        })
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
            let Some(resp) = self.responses.message().await.map_err(map_err)? else {
                return Err(RegistryError::Unavailable("watch stream closed".into()));
            };
            if resp.compact_revision() > 0 {
                return Err(RegistryError::Compacted(resp.compact_revision()));
            }
            if resp.canceled() {
                if resp.cancel_reason().contains("compacted") {
                    return Err(RegistryError::Compacted(0));
                }
                return Err(RegistryError::Unavailable(format!("watch canceled: {}", resp.cancel_reason())));
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
