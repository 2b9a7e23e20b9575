//! Container-namespace work (§7.3 step 10): sysctls of the new interface, its addresses,
//! link up, IPv6 DAD, routes. Netlink goes through the socket opened inside the namespace;
//! only the sysctl writes enter the namespace, briefly, through a `NetnsGuard`.

use std::time::{Duration, Instant};

use ipnetwork::IpNetwork;
use weft_common::cni::IpConfig;
use weft_common::netlink::{Link, Netlink, Route as NlRoute};
use weft_common::netns::NetNs;
use weft_common::sysctl;

use crate::config::BridgeSpec;
use crate::error::Error;
use crate::plan::{route_gateway, L3Plan};

/// How long ADD waits for IPv6 duplicate address detection (the reference's 5 s).
const DAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes the interface sysctls inside `netns` (DAD policy, ARP notify, IPv6 enabled).
fn set_sysctls(netns: &NetNs, spec: &BridgeSpec, ifname: &str, has_v6: bool) -> Result<(), Error> {
    let _guard = netns.enter().map_err(Error::Netns)?;
    let key = |fam: &str, dev: &str, leaf: &str| sysctl::iface_key(fam, dev, leaf);
    // Best effort like the reference: IPv6 may be disabled altogether.
    if spec.enable_dad {
        let _ = sysctl::set(&key("ipv6", ifname, "enhanced_dad"), "1");
        let _ = sysctl::set(&key("ipv6", ifname, "accept_dad"), "1");
    } else {
        let _ = sysctl::set(&key("ipv6", ifname, "accept_dad"), "0");
    }
    let _ = sysctl::set(&key("ipv4", ifname, "arp_notify"), "1");
    if has_v6 {
        for dev in ["lo", ifname] {
            let k = key("ipv6", dev, "disable_ipv6");
            if sysctl::get(&k).map(|v| v != "0").unwrap_or(false) {
                sysctl::set(&k, "0").map_err(|source| Error::Sysctl { key: k.clone(), source })?;
            }
        }
        let _ = sysctl::set(&key("ipv6", ifname, "keep_addr_on_down"), "1");
    }
    Ok(())
}

/// Configures the container interface from the plan and sets it up.
pub fn configure(
    nl: &mut Netlink,
    netns: &NetNs,
    spec: &BridgeSpec,
    link: &Link,
    plan: &L3Plan,
) -> Result<(), Error> {
    let has_v6 = plan.ips.iter().any(|i| i.address.is_ipv6());
    set_sysctls(netns, spec, &link.name, has_v6)?;
    for ip in &plan.ips {
        // With DAD off the address is usable at once; with `enabledad` the kernel runs it.
        match nl.add_address(link.index, &ip.address, !spec.enable_dad) {
            Ok(()) => {}
            Err(e) => {
                return Err(Error::netlink(format!(
                    "failed to add IP addr {} to {:?}",
                    ip.address, link.name
                ))(e))
            }
        }
    }
    nl.set_up(link.index).map_err(Error::netlink(format!("failed to set {:?} up", link.name)))?;
    if spec.enable_dad && plan.ips.iter().any(|i| i.address.is_ipv6() && i.gateway.is_some()) {
        wait_dad(nl, link)?;
    }
    for r in &plan.routes {
        let mut route = NlRoute::new(r.dst, route_gateway(r, &plan.ips), Some(link.index));
        route.priority = r.priority.filter(|p| *p != 0);
        route.table = r.table;
        route.scope = r.scope;
        route.mtu = r.mtu;
        route.advmss = r.advmss;
        nl.add_route(&route).map_err(Error::netlink(format!(
            "failed to add route '{} via {} dev {}'",
            r.dst,
            route.gw.map(|g| g.to_string()).unwrap_or_default(),
            link.name
        )))?;
    }
    Ok(())
}

/// Polls until no IPv6 address of `link` is tentative.
fn wait_dad(nl: &mut Netlink, link: &Link) -> Result<(), Error> {
    let start = Instant::now();
    loop {
        let addrs = nl.addresses(Some(link.index)).map_err(Error::netlink("failed to read addresses"))?;
        if let Some(a) = addrs.iter().find(|a| a.is_dad_failed()) {
            return Err(Error::Dad(format!("{} failed DAD on {:?}", a.address, link.name)));
        }
        if !addrs.iter().any(|a| a.address.is_ipv6() && a.is_tentative()) {
            return Ok(());
        }
        if start.elapsed() > DAD_TIMEOUT {
            return Err(Error::Dad(format!(
                "addresses of {:?} still tentative after {DAD_TIMEOUT:?}",
                link.name
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The global addresses on the container interface (DEL uses them for masquerade teardown).
pub fn global_addresses(nl: &mut Netlink, link: &Link) -> Vec<IpNetwork> {
    nl.addresses(Some(link.index))
        .map(|v| v.into_iter().filter(|a| a.is_global()).map(|a| a.address).collect())
        .unwrap_or_default()
}

/// True when `ip` of a previous result is on the interface with the same prefix.
pub fn has_address(addrs: &[IpNetwork], ip: &IpConfig) -> bool {
    addrs.contains(&ip.address)
}
