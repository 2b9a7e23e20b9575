//! Route operations in the main table (or a given one): add, delete, list.

use std::net::IpAddr;

use ipnetwork::IpNetwork;
use netlink_packet_core::NLM_F_CREATE;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMetric, RouteProtocol, RouteScope,
    RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Error, Netlink};

/// A unicast route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination; `0.0.0.0/0` or `::/0` for a default route.
    pub dst: IpNetwork,
    pub gw: Option<IpAddr>,
    /// Output link index.
    pub oif: Option<u32>,
    /// Routing table; `None` is the main table.
    pub table: Option<u32>,
    /// Metric.
    pub priority: Option<u32>,
    /// `RT_SCOPE_*`; `None`: universe with a gateway, link without.
    pub scope: Option<u8>,
    pub mtu: Option<u32>,
    pub advmss: Option<u32>,
}

impl Route {
    /// A route to `dst` via `gw` (if any) out of `oif`, in the main table.
    pub fn new(dst: IpNetwork, gw: Option<IpAddr>, oif: Option<u32>) -> Route {
        Route { dst, gw, oif, table: None, priority: None, scope: None, mtu: None, advmss: None }
    }

    /// The `RTM_NEWROUTE`/`RTM_DELROUTE` body for this route (for [`Netlink::batch`]).
    pub fn to_message(&self) -> RouteMessage {
        let mut msg = RouteMessage::default();
        msg.header.address_family =
            if self.dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        msg.header.destination_prefix_length = self.dst.prefix();
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        let scope = self.scope.unwrap_or(if self.gw.is_some() { 0 } else { 253 });
        msg.header.scope = RouteScope::from(scope);
        match self.table {
            Some(t) => match u8::try_from(t) {
                Ok(small) => msg.header.table = small,
                Err(_) => {
                    msg.header.table = RouteHeader::RT_TABLE_UNSPEC;
                    msg.attributes.push(RouteAttribute::Table(t));
                }
            },
            None => msg.header.table = RouteHeader::RT_TABLE_MAIN,
        }
        if self.dst.prefix() > 0 {
            msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(self.dst.network())));
        }
        if let Some(gw) = self.gw {
            msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
        }
        if let Some(oif) = self.oif {
            msg.attributes.push(RouteAttribute::Oif(oif));
        }
        if let Some(p) = self.priority {
            msg.attributes.push(RouteAttribute::Priority(p));
        }
        let mut metrics = Vec::new();
        if let Some(m) = self.mtu {
            metrics.push(RouteMetric::Mtu(m));
        }
        if let Some(m) = self.advmss {
            metrics.push(RouteMetric::Advmss(m));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        msg
    }

    fn from_message(msg: &RouteMessage) -> Option<Route> {
        let v4 = msg.header.address_family == AddressFamily::Inet;
        let mut route = Route::new(
            IpNetwork::new(
                if v4 { IpAddr::from([0u8; 4]) } else { IpAddr::from([0u16; 8]) },
                msg.header.destination_prefix_length,
            )
            .ok()?,
            None,
            None,
        );
        route.table = Some(u32::from(msg.header.table));
        route.scope = Some(u8::from(msg.header.scope));
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(a) => {
                    route.dst = IpNetwork::new(route_ip(a)?, msg.header.destination_prefix_length).ok()?
                }
                RouteAttribute::Gateway(a) => route.gw = route_ip(a),
                RouteAttribute::Oif(i) => route.oif = Some(*i),
                RouteAttribute::Priority(p) => route.priority = Some(*p),
                RouteAttribute::Table(t) => route.table = Some(*t),
                RouteAttribute::Metrics(ms) => {
                    for m in ms {
                        match m {
                            RouteMetric::Mtu(v) => route.mtu = Some(*v),
                            RouteMetric::Advmss(v) => route.advmss = Some(*v),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Some(route)
    }
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn describe(r: &Route) -> String {
    let mut s = r.dst.to_string();
    if let Some(gw) = r.gw {
        s.push_str(&format!(" via {gw}"));
    }
    if let Some(oif) = r.oif {
        s.push_str(&format!(" dev index {oif}"));
    }
    s
}

impl Netlink {
    /// Adds `route`. Like the reference (create without exclusive), an identical IPv6
    /// route gains a nexthop; an identical IPv4 route fails with [`Error::is_exists`].
    pub fn add_route(&mut self, route: &Route) -> Result<(), Error> {
        self.request_ack(
            RouteNetlinkMessage::NewRoute(route.to_message()),
            NLM_F_CREATE,
            "add route",
            &describe(route),
        )
    }

    /// Deletes `route`; [`Error::is_not_found`] when there is no such route.
    pub fn del_route(&mut self, route: &Route) -> Result<(), Error> {
        self.request_ack(
            RouteNetlinkMessage::DelRoute(route.to_message()),
            0,
            "delete route",
            &describe(route),
        )
    }

    /// Unicast routes of all tables, both families (filter by `table`/`oif` as needed).
    pub fn routes(&mut self) -> Result<Vec<Route>, Error> {
        let mut out = Vec::new();
        for fam in [AddressFamily::Inet, AddressFamily::Inet6] {
            let mut msg = RouteMessage::default();
            msg.header.address_family = fam;
            let answers = self.dump(RouteNetlinkMessage::GetRoute(msg), "list routes", "")?;
            out.extend(answers.iter().filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.kind == RouteType::Unicast => {
                    Route::from_message(r)
                }
                _ => None,
            }));
        }
        Ok(out)
    }
}
