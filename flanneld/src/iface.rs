//! Choosing the external interface and the public address (docs/flannel.md §7).
//!
//! Order: `--iface` values (IP or name; first that resolves wins), then `--iface-regex`
//! (addresses first, then names), then `--iface-can-reach` (the interface of the longest-prefix
//! route to it), then the owner of `--public-ip`, then the interface of the default route. The
//! decision is pure ([`select_from`]) over what the kernel reports ([`select`] reads it with a
//! blocking netlink socket, once at startup).

use std::net::{IpAddr, Ipv4Addr};

use ipnetwork::IpNetwork;
use regex::Regex;
use weft_common::netlink::{Address, Link, Netlink, Route};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct IfaceOpts {
    pub ifaces: Vec<String>,
    pub regexes: Vec<String>,
    pub can_reach: Option<Ipv4Addr>,
    pub public_ip: Option<Ipv4Addr>,
}

/// The chosen interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub index: u32,
    pub name: String,
    pub mtu: u32,
    /// The interface's IPv4 address.
    pub iface_addr: Ipv4Addr,
    /// Published as `PublicIP`: `--public-ip` or the interface address.
    pub public_ip: Ipv4Addr,
}

/// Why no interface could be used (exit 1 upstream).
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    #[error("read {what} from the kernel")]
    Netlink {
        what: &'static str,
        #[source]
        source: weft_common::netlink::Error,
    },
    #[error("invalid --iface-regex {regex:?}: {why}")]
    BadRegex { regex: String, why: String },
    #[error("no usable interface: {0}")]
    NotFound(String),
}

/// Reads links, addresses and routes and selects.
pub fn select(opts: &IfaceOpts) -> Result<External, IfaceError> {
    let mut nl = Netlink::open().map_err(|source| IfaceError::Netlink { what: "netlink socket", source })?;
    let links = nl.links().map_err(|source| IfaceError::Netlink { what: "links", source })?;
    let addrs = nl.addresses(None).map_err(|source| IfaceError::Netlink { what: "addresses", source })?;
    let routes = nl.routes().map_err(|source| IfaceError::Netlink { what: "routes", source })?;
    select_from(opts, &links, &addrs, &routes)
}

const MAIN_TABLE: u32 = 254;

fn v4(a: &Address) -> Option<Ipv4Addr> {
    match a.address.ip() {
        IpAddr::V4(ip) => Some(ip),
        IpAddr::V6(_) => None,
    }
}

/// The pure selection.
pub fn select_from(
    opts: &IfaceOpts,
    links: &[Link],
    addrs: &[Address],
    routes: &[Route],
) -> Result<External, IfaceError> {
    let by_index = |i: u32| links.iter().find(|l| l.index == i);
    let owner_of = |ip: IpAddr| addrs.iter().find(|a| a.address.ip() == ip).and_then(|a| by_index(a.index));
    let mut chosen: Option<&Link> = None;

    for spec in &opts.ifaces {
        chosen = match spec.parse::<IpAddr>() {
            Ok(ip) => owner_of(ip),
            Err(_) => links.iter().find(|l| l.name == *spec),
        };
        if chosen.is_some() {
            break;
        }
    }
    if chosen.is_none() && !opts.regexes.is_empty() {
        'outer: for text in &opts.regexes {
            let re = Regex::new(text)
                .map_err(|e| IfaceError::BadRegex { regex: text.clone(), why: e.to_string() })?;
            for a in addrs {
                if v4(a).is_some_and(|ip| re.is_match(&ip.to_string())) {
                    chosen = by_index(a.index);
                    if chosen.is_some() {
                        break 'outer;
                    }
                }
            }
            if let Some(l) = links.iter().find(|l| re.is_match(&l.name)) {
                chosen = Some(l);
                break;
            }
        }
    }
    let explicit = !opts.ifaces.is_empty() || !opts.regexes.is_empty();
    if chosen.is_none() && explicit {
        return Err(IfaceError::NotFound(format!(
            "nothing matches --iface {:?} / --iface-regex {:?}",
            opts.ifaces, opts.regexes
        )));
    }
    if chosen.is_none() {
        if let Some(target) = opts.can_reach {
            chosen = best_route(routes, target).and_then(|r| r.oif).and_then(by_index);
            if chosen.is_none() {
                return Err(IfaceError::NotFound(format!("no route to --iface-can-reach {target}")));
            }
        } else if let Some(ip) = opts.public_ip {
            chosen = owner_of(IpAddr::V4(ip));
            if chosen.is_none() {
                return Err(IfaceError::NotFound(format!(
                    "--public-ip {ip} is not a local address (combine it with --iface)"
                )));
            }
        } else {
            chosen = best_route(routes, Ipv4Addr::UNSPECIFIED)
                .filter(|r| r.dst.prefix() == 0)
                .and_then(|r| r.oif)
                .and_then(by_index);
            if chosen.is_none() {
                return Err(IfaceError::NotFound("no IPv4 default route".into()));
            }
        }
    }
    let link = chosen.ok_or_else(|| IfaceError::NotFound("no interface".into()))?;
    // Global addresses before link-local ones, like upstream's ordering.
    let mut mine: Vec<&Address> = addrs.iter().filter(|a| a.index == link.index && v4(a).is_some()).collect();
    mine.sort_by_key(|a| !a.is_global());
    let iface_addr = mine
        .first()
        .and_then(|a| v4(a))
        .ok_or_else(|| IfaceError::NotFound(format!("{} has no IPv4 address", link.name)))?;
    if link.mtu == 0 {
        return Err(IfaceError::NotFound(format!("{} reports MTU 0", link.name)));
    }
    Ok(External {
        index: link.index,
        name: link.name.clone(),
        mtu: link.mtu,
        iface_addr,
        public_ip: opts.public_ip.unwrap_or(iface_addr),
    })
}

/// Longest-prefix IPv4 route in the main table covering `target` (lowest metric on ties).
fn best_route(routes: &[Route], target: Ipv4Addr) -> Option<&Route> {
    routes
        .iter()
        .filter(|r| r.table.unwrap_or(MAIN_TABLE) == MAIN_TABLE)
        .filter(|r| matches!(r.dst, IpNetwork::V4(n) if n.contains(target)))
        .max_by_key(|r| (r.dst.prefix(), std::cmp::Reverse(r.priority.unwrap_or(0))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_common::netlink::OperState;

    fn link(index: u32, name: &str, mtu: u32) -> Link {
        Link {
            index,
            name: name.into(),
            kind: None,
            mac: vec![2, 0, 0, 0, 0, 1],
            mtu,
            up: true,
            promisc: false,
            master: None,
            oper_state: OperState::Up,
            link: None,
            link_netnsid: None,
        }
    }

    fn addr(index: u32, cidr: &str) -> Address {
        Address { index, address: cidr.parse().unwrap(), flags: 0, scope: 0 }
    }

    fn route(dst: &str, oif: u32) -> Route {
        let mut r = Route::new(dst.parse().unwrap(), None, Some(oif));
        r.table = Some(254);
        r
    }

    fn world() -> (Vec<Link>, Vec<Address>, Vec<Route>) {
        (
            vec![link(1, "lo", 65536), link(2, "eth0", 1500), link(3, "eth1", 9000)],
            vec![addr(1, "127.0.0.1/8"), addr(2, "198.18.0.2/24"), addr(3, "198.19.0.2/24")],
            vec![route("0.0.0.0/0", 2), route("198.18.0.0/24", 2), route("198.19.0.0/16", 3)],
        )
    }

    fn pick(opts: IfaceOpts) -> Result<External, IfaceError> {
        let (l, a, r) = world();
        select_from(&opts, &l, &a, &r)
    }

    #[test]
    fn selection_order() {
        let d = pick(IfaceOpts::default()).unwrap();
        assert_eq!((d.name.as_str(), d.mtu, d.public_ip), ("eth0", 1500, Ipv4Addr::new(198, 18, 0, 2)));
        let o = IfaceOpts { ifaces: vec!["nope".into(), "198.19.0.2".into()], ..Default::default() };
        assert_eq!(pick(o).unwrap().name, "eth1");
        let o = IfaceOpts { regexes: vec!["^198\\.19\\.".into()], ..Default::default() };
        assert_eq!(pick(o).unwrap().name, "eth1");
        let o = IfaceOpts { regexes: vec!["eth1".into()], ..Default::default() };
        assert_eq!(pick(o).unwrap().name, "eth1");
        let o = IfaceOpts { can_reach: Some(Ipv4Addr::new(198, 19, 5, 5)), ..Default::default() };
        assert_eq!(pick(o).unwrap().name, "eth1");
        let o = IfaceOpts { public_ip: Some(Ipv4Addr::new(198, 19, 0, 2)), ..Default::default() };
        assert_eq!(pick(o).unwrap().name, "eth1");
        // public-ip with iface: published as given even if not local (NAT).
        let o = IfaceOpts {
            ifaces: vec!["eth0".into()],
            public_ip: Some(Ipv4Addr::new(203, 0, 113, 1)),
            ..Default::default()
        };
        let e = pick(o).unwrap();
        assert_eq!(
            (e.iface_addr, e.public_ip),
            (Ipv4Addr::new(198, 18, 0, 2), Ipv4Addr::new(203, 0, 113, 1))
        );
    }

    #[test]
    fn failures() {
        assert!(pick(IfaceOpts { ifaces: vec!["nope".into()], ..Default::default() }).is_err());
        assert!(pick(IfaceOpts { regexes: vec!["(".into()], ..Default::default() }).is_err());
        assert!(
            pick(IfaceOpts { public_ip: Some(Ipv4Addr::new(203, 0, 113, 1)), ..Default::default() }).is_err()
        );
        let (l, a, _) = world();
        assert!(select_from(&IfaceOpts::default(), &l, &a, &[]).is_err());
    }
}
