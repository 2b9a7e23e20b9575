//! Names and comments of masquerade rules, byte-for-byte those of the reference plugins
//! (`containernetworking/plugins` `pkg/utils/utils.go`, `pkg/ip/ipmasq_nftables_linux.go`), so that
//! either implementation finds and removes the other's rules. Pure functions, no I/O.

use sha2::{Digest, Sha512};

/// Length of an iptables chain name made by the reference (`maxChainLength`).
const CHAIN_LEN: usize = 28;
const CHAIN_PREFIX: &str = "CNI-";
/// nftables comments are cut to this many bytes (`knftables.CommentLengthMax`).
const NFT_COMMENT_MAX: usize = 128;

/// The first `len` lowercase hex digits of SHA-512(`input`) (`MustFormatHashWithPrefix` without prefix).
fn sha512_hex(input: &str, len: usize) -> String {
    let digest = Sha512::digest(input.as_bytes());
    let mut out = String::with_capacity(len);
    for byte in digest.iter() {
        if out.len() >= len {
            break;
        }
        out.push_str(&format!("{byte:02x}"));
    }
    out.truncate(len);
    out
}

/// iptables chain of one attachment: `CNI-` + the first 24 hex digits of SHA-512(network + container ID).
/// The interface name is not part of it (reference behaviour kept for compatibility).
pub fn chain_name(network: &str, container_id: &str) -> String {
    let hash = sha512_hex(&format!("{network}{container_id}"), CHAIN_LEN - CHAIN_PREFIX.len());
    format!("{CHAIN_PREFIX}{hash}")
}

/// iptables rule comment: `name: "<network>" id: "<containerID>"` with Go `%q` quoting.
pub fn iptables_comment(network: &str, container_id: &str) -> String {
    format!("name: {} id: {}", go_quote(network), go_quote(container_id))
}

/// Go's `strconv.Quote`: `"` and `\` escaped, C escapes for the usual controls, `\xNN` for other
/// ASCII controls, `\uNNNN`/`\UNNNNNNNN` for other non-printable characters (approximated by
/// `char::is_control`; CNI names and IDs are ASCII in practice).
pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() && u32::from(c) < 0x10000 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)))
            }
            c if c.is_control() => out.push_str(&format!("\\U{:08x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// nftables hash of a network: first 16 hex digits of SHA-512(network) (`hashForNetwork`).
pub fn nft_network_hash(network: &str) -> String {
    sha512_hex(network, 16)
}

/// nftables hash of one attachment, the prefix every one of its comments starts with
/// (`hashForInstance`): `<H(network)>-<H(ifname ":" containerID)>`.
pub fn nft_instance_hash(network: &str, ifname: &str, container_id: &str) -> String {
    format!("{}-{}", nft_network_hash(network), sha512_hex(&format!("{ifname}:{container_id}"), 16))
}

/// nftables rule comment (`commentForInstance`): the instance hash, then
/// `, net: <network>, if: <ifname>, id: <containerID>` with `"` removed, cut to 128 bytes.
pub fn nft_comment(network: &str, ifname: &str, container_id: &str) -> String {
    let strip = |s: &str| s.replace('"', "");
    let mut comment = format!(
        "{}, net: {}, if: {}, id: {}",
        nft_instance_hash(network, ifname, container_id),
        strip(network),
        strip(ifname),
        strip(container_id)
    );
    if comment.len() > NFT_COMMENT_MAX {
        // Go cuts bytes; we cut at the last char boundary at or below the limit so the string stays
        // valid UTF-8 (identical for the ASCII names CNI allows).
        let mut cut = NFT_COMMENT_MAX;
        while !comment.is_char_boundary(cut) {
            cut -= 1;
        }
        comment.truncate(cut);
    }
    comment
}

#[cfg(test)]
mod tests {
    use super::*;

    // Known values computed independently with `printf '%s' … | sha512sum`.
    #[test]
    fn chain_name_matches_reference_doc_example() {
        assert_eq!(chain_name("cbr0", "ctr1"), "CNI-9cccacf967e00a3c04e26966");
        assert_eq!(chain_name("cbr0", "ctr1").len(), 28);
    }

    #[test]
    fn iptables_comment_uses_go_quoting() {
        assert_eq!(iptables_comment("cbr0", "ctr1"), r#"name: "cbr0" id: "ctr1""#);
        assert_eq!(go_quote("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\x01""#);
        assert_eq!(go_quote("é"), "\"é\"");
    }

    #[test]
    fn nft_hashes_and_comment() {
        assert_eq!(nft_network_hash("cbr0"), "cb6e746fae1a4d6c");
        let inst = nft_instance_hash("cbr0", "eth0", "ctr1");
        assert_eq!(inst, "cb6e746fae1a4d6c-7883a6f9ce71eedb");
        assert_eq!(nft_comment("cbr0", "eth0", "ctr1"), format!("{inst}, net: cbr0, if: eth0, id: ctr1"));
        let quoted = nft_comment("c\"br0", "eth0", "ctr1");
        assert!(quoted.ends_with(", net: cbr0, if: eth0, id: ctr1"), "{quoted}");
        let long = "x".repeat(300);
        let c = nft_comment("cbr0", "eth0", &long);
        assert_eq!(c.len(), 128);
        assert!(c.starts_with(&nft_instance_hash("cbr0", "eth0", &long)));
    }
}
