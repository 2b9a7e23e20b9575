//! Validated address ranges and range sets, and the order in which a set's addresses are tried.
//!
//! Pure: no I/O. A [`Range`] is `[start, end]` inside `subnet` with a `gateway` that is never
//! handed out; a [`RangeSet`] is one or more ranges of one family from which exactly one address
//! is allocated per ADD (docs/cni.md §8.1, §8.5).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;

/// One validated range (defaults already applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet, host bits zero.
    pub subnet: IpNetwork,
    /// First allocatable address (inclusive).
    pub start: IpAddr,
    /// Last allocatable address (inclusive).
    pub end: IpAddr,
    /// Reported in results and skipped during allocation.
    pub gateway: IpAddr,
}

impl Range {
    /// True when `ip` (canonical form) is in the subnet and within `[start, end]`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        same_family(ip, self.start) && self.subnet.contains(ip) && self.start <= ip && ip <= self.end
    }

    /// True when the two `[start, end]` intervals share an address (reference `Range.Overlaps`).
    pub fn overlaps(&self, other: &Range) -> bool {
        same_family(self.start, other.start) && self.start <= other.end && other.start <= self.end
    }

    /// `ip` with this range's prefix length, as results carry it (`10.1.2.5/24`).
    pub fn address(&self, ip: IpAddr) -> Option<IpNetwork> {
        IpNetwork::new(ip, self.subnet.prefix()).ok()
    }
}

impl fmt::Display for Range {
    /// `start-end`, the reference's text in error messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// One or more ranges of one address family; one address is allocated from each set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeSet {
    pub ranges: Vec<Range>,
}

impl RangeSet {
    /// True when some range of the set contains `ip`.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.range_of(ip).is_some()
    }

    /// The range containing `ip`.
    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        self.ranges.iter().find(|r| r.contains(ip))
    }

    /// True for an IPv4 set.
    pub fn is_ipv4(&self) -> bool {
        self.ranges.first().map(|r| r.start.is_ipv4()).unwrap_or(false)
    }

    /// True when any range of `self` overlaps any range of `other`.
    pub fn overlaps(&self, other: &RangeSet) -> bool {
        self.ranges.iter().any(|a| other.ranges.iter().any(|b| a.overlaps(b)))
    }

    /// Every address of the set exactly once, gateways excluded, in the reference's order:
    /// starting just after `last` (when it lies in the set) and ending with `last` itself, so a
    /// released address is reused only after the whole set has been cycled; otherwise from the
    /// first range's start. Lazy: an IPv6 /64 costs nothing until walked.
    pub fn candidates(&self, last: Option<IpAddr>) -> Candidates<'_> {
        let mut segments = Vec::new();
        let n = self.ranges.len();
        let found = last.and_then(|ip| self.ranges.iter().position(|r| r.contains(ip)).map(|i| (i, ip)));
        match found {
            Some((k, last)) => {
                let (lo, hi, l) = (self.lo(k), self.hi(k), to_u128(last));
                if l < hi {
                    segments.push((k, l + 1, hi));
                }
                for step in 1..n {
                    let i = (k + step) % n;
                    segments.push((i, self.lo(i), self.hi(i)));
                }
                segments.push((k, lo, l));
            }
            None => segments.extend((0..n).map(|i| (i, self.lo(i), self.hi(i)))),
        }
        segments.reverse();
        Candidates { set: self, segments, current: None }
    }

    fn lo(&self, i: usize) -> u128 {
        self.ranges.get(i).map(|r| to_u128(r.start)).unwrap_or(1)
    }

    fn hi(&self, i: usize) -> u128 {
        self.ranges.get(i).map(|r| to_u128(r.end)).unwrap_or(0)
    }
}

impl fmt::Display for RangeSet {
    /// Ranges as `start-end` joined by `,` (reference `RangeSet.String`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

/// Iterator over a set's candidate addresses: `(range index, address)`.
pub struct Candidates<'a> {
    set: &'a RangeSet,
    /// Remaining `(range, lo, hi)` segments, last one first (popped from the end).
    segments: Vec<(usize, u128, u128)>,
    current: Option<(usize, std::ops::RangeInclusive<u128>)>,
}

impl Iterator for Candidates<'_> {
    type Item = (usize, IpAddr);

    fn next(&mut self) -> Option<(usize, IpAddr)> {
        loop {
            if let Some((idx, iter)) = &mut self.current {
                let idx = *idx;
                if let Some(v) = iter.next() {
                    let Some(range) = self.set.ranges.get(idx) else { continue };
                    let Some(ip) = from_u128(v, range.start.is_ipv4()) else { continue };
                    if ip != range.gateway {
                        return Some((idx, ip));
                    }
                    continue;
                }
            }
            let (idx, lo, hi) = self.segments.pop()?;
            self.current = Some((idx, lo..=hi));
        }
    }
}

/// True when both addresses are of one family.
pub fn same_family(a: IpAddr, b: IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// The address as an integer (IPv4 in the low 32 bits).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The inverse of [`to_u128`]; `None` when `v` does not fit the family.
pub fn from_u128(v: u128, v4: bool) -> Option<IpAddr> {
    if v4 {
        u32::try_from(v).ok().map(|x| IpAddr::V4(Ipv4Addr::from(x)))
    } else {
        Some(IpAddr::V6(Ipv6Addr::from(v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(subnet: &str, start: &str, end: &str, gw: &str) -> Range {
        Range {
            subnet: subnet.parse().unwrap(),
            start: start.parse().unwrap(),
            end: end.parse().unwrap(),
            gateway: gw.parse().unwrap(),
        }
    }

    fn ips(c: Candidates<'_>) -> Vec<String> {
        c.map(|(_, ip)| ip.to_string()).collect()
    }

    #[test]
    fn walks_from_start_skipping_gateway() {
        let set = RangeSet { ranges: vec![r("10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1")] };
        assert_eq!(ips(set.candidates(None)), ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]);
    }

    #[test]
    fn walks_after_last_and_ends_with_it() {
        let set = RangeSet { ranges: vec![r("10.0.0.0/29", "10.0.0.1", "10.0.0.6", "10.0.0.1")] };
        let last = Some("10.0.0.4".parse().unwrap());
        assert_eq!(ips(set.candidates(last)), ["10.0.0.5", "10.0.0.6", "10.0.0.2", "10.0.0.3", "10.0.0.4"]);
        // a last address outside the set restarts at the beginning
        let other = Some("10.9.0.4".parse().unwrap());
        assert_eq!(set.candidates(other).next().map(|x| x.1.to_string()).as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn walks_across_ranges_and_wraps() {
        let set = RangeSet {
            ranges: vec![
                r("10.0.0.0/30", "10.0.0.1", "10.0.0.2", "10.0.0.1"),
                r("10.0.1.0/30", "10.0.1.1", "10.0.1.2", "10.0.1.1"),
            ],
        };
        let last = Some("10.0.1.2".parse().unwrap());
        let v: Vec<(usize, String)> = set.candidates(last).map(|(i, ip)| (i, ip.to_string())).collect();
        assert_eq!(v, [(0, "10.0.0.2".to_string()), (1, "10.0.1.2".to_string())]);
        assert_eq!(set.to_string(), "10.0.0.1-10.0.0.2,10.0.1.1-10.0.1.2");
    }

    #[test]
    fn ipv6_is_lazy_and_contains_checks_bounds() {
        let set =
            RangeSet { ranges: vec![r("fd00::/64", "fd00::1", "fd00::ffff:ffff:ffff:ffff", "fd00::1")] };
        let first: Vec<String> = set.candidates(None).take(2).map(|(_, ip)| ip.to_string()).collect();
        assert_eq!(first, ["fd00::2", "fd00::3"]);
        assert!(set.contains("fd00::5".parse().unwrap()));
        assert!(!set.contains("fd00:1::5".parse().unwrap()));
        assert!(!set.contains("10.0.0.5".parse().unwrap()));
    }
}
