//! Neighbour and FDB entries of one link, as `ip neigh show dev X` and `bridge fdb show dev X`
//! ask for them: the kernel filters the dump (this socket sets strict checking).

use netlink_packet_route::neighbour::{NeighbourAttribute, NeighbourMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::{Error, Netlink};

impl Netlink {
    /// Neighbour entries (`Inet`, `Inet6`) or FDB entries (`Bridge`) of link `index`.
    pub fn neighbours_of(
        &mut self,
        family: AddressFamily,
        index: u32,
    ) -> Result<Vec<NeighbourMessage>, Error> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = family;
        if family == AddressFamily::Bridge {
            // rtnl_fdb_dump: the header's ifindex selects the port (or the device itself).
            msg.header.ifindex = index;
        } else {
            // neigh_valid_dump_req refuses a header ifindex under strict checking; the filter
            // is the NDA_IFINDEX attribute.
            msg.attributes.push(NeighbourAttribute::IfIndex(index));
        }
        let answers =
            self.dump(RouteNetlinkMessage::GetNeighbour(msg), "list neighbours", &format!("index {index}"))?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                // Filter here too: without strict checking the kernel ignores the filter.
                RouteNetlinkMessage::NewNeighbour(n) if n.header.ifindex == index => Some(n),
                _ => None,
            })
            .collect())
    }
}
