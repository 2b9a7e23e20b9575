//! `GET /debug/capture` and `GET /debug/capture/result` (only with `-debug-dataplane`): a
//! short, bounded packet capture on this node for `weft path --probe`, which arms it on the
//! destination's node before sending and reads, per interface, whether its probe was seen.
//!
//! `/debug/capture?if=eth0,flannel.1,cni0&proto=icmp&marker=<8 hex>[&sport=&dport=]
//! [&vxlan_port=8472][&src=<ip>&dst=<ip>][&ms=2000]` opens one `ETH_P_ALL` packet socket in
//! flanneld's namespace (see [`weft_common::capture`]) and answers with the capture's `id` once
//! it is open; the capture then counts frames carrying that probe ([`Matcher`]) per interface
//! until `ms` (at most [`MAX_MS`]) have passed or `/debug/capture/result?id=N` ends it. The
//! result names each interface asked for (`present`, `requests`, `replies`) and every other
//! interface the probe was seen on (`also_seen`, with its link kind, e.g. the pod's veth).
//!
//! For the same window the kernel's drop reasons (`skb:kfree_skb`) are recorded in a tracing
//! instance of the capture's own (`flanneld-capture-<pid>-<id>`, see
//! [`weft_common::capture::dropwatch`]), created when the capture starts and removed when it
//! ends, whatever the outcome; the result carries them as `drops` (every IP drop of the machine
//! in `reasons`; with `lens`, the lengths of the probe's packets, also the probe's own in `probe`
//! and `correlated: true`), or `drops: null` and `drops_unavailable` saying why (no tracefs, an
//! old kernel, not permitted).
//!
//! Read-only: no device is bound, put in promiscuous mode or changed; nothing but counters is
//! returned (no payload, no etcd configuration or credentials). One capture at a time: a
//! second start while one runs is 409. The socket is closed when the capture ends.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::watch;
use weft_common::capture::dropwatch::{DropReport, DropWatch};
use weft_common::capture::{Capture, Kind, Matcher, ProbeProto};
use weft_common::netlink::Netlink;

use crate::health::{Reply, Routes};

/// The path that starts a capture.
pub const CAPTURE_PATH: &str = "/debug/capture";
/// The path that ends one and returns what it saw.
pub const RESULT_PATH: &str = "/debug/capture/result";
/// The longest capture, whatever is asked.
pub const MAX_MS: u64 = 3000;
const DEFAULT_MS: u64 = 2000;
/// Interfaces one request may name.
const MAX_IFACES: usize = 8;
/// Packet lengths one request may name.
const MAX_LENS: usize = 4;

/// What a start request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureRequest {
    pub ifaces: Vec<String>,
    pub matcher: Matcher,
    pub duration: Duration,
    /// `skb->len` of the probe's packets entering a device, whose drops are followed
    /// (`weft_common::capture::dropwatch`); empty: drops machine-wide only.
    pub lens: Vec<u32>,
}

fn valid_ifname(n: &str) -> bool {
    !n.is_empty() && n.len() <= 15 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b))
}

/// Parses a start request's query string; the error names the bad parameter.
pub fn parse_request(query: Option<&str>) -> Result<CaptureRequest, String> {
    let mut params: BTreeMap<&str, &str> = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        params.insert(k, v);
    }
    let get = |k: &str| params.get(k).copied().filter(|v| !v.is_empty());
    let ifaces: Vec<String> =
        get("if").unwrap_or("").split(',').filter(|n| !n.is_empty()).map(String::from).collect();
    if ifaces.is_empty() || ifaces.len() > MAX_IFACES {
        return Err(format!("if: give 1 to {MAX_IFACES} interface names, comma-separated"));
    }
    if let Some(bad) = ifaces.iter().find(|n| !valid_ifname(n)) {
        return Err(format!("if: {bad:?} is not an interface name"));
    }
    let proto = get("proto").and_then(ProbeProto::parse).ok_or("proto: want icmp, udp or tcp")?;
    let marker = get("marker").ok_or("marker: missing (8 hex digits)")?;
    let nonce = u32::from_str_radix(marker, 16)
        .ok()
        .filter(|_| marker.len() == 8)
        .ok_or("marker: want 8 hex digits")?
        .to_be_bytes();
    let port = |k: &str, default: u16| -> Result<u16, String> {
        get(k).map_or(Ok(default), |v| v.parse().map_err(|_| format!("{k}: not a port")))
    };
    let addr = |k: &str| -> Result<Option<Ipv4Addr>, String> {
        get(k).map(|v| v.parse().map_err(|_| format!("{k}: not an IPv4 address"))).transpose()
    };
    let endpoints = match (addr("src")?, addr("dst")?) {
        (Some(s), Some(d)) => Some((s, d)),
        (None, None) => None,
        _ => return Err("src, dst: give both or neither".into()),
    };
    let ms =
        get("ms").map_or(Ok(DEFAULT_MS), |v| v.parse::<u64>().map_err(|_| "ms: not a number".to_string()))?;
    let lens = get("lens")
        .unwrap_or("")
        .split(',')
        .filter(|l| !l.is_empty())
        .map(|l| l.parse::<u32>().ok().filter(|n| (1..=65_535).contains(n)))
        .collect::<Option<Vec<u32>>>()
        .filter(|l| l.len() <= MAX_LENS)
        .ok_or_else(|| format!("lens: give at most {MAX_LENS} packet lengths (1-65535), comma-separated"))?;
    Ok(CaptureRequest {
        ifaces,
        matcher: Matcher {
            proto,
            nonce,
            src_port: port("sport", 0)?,
            dst_port: port("dport", 0)?,
            vxlan_port: port("vxlan_port", 8472)?,
            endpoints,
        },
        duration: Duration::from_millis(ms.clamp(1, MAX_MS)),
        lens,
    })
}

struct Job {
    id: u64,
    stop: Arc<AtomicBool>,
    done: watch::Receiver<Option<Arc<String>>>,
}

/// The one capture slot.
#[derive(Default)]
pub struct Captures {
    next_id: AtomicU64,
    job: Mutex<Option<Job>>,
}

/// (name, index, kind) of this namespace's links.
fn links() -> Result<Vec<(String, u32, Option<String>)>, String> {
    let mut nl = Netlink::open().map_err(|e| format!("open netlink socket: {e}"))?;
    let links = nl.links().map_err(|e| format!("list links: {e}"))?;
    Ok(links.into_iter().map(|l| (l.name, l.index, l.kind)).collect())
}

/// Counts per ifindex: (requests, replies).
type Counts = BTreeMap<u32, (u32, u32)>;

/// The drop reasons of the window, or why there are none.
type Drops = Result<DropReport, String>;

fn result_json(id: u64, req: &CaptureRequest, counts: &Counts, elapsed: Duration, drops: &Drops) -> String {
    let links = links().unwrap_or_default();
    let count = |i: u32| counts.get(&i).copied().unwrap_or((0, 0));
    let ifaces: Vec<Value> = req
        .ifaces
        .iter()
        .map(|n| {
            let l = links.iter().find(|l| l.0 == *n);
            let (rq, rp) = l.map(|l| count(l.1)).unwrap_or((0, 0));
            json!({ "name": n, "index": l.map(|l| l.1), "present": l.is_some(), "requests": rq, "replies": rp })
        })
        .collect();
    let also: Vec<Value> = counts
        .iter()
        .filter_map(|(i, (rq, rp))| {
            let l = links.iter().find(|l| l.1 == *i);
            let name = l.map(|l| l.0.clone()).unwrap_or_else(|| format!("if{i}"));
            (!req.ifaces.contains(&name)).then(|| {
                json!({ "name": name, "index": i, "kind": l.and_then(|l| l.2.clone()), "requests": rq, "replies": rp })
            })
        })
        .collect();
    json!({
        "id": id,
        "duration_ms": u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
        "ifaces": ifaces,
        "also_seen": also,
        "drops": drops.as_ref().ok(),
        "drops_unavailable": drops.as_ref().err(),
    })
    .to_string()
}

impl Captures {
    /// A new, empty slot.
    pub fn new() -> Arc<Captures> {
        Arc::new(Captures::default())
    }

    /// Starts a capture: 200 with its id once the socket is open, 400 for a bad request, 409
    /// while another runs.
    pub async fn start(&self, query: Option<String>) -> Reply {
        let req = match parse_request(query.as_deref()) {
            Ok(r) => r,
            Err(e) => return Reply::text(400, format!("{e}\n")),
        };
        let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|j| j.done.borrow().is_none()) {
            return Reply::text(409, "a capture is already running; try again in a few seconds\n");
        }
        let mut cap: Capture<()> = Capture::default();
        if let Err(e) = cap.open((), None) {
            return Reply::text(500, format!("{e}\n"));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        // Removed by `finish`, or by its `Drop` should the capture thread unwind.
        let watch =
            DropWatch::start_tracking(&format!("flanneld-capture-{}-{id}", std::process::id()), &req.lens);
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = watch::channel(None);
        let (stop2, req2) = (stop.clone(), req.clone());
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let mut counts = Counts::new();
            cap.run(started + req2.duration, &|| stop2.load(Ordering::Relaxed), &mut |_, idx, frame| {
                let c = counts.entry(idx).or_default();
                match req2.matcher.frame(frame) {
                    Kind::Request => c.0 += 1,
                    Kind::Reply => c.1 += 1,
                    Kind::Other => {}
                }
            });
            drop(cap);
            let elapsed = started.elapsed();
            let drops = watch.map(|w| w.finish("the capture window"));
            counts.retain(|_, c| *c != (0, 0));
            let _ = tx.send(Some(Arc::new(result_json(id, &req2, &counts, elapsed, &drops))));
        });
        *slot = Some(Job { id, stop, done: rx });
        let ms = u64::try_from(req.duration.as_millis()).unwrap_or(MAX_MS);
        Reply::json(200, json!({ "id": id, "ms": ms, "ifaces": req.ifaces }).to_string())
    }

    /// Ends capture `id=N` (if still running) and returns what it saw; 404 for an unknown id.
    pub async fn result(&self, query: Option<String>) -> Reply {
        let id = query
            .as_deref()
            .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("id=")))
            .and_then(|v| v.parse::<u64>().ok());
        let mut rx = {
            let slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
            match slot.as_ref().filter(|j| Some(j.id) == id) {
                Some(j) => {
                    j.stop.store(true, Ordering::Relaxed);
                    j.done.clone()
                }
                None => return Reply::text(404, "no such capture\n"),
            }
        };
        let waited =
            tokio::time::timeout(Duration::from_millis(MAX_MS + 2000), rx.wait_for(Option::is_some)).await;
        let body = match waited {
            Ok(Ok(done)) => done.as_ref().map(|b| b.as_str().to_string()),
            _ => None,
        };
        match body {
            Some(b) => {
                let mut slot = self.job.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_some_and(|j| Some(j.id) == id) {
                    *slot = None;
                }
                Reply::json(200, b)
            }
            None => Reply::text(500, "the capture did not end\n"),
        }
    }
}

/// `routes` plus [`CAPTURE_PATH`] and [`RESULT_PATH`].
pub fn with_capture(routes: Routes, captures: Arc<Captures>) -> Routes {
    let c2 = captures.clone();
    routes
        .route_query(CAPTURE_PATH, move |q| {
            let c = captures.clone();
            async move { c.start(q).await }
        })
        .route_query(RESULT_PATH, move |q| {
            let c = c2.clone();
            async move { c.result(q).await }
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn requests_are_parsed_and_bounded() {
        let r = parse_request(Some(
            "if=eth0,flannel.1,cni0&proto=udp&marker=0a0b0c0d&sport=40000&dport=9&src=10.5.1.2&dst=10.5.2.3&lens=489,539,559&ms=60000",
        ))
        .unwrap();
        assert_eq!(r.lens, [489, 539, 559]);
        assert_eq!(r.ifaces, ["eth0", "flannel.1", "cni0"]);
        assert_eq!(r.matcher.proto, ProbeProto::Udp);
        assert_eq!(r.matcher.nonce, [10, 11, 12, 13]);
        assert_eq!((r.matcher.src_port, r.matcher.dst_port, r.matcher.vxlan_port), (40000, 9, 8472));
        assert_eq!(r.matcher.endpoints, Some(("10.5.1.2".parse().unwrap(), "10.5.2.3".parse().unwrap())));
        assert_eq!(r.duration, Duration::from_millis(MAX_MS), "capped server-side");
        assert_eq!(
            parse_request(Some("if=eth0&proto=icmp&marker=00000001")).unwrap().duration.as_millis(),
            2000
        );
    }

    #[test]
    fn bad_requests_name_the_parameter() {
        for (q, want) in [
            (None, "if:"),
            (Some("if=a,b,c,d,e,f,g,h,i&proto=icmp&marker=00000001"), "if:"),
            (Some("if=../../etc&proto=icmp&marker=00000001"), "if:"),
            (Some("if=averyveryverylongname&proto=icmp&marker=00000001"), "if:"),
            (Some("if=eth0&proto=sctp&marker=00000001"), "proto:"),
            (Some("if=eth0&proto=icmp&marker=xyz"), "marker:"),
            (Some("if=eth0&proto=icmp&marker=00000001&dport=70000"), "dport:"),
            (Some("if=eth0&proto=icmp&marker=00000001&src=10.0.0.1"), "src, dst"),
            (Some("if=eth0&proto=icmp&marker=00000001&ms=-1"), "ms:"),
            (Some("if=eth0&proto=icmp&marker=00000001&lens=1,2,3,4,5"), "lens:"),
            (Some("if=eth0&proto=icmp&marker=00000001&lens=70000"), "lens:"),
            (Some("if=eth0&proto=icmp&marker=00000001&lens=x"), "lens:"),
        ] {
            let e = parse_request(q).unwrap_err();
            assert!(e.starts_with(want), "{q:?}: {e}");
        }
    }

    /// A UDP probe on `lo` of a namespace private to this test thread: counted while the
    /// capture runs, one capture at a time, the result read once.
    #[tokio::test(flavor = "current_thread")]
    async fn a_capture_counts_the_probe_and_runs_one_at_a_time() {
        assert!(nix::unistd::geteuid().is_root(), "this test needs root (a private network namespace)");
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        Netlink::open().unwrap().set_up(1).unwrap();
        let c = Captures::new();
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (sport, dport) = (tx.local_addr().unwrap().port(), rx.local_addr().unwrap().port());
        let q = format!("if=lo,nosuch0&proto=udp&marker=01020304&sport={sport}&dport={dport}&ms=3000");
        let started = c.start(Some(q.clone())).await;
        assert_eq!(started.status, 200, "{}", started.body);
        let id = serde_json::from_str::<Value>(&started.body).unwrap()["id"].as_u64().unwrap();
        assert_eq!(c.start(Some(q)).await.status, 409, "one capture at a time");
        let mut payload = weft_common::capture::MARKER.to_vec();
        payload.extend_from_slice(&[1, 2, 3, 4]);
        tx.send_to(&payload, rx.local_addr().unwrap()).unwrap();
        tx.send_to(b"not the probe", rx.local_addr().unwrap()).unwrap();
        // The frame is in the socket's queue as soon as send_to returns; ending the capture
        // drains it first.
        let r = c.result(Some(format!("id={id}"))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v: Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["ifaces"][0]["name"], "lo");
        assert_eq!(v["ifaces"][0]["present"], true);
        assert!(v["ifaces"][0]["requests"].as_u64().unwrap() >= 1, "{v}");
        assert_eq!(v["ifaces"][1]["present"], false);
        assert!(v["duration_ms"].as_u64().unwrap() < MAX_MS, "ended early: {v}");
        // The window's drop reasons, or why there are none: exactly one of the two.
        assert_ne!(v["drops"].is_object(), v["drops_unavailable"].is_string(), "{v}");
        if v["drops"].is_object() {
            assert_eq!(v["drops"]["correlated"], false, "{v}");
            assert!(v["drops"]["reasons"].is_array(), "{v}");
        }
        assert_eq!(c.result(Some(format!("id={id}"))).await.status, 404, "read once");
        let bad = c.start(Some("if=lo&proto=icmp".into())).await;
        assert_eq!(bad.status, 400);
        assert!(bad.body.starts_with("marker:"), "{}", bad.body);
    }

    /// Without `-debug-dataplane` the routes are not added (404); with them, the query string
    /// reaches the handler through the router.
    #[tokio::test]
    async fn capture_is_404_without_the_routes_and_reads_the_query_with_them() {
        let get = hyper::Method::GET;
        let plain = Routes::new(crate::health::Health::new());
        let q = Some("if=lo&proto=icmp");
        assert_eq!(plain.reply_to(&get, CAPTURE_PATH, q).await.status, 404);
        assert_eq!(plain.reply_to(&get, RESULT_PATH, Some("id=1")).await.status, 404);
        let routes = with_capture(plain, Captures::new());
        let r = routes.reply_to(&get, CAPTURE_PATH, q).await;
        assert_eq!(r.status, 400);
        assert!(r.body.starts_with("marker:"), "{}", r.body);
        assert_eq!(routes.reply_to(&get, RESULT_PATH, Some("id=7")).await.status, 404);
    }
}
