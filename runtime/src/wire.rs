//! The binary frames of the peer transport.
//!
//! A peer connection starts as an HTTP/1.1 request on the node's own listener
//! (`GET /internal/peer`, `Upgrade: ringkv-peer/1`, the cluster secret as a bearer token);
//! after `101 Switching Protocols` it carries only frames, from the dialling node to the
//! accepting one:
//!
//! ```text
//! frame   = length:u32 (big-endian, bytes of payload) payload
//! payload = envelope*      (each one MessagePack value, back to back; at least one)
//! ```
//!
//! MessagePack and not postcard or bincode: the protocol's messages are internally tagged
//! serde enums (`{"type": "replicate", ...}` in JSON, which the debug endpoint and the
//! HTTP API's error bodies keep), and reading those back needs a self-describing format.
//! Structs go as arrays (no field names) and node ids as 20 raw bytes.

use std::io::Cursor;

use ringkv_core::Envelope;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Path of the upgrade request that opens a peer connection.
pub const PEER_PATH: &str = "/internal/peer";

/// Value of the `Upgrade` header, naming the protocol and its version.
pub const PROTOCOL: &str = "ringkv-peer/1";

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
pub fn encode(envelopes: &[Envelope], frame_bytes_max: usize, out: &mut Vec<u8>) -> Encoded {
    encode_within(envelopes, frame_bytes_max, FRAME_BYTES_MAX, out)
}

/// [`encode`] with `limit` in place of [`FRAME_BYTES_MAX`].
fn encode_within(
    envelopes: &[Envelope],
    frame_bytes_max: usize,
    limit: usize,
    out: &mut Vec<u8>,
) -> Encoded {
    let mut done = Encoded::default();
    let mut frame_start = None;
    for envelope in envelopes {
        let mut start = *frame_start.get_or_insert_with(|| {
            out.extend_from_slice(&[0; PREFIX_BYTES]);
            out.len() - PREFIX_BYTES
        });
        let before = out.len();
        let written = envelope.serialize(&mut rmp_serde::Serializer::new(&mut *out));
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
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    let mut de = rmp_serde::Deserializer::new(Cursor::new(payload));
    de.set_max_depth(DEPTH_MAX);
    let mut envelopes = Vec::new();
    while (de.position() as usize) < payload.len() {
        let envelope =
            Envelope::deserialize(&mut de).map_err(|e| FrameError::Malformed(e.to_string()))?;
        envelopes.push(envelope);
    }
    Ok(envelopes)
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
            Message::Refused {
                reason: RequestError::NotJoined,
                term: 3,
            },
            Message::ReplicateAck {
                seqs: vec![1, 2, 3],
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
    fn ids_travel_as_bytes() {
        let from = node(1);
        let mut out = Vec::new();
        encode(
            &[Envelope {
                from: from.clone(),
                msg: Message::Ping,
            }],
            1 << 20,
            &mut out,
        );
        let raw = from.id.to_bytes();
        assert!(out.windows(20).any(|w| w == raw));
        assert!(!out.windows(40).any(|w| w == from.id.to_string().as_bytes()));
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
        // A forged sender: the id is not SHA-1 of the address.
        let mut forged = Vec::new();
        encode(&envelopes()[..1], 1 << 20, &mut forged);
        let at = forged.windows(5).position(|w| w == b"127.0").unwrap();
        forged[at] = b'2';
        assert!(decode(frames(&forged)[0]).is_err());
        // Deep nesting is refused, not followed down the stack.
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100_000).collect();
        assert!(decode(&deep).is_err());
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_bounded() {
        let mut out = Vec::new();
        encode(&envelopes(), 64, &mut out);
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
