//! Many requests per `sendmsg`: [`Netlink::batch`].
//!
//! The kernel handles every message of a datagram sent to it, in order, inside the `sendmsg`
//! call (`netlink_rcv_skb` loops over them, acking each failure and each request that asks),
//! so a batch asks an ack only of the last request of each datagram: successes before it send
//! nothing, failures send their error first, and the last ack closes the datagram. One
//! `sendmsg` and one `recvmsg` then carry up to `per_send` requests, where a request at a time
//! costs a pair of system calls each (what `ip -batch` does, line by line).

use netlink_packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK};
use netlink_packet_route::RouteNetlinkMessage;

use super::socket::ext_ack_message;
use super::{Error, Netlink};

/// Bytes per datagram at most, whatever `per_send` says: far below the socket's send buffer.
const MAX_DATAGRAM: usize = 32 * 1024;

/// What became of one request of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOutcome {
    /// The kernel applied it.
    Done,
    /// The kernel refused it: its errno (positive) and the extended-ack reason, if any.
    Failed { errno: i32, message: Option<String> },
    /// The socket's receive buffer overran (ENOBUFS) while the request's datagram was being
    /// answered: its answer may be lost. The kernel most likely applied it.
    Unknown,
}

impl Netlink {
    /// Sends `requests` (message and extra `NLM_F_*` flags each) up to `per_send` per
    /// datagram, in order, and returns one outcome per request, in the same order. An error is
    /// returned only when the socket itself fails (send, or a receive error other than an
    /// overrun); then nothing is known of the requests not yet answered.
    pub fn batch(
        &mut self,
        requests: impl IntoIterator<Item = (RouteNetlinkMessage, u16)>,
        per_send: usize,
    ) -> Result<Vec<BatchOutcome>, Error> {
        let op = "send netlink batch";
        let per_send = per_send.max(1);
        let mut outcomes = Vec::new();
        let mut datagram: Vec<u8> = Vec::with_capacity(MAX_DATAGRAM);
        let mut pending: Vec<NetlinkMessage<RouteNetlinkMessage>> = Vec::with_capacity(per_send);
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            pending.clear();
            let mut bytes = 0;
            while pending.len() < per_send {
                let Some((msg, flags)) = requests.next_if(|_| bytes < MAX_DATAGRAM) else { break };
                let packet = self.next_request(msg, flags);
                bytes += aligned(packet.buffer_len());
                pending.push(packet);
            }
            if let Some(last) = pending.last_mut() {
                last.header.flags |= NLM_F_ACK;
            }
            datagram.clear();
            for packet in &pending {
                let start = datagram.len();
                datagram.resize(start + aligned(packet.buffer_len()), 0);
                if let Some(slot) = datagram.get_mut(start..) {
                    packet.serialize(slot);
                }
            }
            let first = pending.first().map_or(0, |p| p.header.sequence_number);
            self.socket
                .send(&datagram, 0)
                .map_err(|e| Error::new(op, format!("{} requests", pending.len()), e))?;
            outcomes.extend(self.answers(first, pending.len(), op)?);
        }
        Ok(outcomes)
    }

    /// Reads the answers to the `count` requests numbered from `first` (wrapping), until the
    /// last one's ack or error.
    fn answers(&mut self, first: u32, count: usize, op: &'static str) -> Result<Vec<BatchOutcome>, Error> {
        let mut out = vec![BatchOutcome::Done; count];
        loop {
            match self.read_answers(first, &mut out, 0, op)? {
                Read::Closed => return Ok(out),
                Read::More => {}
                Read::Overrun => {
                    // Answers were dropped: failures among them, maybe the last ack too
                    // (waiting for it could block for ever). What is not known failed is
                    // unknown. Every answer the kernel kept is queued already (it answered
                    // inside `sendmsg`): read them now, so none is left for a later request
                    // to skip past, in a buffer full enough to drop that one's answer too.
                    for o in &mut out {
                        if *o == BatchOutcome::Done {
                            *o = BatchOutcome::Unknown;
                        }
                    }
                    while !matches!(
                        self.read_answers(first, &mut out, libc::MSG_DONTWAIT, op),
                        Ok(Read::Closed) | Err(_)
                    ) {}
                    return Ok(out);
                }
            }
        }
    }

    /// Reads one datagram of answers into `out` (requests numbered from `first`). With
    /// `MSG_DONTWAIT`, an empty queue is an error.
    fn read_answers(
        &mut self,
        first: u32,
        out: &mut [BatchOutcome],
        flags: libc::c_int,
        op: &'static str,
    ) -> Result<Read, Error> {
        self.buf.clear();
        match self.socket.recv(&mut self.buf, flags) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => return Ok(Read::Overrun),
            Err(e) => return Err(Error::new(op, "answers", e)),
        }
        let last = out.len().saturating_sub(1);
        let mut offset = 0;
        let mut closed = false;
        while let Some(rest) = self.buf.get(offset..).filter(|r| !r.is_empty()) {
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(rest)
                .map_err(|e| Error::decode(op, "answers", e))?;
            let len = usize::try_from(msg.header.length).unwrap_or(0);
            if len == 0 {
                return Err(Error::decode(op, "answers", "zero-length netlink message"));
            }
            offset += aligned(len);
            let nth = usize::try_from(msg.header.sequence_number.wrapping_sub(first)).unwrap_or(usize::MAX);
            let Some(slot) = out.get_mut(nth) else {
                continue; // an answer to an earlier request
            };
            if let NetlinkPayload::Error(e) = msg.payload {
                if let Some(code) = e.code {
                    *slot = BatchOutcome::Failed {
                        errno: code.get().saturating_abs(),
                        message: ext_ack_message(&e.header, msg.header.flags),
                    };
                }
                closed |= nth == last;
            }
        }
        Ok(if closed { Read::Closed } else { Read::More })
    }
}

/// What one read of answers found.
enum Read {
    /// The datagram's last request was answered: nothing more is coming.
    Closed,
    More,
    /// The socket reported ENOBUFS: answers were dropped.
    Overrun,
}

/// Netlink messages start on 4-byte boundaries.
fn aligned(len: usize) -> usize {
    (len + 3) & !3
}
