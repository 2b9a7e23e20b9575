//! The CNI protocol, spec 1.1.0, as plugins and runtimes speak it.
//!
//! See `docs/cni.md`. Everything here is pure except [`skel`] (process
//! environment, stdin, stdout) and [`invoke`] (executes other plugins).

pub mod args;
pub mod conf;
pub mod error;
pub mod invoke;
pub mod result;
pub mod skel;
pub mod version;

pub use error::{CniError, ErrorCode};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use skel::{CmdArgs, Command, Plugin};
pub use version::Version;
