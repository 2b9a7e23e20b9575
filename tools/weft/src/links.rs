//! This node's links as `weft path` needs them: each asked of the kernel by index the first
//! time it is named (a pod's host veth, its bridge, a route's output device), and the VXLAN
//! devices by one dump the kernel filters to that kind. A node's pod veths are never all read,
//! so the walk costs the same on a node with 100 pods as with one. `weft pods`, which looks for
//! orphans among every link, still lists them all ([`crate::kernel::links`]).

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeMap;

use netlink_packet_route::link::InfoKind;
use weft_common::netlink::{Error, Netlink};

use crate::kernel::{self, LinkFacts};

/// The links read so far, on a netlink socket of the namespace it was opened in.
pub struct NodeLinks {
    nl: RefCell<Netlink>,
    by_index: RefCell<BTreeMap<u32, Option<LinkFacts>>>,
    vxlan: OnceCell<Vec<LinkFacts>>,
    /// The first read that failed: a verdict built on it is not to be trusted.
    failed: RefCell<Option<String>>,
}

impl NodeLinks {
    /// On a socket of the calling thread's namespace.
    pub fn open() -> Result<NodeLinks, Error> {
        Ok(NodeLinks {
            nl: RefCell::new(Netlink::open()?),
            by_index: RefCell::default(),
            vxlan: OnceCell::new(),
            failed: RefCell::default(),
        })
    }

    /// The link with ifindex `index` (`None` when there is none, or when it cannot be read:
    /// then [`NodeLinks::failed`] says why).
    pub fn get(&self, index: u32) -> Option<LinkFacts> {
        if let Some(known) = self.by_index.borrow().get(&index) {
            return known.clone();
        }
        let read = kernel::link(&mut self.nl.borrow_mut(), index);
        let found = self.note(read).flatten();
        self.by_index.borrow_mut().insert(index, found.clone());
        found
    }

    /// The VXLAN devices (read once).
    pub fn vxlan(&self) -> &[LinkFacts] {
        self.vxlan.get_or_init(|| {
            let read = kernel::links_of_kind(&mut self.nl.borrow_mut(), InfoKind::Vxlan);
            let found = self.note(read).unwrap_or_default();
            let mut known = self.by_index.borrow_mut();
            for l in &found {
                known.insert(l.index, Some(l.clone()));
            }
            found
        })
    }

    /// Why the first link read that failed did, if any.
    pub fn failed(&self) -> Option<String> {
        self.failed.borrow().clone()
    }

    fn note<T>(&self, read: Result<T, Error>) -> Option<T> {
        match read {
            Ok(v) => Some(v),
            Err(e) => {
                self.failed.borrow_mut().get_or_insert_with(|| format!("read links of this node: {e}"));
                None
            }
        }
    }
}
