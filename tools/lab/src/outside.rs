//! An "outside" host on the lab's IPv6 underlay: namespace `<id>o`, wired to the switch like a
//! node, with [`OUTSIDE_IP6`] and no route to the pod networks (so a pod reaches it only when
//! its node masquerades, docs/flannel.md §9.1). [`Lab::echo_source6`] tells which source
//! address an ICMPv6 echo request from a pod carries when it arrives there (`tcpdump` inside
//! the outside namespace, started and ended by PID).

use std::net::{IpAddr, Ipv6Addr};
use std::time::Duration;

use crate::error::{LabError, Result};
use crate::lab::{Lab, NODE_IFACE, SWITCH_BRIDGE, UNDERLAY_MTU};
use crate::ns::Netns;
use crate::wait;

/// The outside host's address: in the underlay's /64, beyond every node address.
pub const OUTSIDE_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 2, 0, 0, 0, 0, 1, 0x99);
/// Switch port of the outside host.
const OUTSIDE_PORT: &str = "out";

/// The outside host; its namespace (and the veth) go when it drops.
#[derive(Debug)]
pub struct Outside {
    ns: Netns,
}

impl Outside {
    /// Its namespace.
    pub fn ns(&self) -> &Netns {
        &self.ns
    }

    /// Its address, [`OUTSIDE_IP6`].
    pub fn ip6(&self) -> Ipv6Addr {
        OUTSIDE_IP6
    }

    /// The IPv6 routes it has (`ip -6 route`, destinations only): proof it cannot route back to
    /// a pod.
    pub fn routes6(&self) -> Result<Vec<String>> {
        let v = self.ns.try_ip_json(&["-6", "route", "show"])?;
        Ok(v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("dst").and_then(|d| d.as_str()).map(str::to_string))
            .collect())
    }
}

impl Lab {
    /// Adds the outside host (see the module doc): `eth0` with [`OUTSIDE_IP6`]/64 ↔ switch port
    /// `out` on the bridge. At most one per lab.
    pub fn add_outside6(&self) -> Result<Outside> {
        crate::signals::check()?;
        let sw = self.switch()?;
        let ns = Netns::try_create(&format!("{}o", self.id))?;
        let mtu = UNDERLAY_MTU.to_string();
        ns.run(&[
            "ip",
            "link",
            "add",
            NODE_IFACE,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            OUTSIDE_PORT,
            "mtu",
            &mtu,
            "netns",
            sw.name(),
        ])?;
        sw.run(&["ip", "link", "set", OUTSIDE_PORT, "master", SWITCH_BRIDGE])?;
        sw.run(&["ip", "link", "set", OUTSIDE_PORT, "up"])?;
        let cidr = format!("{OUTSIDE_IP6}/{}", crate::dual::UNDERLAY_PREFIX_V6);
        ns.run(&["ip", "-6", "addr", "add", &cidr, "dev", NODE_IFACE, "nodad"])?;
        ns.run(&["ip", "link", "set", NODE_IFACE, "up"])?;
        Ok(Outside { ns })
    }

    /// Pings `outside` once from pod `from` over IPv6 while capturing on the outside host:
    /// returns whether the reply came back and the source address the echo request arrived
    /// with (`None` if none arrived).
    pub fn echo_source6(&mut self, from: usize, outside: &Outside) -> Result<(bool, Option<IpAddr>)> {
        crate::signals::check()?;
        let filter = "icmp6 and ip6[40] == 128";
        let argv = ["tcpdump", "-n", "-l", "-i", NODE_IFACE, "-c", "1", filter];
        let handle = self.spawn_extra("tcpdump on the outside host", outside.ns().name(), &argv)?;
        let log =
            |lab: &Lab| lab.extra.get(handle).and_then(Option::as_ref).map(|d| d.log()).unwrap_or_default();
        let listening =
            wait::until_true("tcpdump listening on the outside host", Duration::from_secs(10), || {
                Ok(log(self).contains("listening on"))
            });
        let replied = listening.map(|()| self.pod(from).map(|p| p.ping_once_ip(outside.ip6().into(), None)));
        // The request either arrived by now (the ping waited for its reply) or never will.
        let seen = wait::until(
            "an echo request on the outside host",
            Duration::from_secs(3),
            Duration::from_millis(100),
            || Ok(echo_request_source(&log(self))),
        );
        let (_, tcpdump_log) = self.stop_extra(handle)?;
        let replied = replied
            .and_then(|r| r)
            .map_err(|e| LabError::Invalid(format!("{e}\n--- tcpdump ---\n{tcpdump_log}")))?;
        Ok((replied, seen.ok()))
    }
}

/// The source address of the first `ICMP6, echo request` line of `tcpdump -n` output
/// (`… IP6 <src> > <dst>: ICMP6, echo request, …`).
pub fn echo_request_source(tcpdump: &str) -> Option<IpAddr> {
    tcpdump.lines().filter(|l| l.contains("echo request")).find_map(|l| {
        let mut words = l.split_whitespace().skip_while(|w| *w != "IP6").skip(1);
        words.next().and_then(|src| src.parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_echo_request_source() {
        let out = "tcpdump: verbose output suppressed\nlistening on eth0, link-type EN10MB\n\
                   21:30:01.000 IP6 2001:2::a > 2001:2::1:99: ICMP6, echo request, id 7, seq 1, length 64\n";
        assert_eq!(echo_request_source(out), Some("2001:2::a".parse().unwrap()));
        assert_eq!(echo_request_source("listening on eth0\n"), None);
        assert_eq!(OUTSIDE_IP6.to_string(), "2001:2::1:99");
    }
}
