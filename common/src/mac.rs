//! MAC addresses: the one text form (parse and format) and random local addresses, for every
//! weft crate (the plugins' `mac`/`MAC=` arguments, rtnetlink, flanneld's `VtepMAC`).

/// Formats a hardware address as lowercase colon-separated hex (`0a:58:0a:f4:01:02`), as Go's
/// `net.HardwareAddr.String` does.
pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Parses a 6-octet MAC as Go's `net.ParseMAC` does for that length: two hex digits per octet
/// (either case), separated by `:` or `-` (one kind throughout). `None` otherwise.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let sep = if text.contains('-') { '-' } else { ':' };
    let mut out = [0u8; 6];
    let mut parts = text.split(sep);
    for slot in &mut out {
        let p = parts.next()?;
        if p.len() != 2 || !p.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        *slot = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A random locally administered unicast MAC (first octet: bit 0 clear, bit 1 set), like the
/// kernel's random addresses.
pub fn random_local_mac() -> [u8; 6] {
    let mut mac: [u8; 6] = rand::random();
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_round_trips_and_bad_forms_are_refused() {
        let mac = parse_mac("0A:58:0a:f4:01:02").unwrap();
        assert_eq!(mac, [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x02]);
        assert_eq!(format_mac(&mac), "0a:58:0a:f4:01:02");
        assert_eq!(parse_mac("0a-58-0A-f4-01-02"), Some(mac));
        for bad in [
            "",
            "0a:58:0a:f4:01",
            "0a:58:0a:f4:01:02:03",
            "0a:58:0a:f4:01:zz",
            "a:58:0a:f4:01:02",
            "0a-58:0a:f4:01:02",
            "+a:58:0a:f4:01:02",
        ] {
            assert!(parse_mac(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn random_macs_are_local_unicast() {
        for _ in 0..64 {
            let m = random_local_mac();
            assert_eq!(m[0] & 0x03, 0x02, "{}", format_mac(&m));
        }
    }
}
