//! Commit-or-rollback for ADD: every side effect registers its inverse; on failure the
//! inverses run in reverse order, on success [`Undo::commit`] forgets them.
//!
//! The inverses are data, not closures, because running them needs the host netlink socket
//! that ADD itself is still using.

use ipnetwork::IpNetwork;
use weft_common::cni::invoke;
use weft_common::cni::CmdArgs;
use weft_common::cni::Command;
use weft_common::firewall::{self, MasqTarget};
use weft_common::netlink::Netlink;

/// One inverse operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Delete the host end of the veth (the container end goes with it).
    DelLink { index: u32, name: String },
    /// Release the IPAM allocation (delegate DEL with the same stdin).
    IpamDel { plugin: String },
    /// Remove the masquerade rules for these addresses.
    Masquerade { addrs: Vec<IpNetwork> },
    /// Remove the macspoofchk filter of the attachment.
    SpoofCheck,
}

/// The list of inverses of what ADD has done so far.
#[derive(Debug, Default)]
#[must_use = "call commit() or rollback()"]
pub struct Undo {
    actions: Vec<Action>,
}

impl Undo {
    pub fn new() -> Undo {
        Undo::default()
    }

    /// Registers the inverse of a side effect that just succeeded.
    pub fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    /// ADD succeeded: keep everything.
    pub fn commit(self) {}

    /// ADD failed: undo everything, newest first. Failures are logged and the rest still
    /// runs; the caller reports the original error.
    pub fn rollback(self, host: &mut Netlink, args: &CmdArgs) {
        for action in self.actions.into_iter().rev() {
            match action {
                Action::DelLink { index, name } => {
                    if let Err(e) = host.del_link(index) {
                        if !e.is_not_found() {
                            tracing::warn!(link = %name, error = %e, "rollback: failed to delete veth");
                        }
                    }
                }
                Action::IpamDel { plugin } => {
                    if let Err(e) = invoke::delegate(&plugin, Command::Del, &args.path, &args.stdin) {
                        tracing::warn!(%plugin, error = %e, "rollback: IPAM DEL failed");
                    }
                }
                Action::SpoofCheck => {
                    if let Err(e) = crate::spoofcheck::teardown(&args.container_id, &args.ifname) {
                        tracing::warn!(error = %e, "rollback: macspoofchk teardown failed");
                    }
                }
                Action::Masquerade { addrs } => {
                    let target = MasqTarget {
                        network: &args.network,
                        container_id: &args.container_id,
                        ifname: &args.ifname,
                    };
                    if let Err(e) = firewall::teardown_masquerade(&target, &addrs) {
                        tracing::warn!(error = %e, "rollback: masquerade teardown failed");
                    }
                }
            }
        }
    }
}
