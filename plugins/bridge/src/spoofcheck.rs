//! `macspoofchk` (docs/cni.md §7.5): an nftables filter in `table bridge nat` that
//! drops frames entering the bridge from the container's host veth unless their source MAC
//! is the container's. Same table, chain, rule and comment names as the reference, so either
//! implementation removes the other's rules. Written with one `nft -f -` transaction; the
//! teardown reads the table once (JSON) to find its rules.

use serde_json::Value;
use weft_common::process;

use crate::error::Error;

const TABLE: &str = "nat";
const BASE_CHAIN: &str = "PREROUTING";

/// The attachment's identifier in chain names and comments: `<containerID>-<ifname>`.
fn ref_id(container_id: &str, ifname: &str) -> String {
    format!("{container_id}-{ifname}")
}

fn iface_chain(id: &str) -> String {
    format!("cni-br-iface-{id}")
}

fn mac_chain(id: &str) -> String {
    format!("cni-br-iface-{id}-mac")
}

fn comment(id: &str) -> String {
    format!("macspoofchk-{id}")
}

/// The setup transaction (pure, for tests).
pub fn plan_setup(container_id: &str, ifname: &str, host_veth: &str, mac: &str) -> String {
    let id = ref_id(container_id, ifname);
    let (iface, macc, c) = (iface_chain(&id), mac_chain(&id), comment(&id));
    format!(
        "add table bridge {TABLE}\n\
         add chain bridge {TABLE} {BASE_CHAIN} {{ type filter hook prerouting priority -300; policy accept; }}\n\
         add chain bridge {TABLE} {iface}\n\
         add chain bridge {TABLE} {macc}\n\
         flush chain bridge {TABLE} {iface}\n\
         flush chain bridge {TABLE} {macc}\n\
         add rule bridge {TABLE} {BASE_CHAIN} iifname \"{host_veth}\" jump {iface} comment \"{c}\"\n\
         add rule bridge {TABLE} {iface} jump {macc} comment \"{c}\"\n\
         add rule bridge {TABLE} {macc} ether saddr {mac} return comment \"{c}\"\n\
         add rule bridge {TABLE} {macc} drop comment \"{c}\"\n"
    )
}

/// The teardown transaction for what `listing` (`nft -j list table bridge nat`) shows of
/// this attachment; `None` when nothing of it is there.
pub fn plan_teardown(container_id: &str, ifname: &str, listing: &Value) -> Option<String> {
    let id = ref_id(container_id, ifname);
    let (iface, macc, c) = (iface_chain(&id), mac_chain(&id), comment(&id));
    let items = listing.get("nftables").and_then(Value::as_array)?;
    let mut script = String::new();
    let mut chains = Vec::new();
    for item in items {
        if let Some(rule) = item.get("rule") {
            let in_base = rule.get("chain").and_then(Value::as_str) == Some(BASE_CHAIN);
            if in_base && rule.get("comment").and_then(Value::as_str) == Some(c.as_str()) {
                if let Some(h) = rule.get("handle").and_then(Value::as_u64) {
                    script.push_str(&format!("delete rule bridge {TABLE} {BASE_CHAIN} handle {h}\n"));
                }
            }
        }
        if let Some(name) = item.get("chain").and_then(|ch| ch.get("name")).and_then(Value::as_str) {
            chains.push(name.to_string());
        }
    }
    // The interface chain jumps to the MAC chain: flush and delete it first.
    for chain in [&iface, &macc] {
        if chains.contains(chain) {
            script.push_str(&format!(
                "flush chain bridge {TABLE} {chain}\ndelete chain bridge {TABLE} {chain}\n"
            ));
        }
    }
    Some(script).filter(|s| !s.is_empty())
}

/// Installs the filter for the attachment.
pub fn setup(container_id: &str, ifname: &str, host_veth: &str, mac: &str) -> Result<(), Error> {
    process::run("nft", &["-f", "-"], &plan_setup(container_id, ifname, host_veth, mac))
        .map(|_| ())
        .map_err(|e| Error::Internal(format!("failed to set up macspoofchk: {e}")))
}

/// Removes the attachment's filter; absent table, chains or rules are fine.
pub fn teardown(container_id: &str, ifname: &str) -> Result<(), Error> {
    let listing = match process::run("nft", &["-j", "list", "table", "bridge", TABLE], "") {
        Ok(text) => serde_json::from_str::<Value>(&text)
            .map_err(|e| Error::Internal(format!("failed to parse nft listing: {e}")))?,
        // No such table: nothing to remove.
        Err(_) => return Ok(()),
    };
    match plan_teardown(container_id, ifname, &listing) {
        None => Ok(()),
        Some(script) => process::run("nft", &["-f", "-"], &script)
            .map(|_| ())
            .map_err(|e| Error::Internal(format!("failed to tear down macspoofchk: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn setup_uses_reference_names() {
        let s = plan_setup("c1", "eth0", "veth12345678", "0a:58:00:00:00:01");
        assert!(s.contains("add rule bridge nat PREROUTING iifname \"veth12345678\" jump cni-br-iface-c1-eth0 comment \"macspoofchk-c1-eth0\""));
        assert!(s.contains("cni-br-iface-c1-eth0-mac ether saddr 0a:58:00:00:00:01 return"));
        assert!(s.contains("priority -300"));
    }

    #[test]
    fn teardown_deletes_only_this_attachment() {
        let listing = json!({"nftables": [
            {"chain": {"family": "bridge", "table": "nat", "name": "PREROUTING"}},
            {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-c1-eth0"}},
            {"chain": {"family": "bridge", "table": "nat", "name": "cni-br-iface-c1-eth0-mac"}},
            {"rule": {"chain": "PREROUTING", "handle": 4, "comment": "macspoofchk-c1-eth0"}},
            {"rule": {"chain": "PREROUTING", "handle": 9, "comment": "macspoofchk-c2-eth0"}}
        ]});
        let s = plan_teardown("c1", "eth0", &listing).unwrap();
        assert!(s.contains("delete rule bridge nat PREROUTING handle 4\n"));
        assert!(!s.contains("handle 9"));
        let iface = s.find("delete chain bridge nat cni-br-iface-c1-eth0\n").unwrap();
        let mac = s.find("delete chain bridge nat cni-br-iface-c1-eth0-mac\n").unwrap();
        assert!(iface < mac);
        assert_eq!(plan_teardown("c3", "eth0", &listing), None);
    }
}
