//! Files flanneld keeps on the node: `subnet.env` (written in upstream's exact format, read
//! back leniently for the previous subnet, docs/flannel.md §10) and the persisted VTEP MAC
//! (`<subnet-file dir>/weft-vtep-mac`) that keeps the published `VtepMAC` stable across
//! restarts, so peers need no FDB update when we come back.

use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use ipnetwork::{IpNetwork, Ipv4Network};
use weft_common::flannel::SubnetEnv;
use weft_common::fs::write_atomic;
use weft_dataplane::Mac;

use crate::lease::{format_mac, parse_mac};

/// File name of the persisted MAC, next to the subnet file.
pub const MAC_FILE_NAME: &str = "weft-vtep-mac";

/// `FLANNEL_SUBNET` of an existing subnet file, as a network (`10.5.72.1/24` → `10.5.72.0/24`).
/// Lenient like upstream's dotenv reading: comments, `export`, quotes and spaces are tolerated;
/// a value with several comma-separated entries is ignored; anything unreadable is `None`.
pub fn read_previous_subnet(path: &Path) -> Option<Ipv4Network> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_previous_subnet(&text)
}

/// The pure part of [`read_previous_subnet`].
pub fn parse_previous_subnet(text: &str) -> Option<Ipv4Network> {
    let mut found = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else { continue };
        if key.trim() != "FLANNEL_SUBNET" {
            continue;
        }
        let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
        if value.contains(',') {
            return None;
        }
        found =
            value.parse::<Ipv4Network>().ok().and_then(|n| Ipv4Network::new(n.network(), n.prefix()).ok());
    }
    found
}

fn ensure_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::DirBuilder::new().recursive(true).mode(0o755).create(dir)
        }
        _ => Ok(()),
    }
}

/// The exact subnet.env text for our lease.
pub fn render_subnet_env(network: Ipv4Network, subnet: Ipv4Network, mtu: u32, ip_masq: bool) -> String {
    // FLANNEL_SUBNET is the first host address with the subnet's prefix (§10.1).
    let first = Ipv4Addr::from(u32::from(subnet.network()).saturating_add(1));
    let env = SubnetEnv {
        networks: vec![IpNetwork::V4(network)],
        subnet: Ipv4Network::new(first, subnet.prefix()).ok().map(IpNetwork::V4),
        mtu,
        ipmasq: ip_masq,
        ..SubnetEnv::default()
    };
    env.render()
}

/// Writes subnet.env atomically, mode 0644, creating its directory (0755).
pub fn write_subnet_env(path: &Path, text: &str) -> io::Result<()> {
    ensure_parent(path)?;
    write_atomic(path, text.as_bytes(), 0o644)
}

/// Where the VTEP MAC is kept for a given subnet file.
pub fn mac_file_for(subnet_file: &Path) -> PathBuf {
    subnet_file.parent().unwrap_or(Path::new(".")).join(MAC_FILE_NAME)
}

/// The persisted MAC, or a new random locally administered unicast MAC (persisted).
pub fn load_or_create_mac(path: &Path) -> io::Result<Mac> {
    if let Ok(text) = std::fs::read_to_string(path) {
        if let Some(mac) = parse_mac(text.trim()) {
            return Ok(mac);
        }
        tracing::warn!(path = %path.display(), "ignoring unreadable persisted VTEP MAC");
    }
    let mac = weft_common::mac::random_local_mac();
    save_mac(path, &mac)?;
    Ok(mac)
}

/// Persists `mac`.
pub fn save_mac(path: &Path, mac: &Mac) -> io::Result<()> {
    ensure_parent(path)?;
    write_atomic(path, format!("{}\n", format_mac(mac)).as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previous_subnet_is_lenient() {
        let n = |s: &str| Some(s.parse::<Ipv4Network>().unwrap());
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=10.5.72.1/24\n"), n("10.5.72.0/24"));
        assert_eq!(parse_previous_subnet("# c\nexport FLANNEL_SUBNET=\"10.5.72.1/24\"\n"), n("10.5.72.0/24"));
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=10.5.72.1/24,10.5.73.1/24\n"), None);
        assert_eq!(parse_previous_subnet("FLANNEL_SUBNET=junk\n"), None);
        assert_eq!(parse_previous_subnet(""), None);
    }

    #[test]
    fn subnet_env_exact_and_mac_persisted() {
        let text =
            render_subnet_env("10.5.0.0/16".parse().unwrap(), "10.5.72.0/24".parse().unwrap(), 1450, false);
        assert_eq!(text, "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/flannel/subnet.env");
        write_subnet_env(&path, &text).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        let mac_path = mac_file_for(&path);
        let mac = load_or_create_mac(&mac_path).unwrap();
        assert_eq!(mac[0] & 0x03, 0x02);
        assert_eq!(load_or_create_mac(&mac_path).unwrap(), mac);
    }
}
