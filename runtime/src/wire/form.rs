//! The wire form of an envelope: how a [`Message`] is laid out in a frame.
//!
//! `Message` is an internally tagged serde enum (`{"type": "route", ...}`), and serde can
//! decode one only by first buffering the whole value into a tree of its own (every
//! nested struct a vector, every string a copy) until it has seen the tag, then decoding
//! the message from that tree: on a busy node that was the largest cost of receiving a
//! message. So the messages every client operation sends (lookups, chain writes, answers,
//! chain reads, replica writes and their acknowledgements, CRAQ's clean notices) travel as
//! variants of an externally tagged enum of the transport's own, `{variant: fields}`,
//! which serde decodes in one pass straight into the protocol's types (each of which still
//! checks itself as it decodes, e.g. [`ChainStep`]'s position). Every other message
//! travels as the protocol defines it, under [`Form::Other`].
//!
//! The conversions name every field, with no `..`: a field added to one of these messages
//! in the core fails to compile here until it is carried too.
//!
//! An envelope's sender goes as its address alone: the receiver computes its id (SHA-1 of
//! the address) itself, once per connection rather than once per envelope (every envelope
//! on a connection comes from the node that opened it), instead of reading an id and
//! checking it against the address.

use ringkv_core::message::{Origin, Routed};
use ringkv_core::{ChainStep, Entry, Envelope, Message, NodeRef, Reply, ReqId, Version};
use serde::{Deserialize, Serialize};

/// An envelope as it is written: borrowed from the one being sent.
#[derive(Serialize)]
pub(super) struct EnvelopeRef<'a> {
    /// The sender's address.
    from: &'a str,
    msg: FormRef<'a>,
}

/// An envelope as it is read, its sender's address borrowed from the frame.
#[derive(Deserialize)]
pub(super) struct EnvelopeForm<'a> {
    from: &'a str,
    msg: Form,
}

impl<'a> From<&'a Envelope> for EnvelopeRef<'a> {
    fn from(envelope: &'a Envelope) -> Self {
        EnvelopeRef {
            from: &envelope.from.addr,
            msg: FormRef::from(&envelope.msg),
        }
    }
}

impl EnvelopeForm<'_> {
    /// The envelope, its sender looked up in (or added to) `senders`.
    pub(super) fn into_envelope(self, senders: &mut Senders) -> Envelope {
        Envelope {
            from: senders.node(self.from),
            msg: self.msg.into(),
        }
    }
}

/// The last sender seen on a connection, so that its id is computed once.
#[derive(Debug, Default)]
pub(super) struct Senders {
    last: Option<NodeRef>,
}

impl Senders {
    /// The node at `addr`.
    fn node(&mut self, addr: &str) -> NodeRef {
        match &self.last {
            Some(node) if *node.addr == *addr => node.clone(),
            _ => self.last.insert(NodeRef::new(addr)).clone(),
        }
    }
}

/// [`Form`], borrowed.
#[derive(Serialize)]
#[serde(rename_all = "snake_case")]
enum FormRef<'a> {
    Route(&'a Routed),
    ChainWrite(&'a ChainStep),
    Done {
        req: ReqId,
        reply: &'a Reply,
    },
    TailRead {
        origin: &'a Origin,
        key: &'a str,
        hops: u32,
    },
    Replicate {
        entries: &'a [(String, Entry)],
        ttl: u8,
        seq: u64,
        epoch: u64,
    },
    ReplicateAck {
        seqs: &'a [u64],
    },
    CraqClean {
        key: &'a str,
        version: &'a Option<Version>,
    },
    Other(&'a Message),
}

/// A message on the wire: the frequent ones by variant, with the same fields as in
/// [`Message`]; the others as [`Message`] itself.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum Form {
    Route(Routed),
    ChainWrite(ChainStep),
    Done {
        req: ReqId,
        reply: Reply,
    },
    TailRead {
        origin: Origin,
        key: String,
        hops: u32,
    },
    Replicate {
        entries: Vec<(String, Entry)>,
        ttl: u8,
        seq: u64,
        epoch: u64,
    },
    ReplicateAck {
        seqs: Vec<u64>,
    },
    CraqClean {
        key: String,
        version: Option<Version>,
    },
    Other(Message),
}

impl<'a> From<&'a Message> for FormRef<'a> {
    fn from(msg: &'a Message) -> Self {
        match msg {
            Message::Route(routed) => FormRef::Route(routed),
            Message::ChainWrite(step) => FormRef::ChainWrite(step),
            Message::Done { req, reply } => FormRef::Done { req: *req, reply },
            Message::TailRead { origin, key, hops } => FormRef::TailRead {
                origin,
                key,
                hops: *hops,
            },
            Message::Replicate {
                entries,
                ttl,
                seq,
                epoch,
            } => FormRef::Replicate {
                entries,
                ttl: *ttl,
                seq: *seq,
                epoch: *epoch,
            },
            Message::ReplicateAck { seqs } => FormRef::ReplicateAck { seqs },
            Message::CraqClean { key, version } => FormRef::CraqClean { key, version },
            other => FormRef::Other(other),
        }
    }
}

impl From<Form> for Message {
    fn from(form: Form) -> Self {
        match form {
            Form::Route(routed) => Message::Route(routed),
            Form::ChainWrite(step) => Message::ChainWrite(step),
            Form::Done { req, reply } => Message::Done { req, reply },
            Form::TailRead { origin, key, hops } => Message::TailRead { origin, key, hops },
            Form::Replicate {
                entries,
                ttl,
                seq,
                epoch,
            } => Message::Replicate {
                entries,
                ttl,
                seq,
                epoch,
            },
            Form::ReplicateAck { seqs } => Message::ReplicateAck { seqs },
            Form::CraqClean { key, version } => Message::CraqClean { key, version },
            Form::Other(msg) => msg,
        }
    }
}
