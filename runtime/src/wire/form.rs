//! serde's form of an envelope, for every message the transport's own layout
//! ([`super::codec`]) does not carry: membership, hand-over, anti-entropy, coordinator
//! messages, and the rarer answers. Each goes as the protocol defines it (an internally
//! tagged enum, `{"type": "join_request", ...}`), which only a self-describing format can
//! read back: hence MessagePack.
//!
//! An envelope's sender goes as its address alone: the receiver computes its id (SHA-1 of
//! the address) itself, once per connection rather than once per envelope (see
//! [`Nodes`]), instead of reading an id and checking it against the address.

use ringkv_core::{Envelope, Message};
use serde::{Deserialize, Serialize};

use super::codec::Nodes;

/// An envelope as it is written: borrowed from the one being sent.
#[derive(Serialize)]
pub(super) struct EnvelopeRef<'a> {
    /// The sender's address.
    from: &'a str,
    msg: &'a Message,
}

/// An envelope as it is read, its sender's address borrowed from the frame.
#[derive(Deserialize)]
pub(super) struct EnvelopeForm<'a> {
    from: &'a str,
    msg: Message,
}

impl<'a> From<&'a Envelope> for EnvelopeRef<'a> {
    fn from(envelope: &'a Envelope) -> Self {
        EnvelopeRef {
            from: &envelope.from.addr,
            msg: &envelope.msg,
        }
    }
}

impl EnvelopeForm<'_> {
    /// The envelope, its sender looked up in (or added to) `nodes`.
    pub(super) fn into_envelope(self, nodes: &mut Nodes) -> Envelope {
        Envelope {
            from: nodes.node(self.from, None),
            msg: self.msg,
        }
    }
}
