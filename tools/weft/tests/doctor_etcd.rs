//! `weft doctor` reads etcd exactly as flanneld does (no root): a real etcd on 127.0.0.1 that
//! requires client certificates, reached through flanneld's `FLANNELD_ETCD_*` variables or its
//! single-dash flags; without the certificates it cannot read etcd (exit 2, naming it). The
//! leases' nodes have no endpoint, so each is `REMOTE_VIEW_UNAVAILABLE` (exit 1).
#![allow(clippy::unwrap_used)]

// flanneld's own etcd test helper (TLS certificates made with openssl), not all of it used here.
#[allow(dead_code)]
#[path = "../../../flanneld/tests/common/etcd.rs"]
mod etcd;

use std::process::Command;

use serde_json::Value;

const PREFIX: &str = "/coreos.com/network";

fn lease(ip: &str, mac: &str) -> String {
    format!(
        r#"{{"PublicIP":"{ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}"#
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn doctor_reads_a_tls_etcd_with_flanneld_flags_and_variables() {
    let etcd = etcd::Etcd::start_tls().await;
    let (ca, cert, key) = etcd.tls_files().unwrap();
    let mut client = etcd.client().await;
    client
        .put(format!("{PREFIX}/config"), r#"{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}"#, None)
        .await
        .unwrap();
    client
        .put(format!("{PREFIX}/subnets/10.5.1.0-24"), lease("127.0.0.21", "0e:00:00:00:00:01"), None)
        .await
        .unwrap();
    client
        .put(format!("{PREFIX}/subnets/10.5.2.0-24"), lease("127.0.0.22", "0e:00:00:00:00:02"), None)
        .await
        .unwrap();
    let port = free_port().to_string();
    let weft = env!("CARGO_BIN_EXE_weft");
    let (ca, cert, key) = (ca.display().to_string(), cert.display().to_string(), key.display().to_string());

    // flanneld's environment variables.
    let out = Command::new(weft)
        .args(["doctor", "--json", "--timeout-ms=500", "--healthz-port", &port])
        .env("FLANNELD_ETCD_ENDPOINTS", etcd.endpoint())
        .env("FLANNELD_ETCD_CAFILE", &ca)
        .env("FLANNELD_ETCD_CERTFILE", &cert)
        .env("FLANNELD_ETCD_KEYFILE", &key)
        .env("FLANNELD_ETCD_USERNAME", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["healthy"], false);
    let subnets: Vec<&str> =
        v["nodes"].as_array().unwrap().iter().filter_map(|n| n["subnet"].as_str()).collect();
    assert_eq!(subnets, ["10.5.1.0/24", "10.5.2.0/24"]);
    let f = &v["findings"][0];
    assert_eq!(f["cause"], "REMOTE_VIEW_UNAVAILABLE");
    assert_eq!(f["nodes"], serde_json::json!(["127.0.0.21", "127.0.0.22"]));
    assert!(
        f["objects"][0].as_str().unwrap().contains(&format!("http://127.0.0.21:{port}/debug/dataplane")),
        "{f}"
    );

    // flanneld's single-dash flags.
    let out = Command::new(weft)
        .args(["doctor", "--timeout-ms=500", "--healthz-port", &port])
        .args([format!("-etcd-endpoints={}", etcd.endpoint()), format!("-etcd-cafile={ca}")])
        .args(["-etcd-certfile", &cert, "-etcd-keyfile", &key])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("REMOTE_VIEW_UNAVAILABLE"));

    // Without the client certificate etcd refuses: exit 2, naming what could not be read.
    let out = Command::new(weft)
        .args(["doctor", "-etcd-endpoints", &etcd.endpoint(), "-etcd-cafile", &ca])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("cannot read etcd at {}", etcd.endpoint())), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
