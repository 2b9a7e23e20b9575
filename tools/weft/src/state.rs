//! The on-disk state an attachment should have come from: the libcni/cnitool result cache
//! (`<cacheDir>/results/<network>-<containerID>-<ifname>`, libcni `cniCacheV1`), host-local's
//! reservations (`<dataDir>/<network>/<ip>` holding `<containerID>\r\n<ifname>`, as upstream
//! `plugins/ipam/host-local/backend/disk/backend.go` writes them) and flanneld's `subnet.env`.
//! Read only.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use base64::Engine;
use ipnetwork::IpNetwork;
use serde::Serialize;
use serde_json::Value;

/// One result-cache file.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    /// `netns` (libcni ≥ 1.2 and weft's cnitool write it).
    pub netns: Option<String>,
    /// Addresses of the cached result.
    pub ips: Vec<IpNetwork>,
    /// The network list the attachment was made with (decoded `config`).
    #[serde(skip)]
    pub config: Option<Value>,
}

/// One host-local reservation file.
#[derive(Debug, Clone, Serialize)]
pub struct Reservation {
    pub path: PathBuf,
    pub network: String,
    pub ip: IpAddr,
    pub container_id: String,
    /// Empty for legacy files holding only the container ID.
    pub ifname: String,
}

/// Reads every cache file under `<cache_dir>/results`; unreadable or foreign files are
/// reported in `errors` and skipped. A missing directory is no attachment, not an error.
pub fn read_cache(cache_dir: &Path, errors: &mut Vec<String>) -> Vec<CacheEntry> {
    let dir = cache_dir.join("results");
    let Ok(rd) = std::fs::read_dir(&dir) else { return Vec::new() };
    let mut out = Vec::new();
    for e in rd.flatten() {
        let path = e.path();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(err) => {
                errors.push(format!("read cache file {}: {err}", path.display()));
                continue;
            }
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            errors.push(format!("cache file {} is not JSON", path.display()));
            continue;
        };
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        if v.get("kind").and_then(Value::as_str) != Some("cniCacheV1") {
            errors.push(format!("cache file {} is not a cniCacheV1 entry", path.display()));
            continue;
        }
        let config = v
            .get("config")
            .and_then(Value::as_str)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        out.push(CacheEntry {
            container_id: s("containerId"),
            ifname: s("ifName"),
            network: s("networkName"),
            netns: Some(s("netns")).filter(|n| !n.is_empty()),
            ips: v.get("result").map(result_ips).unwrap_or_default(),
            config,
            path,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The addresses of a CNI result of any version (`ips[].address`, or 0.2.0's `ip4.ip`).
pub fn result_ips(result: &Value) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    if let Some(ips) = result.get("ips").and_then(Value::as_array) {
        for ip in ips {
            if let Some(a) = ip.get("address").and_then(Value::as_str).and_then(|a| a.parse().ok()) {
                out.push(a);
            }
        }
    }
    for k in ["ip4", "ip6"] {
        if let Some(a) =
            result.pointer(&format!("/{k}/ip")).and_then(Value::as_str).and_then(|a| a.parse().ok())
        {
            out.push(a);
        }
    }
    out
}

/// Reads every reservation under `<data_dir>/<network>/` (files named by an address).
pub fn read_reservations(data_dir: &Path, errors: &mut Vec<String>) -> Vec<Reservation> {
    let Ok(nets) = std::fs::read_dir(data_dir) else { return Vec::new() };
    let mut out = Vec::new();
    for net in nets.flatten() {
        if !net.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            continue;
        }
        let network = net.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(net.path()) else { continue };
        for f in files.flatten() {
            let name = f.file_name().to_string_lossy().replace('_', ":");
            let Ok(ip) = name.parse::<IpAddr>() else { continue };
            let path = f.path();
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let mut lines = text.split("\r\n");
                    let container_id = lines.next().unwrap_or("").trim().to_string();
                    let ifname = lines.next().unwrap_or("").trim().to_string();
                    out.push(Reservation { path, network: network.clone(), ip, container_id, ifname });
                }
                Err(e) => errors.push(format!("read reservation {}: {e}", path.display())),
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// Whether the attachment's chain asked for hairpin mode on the port: the `bridge` plugin's
/// `hairpinMode`, or the `flannel` plugin's `delegate.hairpinMode` (kube-flannel's conflist
/// sets it; the flannel plugin passes the delegate through).
pub fn bridge_hairpin(config: &Value) -> bool {
    let plugins =
        config.get("plugins").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![config.clone()]);
    for p in &plugins {
        match p.get("type").and_then(Value::as_str) {
            Some("bridge") => return p.get("hairpinMode").and_then(Value::as_bool).unwrap_or(false),
            Some("flannel") => {
                return p.pointer("/delegate/hairpinMode").and_then(Value::as_bool).unwrap_or(false)
            }
            _ => {}
        }
    }
    false
}

/// Whether the attachment's chain asked the bridge to masquerade: the `bridge` plugin's
/// `ipMasq`, or for the `flannel` plugin its delegate's `ipMasq`, which defaults to
/// `!FLANNEL_IPMASQ` (flannel-io/cni-plugin `flannel_linux.go`: with flanneld masquerading,
/// the bridge must not).
pub fn bridge_ipmasq(config: &Value, flanneld_ipmasq: bool) -> bool {
    let plugins =
        config.get("plugins").and_then(Value::as_array).cloned().unwrap_or_else(|| vec![config.clone()]);
    for p in &plugins {
        match p.get("type").and_then(Value::as_str) {
            Some("bridge") => return p.get("ipMasq").and_then(Value::as_bool).unwrap_or(false),
            Some("flannel") => {
                return p.pointer("/delegate/ipMasq").and_then(Value::as_bool).unwrap_or(!flanneld_ipmasq)
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_in_the_reference_layout() {
        let d = tempfile::tempdir().unwrap();
        let net = d.path().join("cbr0");
        std::fs::create_dir(&net).unwrap();
        std::fs::write(net.join("10.244.1.2"), "ctr1\r\neth0").unwrap();
        std::fs::write(net.join("10.244.1.3"), "legacy-ctr").unwrap();
        std::fs::write(net.join("fd00:5::ab"), "ctr6\r\neth0").unwrap();
        std::fs::write(net.join("last_reserved_ip.0"), "10.244.1.3").unwrap();
        std::fs::write(net.join("lock"), "").unwrap();
        let mut errors = Vec::new();
        let r = read_reservations(d.path(), &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
        let got: Vec<(String, String, String)> =
            r.iter().map(|r| (r.ip.to_string(), r.container_id.clone(), r.ifname.clone())).collect();
        assert_eq!(
            got,
            [
                ("10.244.1.2".into(), "ctr1".into(), "eth0".into()),
                ("10.244.1.3".into(), "legacy-ctr".into(), String::new()),
                ("fd00:5::ab".into(), "ctr6".into(), "eth0".into())
            ]
        );
    }

    #[test]
    fn cache_entries_and_their_config() {
        let d = tempfile::tempdir().unwrap();
        let res = d.path().join("results");
        std::fs::create_dir(&res).unwrap();
        let conf = r#"{"name":"cbr0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true}}]}"#;
        let b64 = base64::engine::general_purpose::STANDARD.encode(conf);
        let entry = serde_json::json!({"kind":"cniCacheV1","containerId":"c1","config":b64,"ifName":"eth0",
            "networkName":"cbr0","netns":"/run/netns/p1",
            "result":{"cniVersion":"0.3.1","ips":[{"version":"4","address":"10.244.1.2/24"}]}});
        std::fs::write(res.join("cbr0-c1-eth0"), entry.to_string()).unwrap();
        std::fs::write(res.join("junk"), "not json").unwrap();
        let mut errors = Vec::new();
        let c = read_cache(d.path(), &mut errors);
        assert_eq!(errors.len(), 1, "the junk file is reported: {errors:?}");
        assert_eq!(c.len(), 1);
        assert_eq!((c[0].container_id.as_str(), c[0].netns.as_deref()), ("c1", Some("/run/netns/p1")));
        assert_eq!(c[0].ips, vec!["10.244.1.2/24".parse::<IpNetwork>().unwrap()]);
        let config = c[0].config.as_ref().unwrap();
        assert!(bridge_ipmasq(config, false), "flannel's delegate masquerades when flanneld does not");
        assert!(!bridge_ipmasq(config, true));
        assert!(bridge_ipmasq(&serde_json::json!({"type":"bridge","ipMasq":true}), true));
        assert!(bridge_hairpin(config));
        assert!(!bridge_hairpin(&serde_json::json!({"type":"bridge"})));
    }
}
