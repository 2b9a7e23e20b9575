//! Watching interfaces for the probe's packets with `AF_PACKET` sockets, for `weft path --probe`
//! (this node) and flanneld's `/debug/capture` endpoint (the remote node).
//!
//! Read-only with respect to kernel state: one `ETH_P_ALL` packet socket per network
//! namespace, never bound to a device, no promiscuous mode, no filter attached to anything
//! but the socket itself. Frames going out and coming in are both delivered (the kernel's
//! taps run before the firewall on the way in), each with the index of the interface it
//! crossed. Every socket is closed when the [`Capture`] is dropped.

pub mod dropwatch;
pub mod matcher;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvfrom, socket, AddressFamily, LinkAddr, SockFlag, SockProtocol, SockType};

use crate::netns::NetNs;

pub use matcher::{echo, echo6, Kind, Matcher, ProbeProto, MARKER};

/// How long one `poll` waits at most, so a stop request is noticed quickly.
const POLL_SLICE: Duration = Duration::from_millis(100);

/// Packet sockets, one per namespace, each tagged with a key of the caller's choice.
pub struct Capture<K> {
    socks: Vec<(K, OwnedFd)>,
}

impl<K> Default for Capture<K> {
    fn default() -> Self {
        Capture { socks: Vec::new() }
    }
}

fn packet_socket() -> Result<OwnedFd, String> {
    socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )
    .map_err(|e| format!("open packet socket: {e}"))
}

impl<K> Capture<K> {
    /// Opens a packet socket in `netns` (a path; `None` for the caller's own namespace).
    pub fn open(&mut self, key: K, netns: Option<&str>) -> Result<(), String> {
        let fd = match netns {
            None => packet_socket()?,
            Some(p) => {
                let ns = NetNs::open(p).map_err(|e| format!("open netns {p}: {e}"))?;
                let _g = ns.enter().map_err(|e| format!("enter netns {p}: {e}"))?;
                packet_socket()?
            }
        };
        self.socks.push((key, fd));
        Ok(())
    }

    /// Reads frames until `until` or until `stop()` says so, calling `on(key, ifindex, frame)`
    /// for each; what is queued when it stops is still read.
    pub fn run(&self, until: Instant, stop: &dyn Fn() -> bool, on: &mut dyn FnMut(&K, u32, &[u8])) {
        let mut buf = vec![0u8; 65536];
        while Instant::now() < until && !stop() {
            let left = until.saturating_duration_since(Instant::now()).min(POLL_SLICE);
            let ms = u16::try_from(left.as_millis()).unwrap_or(100);
            let mut fds: Vec<PollFd> =
                self.socks.iter().map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)).collect();
            if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0 {
                self.drain(&mut buf, on);
            }
        }
        self.drain(&mut buf, on);
    }

    fn drain(&self, buf: &mut [u8], on: &mut dyn FnMut(&K, u32, &[u8])) {
        for (key, fd) in &self.socks {
            while let Ok((n, Some(a))) = recvfrom::<LinkAddr>(fd.as_raw_fd(), buf) {
                let index = u32::try_from(a.ifindex()).unwrap_or(0);
                on(key, index, buf.get(..n).unwrap_or(&[]));
            }
        }
    }
}
