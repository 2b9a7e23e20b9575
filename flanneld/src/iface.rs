//! Choosing the external interface and the public address(es) (docs/flannel.md §7; upstream
//! `pkg/ipmatch/match.go` `LookupExtIface`, `pkg/ip/iface.go`).
//!
//! Order: `--iface` values (IP or name; first that resolves wins), then `--iface-regex`
//! (addresses first, then names), then `--iface-can-reach` (the interface of the longest-prefix
//! route to it, IPv4 or IPv6), then the owner of `--public-ip` (or, in dual stack without it,
//! of `--public-ipv6`), then the interface of the default route — in dual stack the IPv4 and the
//! IPv6 default routes must leave through the same interface. An address named by the choice
//! (an `--iface` IP, a regex match, a public address on the interface) is the interface address
//! of its family; otherwise the interface's first usable address (IPv6: global before
//! link-local, permanent before dynamic, non-temporary before temporary, deprecated ones never). The
//! decision is pure ([`select_from`]) over what the kernel reports ([`select`] reads it with a
//! blocking netlink socket, once at startup).
//!
//! Where upstream fails oddly, we choose the sane reading: an IPv6 `--iface` address in dual
//! stack selects the interface holding it (upstream dereferences a nil interface unless
//! `--public-ipv6` is given), and an IPv6 `--iface-can-reach` target never becomes the IPv4
//! address.

use std::cmp::Reverse;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use regex::Regex;
use weft_common::netlink::{Address, Link, Netlink, Route};

/// What the user asked for.
#[derive(Debug, Clone, Default)]
pub struct IfaceOpts {
    pub ifaces: Vec<String>,
    pub regexes: Vec<String>,
    pub can_reach: Option<IpAddr>,
    pub public_ip: Option<Ipv4Addr>,
    pub public_ipv6: Option<Ipv6Addr>,
    /// Dual stack (`EnableIPv6` with IPv4): the interface also needs an IPv6 address.
    pub ipv6: bool,
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
    /// Dual stack: the interface's IPv6 address.
    pub iface_addr_v6: Option<Ipv6Addr>,
    /// Dual stack: published as `PublicIPv6`: `--public-ipv6` or the interface's IPv6 address.
    pub public_ipv6: Option<Ipv6Addr>,
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

/// The node's links, addresses and routes, read once for every selection.
pub struct Kernel {
    links: Vec<Link>,
    addrs: Vec<Address>,
    routes: Vec<Route>,
}

impl Kernel {
    /// Reads links, addresses and routes.
    pub fn read() -> Result<Kernel, IfaceError> {
        let mut nl =
            Netlink::open().map_err(|source| IfaceError::Netlink { what: "netlink socket", source })?;
        let links = nl.links().map_err(|source| IfaceError::Netlink { what: "links", source })?;
        let addrs = nl.addresses(None).map_err(|source| IfaceError::Netlink { what: "addresses", source })?;
        let routes = nl.routes().map_err(|source| IfaceError::Netlink { what: "routes", source })?;
        Ok(Kernel { links, addrs, routes })
    }

    /// Selects by `opts` ([`select_from`]).
    pub fn select(&self, opts: &IfaceOpts) -> Result<External, IfaceError> {
        select_from(opts, &self.links, &self.addrs, &self.routes)
    }
}

const MAIN_TABLE: u32 = 254;
const IFA_F_SECONDARY_TEMPORARY: u32 = 0x01;
const IFA_F_DEPRECATED: u32 = 0x20;
const IFA_F_PERMANENT: u32 = 0x80;

/// A link and the addresses the way it was found names (`None`: the link's first usable one).
struct Found<'a> {
    link: &'a Link,
    v4: Option<Ipv4Addr>,
    v6: Option<Ipv6Addr>,
}

/// The kernel's view, with the lookups every rule needs.
struct View<'a> {
    links: &'a [Link],
    addrs: &'a [Address],
    routes: &'a [Route],
}

impl<'a> View<'a> {
    fn by_index(&self, index: u32) -> Option<&'a Link> {
        self.links.iter().find(|l| l.index == index)
    }

    /// The link holding `ip` (any address of the family, usable or not, like upstream).
    fn owner_of(&self, ip: IpAddr) -> Option<&'a Link> {
        self.addrs.iter().find(|a| a.address.ip() == ip).and_then(|a| self.by_index(a.index))
    }

    /// `index`'s usable addresses of one family in order of preference. IPv6: upstream's
    /// (`GetInterfaceIP6Addrs`): global or link-local unicast, not deprecated; global first,
    /// then permanent, then non-temporary. IPv4 keeps weft's earlier rule, any address with
    /// global scope first (so `lo` still works as an interface in tests); upstream would refuse
    /// loopback addresses.
    fn usable(&self, index: u32, v6: bool) -> Vec<IpAddr> {
        let mine = self.addrs.iter().filter(|a| a.index == index && a.address.is_ipv6() == v6);
        if !v6 {
            let mut v4: Vec<&Address> = mine.collect();
            v4.sort_by_key(|a| !a.is_global());
            return v4.iter().map(|a| a.address.ip()).collect();
        }
        let mut mine: Vec<&Address> = mine
            .filter(|a| a.flags & IFA_F_DEPRECATED == 0)
            .filter(|a| global_unicast(a.address.ip()) || link_local_unicast(a.address.ip()))
            .collect();
        mine.sort_by_key(|a| {
            (
                !global_unicast(a.address.ip()),
                a.flags & IFA_F_PERMANENT == 0,
                a.flags & IFA_F_SECONDARY_TEMPORARY != 0,
            )
        });
        mine.iter().map(|a| a.address.ip()).collect()
    }

    /// Longest-prefix route in the main table covering `target` (lowest metric on ties).
    fn best_route(&self, target: IpAddr) -> Option<&'a Route> {
        self.routes
            .iter()
            .filter(|r| r.table.unwrap_or(MAIN_TABLE) == MAIN_TABLE)
            .filter(|r| r.dst.contains(target))
            .max_by_key(|r| (r.dst.prefix(), Reverse(r.priority.unwrap_or(0))))
    }

    /// The link of the default route of a family.
    fn default_link(&self, v6: bool) -> Option<&'a Link> {
        let any = if v6 { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) };
        self.best_route(any)
            .filter(|r| r.dst.prefix() == 0)
            .and_then(|r| r.oif)
            .and_then(|i| self.by_index(i))
    }
}

fn v4_of(ip: IpAddr) -> Option<Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(_) => None,
    }
}

fn v6_of(ip: IpAddr) -> Option<Ipv6Addr> {
    match ip {
        IpAddr::V6(a) => Some(a),
        IpAddr::V4(_) => None,
    }
}

/// Go's `net.IP.IsGlobalUnicast`: not unspecified, loopback, multicast, link-local or the
/// IPv4 broadcast address (private and unique-local addresses count as global).
fn global_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            !(a.is_unspecified()
                || a.is_loopback()
                || a.is_multicast()
                || a.is_link_local()
                || a.is_broadcast())
        }
        IpAddr::V6(a) => {
            !(a.is_unspecified() || a.is_loopback() || a.is_multicast() || link_local_unicast(ip))
        }
    }
}

/// Go's `net.IP.IsLinkLocalUnicast`: 169.254.0.0/16, fe80::/10.
fn link_local_unicast(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// The pure selection.
pub fn select_from(
    opts: &IfaceOpts,
    links: &[Link],
    addrs: &[Address],
    routes: &[Route],
) -> Result<External, IfaceError> {
    let view = View { links, addrs, routes };
    let explicit = !opts.ifaces.is_empty() || !opts.regexes.is_empty() || opts.can_reach.is_some();
    let found = if explicit { by_options(opts, &view)? } else { by_default(opts, &view)? };
    let link = found.link;
    let iface_addr = found
        .v4
        .or_else(|| view.usable(link.index, false).into_iter().find_map(v4_of))
        .ok_or_else(|| IfaceError::NotFound(format!("{} has no IPv4 address", link.name)))?;
    let iface_addr_v6 = if opts.ipv6 {
        let v6 = found.v6.or_else(|| view.usable(link.index, true).into_iter().find_map(v6_of));
        Some(v6.ok_or_else(|| IfaceError::NotFound(format!("{} has no IPv6 address", link.name)))?)
    } else {
        None
    };
    if link.mtu == 0 {
        return Err(IfaceError::NotFound(format!("{} reports MTU 0", link.name)));
    }
    Ok(External {
        index: link.index,
        name: link.name.clone(),
        mtu: link.mtu,
        iface_addr,
        public_ip: opts.public_ip.unwrap_or(iface_addr),
        iface_addr_v6,
        public_ipv6: opts.ipv6.then(|| opts.public_ipv6.or(iface_addr_v6)).flatten(),
    })
}

/// `--iface`, then `--iface-regex`, then `--iface-can-reach`: the first that finds a link.
fn by_options<'a>(opts: &IfaceOpts, view: &View<'a>) -> Result<Found<'a>, IfaceError> {
    let mut why = Vec::new();
    for spec in &opts.ifaces {
        match by_iface(spec, opts, view) {
            Ok(f) => return Ok(f),
            Err(e) => why.push(e),
        }
    }
    for text in &opts.regexes {
        let re =
            Regex::new(text).map_err(|e| IfaceError::BadRegex { regex: text.clone(), why: e.to_string() })?;
        if let Some(f) = by_regex(&re, opts.ipv6, view) {
            return Ok(f);
        }
        why.push(format!("nothing matches --iface-regex {text:?}"));
    }
    if let Some(target) = opts.can_reach {
        // `ip route get <target>`: the interface of the best route to it.
        match view.best_route(target).and_then(|r| r.oif).and_then(|i| view.by_index(i)) {
            Some(link) => return Ok(Found { link, v4: None, v6: None }),
            None => why.push(format!("no route to --iface-can-reach {target}")),
        }
    }
    Err(IfaceError::NotFound(why.join("; ")))
}

/// One `--iface` value: an address (the interface holding it; that address is the interface
/// address of its family) or an interface name. In dual stack with an IPv4 address and
/// `--public-ipv6`, the latter must be on the same interface and is its IPv6 address.
fn by_iface<'a>(spec: &str, opts: &IfaceOpts, view: &View<'a>) -> Result<Found<'a>, String> {
    let Ok(ip) = spec.parse::<IpAddr>() else {
        let link = view.links.iter().find(|l| l.name == spec);
        return link.map(|link| Found { link, v4: None, v6: None }).ok_or(format!("no interface {spec:?}"));
    };
    if ip.is_ipv6() && !opts.ipv6 {
        return Err(format!("--iface {ip} is an IPv6 address and IPv6 is not enabled"));
    }
    let link = view.owner_of(ip).ok_or(format!("no interface has the address {ip}"))?;
    let mut found = Found { link, v4: v4_of(ip), v6: v6_of(ip) };
    if let (true, Some(_), Some(pub6)) = (opts.ipv6, found.v4, opts.public_ipv6) {
        found.v6 = Some(same_link_v6(link, pub6, view)?);
    }
    Ok(found)
}

/// `--public-ipv6` as the IPv6 address of `link`: it must be on that same interface.
fn same_link_v6(link: &Link, pub6: Ipv6Addr, view: &View<'_>) -> Result<Ipv6Addr, String> {
    match view.owner_of(IpAddr::V6(pub6)) {
        None => Err(format!("no interface has the --public-ipv6 address {pub6}")),
        Some(l6) if l6.index != link.index => {
            Err(format!("v6 interface {} must be the same with v4 interface {}", l6.name, link.name))
        }
        Some(_) => Ok(pub6),
    }
}

/// One `--iface-regex`: the first interface with a matching address (in dual stack, a matching
/// IPv4 and a matching IPv6 address), else the first whose name matches.
fn by_regex<'a>(re: &Regex, dual: bool, view: &View<'a>) -> Option<Found<'a>> {
    let matching =
        |index: u32, v6: bool| view.usable(index, v6).into_iter().find(|ip| re.is_match(&ip.to_string()));
    for link in view.links {
        let v4 = matching(link.index, false).and_then(v4_of);
        if v4.is_none() {
            continue;
        }
        if !dual {
            return Some(Found { link, v4, v6: None });
        }
        if let Some(v6) = matching(link.index, true).and_then(v6_of) {
            return Some(Found { link, v4, v6: Some(v6) });
        }
    }
    let link = view.links.iter().find(|l| re.is_match(&l.name))?;
    Some(Found { link, v4: None, v6: None })
}

/// No interface option: the owner of `--public-ip` (dual stack: of `--public-ipv6` without
/// it), else the default route's interface.
fn by_default<'a>(opts: &IfaceOpts, view: &View<'a>) -> Result<Found<'a>, IfaceError> {
    if let Some(ip) = opts.public_ip {
        let link = view.owner_of(IpAddr::V4(ip)).ok_or_else(|| {
            IfaceError::NotFound(format!("--public-ip {ip} is not a local address (combine it with --iface)"))
        })?;
        let v6 = match (opts.ipv6, opts.public_ipv6) {
            (true, Some(pub6)) => Some(same_link_v6(link, pub6, view).map_err(IfaceError::NotFound)?),
            _ => None,
        };
        return Ok(Found { link, v4: Some(ip), v6 });
    }
    if let (true, Some(pub6)) = (opts.ipv6, opts.public_ipv6) {
        let link = view.owner_of(IpAddr::V6(pub6)).ok_or_else(|| {
            IfaceError::NotFound(format!(
                "--public-ipv6 {pub6} is not a local address (combine it with --iface)"
            ))
        })?;
        return Ok(Found { link, v4: None, v6: Some(pub6) });
    }
    let link =
        view.default_link(false).ok_or_else(|| IfaceError::NotFound("no IPv4 default route".into()))?;
    if opts.ipv6 {
        let l6 =
            view.default_link(true).ok_or_else(|| IfaceError::NotFound("no IPv6 default route".into()))?;
        if l6.index != link.index {
            return Err(IfaceError::NotFound(format!(
                "v6 default route interface {} must be the same with v4 default route interface {}",
                l6.name, link.name
            )));
        }
    }
    Ok(Found { link, v4: None, v6: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_common::netlink::OperState;

    pub(super) fn link(index: u32, name: &str, mtu: u32) -> Link {
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
        let o = IfaceOpts { can_reach: Some(IpAddr::V4(Ipv4Addr::new(198, 19, 5, 5))), ..Default::default() };
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

#[cfg(test)]
mod dual_stack_tests {
    use super::*;

    fn link(index: u32, name: &str) -> Link {
        super::tests::link(index, name, 1500)
    }

    fn addr(index: u32, cidr: &str, flags: u32) -> Address {
        Address { index, address: cidr.parse().unwrap(), flags, scope: 0 }
    }

    fn route(dst: &str, oif: u32) -> Route {
        Route::new(dst.parse().unwrap(), None, Some(oif))
    }

    const PERM: u32 = IFA_F_PERMANENT;

    /// eth0: IPv4 + several IPv6 kinds; eth1: one of each; eth2: IPv4 only.
    fn world(v6_default_via: u32) -> (Vec<Link>, Vec<Address>, Vec<Route>) {
        (
            vec![link(1, "lo"), link(2, "eth0"), link(3, "eth1"), link(4, "eth2")],
            vec![
                addr(1, "127.0.0.1/8", PERM),
                addr(1, "::1/128", PERM),
                addr(2, "198.18.0.2/24", PERM),
                addr(2, "fe80::2/64", PERM),
                addr(2, "fd18::dead/64", PERM | IFA_F_DEPRECATED),
                addr(2, "2001:db8::99/64", IFA_F_SECONDARY_TEMPORARY),
                addr(2, "2001:db8::5/64", 0),
                addr(2, "fd18::2/64", PERM),
                addr(3, "198.19.0.2/24", PERM),
                addr(3, "fd19::2/64", PERM),
                addr(4, "198.20.0.2/24", PERM),
            ],
            vec![
                route("0.0.0.0/0", 2),
                route("::/0", v6_default_via),
                route("198.18.0.0/24", 2),
                route("198.19.0.0/16", 3),
                route("198.20.0.0/24", 4),
                route("fd18::/64", 2),
                route("fd19::/16", 3),
            ],
        )
    }

    fn dual(o: IfaceOpts) -> Result<External, IfaceError> {
        let (l, a, r) = world(2);
        select_from(&IfaceOpts { ipv6: true, ..o }, &l, &a, &r)
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    fn err(r: Result<External, IfaceError>) -> String {
        r.map(|e| panic!("expected an error, got {e:?}")).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn default_route_interface_with_upstreams_ipv6_address_order() {
        let e = dual(IfaceOpts::default()).unwrap();
        assert_eq!(e.name, "eth0");
        // Permanent global first: not the deprecated, temporary, dynamic or link-local ones.
        assert_eq!((e.iface_addr_v6, e.public_ipv6), (Some(ip6("fd18::2")), Some(ip6("fd18::2"))));
        assert_eq!(e.iface_addr, Ipv4Addr::new(198, 18, 0, 2));
        // IPv4 only: no IPv6 address is looked for or published, even with --public-ipv6.
        let (l, a, r) = world(3);
        let v4 =
            select_from(&IfaceOpts { public_ipv6: Some(ip6("fd19::2")), ..Default::default() }, &l, &a, &r)
                .unwrap();
        assert_eq!((v4.name.as_str(), v4.iface_addr_v6, v4.public_ipv6), ("eth0", None, None));
        // Dual stack needs both default routes on one interface.
        let e = err(select_from(&IfaceOpts { ipv6: true, ..Default::default() }, &l, &a, &r));
        assert!(
            e.contains(
                "v6 default route interface eth1 must be the same with v4 default route interface eth0"
            ),
            "{e}"
        );
        let e = err(select_from(&IfaceOpts { ipv6: true, ..Default::default() }, &l, &a, &r[..1]));
        assert!(e.contains("no IPv6 default route"), "{e}");
    }

    #[test]
    fn iface_by_name_or_address_of_either_family() {
        let by_name = dual(IfaceOpts { ifaces: vec!["eth1".into()], ..Default::default() }).unwrap();
        assert_eq!((by_name.name.as_str(), by_name.iface_addr_v6), ("eth1", Some(ip6("fd19::2"))));
        // An IPv6 address selects its interface and is its IPv6 address.
        let by_v6 = dual(IfaceOpts { ifaces: vec!["2001:db8::99".into()], ..Default::default() }).unwrap();
        assert_eq!((by_v6.name.as_str(), by_v6.iface_addr_v6), ("eth0", Some(ip6("2001:db8::99"))));
        assert_eq!(by_v6.iface_addr, Ipv4Addr::new(198, 18, 0, 2));
        // ... but not without IPv6.
        let (l, a, r) = world(2);
        let o = IfaceOpts { ifaces: vec!["fd19::2".into()], ..Default::default() };
        assert!(select_from(&o, &l, &a, &r).is_err());
        // An IPv4 address with --public-ipv6 on the same interface: that address published.
        let o = IfaceOpts {
            ifaces: vec!["198.19.0.2".into()],
            public_ipv6: Some(ip6("fd19::2")),
            ..Default::default()
        };
        let e = dual(o).unwrap();
        assert_eq!((e.name.as_str(), e.public_ipv6), ("eth1", Some(ip6("fd19::2"))));
        // ... on another interface: that --iface fails, the next one is tried.
        let o = IfaceOpts {
            ifaces: vec!["198.19.0.2".into(), "eth0".into()],
            public_ipv6: Some(ip6("fd18::2")),
            ..Default::default()
        };
        let e = dual(o).unwrap();
        assert_eq!((e.name.as_str(), e.public_ipv6), ("eth0", Some(ip6("fd18::2"))));
        let o = IfaceOpts {
            ifaces: vec!["198.19.0.2".into()],
            public_ipv6: Some(ip6("fd18::2")),
            ..Default::default()
        };
        assert!(err(dual(o)).contains("v6 interface eth0 must be the same with v4 interface eth1"));
        // An interface without IPv6 cannot carry a dual-stack overlay.
        let e = err(dual(IfaceOpts { ifaces: vec!["eth2".into()], ..Default::default() }));
        assert!(e.contains("eth2 has no IPv6 address"), "{e}");
        // A NAT'd --public-ipv6 with --iface is published as given.
        let o = IfaceOpts {
            ifaces: vec!["eth1".into()],
            public_ipv6: Some(ip6("2001:db8:f::1")),
            ..Default::default()
        };
        let e = dual(o).unwrap();
        assert_eq!((e.iface_addr_v6, e.public_ipv6), (Some(ip6("fd19::2")), Some(ip6("2001:db8:f::1"))));
    }

    #[test]
    fn regex_needs_a_match_in_both_families_then_names() {
        let o = IfaceOpts { regexes: vec!["^(198\\.19\\.|fd19:)".into()], ..Default::default() };
        let e = dual(o).unwrap();
        assert_eq!(
            (e.name.as_str(), e.iface_addr, e.iface_addr_v6),
            ("eth1", Ipv4Addr::new(198, 19, 0, 2), Some(ip6("fd19::2")))
        );
        // The matching IPv6 address is used, not the interface's first one.
        let o = IfaceOpts { regexes: vec!["^(198\\.18\\.|2001:db8::5$)".into()], ..Default::default() };
        assert_eq!(dual(o).unwrap().iface_addr_v6, Some(ip6("2001:db8::5")));
        // Only IPv4 addresses match: no interface by address in dual stack, and no name matches.
        let o = IfaceOpts { regexes: vec!["^198\\.".into()], ..Default::default() };
        assert!(dual(o).is_err());
        let o = IfaceOpts { regexes: vec!["^198\\.".into(), "th1$".into()], ..Default::default() };
        assert_eq!(dual(o).unwrap().name, "eth1");
    }

    #[test]
    fn can_reach_and_public_addresses() {
        let o = IfaceOpts { can_reach: Some("fd19::5:5".parse().unwrap()), ..Default::default() };
        let e = dual(o.clone()).unwrap();
        assert_eq!((e.name.as_str(), e.iface_addr_v6), ("eth1", Some(ip6("fd19::2"))));
        // Also without IPv6: the interface, with its IPv4 address (never the IPv6 target's).
        let (l, a, r) = world(2);
        let e = select_from(&IfaceOpts { ipv6: false, ..o }, &l, &a, &r).unwrap();
        assert_eq!((e.name.as_str(), e.iface_addr), ("eth1", Ipv4Addr::new(198, 19, 0, 2)));
        // --public-ipv6 alone picks its interface; with --public-ip both must be on one.
        let e = dual(IfaceOpts { public_ipv6: Some(ip6("fd19::2")), ..Default::default() }).unwrap();
        assert_eq!((e.name.as_str(), e.iface_addr), ("eth1", Ipv4Addr::new(198, 19, 0, 2)));
        let both = IfaceOpts {
            public_ip: Some(Ipv4Addr::new(198, 19, 0, 2)),
            public_ipv6: Some(ip6("fd19::2")),
            ..Default::default()
        };
        assert_eq!(dual(both.clone()).unwrap().name, "eth1");
        let split = IfaceOpts { public_ipv6: Some(ip6("fd18::2")), ..both };
        assert!(err(dual(split)).contains("v6 interface eth0 must be the same with v4 interface eth1"));
        let e = err(dual(IfaceOpts { public_ipv6: Some(ip6("2001:db8:f::1")), ..Default::default() }));
        assert!(e.contains("--public-ipv6 2001:db8:f::1 is not a local address"), "{e}");
    }
}
