//! Stateful reconnect (docs/protocol.md, "Stateful reconnect"): the bookkeeping of both
//! directions of one logical connection.
//!
//! Sending: every trackable message (Invocation, StreamItem, Completion, StreamInvocation,
//! CancelInvocation) gets the next sequence id (from 1) and its encoded bytes stay in the replay
//! buffer until the server's Ack covers them. Receiving: trackable messages are numbered the same
//! way; one numbered at or below the highest already processed is a duplicate (a replay of
//! something that arrived before the loss) and is skipped. After a reconnect everything is
//! skipped until the server's Sequence message says where its replay starts.
//!
//! [`ReplayBuffer`] is plain data: the session holds it under a lock, sends what it says and
//! wakes the senders waiting for room.

use std::collections::VecDeque;

use bytes::Bytes;
use signalr_protocol::HubMessage;

use crate::error::{Error, Kind};

/// The default bound of the replay buffer, in bytes: the official clients'
/// `StatefulReconnectBufferSize` / `bufferSize`.
pub(crate) const DEFAULT_BUFFER_SIZE: usize = 100_000;

/// The error of a Sequence message that starts beyond what was received (the .NET text).
pub(crate) const SEQUENCE_TOO_HIGH: &str =
    "Sequence ID greater than amount of messages we've received.";

/// What to do with a received message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Incoming {
    /// Handle it as usual.
    Process,
    /// Skip it: a duplicate, something received before the peer's Sequence, or a Sequence
    /// message (fully handled here).
    Skip,
    /// An Ack that released buffered messages: wake the senders waiting for room.
    Acked,
}

/// Both directions' counters and the replay buffer of one logical connection.
#[derive(Debug)]
pub(crate) struct ReplayBuffer {
    /// Bound of `unacked_bytes`: a message is only added while the total is at most this.
    limit: usize,
    /// The sequence id of the next trackable message sent.
    next_send_id: u64,
    /// Sent and not yet acknowledged, oldest first, with their ids.
    unacked: VecDeque<(u64, Bytes)>,
    unacked_bytes: usize,
    /// The sequence id the next received trackable message carries.
    next_receive_id: u64,
    /// The highest received id that was processed (0: none yet).
    latest_processed: u64,
    /// The id of the last Ack sent (0: none yet).
    last_acked: u64,
    /// After a reconnect: skip everything until the server's Sequence message.
    awaiting_sequence: bool,
}

impl ReplayBuffer {
    /// An empty buffer holding at most about `limit` bytes of unacknowledged messages.
    pub(crate) fn new(limit: usize) -> Self {
        ReplayBuffer {
            limit,
            next_send_id: 1,
            unacked: VecDeque::new(),
            unacked_bytes: 0,
            next_receive_id: 1,
            latest_processed: 0,
            last_acked: 0,
            awaiting_sequence: false,
        }
    }

    /// Whether another message may be added: the buffered bytes do not exceed the limit (as in
    /// ASP.NET, the message that crosses the limit is still taken, and the next ones wait).
    pub(crate) fn has_room(&self) -> bool {
        self.unacked_bytes <= self.limit
    }

    /// The bytes of the unacknowledged messages.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.unacked_bytes
    }

    /// The configured bound, in bytes.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// Numbers an outgoing trackable message and keeps `data` until acknowledged; returns its id.
    pub(crate) fn push(&mut self, data: Bytes) -> u64 {
        let id = self.next_send_id;
        self.next_send_id += 1;
        self.unacked_bytes += data.len();
        self.unacked.push_back((id, data));
        id
    }

    /// The server processed everything up to `id`: drops those messages. An Ack at or below an
    /// earlier one changes nothing. Returns whether something was dropped.
    ///
    /// # Errors
    /// A protocol error when `id` was never sent.
    fn ack(&mut self, id: u64) -> Result<bool, Error> {
        if id >= self.next_send_id {
            return Err(Error::new(
                Kind::Protocol,
                format!(
                    "Invalid message from the server: Ack of sequence id {id}, but the client sent only {} messages.",
                    self.next_send_id - 1
                ),
            ));
        }
        let mut dropped = false;
        while let Some((first, data)) = self.unacked.front() {
            if *first > id {
                break;
            }
            self.unacked_bytes -= data.len();
            self.unacked.pop_front();
            dropped = true;
        }
        Ok(dropped)
    }

    /// Starts a resume on a new transport: returns the Sequence id to announce (the oldest
    /// unacknowledged message, or the next id when nothing is buffered) and the messages to send
    /// again, in order. From now on received messages are skipped until the server's Sequence.
    pub(crate) fn resend(&mut self) -> (u64, Vec<Bytes>) {
        self.awaiting_sequence = true;
        // The last Ack may have been lost with the transport: acknowledge again once the
        // server's Sequence arrived, even if its replay brings only duplicates.
        self.last_acked = 0;
        let sequence = self
            .unacked
            .front()
            .map_or(self.next_send_id, |(id, _)| *id);
        let messages = self.unacked.iter().map(|(_, data)| data.clone()).collect();
        (sequence, messages)
    }

    /// Whether received messages are skipped until the server's Sequence message.
    pub(crate) fn awaiting_sequence(&self) -> bool {
        self.awaiting_sequence
    }

    /// Classifies a received message and updates the counters; handles Ack and Sequence.
    ///
    /// # Errors
    /// A protocol error for an Ack of an id never sent, and for a Sequence of 0 or beyond the
    /// next id expected ([`SEQUENCE_TOO_HIGH`]): the connection cannot go on consistently.
    pub(crate) fn receive(&mut self, message: &HubMessage) -> Result<Incoming, Error> {
        if self.awaiting_sequence {
            let HubMessage::Sequence { sequence_id } = message else {
                return Ok(Incoming::Skip);
            };
            self.awaiting_sequence = false;
            self.sequence(*sequence_id)?;
            return Ok(Incoming::Skip);
        }
        match message {
            HubMessage::Sequence { sequence_id } => {
                self.sequence(*sequence_id)?;
                Ok(Incoming::Skip)
            }
            HubMessage::Ack { sequence_id } => Ok(if self.ack(*sequence_id)? {
                Incoming::Acked
            } else {
                Incoming::Skip
            }),
            message if message.is_ackable() => {
                let id = self.next_receive_id;
                self.next_receive_id += 1;
                if id <= self.latest_processed {
                    return Ok(Incoming::Skip);
                }
                self.latest_processed = id;
                Ok(Incoming::Process)
            }
            _ => Ok(Incoming::Process),
        }
    }

    /// The server's replay starts at `id`.
    fn sequence(&mut self, id: u64) -> Result<(), Error> {
        if id == 0 {
            return Err(Error::new(
                Kind::Protocol,
                "Invalid message from the server: Sequence ID 0 (sequence ids start at 1).",
            ));
        }
        if id > self.next_receive_id {
            return Err(Error::new(Kind::Protocol, SEQUENCE_TOO_HIGH));
        }
        self.next_receive_id = id;
        Ok(())
    }

    /// The id to acknowledge when something was processed since the last Ack (and records it as
    /// acknowledged), else `None`.
    pub(crate) fn ack_due(&mut self) -> Option<u64> {
        if self.latest_processed > self.last_acked {
            self.last_acked = self.latest_processed;
            Some(self.latest_processed)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use signalr_protocol::{CancelInvocation, Headers};

    fn trackable() -> HubMessage {
        HubMessage::CancelInvocation(CancelInvocation {
            headers: Headers::new(),
            invocation_id: "1".to_owned(),
        })
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn only_message_types_1_to_5_are_trackable() {
        assert!(trackable().is_ackable());
        assert!(!HubMessage::Ping.is_ackable());
        assert!(!HubMessage::Ack { sequence_id: 1 }.is_ackable());
        assert!(!HubMessage::Sequence { sequence_id: 1 }.is_ackable());
        assert!(!HubMessage::Close(Default::default()).is_ackable());
    }

    #[test]
    fn ids_start_at_1_and_an_ack_drops_what_it_covers() {
        let mut buffer = ReplayBuffer::new(1_000);
        assert_eq!(buffer.push(bytes(10)), 1);
        assert_eq!(buffer.push(bytes(20)), 2);
        assert_eq!(buffer.push(bytes(30)), 3);
        assert_eq!(buffer.buffered_bytes(), 60);
        assert_eq!(
            buffer
                .receive(&HubMessage::Ack { sequence_id: 2 })
                .expect("accepted"),
            Incoming::Acked
        );
        assert_eq!(buffer.buffered_bytes(), 30);
        // An older or repeated Ack changes nothing.
        assert_eq!(
            buffer
                .receive(&HubMessage::Ack { sequence_id: 1 })
                .expect("accepted"),
            Incoming::Skip
        );
        assert_eq!(buffer.buffered_bytes(), 30);
        let (sequence, messages) = buffer.resend();
        assert_eq!((sequence, messages.len()), (3, 1));
    }

    #[test]
    fn an_ack_of_an_id_never_sent_is_an_error() {
        let mut buffer = ReplayBuffer::new(1_000);
        let err = buffer
            .receive(&HubMessage::Ack { sequence_id: 1 })
            .expect_err("nothing was sent");
        assert!(err.is_protocol());
        buffer.push(bytes(1));
        let err = buffer
            .receive(&HubMessage::Ack {
                sequence_id: u64::MAX,
            })
            .expect_err("beyond what was sent");
        assert_eq!(
            err.to_string(),
            "Invalid message from the server: Ack of sequence id 18446744073709551615, but the client sent only 1 messages."
        );
        // The buffer is untouched by the bad Ack.
        assert_eq!(buffer.buffered_bytes(), 1);
    }

    #[test]
    fn the_byte_bound_stops_further_messages_until_an_ack() {
        let mut buffer = ReplayBuffer::new(100);
        buffer.push(bytes(60));
        assert!(buffer.has_room());
        // The message that crosses the bound is taken; the next one has to wait.
        buffer.push(bytes(60));
        assert!(!buffer.has_room());
        assert_eq!(buffer.buffered_bytes(), 120);
        buffer
            .receive(&HubMessage::Ack { sequence_id: 1 })
            .expect("accepted");
        assert!(buffer.has_room());
        assert_eq!(buffer.limit(), 100);
    }

    #[test]
    fn resend_announces_the_oldest_unacked_or_the_next_id() {
        let mut buffer = ReplayBuffer::new(1_000);
        assert_eq!(buffer.resend(), (1, Vec::new()));
        let mut buffer = ReplayBuffer::new(1_000);
        buffer.push(Bytes::from_static(b"a"));
        buffer.push(Bytes::from_static(b"b"));
        buffer.push(Bytes::from_static(b"c"));
        buffer
            .receive(&HubMessage::Ack { sequence_id: 1 })
            .expect("accepted");
        let (sequence, messages) = buffer.resend();
        assert_eq!(sequence, 2);
        assert_eq!(
            messages,
            [Bytes::from_static(b"b"), Bytes::from_static(b"c")]
        );
        // While the server's Sequence is awaited even an Ack is skipped.
        buffer
            .receive(&HubMessage::Ack { sequence_id: 3 })
            .expect("accepted");
        assert_eq!(buffer.buffered_bytes(), 2);
        buffer
            .receive(&HubMessage::Sequence { sequence_id: 1 })
            .expect("accepted");
        buffer
            .receive(&HubMessage::Ack { sequence_id: 3 })
            .expect("accepted");
        assert_eq!(buffer.resend(), (4, Vec::new()));
    }

    #[test]
    fn duplicates_after_a_sequence_are_skipped() {
        let mut buffer = ReplayBuffer::new(1_000);
        for _ in 0..3 {
            assert_eq!(
                buffer.receive(&trackable()).expect("accepted"),
                Incoming::Process
            );
        }
        // Pings are never numbered.
        assert_eq!(
            buffer.receive(&HubMessage::Ping).expect("accepted"),
            Incoming::Process
        );
        assert_eq!(buffer.ack_due(), Some(3));
        assert_eq!(buffer.ack_due(), None);
        buffer.resend();
        assert!(buffer.awaiting_sequence());
        // Before the server's Sequence everything is skipped, pings included.
        assert_eq!(
            buffer.receive(&trackable()).expect("accepted"),
            Incoming::Skip
        );
        assert_eq!(
            buffer.receive(&HubMessage::Ping).expect("accepted"),
            Incoming::Skip
        );
        // The server replays from 2: 2 and 3 are duplicates, 4 is new.
        assert_eq!(
            buffer
                .receive(&HubMessage::Sequence { sequence_id: 2 })
                .expect("accepted"),
            Incoming::Skip
        );
        assert!(!buffer.awaiting_sequence());
        // What was processed before the loss is acknowledged again.
        assert_eq!(buffer.ack_due(), Some(3));
        assert_eq!(
            buffer.receive(&trackable()).expect("accepted"),
            Incoming::Skip
        );
        assert_eq!(
            buffer.receive(&trackable()).expect("accepted"),
            Incoming::Skip
        );
        assert_eq!(
            buffer.receive(&trackable()).expect("accepted"),
            Incoming::Process
        );
        assert_eq!(buffer.ack_due(), Some(4));
    }

    #[test]
    fn a_sequence_beyond_what_was_received_is_fatal() {
        let mut buffer = ReplayBuffer::new(1_000);
        buffer.receive(&trackable()).expect("accepted");
        buffer.resend();
        // Received 1, so the replay may start at 2 at most.
        let err = buffer
            .receive(&HubMessage::Sequence { sequence_id: 3 })
            .expect_err("jump");
        assert!(err.is_protocol());
        assert_eq!(err.to_string(), SEQUENCE_TOO_HIGH);
        let mut buffer = ReplayBuffer::new(1_000);
        buffer.receive(&trackable()).expect("accepted");
        assert_eq!(
            buffer
                .receive(&HubMessage::Sequence { sequence_id: 2 })
                .expect("accepted"),
            Incoming::Skip
        );
        assert!(
            buffer
                .receive(&HubMessage::Sequence { sequence_id: 0 })
                .expect_err("zero")
                .is_protocol()
        );
        assert!(
            buffer
                .receive(&HubMessage::Sequence {
                    sequence_id: u64::MAX
                })
                .is_err()
        );
    }
}
