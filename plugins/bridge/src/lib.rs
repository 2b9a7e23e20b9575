//! weft-bridge: the CNI `bridge` plugin (docs/cni.md §7), a drop-in replacement for the
//! reference Go plugin.
//!
//! ADD validates everything first ([`config`]), then works from the host thread with one
//! netlink socket per namespace: bridge and veth ([`host`]) while the IPAM process, started
//! first, runs, then container addresses and routes ([`container`]), gateway,
//! masquerade; any failure undoes what was done ([`undo`]). DEL (its independent steps run
//! concurrently) and CHECK are in [`del`] and [`check`].

pub mod check;
pub mod config;
pub mod container;
pub mod del;
pub mod error;
pub mod host;
pub mod plan;
pub mod spoofcheck;
pub mod undo;

use weft_common::cni::invoke;
use weft_common::cni::{CmdArgs, CniError, CniResult, Command, ErrorCode, Plugin, Version};
use weft_common::firewall::{self, MasqTarget};
use weft_common::mac::format_mac;
use weft_common::netlink::{Link, Netlink};
use weft_common::netns::NetNs;

use crate::config::BridgeSpec;
use crate::error::Error;
use crate::plan::{build_result, plan_l3, Attachment, L3Plan};
use crate::undo::{Action, Undo};

/// The plugin.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bridge;

impl Plugin for Bridge {
    fn add(&self, args: &CmdArgs) -> Result<CniResult, CniError> {
        let spec = config::parse(&args.conf, &args.args, true)?;
        // An L2 result has no 0.1.0/0.2.0 form: refuse before creating anything that the
        // failed rendering would leave behind.
        if spec.ipam.is_none() && Version::parse(&args.version).is_some_and(|v| v.is_legacy_020()) {
            return Err(CniError::new(
                ErrorCode::IncompatibleVersion,
                "cannot convert: no valid IP addresses",
                format!("an L2 (no ipam) result has no cniVersion {} form", args.version),
            ));
        }
        // The IPAM plugin must exist before anything is created.
        if let Some(ipam) = &spec.ipam {
            invoke::find_plugin(ipam, &args.path)?;
        }
        let netns = NetNs::open(&args.netns).map_err(Error::Netns)?;
        let mut host = Netlink::open().map_err(Error::netlink("failed to open netlink socket"))?;
        let mut ctr =
            Netlink::open_in(&netns).map_err(Error::netlink("failed to open netlink socket in the netns"))?;
        if ctr.find_link(&args.ifname).map_err(Error::netlink("failed to look up interface"))?.is_some() {
            return Err(Error::InterfaceExists(args.ifname.clone()).into());
        }
        let mut undo = Undo::new();
        match add(args, &spec, &netns, &mut host, &mut ctr, &mut undo) {
            Ok(result) => {
                undo.commit();
                Ok(result)
            }
            Err(e) => {
                undo.rollback(&mut host, args);
                Err(e.into())
            }
        }
    }

    fn del(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = config::parse(&args.conf, &args.args, false)?;
        del::del(args, &spec).map_err(CniError::from)
    }

    fn check(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = config::parse(&args.conf, &args.args, false)?;
        check::check(args, &spec).map_err(CniError::from)
    }

    fn status(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = config::parse(&args.conf, &args.args, false)?;
        match &spec.ipam {
            Some(ipam) => invoke::delegate(ipam, Command::Status, &args.path, &args.stdin),
            None => Ok(()),
        }
    }

    fn gc(&self, args: &CmdArgs) -> Result<(), CniError> {
        let spec = config::parse(&args.conf, &args.args, false)?;
        match &spec.ipam {
            Some(ipam) => invoke::delegate(ipam, Command::Gc, &args.path, &args.stdin),
            None => Ok(()),
        }
    }
}

/// The bridge, the veth pair and the bridge port: (bridge, host veth, container veth).
fn add_l2(
    args: &CmdArgs,
    spec: &BridgeSpec,
    netns: &NetNs,
    host: &mut Netlink,
    ctr: &mut Netlink,
    undo: &mut Undo,
) -> Result<(Link, Link, Link), Error> {
    let bridge = host::ensure_bridge(host, spec)?;
    let (veth, ctr_link) = host::create_veth(host, ctr, netns, spec, &args.ifname, undo)?;
    host::attach_port(host, spec, &bridge, &veth)?;
    if spec.macspoofchk {
        // Registered first: a partial setup is torn down too.
        undo.push(Action::SpoofCheck);
        spoofcheck::setup(&args.container_id, &args.ifname, &veth.name, &ctr_link.mac_string())?;
    }
    Ok((bridge, veth, ctr_link))
}

/// ADD after validation; every side effect registers its inverse in `undo`.
fn add(
    args: &CmdArgs,
    spec: &BridgeSpec,
    netns: &NetNs,
    host: &mut Netlink,
    ctr: &mut Netlink,
    undo: &mut Undo,
) -> Result<CniResult, Error> {
    // IPAM runs in its own process, started from the host namespace (so it runs there: `setns`
    // is per thread and inherited by new processes) while the bridge and the veth are set up;
    // its answer is collected before anything else happens. No helper thread is needed.
    let pending = spec
        .ipam
        .as_deref()
        .map(|plugin| invoke::start_delegate_add(plugin, &args.path, &args.stdin, &args.version));
    let l2 = add_l2(args, spec, netns, host, ctr, undo);
    let allocated = pending.map(|p| p.and_then(invoke::PendingAdd::wait));
    let allocated = match allocated {
        None => None,
        Some(Ok(result)) => {
            if let Some(plugin) = &spec.ipam {
                undo.push(Action::IpamDel { plugin: plugin.clone() });
            }
            Some(result)
        }
        // Sequentially IPAM comes after the L2 setup, so an L2 failure is reported in
        // preference (the rollback deletes the veth either way).
        Some(Err(e)) => return Err(l2.err().unwrap_or(Error::Cni(e))),
    };
    let (bridge, veth, ctr_link) = l2?;
    let mut vlan_gateway: Option<Link> = None;

    let l3: Option<L3Plan> = match allocated {
        None => None,
        Some(result) => {
            if result.ips.is_empty() {
                return Err(Error::NoIpConfig);
            }
            let plan = plan_l3(spec, &result);
            container::configure(ctr, netns, spec, &ctr_link, &plan)?;
            if !plan.bridge_addrs.is_empty() {
                // With an access VLAN the gateway lives on `<bridge>.<vlan>`, not the bridge.
                let target = if spec.vlan != 0 {
                    let vlan_if = host::ensure_vlan_interface(host, spec, &bridge)?;
                    vlan_gateway = Some(vlan_if.clone());
                    vlan_if
                } else {
                    bridge.clone()
                };
                host::ensure_gateways(host, spec, &target, &plan.bridge_addrs)?;
            }
            if spec.ip_masq {
                let addrs: Vec<_> = plan.ips.iter().map(|i| i.address).collect();
                let target = MasqTarget {
                    network: &args.network,
                    container_id: &args.container_id,
                    ifname: &args.ifname,
                };
                // Registered first: a partial setup is torn down too.
                undo.push(Action::Masquerade { addrs: addrs.clone() });
                firewall::setup_masquerade(spec.ip_masq_backend, &target, &addrs)
                    .map_err(|source| Error::Firewall { what: "failed to set up IP masquerade", source })?;
            }
            Some(plan)
        }
    };
    if !spec.disable_container_interface {
        if l3.is_none() {
            ctr.set_up(ctr_link.index)
                .map_err(Error::netlink(format!("failed to set {:?} up", args.ifname)))?;
        }
        host::wait_port_up(host, &veth)?;
    }
    // Re-read the bridge: its MAC may have changed when the port joined (a bridge without a
    // set address takes its ports' lowest). The veth ends keep the MACs read at creation.
    let bridge_now = host.link_by_index(bridge.index).map_err(Error::netlink("failed to read bridge"))?;
    let att = Attachment {
        bridge: bridge_now.name.clone(),
        bridge_mac: format_mac(&bridge_now.mac),
        host_veth: veth.name.clone(),
        host_mac: format_mac(&veth.mac),
        ifname: args.ifname.clone(),
        container_mac: format_mac(&ctr_link.mac),
        netns: args.netns.clone(),
        vlan_gateway: match vlan_gateway {
            Some(l) => {
                let now =
                    host.link_by_index(l.index).map_err(Error::netlink("failed to read VLAN interface"))?;
                Some((now.name, format_mac(&now.mac)))
            }
            None => None,
        },
    };
    Ok(build_result(&att, l3, spec.dns.as_ref()))
}
