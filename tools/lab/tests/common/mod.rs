//! Steps shared by the lab's test files.

use std::time::Duration;

use weft_lab::{Lab, Result};

/// SIGKILLs flanneld on node `i`, checks that pods of `i` and `peer` keep talking while it is
/// down (the dataplane does not depend on the daemon), restarts it and checks that it kept its
/// subnet and its lease key; returns once the lab has converged again.
pub fn crash_and_restart_keeps_subnet(lab: &mut Lab, i: usize, peer: usize) -> Result<()> {
    let subnet = lab.node_subnet(i)?;
    let key = lab.lease(i)?.expect("lease").key;
    let (a, b) = (lab.pod(i)?.ip(), lab.pod(peer)?.ip());
    lab.kill_flanneld(i)?;
    lab.wait_ping(i, b, Duration::from_secs(5))?;
    lab.wait_ping(peer, a, Duration::from_secs(5))?;
    let env = lab.restart_flanneld(i)?;
    assert_eq!(env.subnet_network().map(|n| n.to_string()), Some(subnet.to_string()));
    assert_eq!(lab.lease(i)?.expect("lease after restart").key, key);
    lab.wait_converged()
}

/// Every pod pings every pod; the matrix and the lab's diagnostics on failure.
pub fn ping_all(lab: &Lab) -> Result<()> {
    let m = lab.ping_matrix()?;
    assert!(m.all_ok(), "ping matrix:\n{m}\n{}", lab.diagnostics());
    Ok(())
}

/// Every pod pings every pod over IPv4, then over IPv6 (a dual-stack lab); `when` names the
/// moment in the failure message.
#[allow(dead_code)] // used by the dual-stack lab tests only
pub fn ping_both(lab: &Lab, when: &str) -> Result<()> {
    ping_all(lab)?;
    let m6 = lab.ping_matrix6()?;
    assert!(m6.all_ok(), "IPv6 ping matrix {when}:\n{m6}\n{}", lab.diagnostics());
    Ok(())
}

/// A TCP transfer from every pod to every other pod over IPv4; `when` names the moment.
pub fn tcp_all(lab: &mut Lab, when: &str) -> Result<()> {
    let m = lab.tcp_matrix()?;
    assert!(m.all_ok(), "TCP matrix {when}:\n{m}\n{}", lab.diagnostics());
    Ok(())
}

/// [`tcp_all`] over IPv4, then over IPv6 (a dual-stack lab).
#[allow(dead_code)] // used by the dual-stack lab tests only
pub fn tcp_both(lab: &mut Lab, when: &str) -> Result<()> {
    tcp_all(lab, when)?;
    let m6 = lab.tcp_matrix6()?;
    assert!(m6.all_ok(), "IPv6 TCP matrix {when}:\n{m6}\n{}", lab.diagnostics());
    Ok(())
}
