//! Test helpers: the daemon fixture ([`node`]), etcd ([`etcd`]), condition waits and lease values.
#![allow(dead_code, clippy::unwrap_used)]

pub mod etcd;
pub mod node;

use std::time::Duration;

use weft_dataplane::Mac;

/// Waits (in tokio time) until `cond` holds; panics after `limit`.
pub async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for {what}");
        }
        // Coarser steps for long (virtual-time) waits.
        tokio::time::sleep((limit / 2000).max(Duration::from_millis(10))).await;
    }
}

pub fn mac(last: u8) -> Mac {
    [0x02, 0, 0, 0, 0, last]
}

/// A lease value exactly as upstream flanneld writes it.
pub fn upstream_value(public_ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{public_ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}
