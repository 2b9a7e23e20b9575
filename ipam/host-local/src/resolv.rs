//! `resolvConf`: a resolv.conf-style file read into the result's `dns` (docs/cni.md §8.1).

use std::path::Path;

use weft_common::cni::Dns;

/// Parses resolv.conf text: `nameserver X` appends, `domain X` sets, `search`/`options` append
/// every word. Blank lines, comments (`#`, `;`) and lines with fewer than two words are skipped.
pub fn parse_resolv(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some((key, rest)) = words.split_first() else { continue };
        if rest.is_empty() {
            continue;
        }
        let owned = || rest.iter().map(|w| (*w).to_string());
        let first = rest.first().map(|w| (*w).to_string()).unwrap_or_default();
        match *key {
            // Only the first word, as the reference does.
            "nameserver" => dns.nameservers.push(first),
            "domain" => dns.domain = first,
            "search" => dns.search.extend(owned()),
            "options" => dns.options.extend(owned()),
            _ => {}
        }
    }
    dns
}

/// Reads and parses the file at `path`.
pub fn read_resolv(path: &Path) -> std::io::Result<Dns> {
    std::fs::read_to_string(path).map(|t| parse_resolv(&t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_like_the_reference() {
        let dns = parse_resolv(
            "# comment\n; other\n\nnameserver 10.0.0.10\nnameserver   10.0.0.11 extra\ndomain ex.com\n\
             search a.svc b.svc\noptions ndots:5\nsearch c.svc\nlonely\nsortlist 1.2.3.4\n",
        );
        assert_eq!(dns.nameservers, ["10.0.0.10", "10.0.0.11"]);
        assert_eq!(dns.domain, "ex.com");
        assert_eq!(dns.search, ["a.svc", "b.svc", "c.svc"]);
        assert_eq!(dns.options, ["ndots:5"]);
        assert!(parse_resolv("").is_empty());
    }
}
