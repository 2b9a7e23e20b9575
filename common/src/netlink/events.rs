//! Link notifications: a socket subscribed to the namespace's link events (`RTNLGRP_LINK`), so
//! a caller can wait until the kernel announces a link's deletion.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::Error;

/// `RTNLGRP_LINK`: link creation, change and deletion.
const RTNLGRP_LINK: u32 = 1;
/// `RTM_DELLINK`.
const RTM_DELLINK: u16 = 17;

/// A subscription to the link events of the namespace it was opened in.
pub struct LinkEvents {
    socket: Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for LinkEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkEvents").finish_non_exhaustive()
    }
}

impl LinkEvents {
    /// Subscribes in the calling thread's namespace. Events that happen after this returns are
    /// seen.
    pub fn open() -> Result<LinkEvents, Error> {
        let op = "subscribe to link events";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::new(op, "NETLINK_ROUTE", e))?;
        socket.bind_auto().map_err(|e| Error::new(op, "bind", e))?;
        socket.add_membership(RTNLGRP_LINK).map_err(|e| Error::new(op, "RTNLGRP_LINK", e))?;
        socket.set_non_blocking(true).map_err(|e| Error::new(op, "non-blocking", e))?;
        Ok(LinkEvents { socket, buf: Vec::with_capacity(64 * 1024) })
    }

    /// Waits until the kernel announces the deletion of link `index` (its `RTM_DELLINK`, sent
    /// once every `NETDEV_UNREGISTER` handler has run), at most `timeout`. False on timeout or
    /// when events were lost (the receive buffer overran).
    pub fn wait_deleted(&mut self, index: u32, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) => return false,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => return false,
            }
            loop {
                self.buf.clear();
                match self.socket.recv(&mut self.buf, 0) {
                    Ok(_) => {
                        if deleted(&self.buf, index) {
                            return true;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => return false,
                }
            }
        }
    }
}

/// True when the datagram `buf` holds an `RTM_DELLINK` of link `index`.
fn deleted(buf: &[u8], index: u32) -> bool {
    let mut rest = buf;
    while let (Some(len), Some(kind)) = (
        rest.get(0..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes),
        rest.get(4..6).and_then(|b| b.try_into().ok()).map(u16::from_ne_bytes),
    ) {
        // nlmsghdr (16 bytes), then struct ifinfomsg: family, pad, type (u16), index (i32).
        let ifindex = rest.get(20..24).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes);
        if kind == RTM_DELLINK && ifindex.and_then(|i| u32::try_from(i).ok()) == Some(index) {
            return true;
        }
        let Ok(len) = usize::try_from(len) else { return false };
        if len < 16 {
            return false;
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, index: i32) -> Vec<u8> {
        let mut m = 32u32.to_ne_bytes().to_vec();
        m.extend_from_slice(&kind.to_ne_bytes());
        m.resize(16, 0);
        m.extend_from_slice(&[0, 0, 1, 0]);
        m.extend_from_slice(&index.to_ne_bytes());
        m.resize(32, 0);
        m
    }

    #[test]
    fn finds_the_deletion_of_its_link_only() {
        let mut two = msg(16, 7); // RTM_NEWLINK of 7
        two.extend(msg(RTM_DELLINK, 9));
        assert!(deleted(&two, 9));
        assert!(!deleted(&two, 7));
        assert!(!deleted(&[], 9));
        for n in 0..two.len() {
            let _ = deleted(&two[..n], 9);
        }
    }
}
