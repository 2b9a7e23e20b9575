//! weft-cli: the `weft` operator tool. `pods` lists a node's pod attachments from the kernel
//! outward, `path` walks the hops a packet takes and names the first broken link with a
//! [`cause::Cause`], `doctor` compares every node's kernel view with the leases.

pub mod cause;
pub mod cli;
pub mod doctor;
pub use weft_common::capture::dropwatch;
pub mod exit;
pub mod firewall;
pub mod kernel;
pub mod leases;
pub mod links;
pub mod path;
pub mod pods;
pub mod probe;
pub mod remote;
pub mod state;
