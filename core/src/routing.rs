//! Lookups: hop by hop towards the key's successor over fingers or successors, and the
//! two ring walks (`query *` and `overlay`).

use crate::api::{Pair, RequestError, Response};
use crate::config::{Consistency, Routing};
use crate::id::{in_open, in_open_closed, Id};
use crate::message::{Action, Message, NodeRef, Origin, Routed, LAPS_MAX};
use crate::node::{Node, Phase};
use crate::{Output, ReqId};

impl Node {
    /// The next node towards the successor of `key`, for a node that is not its primary.
    /// Suspected peers (silent past the failure timeout) are skipped while another
    /// choice exists, so routing survives a crash before the bootstrap repairs the ring.
    pub(crate) fn next_hop(&self, key: Id) -> Option<NodeRef> {
        let first = self.view.succs.first()?;
        let alive = |n: &&NodeRef| !self.suspects.contains(&n.id);
        let succ = self.view.succs.iter().find(alive).unwrap_or(first);
        if in_open_closed(key, self.me.id, first.id) {
            // The key's primary; if it seems dead, its next replica.
            return Some(succ.clone());
        }
        if self.config.routing == Routing::Successor {
            return Some(succ.clone());
        }
        // Closest preceding finger: the farthest finger still before the key.
        self.fingers
            .iter()
            .rev()
            .filter(alive)
            .find(|f| in_open(f.id, self.me.id, key))
            .or(Some(succ))
            .cloned()
    }

    /// Take one routing step for `routed`: serve it here or pass it on.
    pub(crate) fn route(&mut self, mut routed: Routed, out: &mut Vec<Output>) {
        if !self.is_member() {
            return self.route_while_away(routed, out);
        }
        let key = Id::of_key(&routed.key);
        let eventual_read = self.config.consistency == Consistency::Eventual
            && routed.action == Action::Read
            && self.responsibility().contains(key);
        if eventual_read {
            return self.answer_read(routed.origin, &routed.key, routed.hops, out);
        }
        if self.is_primary(key) {
            return self.at_primary(routed, out);
        }
        if routed.hops >= self.limits.hops_max || routed.laps > LAPS_MAX {
            let err = Err(RequestError::TooManyHops { hops: routed.hops });
            return self.respond(routed.origin, err, out);
        }
        let Some(next) = self.next_hop(key) else {
            return self.at_primary(routed, out);
        };
        routed.hops += 1;
        self.send(&next, Message::Route(routed), out);
    }

    /// A lookup reached a node that is not (or no longer) a member.
    fn route_while_away(&mut self, mut routed: Routed, out: &mut Vec<Output>) {
        match (self.phase, self.forward_to.clone()) {
            (Phase::Idle, Some(next))
                if routed.hops < self.limits.hops_max && routed.laps <= LAPS_MAX =>
            {
                routed.hops += 1;
                self.send(&next, Message::Route(routed), out);
            }
            _ => {
                let node = self.me.addr.to_string();
                self.respond(routed.origin, Err(RequestError::RouteBroken { node }), out);
            }
        }
    }

    /// Start a `query *` walk at this node.
    pub(crate) fn start_collect(&mut self, id: ReqId, out: &mut Vec<Output>) {
        let origin = self.origin(id);
        self.on_collect(origin, Vec::new(), 0, out);
    }

    /// Add the pairs this node is primary for, then pass the walk on or finish it.
    pub(crate) fn on_collect(
        &mut self,
        origin: Origin,
        mut pairs: Vec<Pair>,
        visited: u32,
        out: &mut Vec<Output>,
    ) {
        if !self.is_member() {
            let node = self.me.addr.to_string();
            return self.respond(Some(origin), Err(RequestError::RouteBroken { node }), out);
        }
        if visited > self.limits.hops_max {
            let err = Err(RequestError::TooManyHops { hops: visited });
            return self.respond(Some(origin), err, out);
        }
        let node = self.me.addr.to_string();
        pairs.extend(
            self.store
                .live_entries()
                .filter(|(k, _)| self.is_primary(Id::of_key(k)))
                .map(|(k, v)| Pair {
                    key: k.to_string(),
                    value: v.to_string(),
                    node: node.clone(),
                }),
        );
        match self.view.succs.first().cloned() {
            Some(next) if next.id != origin.node.id => {
                let msg = Message::CollectAll {
                    origin,
                    pairs,
                    visited: visited + 1,
                };
                self.send(&next, msg, out);
            }
            _ => {
                pairs.sort();
                self.respond(Some(origin), Ok(Response::All { pairs }), out);
            }
        }
    }

    /// Add this node to an overlay walk that started at the bootstrap.
    pub(crate) fn on_overlay_walk(
        &mut self,
        origin: Origin,
        mut nodes: Vec<String>,
        out: &mut Vec<Output>,
    ) {
        let back_at_start = nodes.first().is_some_and(|first| **first == *self.me.addr);
        if back_at_start {
            return self.respond(Some(origin), Ok(Response::Overlay { nodes }), out);
        }
        if !self.is_member() {
            let node = self.me.addr.to_string();
            return self.respond(Some(origin), Err(RequestError::RouteBroken { node }), out);
        }
        if nodes.len() as u32 > self.limits.hops_max {
            let err = Err(RequestError::TooManyHops {
                hops: nodes.len() as u32,
            });
            return self.respond(Some(origin), err, out);
        }
        nodes.push(self.me.addr.to_string());
        match self.view.succs.first().cloned() {
            Some(next) => self.send(&next, Message::OverlayWalk { origin, nodes }, out),
            None => self.respond(Some(origin), Ok(Response::Overlay { nodes }), out),
        }
    }
}
