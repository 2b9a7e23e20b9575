//! CNI spec versions: parsing, ordering and the list every weft plugin supports.

use std::fmt;

use super::error::CniError;

/// The versions every weft plugin accepts, oldest first (reference skel v1.3.0 lists the same).
pub const SUPPORTED: [&str; 7] = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The library's own version, printed by VERSION and used internally for results.
pub const CURRENT: &str = "1.1.0";

/// A parsed `major.minor.patch` spec version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub u16, pub u16, pub u16);

impl Version {
    pub const V0_1_0: Version = Version(0, 1, 0);
    pub const V0_2_0: Version = Version(0, 2, 0);
    pub const V0_3_0: Version = Version(0, 3, 0);
    pub const V0_4_0: Version = Version(0, 4, 0);
    pub const V1_0_0: Version = Version(1, 0, 0);
    pub const V1_1_0: Version = Version(1, 1, 0);

    /// Parses `a.b.c` (each part a plain decimal number).
    pub fn parse(text: &str) -> Option<Version> {
        let mut parts = text.split('.');
        let mut next = || -> Option<u16> {
            let p = parts.next()?;
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            p.parse().ok()
        };
        let v = Version(next()?, next()?, next()?);
        if parts.next().is_some() {
            return None;
        }
        Some(v)
    }

    /// Result layout family: `0.1.0`/`0.2.0` (ip4/ip6), `0.3.x`/`0.4.0` (ips with version), 1.x.
    pub fn is_legacy_020(self) -> bool {
        self < Version::V0_3_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.0, self.1, self.2)
    }
}

/// Checks that `requested` (the config's `cniVersion`, `"0.1.0"` when absent) is one of
/// [`SUPPORTED`] by exact string match, as the reference skel does.
pub fn check_supported(requested: &str) -> Result<Version, CniError> {
    if !SUPPORTED.contains(&requested) {
        return Err(CniError::incompatible_version(requested));
    }
    Version::parse(requested).ok_or_else(|| CniError::incompatible_version(requested))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders() {
        assert!(Version::parse("0.3.1").unwrap() < Version::parse("0.4.0").unwrap());
        assert!(Version::parse("1.1.0").unwrap() > Version::V1_0_0);
        assert_eq!(Version::parse("1.0"), None);
        assert_eq!(Version::parse("1.0.0.0"), None);
        assert_eq!(Version::parse("1.x.0"), None);
        assert_eq!(Version::parse("+1.0.0"), None);
        assert_eq!(Version::parse("").map(|v| v.to_string()), None);
    }

    #[test]
    fn supported_is_exact_match() {
        assert!(check_supported("0.3.1").is_ok());
        assert_eq!(check_supported("0.3.2").unwrap_err().code, 1);
        assert_eq!(check_supported("1.0").unwrap_err().code, 1);
    }
}
