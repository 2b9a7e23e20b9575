//! A panic in the lease watch task ends the daemon with an error (so the process exits non-zero
//! and its supervisor restarts it) instead of leaving it running blind to peer changes. flanneld
//! unwinds on panic (see the release profile in the workspace `Cargo.toml`), so tokio contains
//! the panic to the task and the daemon must notice. No root, no etcd.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::node::Node;
use weft_flanneld::daemon::{self, DaemonError};
use weft_flanneld::registry::memory::{MemoryRegistry, MemoryWatch};
use weft_flanneld::registry::{Expect, Record, Registry, RegistryError};

/// The memory registry, except that starting a watch panics (a stand-in for any bug there).
#[derive(Clone)]
struct WatchPanics(MemoryRegistry);

impl Registry for WatchPanics {
    type Watch = MemoryWatch;

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, RegistryError> {
        self.0.get(key).await
    }
    async fn list(&self, prefix: &str) -> Result<(Vec<Record>, i64), RegistryError> {
        self.0.list(prefix).await
    }
    async fn grant(&self, ttl_secs: i64) -> Result<i64, RegistryError> {
        self.0.grant(ttl_secs).await
    }
    async fn revoke(&self, lease: i64) -> Result<(), RegistryError> {
        self.0.revoke(lease).await
    }
    async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        lease: i64,
        expect: Expect,
    ) -> Result<Option<i64>, RegistryError> {
        self.0.put_if(key, value, lease, expect).await
    }
    async fn delete_if(&self, key: &str, mod_revision: i64) -> Result<bool, RegistryError> {
        self.0.delete_if(key, mod_revision).await
    }
    async fn watch(&self, _prefix: &str, _from: i64) -> Result<MemoryWatch, RegistryError> {
        panic!("a bug in the watch")
    }
}

#[tokio::test(start_paused = true)]
async fn a_panicking_watch_task_ends_the_daemon_with_an_error() {
    let node = Node::new();
    let health = node.health();
    let never = std::future::pending::<()>();
    let ran = tokio::time::timeout(
        Duration::from_secs(600),
        daemon::run(node.cfg.clone(), WatchPanics(node.reg.clone()), node.dp.clone(), never),
    )
    .await
    .expect("the daemon keeps running although its watch task died");
    assert!(matches!(ran, Err(DaemonError::WatchEnded)), "{ran:?}");
    // It got as far as being ready: the failure is the watch's, not start-up's.
    assert!(health.get().ready);
}
