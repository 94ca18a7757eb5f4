//! The binary frames of the peer transport.
//!
//! A peer connection starts as an HTTP/1.1 request on the node's own listener
//! (`GET /internal/peer`, `Upgrade: ringkv-peer/5`, the cluster secret as a bearer token);
//! after `101 Switching Protocols` it carries only frames, from the dialling node to the
//! accepting one:
//!
//! ```text
//! frame   = length:u32 (big-endian, bytes of payload) payload
//! payload = envelope*      (each one MessagePack value, back to back; at least one)
//! ```
//!
//! The messages every client operation sends go in a layout of the transport's own,
//! written and read field by field ([`codec`]), as a MessagePack `bin 32` value; every
//! other message as serde's MessagePack form of the protocol's type ([`form`]).
//! MessagePack and not postcard or bincode for those: they are internally tagged serde
//! enums (`{"type": "join_request", ...}` in JSON, which the debug endpoint and the HTTP
//! API's error bodies keep), and reading those back needs a self-describing format.
//! Structs go as arrays (no field names) and node ids as 20 raw bytes. Version 5 of the
//! protocol introduced the hand-written layout (versions 2 to 4 carried the frequent
//! messages in a serde form of the transport's own).

use std::borrow::Borrow;

use ringkv_core::Envelope;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

mod codec;
mod form;

/// Path of the upgrade request that opens a peer connection.
pub const PEER_PATH: &str = "/internal/peer";

/// Value of the `Upgrade` header, naming the protocol and its version.
pub const PROTOCOL: &str = "ringkv-peer/5";

/// Largest payload of one frame (a snapshot chunk is about 4 MiB); a longer length prefix
/// closes the connection.
pub const FRAME_BYTES_MAX: usize = 64 << 20;

/// Bytes of a frame's length prefix.
const PREFIX_BYTES: usize = 4;

/// Deepest nesting a frame may have; real envelopes are about ten levels deep, and the
/// bound keeps a hostile frame from exhausting the stack.
const DEPTH_MAX: usize = 64;

/// Why a frame could not be read or decoded. Any of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length prefix announces more than [`FRAME_BYTES_MAX`].
    #[error("a frame of {len} bytes is above the limit of {max} bytes")]
    TooLarge {
        /// Announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A frame with no envelope.
    #[error("an empty frame")]
    Empty,
    /// The payload is not a sequence of envelopes.
    #[error("a frame that does not decode: {0}")]
    Malformed(String),
    /// The connection ended inside a frame.
    #[error("the connection ended inside a frame")]
    Truncated,
    /// Reading from the connection failed.
    #[error("reading a frame failed: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the peer sent bytes that break the protocol (as opposed to a connection
    /// that broke).
    pub fn is_malformed(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. } | FrameError::Empty | FrameError::Malformed(_)
        )
    }
}

/// What [`encode`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    /// Frames appended.
    pub frames: usize,
    /// Envelopes in them.
    pub envelopes: usize,
    /// Envelopes left out: one alone larger than [`FRAME_BYTES_MAX`], or (never for the
    /// protocol's plain data) one that did not serialize.
    pub skipped: usize,
}

/// Append `envelopes` to `out` as frames of at most about `frame_bytes_max` payload bytes
/// each (a frame ends after the envelope that crosses the bound, and never exceeds
/// [`FRAME_BYTES_MAX`]), in order.
pub fn encode<I>(envelopes: I, frame_bytes_max: usize, out: &mut Vec<u8>) -> Encoded
where
    I: IntoIterator,
    I::Item: Borrow<Envelope>,
{
    encode_within(envelopes, frame_bytes_max, FRAME_BYTES_MAX, out)
}

/// [`encode`] with `limit` in place of [`FRAME_BYTES_MAX`].
fn encode_within<I>(
    envelopes: I,
    frame_bytes_max: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> Encoded
where
    I: IntoIterator,
    I::Item: Borrow<Envelope>,
{
    let mut done = Encoded::default();
    let mut frame_start = None;
    for envelope in envelopes {
        let envelope = envelope.borrow();
        let mut start = *frame_start.get_or_insert_with(|| {
            out.extend_from_slice(&[0; PREFIX_BYTES]);
            out.len() - PREFIX_BYTES
        });
        let before = out.len();
        let written = if codec::encode(envelope, out) {
            Ok(())
        } else {
            let form = form::EnvelopeRef::from(envelope);
            form.serialize(&mut rmp_serde::Serializer::new(&mut *out))
        };
        let envelope_bytes = out.len() - before;
        if written.is_err() || envelope_bytes > limit {
            tracing::warn!(
                kind = envelope.msg.kind(),
                bytes = envelope_bytes,
                "leaving out an envelope that cannot be framed"
            );
            out.truncate(before);
            done.skipped += 1;
            continue;
        }
        let payload_before = before - start - PREFIX_BYTES;
        if payload_before > 0 && payload_before + envelope_bytes > limit {
            // This envelope would make the frame too long: it starts the next one.
            close_frame(out, start, before, &mut done);
            out.splice(before..before, [0; PREFIX_BYTES]);
            start = before;
            frame_start = Some(start);
        }
        done.envelopes += 1;
        if out.len() - start - PREFIX_BYTES >= frame_bytes_max {
            let end = out.len();
            close_frame(out, start, end, &mut done);
            frame_start = None;
        }
    }
    match frame_start {
        Some(start) if out.len() > start + PREFIX_BYTES => {
            let end = out.len();
            close_frame(out, start, end, &mut done)
        }
        Some(start) => out.truncate(start),
        None => {}
    }
    done
}

/// Write the length prefix of the frame that starts at `start` and ends at `end`.
fn close_frame(out: &mut [u8], start: usize, end: usize, done: &mut Encoded) {
    let payload = end - start - PREFIX_BYTES;
    // At most FRAME_BYTES_MAX, far below u32::MAX.
    let len = u32::try_from(payload).unwrap_or(u32::MAX);
    out[start..start + PREFIX_BYTES].copy_from_slice(&len.to_be_bytes());
    done.frames += 1;
}

/// The envelopes of one frame's payload, all of them or an error.
pub fn decode(payload: &[u8]) -> Result<Vec<Envelope>, FrameError> {
    let mut envelopes = Vec::new();
    decode_into(payload, &mut envelopes, &mut codec::Nodes::default())?;
    Ok(envelopes)
}

/// Append the envelopes of one frame's payload to `out`: all of them, or none and an error.
///
/// Each envelope is decoded from a slice that borrows the payload, so strings and ids are
/// read in place rather than copied first. [`value_len`] finds where each envelope ends,
/// since a borrowing deserializer does not tell how far it read.
fn decode_into(
    payload: &[u8],
    out: &mut Vec<Envelope>,
    nodes: &mut codec::Nodes,
) -> Result<(), FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let mark = out.len();
    let mut rest = payload;
    while !rest.is_empty() {
        let decoded = value_len(rest).and_then(|len| {
            let (one, after) = rest.split_at(len);
            if one.first() == Some(&codec::MARKER) {
                let envelope = codec::decode(one, nodes).map_err(FrameError::Malformed)?;
                return Ok((envelope, after));
            }
            let mut de = rmp_serde::Deserializer::from_read_ref(one);
            de.set_max_depth(DEPTH_MAX);
            let envelope = form::EnvelopeForm::deserialize(&mut de)
                .map_err(|e| FrameError::Malformed(e.to_string()))?;
            Ok((envelope.into_envelope(nodes), after))
        });
        match decoded {
            Ok((envelope, after)) => {
                out.push(envelope);
                rest = after;
            }
            Err(err) => {
                out.truncate(mark);
                return Err(err);
            }
        }
    }
    Ok(())
}

/// Bytes of the MessagePack value at the start of `bytes`. Iterative (a count of values
/// still to skip, not recursion), so a deeply nested value cannot exhaust the stack; every
/// value takes at least one byte, so a count above the bytes left is malformed at once.
fn value_len(bytes: &[u8]) -> Result<usize, FrameError> {
    let malformed = |what: &str| FrameError::Malformed(format!("MessagePack: {what}"));
    let mut at = 0usize;
    let mut values: usize = 1;
    // Big-endian unsigned integer of `n` bytes at `at`.
    let uint = |at: usize, n: usize| -> Result<usize, FrameError> {
        let field = bytes
            .get(at..at + n)
            .ok_or_else(|| malformed("truncated length"))?;
        Ok(field
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b)))
    };
    while values > 0 {
        values -= 1;
        let marker = *bytes.get(at).ok_or_else(|| malformed("truncated value"))?;
        at += 1;
        // (bytes to skip after the marker, values nested in this one)
        let (skip, items) = match marker {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => (0, 0),
            0x80..=0x8f => (0, 2 * usize::from(marker & 0x0f)),
            0x90..=0x9f => (0, usize::from(marker & 0x0f)),
            0xa0..=0xbf => (usize::from(marker & 0x1f), 0),
            0xc1 => return Err(malformed("reserved marker 0xc1")),
            0xc4 | 0xd9 => (uint(at, 1)?.saturating_add(1), 0),
            0xc5 | 0xda => (uint(at, 2)?.saturating_add(2), 0),
            0xc6 | 0xdb => (uint(at, 4)?.saturating_add(4), 0),
            // ext: length, type byte, data
            0xc7 => (uint(at, 1)?.saturating_add(2), 0),
            0xc8 => (uint(at, 2)?.saturating_add(3), 0),
            0xc9 => (uint(at, 4)?.saturating_add(5), 0),
            0xca | 0xce | 0xd2 => (4, 0),
            0xcb | 0xcf | 0xd3 => (8, 0),
            0xcc | 0xd0 => (1, 0),
            0xcd | 0xd1 => (2, 0),
            0xd4 => (2, 0),
            0xd5 => (3, 0),
            0xd6 => (5, 0),
            0xd7 => (9, 0),
            0xd8 => (17, 0),
            0xdc => (2, uint(at, 2)?),
            0xdd => (4, uint(at, 4)?),
            0xde => (2, uint(at, 2)?.saturating_mul(2)),
            0xdf => (4, uint(at, 4)?.saturating_mul(2)),
        };
        at = at
            .checked_add(skip)
            .filter(|end| *end <= bytes.len())
            .ok_or_else(|| malformed("truncated value"))?;
        values = values
            .checked_add(items)
            .filter(|v| *v <= bytes.len() - at)
            .ok_or_else(|| malformed("more items than bytes"))?;
    }
    Ok(at)
}

/// Read the next frame's payload into `buf` (replacing its contents). `Ok(false)`: the
/// connection ended cleanly between two frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut Vec<u8>,
) -> Result<bool, FrameError> {
    let mut prefix = [0u8; PREFIX_BYTES];
    let mut got = 0;
    while got < PREFIX_BYTES {
        match rd.read(&mut prefix[got..]).await? {
            0 if got == 0 => return Ok(false),
            0 => return Err(FrameError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_be_bytes(prefix) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(FrameError::TooLarge {
            len,
            max: FRAME_BYTES_MAX,
        });
    }
    buf.clear();
    // Grows with what actually arrives, so a lying prefix costs no memory up front.
    let read = rd.take(len as u64).read_to_end(buf).await?;
    if read < len {
        return Err(FrameError::Truncated);
    }
    Ok(true)
}

/// Bytes asked of the connection per read, at least: one read usually takes every frame
/// that has arrived.
const READ_CHUNK_BYTES: usize = 64 << 10;

/// A buffer grown above this by a large frame is given back once it is consumed.
const READ_BUFFER_KEPT_BYTES_MAX: usize = 1 << 20;

/// The receiving end of a connection's frames: reads as much as has arrived into one
/// buffer and decodes every whole frame in it, so a reader that fell behind takes several
/// frames per system call and hands them on together.
#[derive(Debug, Default)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the bytes not yet decoded.
    start: usize,
    /// The nodes the connection's envelopes name.
    nodes: codec::Nodes,
}

impl FrameReader {
    /// An empty reader.
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// Append the envelopes of every whole frame buffered to `out`, in order, and consume
    /// those frames. On an error, the envelopes of the frames before the bad one are in
    /// `out` (none of the bad frame's), and the connection should be closed.
    pub fn decode_buffered(&mut self, out: &mut Vec<Envelope>) -> Result<(), FrameError> {
        while let Some(len) = self.whole_frame()? {
            let payload = &self.buf[self.start + PREFIX_BYTES..self.start + PREFIX_BYTES + len];
            decode_into(payload, out, &mut self.nodes)?;
            self.start += PREFIX_BYTES + len;
        }
        if self.start == self.buf.len() {
            self.start = 0;
            self.buf.clear();
            if self.buf.capacity() > READ_BUFFER_KEPT_BYTES_MAX {
                self.buf = Vec::new();
            }
        }
        Ok(())
    }

    /// Payload length of the frame at the start of the buffer, if all of it is there.
    fn whole_frame(&self) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = self.buf.get(self.start..self.start + PREFIX_BYTES) else {
            return Ok(None);
        };
        let mut len = [0u8; PREFIX_BYTES];
        len.copy_from_slice(prefix);
        let len = u32::from_be_bytes(len) as usize;
        if len > FRAME_BYTES_MAX {
            return Err(FrameError::TooLarge {
                len,
                max: FRAME_BYTES_MAX,
            });
        }
        let buffered = self.buf.len() - self.start - PREFIX_BYTES;
        Ok((buffered >= len).then_some(len))
    }

    /// Read what has arrived (waiting for at least one byte). `Ok(false)`: the connection
    /// ended cleanly between two frames.
    pub async fn read<R: AsyncRead + Unpin>(&mut self, rd: &mut R) -> Result<bool, FrameError> {
        if self.start > 0 {
            // Only part of a frame is left: move it to the front.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // Grows with what actually arrives, so a lying prefix costs no memory up front.
        if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES {
            self.buf.reserve(READ_CHUNK_BYTES);
        }
        match rd.read_buf(&mut self.buf).await? {
            0 if self.buf.is_empty() => Ok(false),
            0 => Err(FrameError::Truncated),
            _ => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::message::{Action, ChainStep, Origin, Prepare, Routed};
    use ringkv_core::{
        ClusterConfig, Consistency, Entry, Message, NodeRef, Range, RequestError, Response,
        Routing, Version, View,
    };

    fn node(port: u16) -> NodeRef {
        NodeRef::new(&format!("127.0.0.1:{port}"))
    }

    fn entry() -> Entry {
        Entry {
            value: Some("Like a Rolling Stone".into()),
            version: Version {
                counter: 7,
                node: node(2).id,
            },
        }
    }

    fn origin() -> Origin {
        Origin {
            node: node(3),
            req: 42,
            incarnation: 9,
        }
    }

    /// One message of each shape the protocol sends: unit variants, struct variants,
    /// newtype variants with a nested tagged enum, options, results and raw ids.
    fn samples() -> Vec<Message> {
        let config = ClusterConfig::new(3, Consistency::Chain, Routing::Finger).unwrap();
        let range = Range::Interval {
            from: node(4).id,
            to: node(5).id,
        };
        vec![
            Message::Heartbeat {
                term: 2,
                epoch: 1 << 33,
                preparing: Some(3),
                sent: 5,
            },
            Message::Ping,
            Message::JoinRequest {
                node: node(6),
                incarnation: u64::MAX,
                hops: 2,
                ring: Some(ringkv_core::RingRecord {
                    epoch: 5,
                    members: vec![node(7).id, node(8).id],
                }),
                prepared: Some(1 << 33),
            },
            Message::Prepare(Prepare {
                view: View {
                    epoch: 3,
                    ring_size: 4,
                    preds: vec![node(1), node(2), node(12)],
                    succs: vec![node(12), node(2), node(1)],
                },
                config,
                sources: vec![node(8)],
                fingers: Some(vec![node(9); ringkv_core::id::ID_BITS]),
                resync: true,
                term: 2,
                decided: 2 << 32,
                pieces: vec![ringkv_core::message::Piece {
                    range,
                    source: node(13),
                }],
            }),
            Message::Fetch {
                epoch: 3,
                range,
                have: Vec::new(),
            },
            Message::Fetch {
                epoch: 4,
                range: Range::All,
                have: vec![7; ringkv_core::store::FETCH_BUCKETS],
            },
            Message::Snapshot {
                epoch: 3,
                chunk: 0,
                chunks: 1,
                entries: vec![("k".into(), entry())],
            },
            Message::Route(Routed {
                origin: Some(origin()),
                key: "AC/DC ?".into(),
                action: Action::Write {
                    value: Some("é".into()),
                },
                hops: 2,
                laps: 1,
                redriven: true,
            }),
            Message::Route(Routed {
                origin: None,
                key: "k".into(),
                action: Action::Repair {
                    entry: entry(),
                    ttl: 8,
                },
                hops: 0,
                laps: 0,
                redriven: false,
            }),
            Message::ChainWrite(ChainStep {
                origin: None,
                key: "k".into(),
                entry: entry(),
                existed: false,
                position: 1,
                chain_len: 3,
                hops: 4,
                ttl: 8,
            }),
            Message::Done {
                req: 5,
                reply: Ok(Response::Inserted {
                    key: "k".into(),
                    value: "v".into(),
                    node: "127.0.0.1:1".into(),
                    hops: 1,
                }),
            },
            Message::Done {
                req: 6,
                reply: Err(RequestError::Timeout { timeout_ms: 10 }),
            },
            Message::Route(Routed {
                origin: Some(origin()),
                key: "k".into(),
                action: Action::Read,
                hops: 1,
                laps: 0,
                redriven: false,
            }),
            Message::Done {
                req: 7,
                reply: Ok(Response::Found {
                    key: "k".into(),
                    value: "v".into(),
                    node: "127.0.0.1:2".into(),
                    hops: 0,
                }),
            },
            Message::Done {
                req: 8,
                reply: Ok(Response::NotFound {
                    key: "k".into(),
                    node: "127.0.0.1:2".into(),
                    hops: 3,
                }),
            },
            Message::Done {
                req: 9,
                reply: Ok(Response::Deleted {
                    key: "k".into(),
                    existed: true,
                    node: "127.0.0.1:2".into(),
                    hops: 1,
                }),
            },
            Message::Done {
                req: 10,
                reply: Ok(Response::Overlay {
                    nodes: vec!["127.0.0.1:2".into()],
                }),
            },
            Message::Refused {
                reason: RequestError::NotJoined,
                term: 3,
            },
            Message::ReplicateAck {
                seqs: vec![1, 2, 3],
            },
            Message::Replicate {
                entries: vec![("k".into(), entry()), ("l".into(), entry())],
                ttl: 3,
                seq: 17,
                epoch: 9,
            },
            Message::TailRead {
                origin: origin(),
                key: "k".into(),
                hops: 2,
            },
            Message::CraqClean {
                key: "k".into(),
                version: Some(entry().version),
            },
            Message::CraqClean {
                key: "k".into(),
                version: None,
            },
            Message::Fingers {
                epoch: 1,
                term: 1,
                updates: vec![(159, node(10))],
            },
            Message::Commit {
                epoch: 9,
                failed: vec![node(11)],
                term: 4,
                hold_leases: true,
                seats: vec![node(12)],
            },
            Message::Rejoin {
                ring_id: 7,
                nonce: 9,
            },
        ]
    }

    fn envelopes() -> Vec<Envelope> {
        samples()
            .into_iter()
            .map(|msg| Envelope { from: node(1), msg })
            .collect()
    }

    /// Payloads of the frames in `bytes`.
    fn frames(bytes: &[u8]) -> Vec<&[u8]> {
        let mut rest = bytes;
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            out.push(&rest[4..4 + len]);
            rest = &rest[4 + len..];
        }
        out
    }

    #[test]
    fn every_message_shape_round_trips_in_one_frame() {
        let batch = envelopes();
        let mut out = Vec::new();
        let done = encode(&batch, 1 << 20, &mut out);
        assert_eq!(
            (done.frames, done.envelopes, done.skipped),
            (1, batch.len(), 0)
        );
        let payloads = frames(&out);
        assert_eq!(payloads.len(), 1);
        assert_eq!(decode(payloads[0]).unwrap(), batch);
    }

    #[test]
    fn frequent_messages_go_in_the_transports_own_form() {
        let own = |msg: Message| {
            let mut out = Vec::new();
            encode(&[Envelope { from: node(1), msg }], 1 << 20, &mut out);
            // The others go as serde's MessagePack form, an array of sender and message.
            frames(&out)[0][0] == codec::MARKER
        };
        let mut frequent = 0;
        for msg in samples() {
            let kind = msg.kind();
            // Answers of other kinds than client operations get go as the protocol's too.
            let rare_answer = matches!(
                &msg,
                Message::Done { reply, .. } if !matches!(
                    reply,
                    Ok(Response::Inserted { .. }
                        | Response::Found { .. }
                        | Response::NotFound { .. }
                        | Response::Deleted { .. })
                )
            );
            let expected = !rare_answer
                && matches!(
                    kind,
                    "route"
                        | "chain_write"
                        | "done"
                        | "tail_read"
                        | "replicate"
                        | "replicate_ack"
                        | "craq_clean"
                );
            frequent += usize::from(expected);
            assert_eq!(own(msg), expected, "{kind}");
        }
        assert_eq!(frequent, 13, "every frequent shape is among the samples");
    }

    #[test]
    fn the_transports_own_form_rejects_what_it_did_not_write() {
        // Every strict prefix of each frequent envelope, and each with a byte appended, is
        // malformed; flipping any one byte never panics.
        for msg in samples() {
            let mut out = Vec::new();
            encode(&[Envelope { from: node(1), msg }], 1 << 20, &mut out);
            let payload = frames(&out)[0].to_vec();
            if payload[0] != codec::MARKER {
                continue;
            }
            let body = payload.len() - 5;
            for cut in 0..body {
                let mut short = payload[..5 + cut].to_vec();
                short[1..5].copy_from_slice(&(cut as u32).to_be_bytes());
                assert!(decode(&short).is_err(), "{cut} of {body} bytes");
            }
            let mut long = payload.clone();
            long.push(0);
            long[1..5].copy_from_slice(&(body as u32 + 1).to_be_bytes());
            assert!(decode(&long).is_err());
            for at in 5..payload.len() {
                let mut flipped = payload.clone();
                flipped[at] ^= 0xff;
                let _ = decode(&flipped);
            }
        }
    }

    #[test]
    fn ids_travel_as_bytes() {
        let (from, joiner) = (node(1), node(6));
        let mut out = Vec::new();
        let sent = Envelope {
            from: from.clone(),
            msg: Message::JoinRequest {
                node: joiner.clone(),
                incarnation: 1,
                hops: 0,
                ring: None,
                prepared: None,
            },
        };
        encode(std::slice::from_ref(&sent), 1 << 20, &mut out);
        let raw = joiner.id.to_bytes();
        assert!(out.windows(20).any(|w| w == raw));
        assert!(!out
            .windows(40)
            .any(|w| w == joiner.id.to_string().as_bytes()));
        // The sender goes as its address; the receiver computes its id.
        assert!(!out.windows(20).any(|w| w == from.id.to_bytes()));
        let received = decode(frames(&out)[0]).unwrap();
        assert_eq!(received, [sent]);
        assert_eq!(received[0].from.id, from.id);
    }

    #[tokio::test]
    async fn every_envelope_of_a_connection_names_its_own_sender() {
        let batch: Vec<Envelope> = [1, 1, 2, 1]
            .into_iter()
            .map(|port| Envelope {
                from: node(port),
                msg: Message::Ping,
            })
            .collect();
        let mut out = Vec::new();
        encode(&batch, 1 << 20, &mut out);
        let mut frames = FrameReader::new();
        let mut decoded = Vec::new();
        assert!(frames.read(&mut &out[..]).await.unwrap());
        frames.decode_buffered(&mut decoded).unwrap();
        assert_eq!(decoded, batch);
        assert!(decoded
            .iter()
            .all(|e| e.from.id == NodeRef::new(&e.from.addr).id));
    }

    #[test]
    fn batches_split_by_size_and_keep_their_order() {
        let batch = envelopes();
        let mut out = Vec::new();
        let done = encode(&batch, 1, &mut out);
        assert_eq!(done.frames, batch.len(), "one envelope per frame");
        let decoded: Vec<Envelope> = frames(&out)
            .into_iter()
            .flat_map(|p| decode(p).unwrap())
            .collect();
        assert_eq!(decoded, batch);
        let mut none = Vec::new();
        assert_eq!(encode(&[], 1, &mut none), Encoded::default());
        assert!(none.is_empty());
    }

    #[test]
    fn frames_stay_within_the_limit() {
        let sizes = [10usize, 300, 20, 20, 900, 20, 5000, 20];
        let batch: Vec<Envelope> = sizes
            .iter()
            .map(|&n| Envelope {
                from: node(1),
                msg: Message::ReplicateAck { seqs: vec![1; n] },
            })
            .collect();
        let limit = 1000;
        let mut out = Vec::new();
        let done = encode_within(&batch, usize::MAX, limit, &mut out);
        assert_eq!(
            done.skipped, 1,
            "the 5000-entry envelope alone is above the limit"
        );
        let payloads = frames(&out);
        assert_eq!(payloads.len(), done.frames);
        assert!(payloads.len() >= 2);
        assert!(payloads.iter().all(|p| p.len() <= limit && !p.is_empty()));
        let decoded: Vec<Envelope> = payloads.iter().flat_map(|p| decode(p).unwrap()).collect();
        let kept: Vec<Envelope> = batch.into_iter().filter(|e| *e != batch_big()).collect();
        assert_eq!(decoded, kept);
    }

    fn batch_big() -> Envelope {
        Envelope {
            from: node(1),
            msg: Message::ReplicateAck {
                seqs: vec![1; 5000],
            },
        }
    }

    #[test]
    fn malformed_payloads_are_errors() {
        let mut out = Vec::new();
        encode(&envelopes()[..2], 1 << 20, &mut out);
        let payload = frames(&out)[0].to_vec();
        assert!(decode(&[]).unwrap_err().is_malformed());
        assert!(decode(&payload[..payload.len() - 1]).is_err(), "truncated");
        let mut trailing = payload.clone();
        trailing.push(0xc1); // never used in MessagePack
        assert!(decode(&trailing).unwrap_err().is_malformed());
        assert!(decode(&[0xff; 64]).is_err());
        // A forged node: the id is not SHA-1 of the address.
        let mut forged = Vec::new();
        let joiner = envelopes()
            .into_iter()
            .find(|e| matches!(e.msg, Message::JoinRequest { .. }))
            .unwrap();
        encode(&[joiner], 1 << 20, &mut forged);
        let at = forged
            .windows(11)
            .position(|w| w == b"127.0.0.1:6")
            .unwrap();
        forged[at] = b'2';
        assert!(decode(frames(&forged)[0]).is_err());
        // Deep nesting is refused, not followed down the stack.
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100_000).collect();
        assert!(decode(&deep).is_err());
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_bounded() {
        let mut out = Vec::new();
        encode(envelopes(), 64, &mut out);
        let mut rd = &out[..];
        let mut buf = Vec::new();
        let mut decoded = Vec::new();
        while read_frame(&mut rd, &mut buf).await.unwrap() {
            decoded.extend(decode(&buf).unwrap());
        }
        assert_eq!(decoded, envelopes());
        let huge = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        let err = read_frame(&mut &huge[..], &mut buf).await.unwrap_err();
        assert!(err.is_malformed(), "{err}");
        let cut = [0, 0, 0, 9, 1, 2];
        let err = read_frame(&mut &cut[..], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
        let err = read_frame(&mut &cut[..2], &mut buf).await.unwrap_err();
        assert!(matches!(err, FrameError::Truncated), "{err}");
    }

    #[test]
    fn value_lengths_match_the_encoding() {
        #[derive(Serialize)]
        struct Mixed {
            small: u8,
            mid: u16,
            wide: u32,
            huge: u64,
            neg: i64,
            tiny_neg: i8,
            float: f32,
            double: f64,
            flag: bool,
            none: Option<u8>,
            strings: Vec<String>,
            #[serde(with = "serde_bytes_like")]
            raw: Vec<u8>,
            map: std::collections::BTreeMap<String, Vec<u32>>,
        }
        /// Bytes as MessagePack bin, not as an array of numbers.
        mod serde_bytes_like {
            pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(v)
            }
        }
        for n in [0usize, 5, 31, 32, 255, 256, 65_535, 65_536] {
            let value = Mixed {
                small: 200,
                mid: 60_000,
                wide: 4_000_000_000,
                huge: u64::MAX,
                neg: -5_000_000_000,
                tiny_neg: -3,
                float: 1.5,
                double: -2.25,
                flag: true,
                none: None,
                strings: vec!["x".repeat(n), String::new(), "é".repeat(n / 2)],
                raw: vec![7; n],
                map: (0..(n % 40) as u32)
                    .map(|i| (i.to_string(), vec![i; i as usize]))
                    .collect(),
            };
            let bytes = rmp_serde::to_vec(&value).unwrap();
            assert_eq!(value_len(&bytes).unwrap(), bytes.len(), "n = {n}");
            let mut two = bytes.clone();
            two.extend_from_slice(&bytes);
            assert_eq!(
                value_len(&two).unwrap(),
                bytes.len(),
                "stops at the first value"
            );
            assert!(value_len(&bytes[..bytes.len() - 1]).is_err(), "truncated");
        }
        // Counts that could never fit in the bytes left are refused before any is read.
        assert!(value_len(&[0xdd, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(value_len(&[0xdf, 0xff, 0xff, 0xff, 0xff, 0]).is_err());
        assert!(value_len(&[0xdb, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(value_len(&[0xc1]).is_err());
        assert!(value_len(&[]).is_err());
    }

    /// A reader that hands out its bytes a few at a time.
    struct Trickle {
        bytes: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Trickle {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let end = (self.at + self.step).min(self.bytes.len());
            let n = (end - self.at).min(buf.remaining());
            buf.put_slice(&self.bytes[self.at..self.at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn the_frame_reader_takes_frames_however_they_arrive() {
        let mut bytes = Vec::new();
        encode(envelopes(), 64, &mut bytes);
        for step in [1, 3, 7, 64, 1000, 1 << 20] {
            let mut rd = Trickle {
                bytes: bytes.clone(),
                at: 0,
                step,
            };
            let mut frames = FrameReader::new();
            let mut decoded = Vec::new();
            while frames.read(&mut rd).await.unwrap() {
                frames.decode_buffered(&mut decoded).unwrap();
            }
            assert_eq!(decoded, envelopes(), "step {step}");
        }
        // Cut inside a frame.
        let mut rd = &bytes[..bytes.len() - 1];
        let mut frames = FrameReader::new();
        let mut decoded = Vec::new();
        let err = loop {
            match frames.read(&mut rd).await {
                Ok(true) => frames.decode_buffered(&mut decoded).unwrap(),
                Ok(false) => panic!("a cut frame is not a clean end"),
                Err(err) => break err,
            }
        };
        assert!(matches!(err, FrameError::Truncated), "{err}");
        // A good frame, then one that does not decode, then a good one: the first is
        // delivered, the rest not.
        let mut first = Vec::new();
        encode(&envelopes()[..1], 1 << 20, &mut first);
        let mut bad = first.clone();
        bad.extend_from_slice(&[0, 0, 0, 2, 0xc1, 0xc1]);
        bad.extend_from_slice(&first);
        let mut frames = FrameReader::new();
        let mut decoded = Vec::new();
        assert!(frames.read(&mut &bad[..]).await.unwrap());
        let err = frames.decode_buffered(&mut decoded).unwrap_err();
        assert!(err.is_malformed(), "{err}");
        assert_eq!(decoded, envelopes()[..1]);
        // A length prefix above the limit is refused without waiting for the payload.
        let huge = (FRAME_BYTES_MAX as u32 + 1).to_be_bytes();
        let mut frames = FrameReader::new();
        assert!(frames.read(&mut &huge[..]).await.unwrap());
        let err = frames.decode_buffered(&mut Vec::new()).unwrap_err();
        assert!(err.is_malformed(), "{err}");
    }

    /// Every message a ring of five nodes sends while it forms (the coordinator group's
    /// consensus included), takes writes, loses a member and sees it leave, survives a
    /// round trip through the wire format.
    #[test]
    fn every_message_a_ring_sends_round_trips() {
        use ringkv_core::{Input, Node, NodeConfig, Output, Request, Timing};
        use std::collections::{BTreeSet, VecDeque};

        let config = ClusterConfig::new(3, Consistency::Chain, Routing::Finger).unwrap();
        let addrs: Vec<String> = (0..5).map(|i| format!("127.0.0.1:{}", 7000 + i)).collect();
        let mut nodes: Vec<Node> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let mut c = if i == 0 {
                    NodeConfig::bootstrap(a.clone(), config, 1)
                } else {
                    NodeConfig::member(a.clone(), addrs[0].clone(), i as u64)
                };
                c.timing = Timing::with_failure_handling();
                Node::new(c)
            })
            .collect();
        let mut seen: Vec<Envelope> = Vec::new();
        let mut queue: VecDeque<(usize, Envelope)> = VecDeque::new();
        let mut now = 0;
        let mut step = |node: &mut Node, now: u64, input: Option<Input>| {
            let mut out = Vec::new();
            match input {
                Some(input) => {
                    let _ = node.handle(now, input, &mut out);
                }
                None => node.handle_timeout(now, &mut out),
            }
            let mut sent = Vec::new();
            for o in out {
                if let Output::Send { to, envelope } = o {
                    if let Some(j) = addrs.iter().position(|a| **a == *to) {
                        seen.push(envelope.clone());
                        sent.push((j, envelope));
                    }
                }
            }
            sent
        };
        let mut requests = vec![(1, Request::Join), (2, Request::Join), (3, Request::Join)];
        requests.push((4, Request::Join));
        for (i, key) in ["a", "b", "c"].iter().enumerate() {
            requests.push((
                i,
                Request::Insert {
                    key: key.to_string(),
                    value: "v".into(),
                },
            ));
        }
        requests.push((3, Request::Depart));
        for (id, (i, request)) in (1..).zip(requests) {
            let input = Input::Request { id, request };
            queue.extend(step(&mut nodes[i], now, Some(input)));
            // Half a simulated second: messages 100 us apart, timers as they fall due.
            for _ in 0..5_000 {
                now += 100_000;
                if let Some((j, env)) = queue.pop_front() {
                    queue.extend(step(&mut nodes[j], now, Some(Input::Message(env))));
                }
                for node in nodes.iter_mut() {
                    if node.poll_timeout().is_some_and(|t| t <= now) {
                        queue.extend(step(node, now, None));
                    }
                }
            }
        }
        let kinds: BTreeSet<&str> = seen.iter().map(|e| e.msg.kind()).collect();
        for kind in [
            "consensus",
            "group_join",
            "hello",
            "leader",
            "prepare",
            "commit",
        ] {
            assert!(kinds.contains(kind), "{kind} not among {kinds:?}");
        }
        for chunk in seen.chunks(64) {
            let mut bytes = Vec::new();
            let done = encode(chunk, 1 << 20, &mut bytes);
            assert_eq!(done.skipped, 0);
            let decoded: Vec<Envelope> = frames(&bytes)
                .into_iter()
                .flat_map(|p| decode(p).unwrap())
                .collect();
            assert_eq!(decoded, chunk);
        }
    }
}
