//! IPAM delegation run concurrently with the netlink work, on a scoped thread.
//!
//! The delegate is a separate process (host-local takes milliseconds to start and to write
//! its files); running it on a helper thread while the main thread creates the veth or
//! deletes it (a kernel RCU grace period) hides most of that latency. The helper thread must
//! be spawned while the calling thread is in the host namespace and never changes namespace
//! itself, so the delegate always starts in the host namespace, whatever the main thread
//! does meanwhile (`setns` is per thread).

use std::thread::{Scope, ScopedJoinHandle};

use weft_common::cni::invoke;
use weft_common::cni::{CmdArgs, CniError, CniResult, Command};

/// A delegate call in flight; [`Pending::wait`] it before the scope ends.
#[derive(Debug)]
pub struct Pending<'scope, T> {
    plugin: &'scope str,
    handle: ScopedJoinHandle<'scope, Result<T, CniError>>,
}

impl<T> Pending<'_, T> {
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
pub fn spawn_add<'scope>(
    scope: &'scope Scope<'scope, '_>,
    plugin: &'scope str,
    args: &'scope CmdArgs,
) -> Pending<'scope, CniResult> {
    let handle = scope.spawn(move || invoke::delegate_add(plugin, &args.path, &args.stdin, &args.version));
    Pending { plugin, handle }
}

/// Starts a delegate DEL, CHECK, STATUS or GC.
pub fn spawn<'scope>(
    scope: &'scope Scope<'scope, '_>,
    plugin: &'scope str,
    command: Command,
    args: &'scope CmdArgs,
) -> Pending<'scope, ()> {
    let handle = scope.spawn(move || invoke::delegate(plugin, command, &args.path, &args.stdin));
    Pending { plugin, handle }
}
