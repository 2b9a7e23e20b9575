//! host-gw's underlay neighbours (docs/flannel.md §4.2: each peer route is `S via P dev
//! <iface>`, so P must resolve by ARP on the external interface; flanneld adds no entry). From
//! each node's view (`underlay_neighbours`): a FAILED/INCOMPLETE entry for a peer's PublicIP
//! is `UNDERLAY_NEIGH_FAILED`, an entry whose MAC is not the peer's external interface MAC (from
//! the peer's own view) is `UNDERLAY_NEIGH_MAC_STALE`. Grouped per peer: every node that cannot
//! resolve node P is one finding naming them all. No entry yet is fine (ARP resolves it).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weft_dataplane::plan::Peer;
use weft_dataplane::view::DataplaneView;

use super::{Cluster, Groups, Severity};
use crate::cause::Cause;

/// Checks node `name`'s underlay neighbours for its `peers`; broken pairs are recorded.
pub(super) fn check(
    c: &Cluster,
    name: &str,
    v: &DataplaneView,
    peers: &[Peer],
    g: &mut Groups,
    broken_pairs: &mut BTreeMap<(String, String), BTreeSet<Cause>>,
) {
    let iface = v.underlay.as_ref().map_or("?", |u| u.name.as_str());
    for p in peers {
        let IpAddr::V4(pip) = p.public_ip else { continue };
        let Some(n) = v.underlay_neighbours.iter().find(|n| n.ip == p.public_ip) else { continue };
        let pn = pip.to_string();
        let object =
            format!("{name}: {pn} lladdr {} {} dev {iface}", n.mac.as_deref().unwrap_or("-"), n.state);
        if n.state.contains("failed") || n.state.contains("incomplete") {
            let msg = || format!("{{N}} cannot resolve node {pn} on the underlay (ARP {})", n.state);
            g.add(
                Cause::UnderlayNeighFailed,
                Severity::Error,
                &format!("arp {pn}"),
                name,
                Some(&pn),
                object,
                msg,
            );
            broken_pairs.entry((name.to_string(), pn)).or_default().insert(Cause::UnderlayNeighFailed);
            continue;
        }
        let want =
            c.views.get(&pip).and_then(|r| r.as_ref().ok()).and_then(|pv| pv.underlay.as_ref()?.mac.clone());
        let (Some(have), Some(want)) = (n.mac.as_ref(), want) else { continue };
        if !have.eq_ignore_ascii_case(&want) {
            let msg = || format!("{{N}} hold MAC {have} for node {pn}, whose {iface} MAC is {want}");
            let subject = format!("mac {pn} {have}");
            g.add(Cause::UnderlayNeighMacStale, Severity::Error, &subject, name, Some(&pn), object, msg);
            broken_pairs.entry((name.to_string(), pn)).or_default().insert(Cause::UnderlayNeighMacStale);
        }
    }
}
