//! DEL (docs/cni.md §7.6, with §11's fixes): best effort, keeps going past failures and
//! reports the first one. Works with an empty, deleted or non-namespace `CNI_NETNS`, a
//! missing interface, no `prevResult`, and when repeated. Always releases IPAM; removes
//! masquerade rules even when the interface is gone (prevResult IPs when present, otherwise
//! teardown by name).

use std::sync::mpsc::{self, Receiver};
use std::thread::ScopedJoinHandle;
use std::time::Duration;

use ipnetwork::IpNetwork;
use weft_common::cni::invoke::{self, Running};
use weft_common::cni::{CmdArgs, CniResult, Command};
use weft_common::firewall::{self, MasqTarget};
use weft_common::netlink::{Link, LinkEvents, Netlink};
use weft_common::netns::NetNs;

use crate::config::BridgeSpec;
use crate::container;
use crate::error::Error;

/// The container interface, through a socket inside its namespace, with its global
/// addresses. `None` when the namespace or the interface is gone (or `CNI_NETNS` is empty).
fn find_interface(args: &CmdArgs) -> Result<Option<(Netlink, Link, Vec<IpNetwork>)>, Error> {
    if args.netns.is_empty() {
        return Ok(None);
    }
    let netns = match NetNs::open(&args.netns) {
        Ok(ns) => ns,
        Err(e) => {
            // Deleted, or no longer a namespace (e.g. an unmounted bind mount): nothing is
            // left in it that we could remove.
            tracing::info!(netns = %args.netns, error = %e, "netns gone; skipping interface removal");
            return Ok(None);
        }
    };
    let mut nl =
        Netlink::open_in(&netns).map_err(Error::netlink("failed to open netlink socket in the netns"))?;
    let Some(link) = nl.find_link(&args.ifname).map_err(Error::netlink("failed to look up interface"))?
    else {
        return Ok(None);
    };
    let addrs = container::global_addresses(&mut nl, &link);
    Ok(Some((nl, link, addrs)))
}

/// The addresses of the attachment per `prevResult` (those of the container interface, or
/// all when the result has no interface indexes).
fn prev_result_addrs(args: &CmdArgs, spec: &BridgeSpec) -> Vec<IpNetwork> {
    let Some(prev) = &spec.prev_result else { return Vec::new() };
    let Ok(result) = CniResult::parse(prev, &args.version) else { return Vec::new() };
    let ctr = result.container_interface(&args.ifname);
    result
        .ips
        .iter()
        .filter(|ip| ip.interface.is_none() || ip.interface == ctr)
        .map(|ip| ip.address)
        .collect()
}

/// The result of a scoped helper thread, a panic turned into an error naming the step.
fn joined<T>(handle: ScopedJoinHandle<'_, Result<T, Error>>, step: &str) -> Result<T, Error> {
    handle.join().unwrap_or_else(|_| Err(Error::Internal(format!("{step} thread panicked"))))
}

/// How long the masquerade teardown waits for the host veth's deletion to be announced before
/// it goes ahead anyway (the deletion failed, or its announcement was lost).
const UNREGISTER_WAIT: Duration = Duration::from_millis(100);

/// What the DEL thread tells the masquerade teardown: the addresses to remove, and the host
/// veth that is about to be deleted (its index in the host namespace), if any.
type Handoff = (Vec<IpNetwork>, Option<u32>);

/// The masquerade teardown, for the addresses the DEL thread sends once it has read them
/// from the interface.
///
/// Its firewall transaction deletes rules, and such an nf_tables commit holds the namespace's
/// nf_tables commit mutex through a ~11 ms wait; unregistering a device takes that same mutex
/// (nf_tables' netdevice notifier). Started together, the veth deletion and the commit wait one
/// after the other (DEL measured 22–26 ms). So the commit starts once the kernel has announced
/// the host veth's deletion (`RTM_DELLINK` comes after the unregister notifiers): the two waits
/// then overlap (~17 ms).
fn teardown_masquerade(
    args: &CmdArgs,
    handoff: Receiver<Handoff>,
    events: Option<LinkEvents>,
) -> Result<(), Error> {
    let (addrs, veth) = handoff
        .recv()
        .map_err(|_| Error::Internal("masquerade teardown got no addresses to remove".into()))?;
    if let (Some(mut events), Some(index)) = (events, veth) {
        if !events.wait_deleted(index, UNREGISTER_WAIT) {
            tracing::debug!(index, "no deletion announced for the host veth; tearing down anyway");
        }
    }
    let target =
        MasqTarget { network: &args.network, container_id: &args.container_id, ifname: &args.ifname };
    firewall::teardown_masquerade(&target, &addrs)
        .map_err(|source| Error::Firewall { what: "failed to tear down IP masquerade", source })
}

/// Removes the attachment. The steps are independent and each waits on the kernel or on
/// another process, so they run concurrently and DEL takes about as long as the slowest:
/// the IPAM DEL process, and the macspoofchk and masquerade teardowns on scoped threads, run
/// while this thread finds the interface, hands its addresses to the masquerade teardown
/// and deletes it (the kernel waits for RCU grace periods).
///
/// The IPAM process and the helpers are all started before this thread enters the container
/// namespace (briefly, to open a netlink socket there), so they, and the processes they run,
/// start and stay in the host namespace: `setns` is per thread and inherited by new threads
/// and processes.
///
/// Every step is attempted whatever the others do; the error reported is the first in the
/// sequential order: finding the interface, deleting it, IPAM DEL, masquerade teardown.
pub fn del(args: &CmdArgs, spec: &BridgeSpec) -> Result<(), Error> {
    let errors = std::thread::scope(|s| {
        let pending = spec
            .ipam
            .as_deref()
            .map(|plugin| invoke::start_delegate(plugin, Command::Del, &args.path, &args.stdin));
        let spoof = spec
            .macspoofchk
            .then(|| s.spawn(|| crate::spoofcheck::teardown(&args.container_id, &args.ifname)));
        let (addrs_tx, addrs_rx) = mpsc::sync_channel::<Handoff>(1);
        // Subscribed here, in the host namespace and before the deletion, so its event is seen.
        let events = if spec.ip_masq { LinkEvents::open().ok() } else { None };
        let masq = spec.ip_masq.then(|| s.spawn(move || teardown_masquerade(args, addrs_rx, events)));

        let mut errors: Vec<Error> = Vec::new();
        let mut addrs = prev_result_addrs(args, spec);
        let found = match find_interface(args) {
            Ok(f) => f,
            Err(e) => {
                errors.push(e);
                None
            }
        };
        if let Some((_, _, on_link)) = &found {
            for a in on_link {
                if !addrs.contains(a) {
                    addrs.push(*a);
                }
            }
        }
        // The host end of the veth about to be deleted (a veth's IFLA_LINK is its peer's index).
        let veth = found.as_ref().and_then(|(_, link, _)| link.link);
        // Fails only when masquerade is off (no receiver): nothing to tell then.
        let _ = addrs_tx.send((addrs, veth));
        if let Some((mut nl, link, _)) = found {
            match nl.del_link(link.index) {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => errors.push(Error::netlink(format!("failed to delete {:?}", args.ifname))(e)),
            }
        }
        if let Some(p) = pending {
            if let Err(e) = p.and_then(Running::finish) {
                errors.push(Error::Cni(e));
            }
        }
        if let Some(handle) = masq {
            if let Err(e) = joined(handle, "masquerade teardown") {
                errors.push(e);
            }
        }
        if let Some(handle) = spoof {
            // Like the reference, a failure here is only logged.
            if let Err(e) = joined(handle, "macspoofchk teardown") {
                tracing::warn!(error = %e, "macspoofchk teardown failed");
            }
        }
        errors
    });
    for e in &errors {
        tracing::warn!(error = %e, "DEL step failed");
    }
    // Report the first failure; every step was attempted.
    match errors.into_iter().next() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
