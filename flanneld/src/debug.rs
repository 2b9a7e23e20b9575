//! `GET /debug/dataplane` (only with `-debug-dataplane`): this node's kernel view as JSON
//! ([`weft_dataplane::view::DataplaneView`]), collected afresh on every request, together with
//! what the daemon holds (own lease, expected device, config) from [`Health::facts`].
//!
//! The filter rules (`iptables-save -t filter`, `nft -j list ruleset`) are read per request
//! too, so `weft path` judges this node's FORWARD chain for a packet from another node.
//!
//! Read-only and credential-free: the facts carry the own lease's key, attributes and etcd
//! revision, never the etcd endpoints' user, password or TLS files. `weft doctor` and
//! `weft path` read it from every node instead of logging in there.

use std::sync::Arc;

use weft_dataplane::netlink::{collect_view, ViewInput};

use crate::health::{Health, Reply, Routes};

/// The path served.
pub const DATAPLANE_PATH: &str = "/debug/dataplane";

/// `routes` plus [`DATAPLANE_PATH`], answered from `health`'s facts and the kernel.
pub fn with_dataplane(routes: Routes, health: Arc<Health>) -> Routes {
    routes.route(DATAPLANE_PATH, move || {
        let health = health.clone();
        async move { dataplane_reply(&health).await }
    })
}

/// The reply: 200 with the view (whatever part could not be read is named in its `errors`),
/// or 500 if it cannot be encoded.
pub async fn dataplane_reply(health: &Health) -> Reply {
    let input = ViewInput { facts: Some(health.facts()), firewall: true, ..ViewInput::default() };
    let view = collect_view(&input).await;
    match serde_json::to_string(&view) {
        Ok(body) => Reply::json(200, body),
        Err(e) => Reply::text(500, format!("encode dataplane view: {e}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use weft_dataplane::view::{DataplaneView, FlanneldFacts, LeaseView};

    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    async fn serve(routes: Routes) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(crate::health::serve(listener, routes, async {
            let _ = rx.await;
        }));
        (addr, tx)
    }

    #[tokio::test]
    async fn dataplane_is_404_without_the_flag_and_json_with_it() {
        let health = Health::new();
        let (addr, _stop) = serve(Routes::new(health.clone())).await;
        let r = get(addr, DATAPLANE_PATH).await;
        assert!(r.starts_with("HTTP/1.1 404"), "{r}");

        health.update_facts(|f| {
            *f = FlanneldFacts {
                version: "test".into(),
                network: Some("10.5.0.0/16".parse().unwrap()),
                lease: Some(LeaseView {
                    key: "/coreos.com/network/subnets/10.5.72.0-24".into(),
                    subnet: "10.5.72.0/24".parse().unwrap(),
                    public_ip: "198.18.0.2".parse().unwrap(),
                    vtep_mac: "2a:11:22:33:44:55".into(),
                    vni: 1,
                    etcd_revision: 7,
                    etcd_lease: 42,
                }),
                ..FlanneldFacts::default()
            }
        });
        // A device name nobody has: the view names it as missing instead of failing.
        let (addr, _stop2) = serve(with_dataplane(Routes::new(health.clone()), health.clone())).await;
        let r = get(addr, DATAPLANE_PATH).await;
        assert!(r.starts_with("HTTP/1.1 200") && r.contains("content-type: application/json\r\n"), "{r}");
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let view: DataplaneView = serde_json::from_str(body).unwrap();
        assert_eq!(view.version, weft_dataplane::view::VIEW_VERSION);
        let facts = view.flanneld.unwrap();
        assert_eq!(facts.lease.unwrap().etcd_revision, 7);
        assert_eq!(facts.network, Some("10.5.0.0/16".parse().unwrap()));
        assert!(!body.contains("password") && !body.contains("etcd_endpoints"), "{body}");
        // /healthz is still there.
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }
}
