//! IPAM delegation run concurrently with the netlink work.
//!
//! The delegate is a separate process (host-local takes milliseconds to start and to write
//! its files): it is started first, then the calling thread creates the veth or deletes it (a
//! kernel RCU grace period) while the delegate runs, and collects its answer afterwards. No
//! helper thread is needed (nor its stack and malloc arena, which counted in the plugin's peak
//! memory). The delegate must be started while the calling thread is in the host namespace,
//! so that it runs there (`setns` is per thread and inherited by new processes).

use weft_common::cni::invoke::{self, PendingAdd, Running};
use weft_common::cni::{CmdArgs, CniError, CniResult, Command};

/// A delegate ADD in flight (or the error of starting it, reported by [`AddInFlight::wait`]).
#[derive(Debug)]
pub struct AddInFlight(Result<PendingAdd, CniError>);

impl AddInFlight {
    /// Starts the delegate ADD with the exact stdin bytes and the request's version.
    pub fn start(plugin: &str, args: &CmdArgs) -> AddInFlight {
        AddInFlight(invoke::start_delegate_add(plugin, &args.path, &args.stdin, &args.version))
    }

    /// Waits for the delegate's result.
    pub fn wait(self) -> Result<CniResult, CniError> {
        self.0?.wait()
    }
}

/// A delegate DEL, CHECK, STATUS or GC in flight.
#[derive(Debug)]
pub struct InFlight(Result<Running, CniError>);

impl InFlight {
    /// Starts the delegate with the exact stdin bytes.
    pub fn start(plugin: &str, command: Command, args: &CmdArgs) -> InFlight {
        InFlight(invoke::start_delegate(plugin, command, &args.path, &args.stdin))
    }

    /// Waits for the delegate; only its success matters.
    pub fn wait(self) -> Result<(), CniError> {
        self.0?.finish().map(|_| ())
    }
}
