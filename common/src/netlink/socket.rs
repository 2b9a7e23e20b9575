//! The blocking rtnetlink socket: send one request, read its ack, answer or dump.
//!
//! One [`Netlink`] per namespace. A socket stays bound to the namespace it was created
//! in, so [`Netlink::open_in`] enters the target namespace only for the `socket(2)` call
//! and every later operation runs from the calling thread's own namespace.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::Error;
use crate::netns::NetNs;

/// Receive buffer size: larger than any single datagram the kernel sends for a dump
/// (it caps them at 32 KiB), so nothing is ever truncated.
const RECV_BUF: usize = 64 * 1024;

/// How often an interrupted dump (`NLM_F_DUMP_INTR`: the table changed meanwhile) is retried.
const DUMP_RETRIES: usize = 5;

/// A blocking rtnetlink socket bound to one network namespace.
pub struct Netlink {
    pub(super) socket: Socket,
    pub(super) seq: u32,
    pub(super) buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish_non_exhaustive()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's namespace.
    pub fn open() -> Result<Netlink, Error> {
        let op = "open netlink socket";
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| Error::new(op, "NETLINK_ROUTE", e))?;
        socket.bind_auto().map_err(|e| Error::new(op, "bind", e))?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(|e| Error::new(op, "connect", e))?;
        // Strict checking makes the kernel honour dump filters (ifindex, family) and
        // reject malformed requests instead of ignoring fields; best effort on old kernels.
        let _ = socket.set_netlink_get_strict_chk(true);
        // Extended acks carry the kernel's reason for a failure; capped acks keep them small
        // (the request is not echoed back).
        let _ = socket.set_ext_ack(true);
        let _ = socket.set_cap_ack(true);
        Ok(Netlink { socket, seq: 0, buf: Vec::with_capacity(RECV_BUF) })
    }

    /// Opens a socket inside `ns`: enters it for the `socket(2)` call only. The socket keeps
    /// operating on `ns` after the thread has returned to its own namespace.
    pub fn open_in(ns: &NetNs) -> Result<Netlink, Error> {
        let _guard = ns.enter().map_err(|e| {
            Error::new("enter netns", ns.path().display().to_string(), std::io::Error::other(e))
        })?;
        Netlink::open()
    }

    /// Sets the socket's receive buffer to `bytes` (beyond `rmem_max` when the caller has
    /// CAP_NET_ADMIN; capped by it otherwise): the answers of a [`Netlink::batch`] datagram
    /// queue there until read.
    pub fn set_receive_buffer(&mut self, bytes: usize) {
        let forced =
            nix::sys::socket::setsockopt(&self.socket, nix::sys::socket::sockopt::RcvBufForce, &bytes);
        if forced.is_err() {
            let _ = self.socket.set_rx_buf_sz(bytes);
        }
    }

    /// The next request: `msg` with `NLM_F_REQUEST | flags` and the next sequence number.
    pub(super) fn next_request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> NetlinkMessage<RouteNetlinkMessage> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        packet
    }

    fn send(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        object: &str,
    ) -> Result<u32, Error> {
        let packet = self.next_request(msg, flags);
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(|e| Error::new(op, object, e))?;
        Ok(self.seq)
    }

    /// Reads datagrams until the reply to `seq` is complete: the ack (every non-dump
    /// request asks for one) or the end of a dump. Returns the answer messages; a kernel
    /// error becomes an [`Error`] with its errno.
    fn receive(&mut self, seq: u32, op: &'static str, object: &str) -> Result<Reply, Error> {
        let mut reply = Reply { messages: Vec::new(), interrupted: false };
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(|e| Error::new(op, object, e))?;
            if n > self.buf.len() {
                return Err(Error::decode(op, object, "netlink datagram truncated"));
            }
            let mut offset = 0;
            while offset < self.buf.len() {
                let Some(rest) = self.buf.get(offset..) else { break };
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                    .map_err(|e| Error::decode(op, object, e))?;
                let len = usize::try_from(msg.header.length).unwrap_or(0);
                if len == 0 {
                    return Err(Error::decode(op, object, "zero-length netlink message"));
                }
                // Messages are 4-byte aligned in the datagram.
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue; // a late answer to an earlier request
                }
                if msg.header.flags & NLM_F_DUMP_INTR != 0 {
                    reply.interrupted = true;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(reply),
                            Some(code) => Err(Error::errno(op, object, code.get().saturating_abs())
                                .with_kernel_msg(ext_ack_message(&e.header, msg.header.flags))),
                        }
                    }
                    NetlinkPayload::Done(d) => {
                        if d.code < 0 {
                            return Err(Error::errno(op, object, d.code.saturating_abs()));
                        }
                        return Ok(reply);
                    }
                    NetlinkPayload::InnerMessage(m) => reply.messages.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends `msg` with `flags | NLM_F_ACK` and waits for the kernel's acknowledgement.
    pub(crate) fn request_ack(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        object: &str,
    ) -> Result<(), Error> {
        let seq = self.send(msg, flags | NLM_F_ACK, op, object)?;
        self.receive(seq, op, object).map(|_| ())
    }

    /// Sends a non-dump query and returns the answer messages (followed by the ack).
    pub fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &'static str,
        object: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let seq = self.send(msg, NLM_F_ACK, op, object)?;
        Ok(self.receive(seq, op, object)?.messages)
    }

    /// Dumps a table (`NLM_F_DUMP`), retrying when the kernel reports the dump was
    /// interrupted by a concurrent change.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
        op: &'static str,
        object: &str,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let mut last = Vec::new();
        for _ in 0..DUMP_RETRIES {
            let seq = self.send(msg.clone(), NLM_F_DUMP, op, object)?;
            let reply = self.receive(seq, op, object)?;
            if !reply.interrupted {
                return Ok(reply.messages);
            }
            last = reply.messages;
        }
        Ok(last)
    }
}

/// `NLMSGERR_ATTR_MSG`: the human-readable reason in an extended ack.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// `NLM_F_ACK_TLVS` on an error message: TLVs follow the echoed request.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLM_F_CAPPED` on an error message: only the request's header was echoed.
const NLM_F_CAPPED: u16 = 0x100;
const NLMSG_HDRLEN: usize = 16;

/// The extended-ack message in the payload of an error (after the echoed request).
pub(super) fn ext_ack_message(payload: &[u8], flags: u16) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDRLEN
    } else {
        // The whole request was echoed: its length is the first field of its header.
        let len: [u8; 4] = payload.get(0..4)?.try_into().ok()?;
        usize::try_from(u32::from_ne_bytes(len)).ok()?
    };
    let tlvs = payload.get((echoed + 3) & !3..)?;
    for nla in netlink_packet_core::NlasIterator::new(tlvs) {
        let nla = nla.ok()?;
        if nla.kind() == NLMSGERR_ATTR_MSG {
            let text = nla.value();
            let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
            return text.get(..end).map(|t| String::from_utf8_lossy(t).into_owned());
        }
    }
    None
}

struct Reply {
    messages: Vec<RouteNetlinkMessage>,
    interrupted: bool,
}
