//! What happens at a key's replicas: versioned writes, chain replication head → tail,
//! eventual replication, reads, and repair of misdelivered replica writes.

use crate::api::{RequestError, Response};
use crate::config::Consistency;
use crate::id::Id;
use crate::message::{Action, Message, NodeRef, Origin, Routed};
use crate::node::{Node, Rejected};
use crate::store::{Applied, Entry};
use crate::Output;

/// One chain-replication step as received by a chain member.
pub(crate) struct ChainStep {
    pub(crate) origin: Option<Origin>,
    pub(crate) key: String,
    pub(crate) entry: Entry,
    pub(crate) existed: bool,
    pub(crate) position: u8,
    pub(crate) chain_len: u8,
    pub(crate) hops: u32,
}

impl Node {
    /// Apply `entry` to the store; a newer entry is also forwarded to any node fetching
    /// a range that holds the key.
    pub(crate) fn apply_entry(&mut self, key: &str, entry: Entry, out: &mut Vec<Output>) -> Applied {
        let applied = self.store.apply(self.now, key, entry.clone());
        if applied == Applied::Changed && !self.migrations.is_empty() {
            let id = Id::of_key(key);
            let targets: Vec<NodeRef> = self
                .migrations
                .iter()
                .filter(|m| m.range.contains(id))
                .map(|m| m.to.clone())
                .collect();
            for to in targets {
                let msg = Message::Replicate {
                    entries: vec![(key.to_string(), entry.clone())],
                };
                self.send(&to, msg, out);
            }
        }
        applied
    }

    /// Whether this node should store `key` now: under its installed view, or under the
    /// view it is preparing.
    fn accepts(&self, key: Id) -> bool {
        let now = self.is_member() && self.responsibility().contains(key);
        now || self.preparing.as_ref().is_some_and(|p| p.gained.contains(key))
    }

    /// Number of replicas per key: `min(k, N)`.
    fn chain_len(&self) -> usize {
        self.config.k.min(self.view.ring_size.max(1))
    }

    pub(crate) fn at_primary(&mut self, routed: Routed, out: &mut Vec<Output>) {
        let Routed {
            origin,
            key,
            action,
            hops,
        } = routed;
        match action {
            Action::Write { value } => self.write_at_primary(origin, key, value, hops, out),
            Action::Read => self.read_at_primary(origin, key, hops, out),
            Action::Repair { entry } => {
                if self.apply_entry(&key, entry.clone(), out) == Applied::Changed {
                    self.replicate_from_primary(None, key, entry, false, hops, out);
                }
            }
        }
    }

    fn write_at_primary(
        &mut self,
        origin: Option<Origin>,
        key: String,
        value: Option<String>,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        let existed = self.store.value(&key).is_some();
        let entry = Entry {
            value,
            version: self.store.next_version(self.me.id),
        };
        self.apply_entry(&key, entry.clone(), out);
        self.replicate_from_primary(origin, key, entry, existed, hops, out);
    }

    /// Send a write the primary has applied to the other replicas; answer the client at
    /// once (eventual) or leave that to the tail (chain).
    fn replicate_from_primary(
        &mut self,
        origin: Option<Origin>,
        key: String,
        entry: Entry,
        existed: bool,
        hops: u32,
        out: &mut Vec<Output>,
    ) {
        let chain_len = self.chain_len();
        match self.config.consistency {
            Consistency::Chain if chain_len > 1 => {
                let next = self.view.succs[0].clone();
                let msg = Message::ChainWrite {
                    origin,
                    key,
                    entry,
                    existed,
                    position: 1,
                    chain_len: chain_len as u8,
                    hops,
                };
                self.send(&next, msg, out);
            }
            _ => {
                let replicas: Vec<NodeRef> = self.view.succs.iter().take(chain_len - 1).cloned().collect();
                for to in replicas {
                    let msg = Message::Replicate {
                        entries: vec![(key.clone(), entry.clone())],
                    };
                    self.send(&to, msg, out);
                }
                let reply = self.write_reply(&key, &entry, existed, hops);
                self.respond(origin, Ok(reply), out);
            }
        }
    }

    fn write_reply(&self, key: &str, entry: &Entry, existed: bool, hops: u32) -> Response {
        let node = self.me.addr.to_string();
        let key = key.to_string();
        match &entry.value {
            Some(value) => Response::Inserted {
                key,
                value: value.clone(),
                node,
                hops,
            },
            None => Response::Deleted {
                key,
                existed,
                node,
                hops,
            },
        }
    }

    fn read_at_primary(&mut self, origin: Option<Origin>, key: String, hops: u32, out: &mut Vec<Output>) {
        let chain_len = self.chain_len();
        if self.config.consistency == Consistency::Chain && chain_len > 1 {
            let Some(origin) = origin else { return };
            let tail = self.view.succs[chain_len - 2].clone();
            let msg = Message::TailRead {
                origin,
                key,
                hops: hops + 1,
            };
            return self.send(&tail, msg, out);
        }
        self.answer_read(origin, &key, hops, out);
    }

    /// Answer a read from the local store.
    pub(crate) fn answer_read(&mut self, origin: Option<Origin>, key: &str, hops: u32, out: &mut Vec<Output>) {
        if !self.is_member() {
            let node = self.me.addr.to_string();
            return self.respond(origin, Err(RequestError::RouteBroken { node }), out);
        }
        let node = self.me.addr.to_string();
        let reply = match self.store.value(key) {
            Some(value) => Response::Found {
                key: key.to_string(),
                value: value.to_string(),
                node,
                hops,
            },
            None => Response::NotFound {
                key: key.to_string(),
                node,
                hops,
            },
        };
        self.respond(origin, Ok(reply), out);
    }

    pub(crate) fn on_chain_write(&mut self, step: ChainStep, out: &mut Vec<Output>) {
        let key_id = Id::of_key(&step.key);
        if self.accepts(key_id) {
            self.apply_entry(&step.key, step.entry.clone(), out);
        } else {
            self.repair(&step.key, step.entry.clone(), out);
        }
        let next_position = step.position as usize + 1;
        if next_position < step.chain_len as usize {
            if let Some(next) = self.view.succs.first().cloned() {
                let msg = Message::ChainWrite {
                    position: next_position as u8,
                    origin: step.origin,
                    key: step.key,
                    entry: step.entry,
                    existed: step.existed,
                    chain_len: step.chain_len,
                    hops: step.hops,
                };
                return self.send(&next, msg, out);
            }
        }
        // The tail acknowledges; the write is now on the whole chain.
        let reply = self.write_reply(&step.key, &step.entry, step.existed, step.hops);
        self.respond(step.origin, Ok(reply), out);
    }

    pub(crate) fn on_replicate(
        &mut self,
        from: &NodeRef,
        entries: Vec<(String, Entry)>,
        out: &mut Vec<Output>,
    ) -> Result<(), Rejected> {
        if !self.is_member() && self.preparing.is_none() {
            return Err(Rejected::NotMember {
                kind: "replicate",
                from: from.addr.to_string(),
                phase: self.phase,
            });
        }
        for (key, entry) in entries {
            if self.accepts(Id::of_key(&key)) {
                self.apply_entry(&key, entry, out);
            } else {
                self.repair(&key, entry, out);
            }
        }
        Ok(())
    }

    /// A replica write reached a node that should not hold the key (the ring changed
    /// while it travelled): send it on to the key's current primary instead of storing it.
    fn repair(&mut self, key: &str, entry: Entry, out: &mut Vec<Output>) {
        if !self.is_member() {
            return;
        }
        let routed = Routed {
            origin: None,
            key: key.to_string(),
            action: Action::Repair { entry },
            hops: 0,
        };
        self.route(routed, out);
    }
}
