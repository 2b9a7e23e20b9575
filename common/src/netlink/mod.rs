//! A blocking rtnetlink client: one [`Netlink`] socket per namespace and typed operations.
//!
//! - [`Netlink::open`] / [`Netlink::open_in`]: a socket in the calling thread's namespace or
//!   in another one (entered only while the socket is created, so both namespaces are driven
//!   from the host thread afterwards).
//! - links ([`link`]), bridge ports and VLANs ([`bridge`]), addresses ([`addr`]), routes
//!   ([`route`]).
//!
//! Every failure is an [`Error`] naming the operation and object and carrying the kernel's
//! errno ([`Error::is_exists`], [`Error::is_not_found`]). Messages are built directly with
//! `netlink-packet-route`: no async runtime is involved, so plugins start fast.

pub mod addr;
mod batch;
pub mod bridge;
mod error;
pub mod events;
pub mod link;
mod neigh;
pub mod route;
mod socket;

pub use addr::Address;
pub use batch::BatchOutcome;
pub use bridge::{PortAttrs, PortVlan};
pub use error::Error;
pub use events::LinkEvents;
pub use link::{BridgeSpec, Link, OperState, VethSpec};
pub use route::Route;
pub use socket::Netlink;
