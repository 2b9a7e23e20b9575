//! IPAM delegation run concurrently with the netlink work.
//!
//! The delegate is a separate process (host-local takes milliseconds to start and to write
//! its files); running it on a helper thread while the main thread creates the veth or
//! deletes it (a kernel RCU grace period) hides most of that latency. The helper thread never
//! changes namespace, so the delegate always starts in the host namespace, whatever the main
//! thread is doing.

use std::thread::JoinHandle;

use weft_common::cni::invoke;
use weft_common::cni::{CmdArgs, CniError, CniResult, Command};

/// A delegate call in flight.
#[derive(Debug)]
pub struct Pending<T> {
    plugin: String,
    handle: JoinHandle<Result<T, CniError>>,
}

impl<T> Pending<T> {
    /// Waits for the delegate's answer.
    pub fn wait(self) -> Result<T, CniError> {
        self.handle.join().unwrap_or_else(|_| {
            Err(CniError::internal(
                format!("IPAM delegate {} thread failed", self.plugin),
                "the thread panicked",
            ))
        })
    }
}

/// Starts the delegate ADD with the exact stdin bytes and the request's version.
pub fn spawn_add(plugin: &str, args: &CmdArgs) -> Pending<CniResult> {
    let (p, path, stdin, version) =
        (plugin.to_string(), args.path.clone(), args.stdin.clone(), args.version.clone());
    let handle = std::thread::spawn(move || invoke::delegate_add(&p, &path, &stdin, &version));
    Pending { plugin: plugin.to_string(), handle }
}

/// Starts a delegate DEL, CHECK, STATUS or GC.
pub fn spawn(plugin: &str, command: Command, args: &CmdArgs) -> Pending<()> {
    let (p, path, stdin) = (plugin.to_string(), args.path.clone(), args.stdin.clone());
    let handle = std::thread::spawn(move || invoke::delegate(&p, command, &path, &stdin));
    Pending { plugin: plugin.to_string(), handle }
}
