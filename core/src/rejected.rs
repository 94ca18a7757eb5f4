//! Why a peer message was dropped.

use crate::shared::Phase;

/// A peer message the node dropped, and why. Nothing changed in the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The message needs a ring member, and this node is not one.
    #[error("'{kind}' from {from} dropped: this node is {phase:?}, not a ring member")]
    NotMember {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
        /// This node's phase.
        phase: Phase,
    },
    /// The message belongs to a configuration epoch this node is not in.
    #[error("'{kind}' from {from} dropped: epoch {epoch} does not match this node's")]
    WrongEpoch {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
        /// The message's epoch.
        epoch: u64,
    },
    /// The message is only accepted by the coordinator, or only from it.
    #[error("'{kind}' from {from} dropped: it is only for (or from) the coordinator")]
    NotCoordinator {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
    },
    /// The message is not well formed (see `Message::check`).
    #[error("'{kind}' from {from} dropped: malformed: {reason}")]
    Malformed {
        /// Message kind.
        kind: &'static str,
        /// Sender address.
        from: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl Rejected {
    pub(crate) fn not_member(kind: &'static str, from: &crate::NodeRef, phase: Phase) -> Self {
        Rejected::NotMember {
            kind,
            from: from.addr.to_string(),
            phase,
        }
    }

    pub(crate) fn wrong_epoch(kind: &'static str, from: &crate::NodeRef, epoch: u64) -> Self {
        Rejected::WrongEpoch {
            kind,
            from: from.addr.to_string(),
            epoch,
        }
    }

    pub(crate) fn not_coordinator(kind: &'static str, from: &crate::NodeRef) -> Self {
        Rejected::NotCoordinator {
            kind,
            from: from.addr.to_string(),
        }
    }
}
