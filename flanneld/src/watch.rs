//! The lease watch task: turns etcd into a stream of [`WatchMsg`]s for the daemon loop and owns
//! no daemon state (docs/flannel.md §4.4, §6.1).
//!
//! It starts from a listing the caller has (so startup costs one range read), watches from that
//! revision + 1, and whenever the watch breaks (compaction, etcd restart or outage) it re-lists
//! with exponential back-off (100 ms → 5 s) and sends the new snapshot, which the daemon diffs
//! against what it knows. It never sends an empty "snapshot" because of an error.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::registry::{Record, Registry, RegistryError, WatchEvent, WatchStream};

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A message from the watch task.
#[derive(Debug, Clone)]
pub enum WatchMsg {
    /// A complete listing at `revision`.
    Snapshot { records: Vec<Record>, revision: i64 },
    /// Changes, in revision order.
    Events(Vec<WatchEvent>),
    /// etcd became unreachable (with the error) or reachable again (`None`).
    Etcd(Option<RegistryError>),
}

/// Follows the changes after the listing at `revision` (which the caller has), with a re-list
/// after a broken or compacted watch; runs until the receiver is dropped.
pub async fn follow<R: Registry>(registry: R, dir: String, mut revision: i64, tx: mpsc::Sender<WatchMsg>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        let err = watch_until_error(&registry, &dir, revision + 1, &tx).await;
        let Some(err) = err else { return };
        match &err {
            RegistryError::Compacted(_) => info!("lease watch compacted, re-listing"),
            other => {
                warn!(error = %other, "lease watch broken, re-listing");
                if tx.send(WatchMsg::Etcd(Some(err.clone()))).await.is_err() {
                    return;
                }
            }
        }
        // Re-list until it works; the daemon keeps its kernel state meanwhile.
        loop {
            tokio::time::sleep(backoff).await;
            match registry.list(&dir).await {
                Ok((records, rev)) => {
                    revision = rev;
                    backoff = MIN_BACKOFF;
                    if tx.send(WatchMsg::Etcd(None)).await.is_err()
                        || tx.send(WatchMsg::Snapshot { records, revision }).await.is_err()
                    {
                        return;
                    }
                    break;
                }
                Err(e) => {
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    if tx.send(WatchMsg::Etcd(Some(e))).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Watches from `from`; returns the error that ended the watch, or `None` when the daemon is
/// gone.
async fn watch_until_error<R: Registry>(
    registry: &R,
    dir: &str,
    from: i64,
    tx: &mpsc::Sender<WatchMsg>,
) -> Option<RegistryError> {
    let mut stream = match registry.watch(dir, from).await {
        Ok(s) => s,
        Err(e) => return Some(e),
    };
    loop {
        match stream.next().await {
            Ok(events) => {
                if tx.send(WatchMsg::Events(events)).await.is_err() {
                    return None;
                }
            }
            Err(e) => return Some(e),
        }
    }
}
