//! Reading and writing sysctls through `/proc/sys` of the calling thread's namespace.
//!
//! `/proc/sys/net` follows the namespace of the process that opened it, so call these
//! inside a [`crate::netns::NetnsGuard`] for another namespace's values.

use std::path::PathBuf;

fn path(key: &str) -> PathBuf {
    if key.contains('/') {
        PathBuf::from("/proc/sys").join(key)
    } else {
        PathBuf::from("/proc/sys").join(key.replace('.', "/"))
    }
}

/// Reads `key` (dotted or slashed, e.g. `net.ipv4.ip_forward`), trimmed.
pub fn get(key: &str) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path(key))?.trim().to_string())
}

/// Writes `value` to `key` unless it already has that value.
pub fn set(key: &str, value: &str) -> std::io::Result<()> {
    if get(key).map(|v| v == value).unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(path(key), value)
}

/// A sysctl key for an interface: `net.<family>.conf.<ifname>.<leaf>`. Interface names
/// may contain dots, so the key is built as a path, not split on dots.
pub fn iface_key(family: &str, ifname: &str, leaf: &str) -> String {
    format!("net/{family}/conf/{ifname}/{leaf}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_with_dots_in_ifname() {
        assert_eq!(
            path(&iface_key("ipv6", "cni0.100", "accept_ra")),
            PathBuf::from("/proc/sys/net/ipv6/conf/cni0.100/accept_ra")
        );
        assert_eq!(path("net.ipv4.ip_forward"), PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
    }
}
