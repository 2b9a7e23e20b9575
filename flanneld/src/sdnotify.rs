//! systemd readiness (`READY=1` to `$NOTIFY_SOCKET`), sent after subnet.env is written like
//! upstream (§2 step 10). Without `NOTIFY_SOCKET` this does nothing.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Sends `state` (e.g. `READY=1`) to systemd; errors are returned for logging only.
pub fn notify(state: &str) -> std::io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(()) };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        // Abstract socket namespace.
        Some(name) => SocketAddr::from_abstract_name(name.as_bytes())?,
        None => SocketAddr::from_pathname(&path)?,
    };
    let sock = UnixDatagram::unbound()?;
    sock.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}
