//! `GET /debug/dataplane` (only with `-debug-dataplane`): this node's kernel view as JSON
//! ([`weft_dataplane::view::DataplaneView`]), collected afresh on every request, together with
//! what the daemon holds (own lease, expected device, config) from [`Health::facts`].
//!
//! The filter rules (`iptables-save -t filter`, `ip6tables-save -t filter`, `nft -j list
//! ruleset`) are read per request too, so `weft path` judges this node's FORWARD chain (IPv4
//! and IPv6) for a packet from another node. They are the dearest part of the view (three
//! processes, run side by side with the netlink dumps):
//! `?firewall=0` leaves them out (`firewall` absent from the JSON), as `weft doctor` asks, which
//! does not judge FORWARD. Without the parameter (or with `firewall=1`) the view is the full one.
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
    routes.route_query(DATAPLANE_PATH, move |query| {
        let health = health.clone();
        async move {
            match with_firewall(query.as_deref()) {
                Ok(firewall) => dataplane_reply(&health, firewall).await,
                Err(e) => Reply::text(400, format!("{e}\n")),
            }
        }
    })
}

/// Whether the query asks for the filter rules: yes unless `firewall=0`; a `firewall` value
/// other than `0`/`1` is an error. Other parameters are ignored, as before there were any.
pub fn with_firewall(query: Option<&str>) -> Result<bool, String> {
    let mut firewall = true;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key == "firewall" {
            firewall = match value {
                "1" => true,
                "0" => false,
                other => return Err(format!("firewall={other}: expected firewall=0 or firewall=1")),
            };
        }
    }
    Ok(firewall)
}

/// The reply: 200 with the view (whatever part could not be read is named in its `errors`),
/// or 500 if it cannot be encoded. `firewall`: also read the filter rules.
pub async fn dataplane_reply(health: &Health, firewall: bool) -> Reply {
    let input = ViewInput { facts: Some(health.facts()), firewall, ..ViewInput::default() };
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
        // The default view carries the filter rules of both families (or why they could not be
        // read), and the IPv6 forwarding switch beside IPv4's.
        let fw = view.firewall.as_ref();
        assert!(fw.is_some(), "{body}");
        assert!(body.contains(r#""ip6tables_filter":"#) && body.contains(r#""ipv6_forwarding":"#), "{body}");
        let ip6t_named = fw.is_some_and(|f| {
            f.ip6tables_filter.is_some() || f.errors.iter().any(|e| e.starts_with("ip6tables-save"))
        });
        assert!(ip6t_named, "{body}");
        assert!(!body.contains("password") && !body.contains("etcd_endpoints"), "{body}");
        // `?firewall=0` leaves the rules out; a value other than 0/1 is refused.
        let r = get(addr, &format!("{DATAPLANE_PATH}?firewall=0")).await;
        let view: DataplaneView = serde_json::from_str(r.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert!(r.starts_with("HTTP/1.1 200") && view.firewall.is_none(), "{r}");
        assert!(!r.contains("ip6tables_filter"), "{r}");
        assert!(view.flanneld.is_some());
        assert!(get(addr, &format!("{DATAPLANE_PATH}?firewall=no")).await.starts_with("HTTP/1.1 400"));
        // /healthz is still there.
        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 503"));
    }

    #[test]
    fn firewall_is_left_out_only_when_asked() {
        assert_eq!(with_firewall(None), Ok(true));
        assert_eq!(with_firewall(Some("")), Ok(true));
        assert_eq!(with_firewall(Some("firewall=1")), Ok(true));
        assert_eq!(with_firewall(Some("firewall=0")), Ok(false));
        assert_eq!(with_firewall(Some("x=1&firewall=0&y")), Ok(false));
        assert!(with_firewall(Some("firewall=")).is_err());
        assert!(with_firewall(Some("firewall=false")).is_err());
    }
}
