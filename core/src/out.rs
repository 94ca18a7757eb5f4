//! The output context every sub-machine writes into: the time of the input being
//! handled, this node's identity and random numbers, the outputs for the driver, the
//! queue of messages to itself, and the timer table (as stateright's actors write into
//! `&mut Out`).

use std::collections::VecDeque;
use std::sync::Arc;

use rand_chacha::ChaCha8Rng;

use crate::api::Reply;
use crate::message::{Envelope, Message, NodeRef, Origin};
use crate::timers::{Timer, Timers};
use crate::{Output, Time};

/// What a sub-machine may do besides changing its own state.
#[derive(Debug)]
pub(crate) struct Out {
    /// The time of the input being handled.
    pub(crate) now: Time,
    me: NodeRef,
    /// The node's seeded random numbers.
    pub(crate) rng: ChaCha8Rng,
    outputs: Vec<Output>,
    local: VecDeque<Envelope>,
    timers: Timers,
}

impl Out {
    pub(crate) fn new(me: NodeRef, rng: ChaCha8Rng) -> Out {
        Out {
            now: 0,
            me,
            rng,
            outputs: Vec::new(),
            local: VecDeque::new(),
            timers: Timers::default(),
        }
    }

    /// This node.
    pub(crate) fn me(&self) -> &NodeRef {
        &self.me
    }

    /// `now + delay`, saturating.
    pub(crate) fn after(&self, delay: Time) -> Time {
        self.now.saturating_add(delay)
    }

    /// Send `msg` to `to`; a message to this node is handled before the input returns.
    pub(crate) fn send(&mut self, to: &NodeRef, msg: Message) {
        self.send_addr(&to.addr, msg);
    }

    /// Send `msg` to the node advertised at `to`.
    pub(crate) fn send_addr(&mut self, to: &Arc<str>, msg: Message) {
        let envelope = Envelope {
            from: self.me.clone(),
            msg,
        };
        if **to == *self.me.addr {
            self.local.push_back(envelope);
        } else {
            self.outputs.push(Output::Send {
                to: to.clone(),
                envelope,
            });
        }
    }

    /// Answer `origin`'s request (nothing for an operation without a client): a `Done`
    /// to the node that holds it, which may be this one.
    pub(crate) fn respond(&mut self, origin: Option<Origin>, reply: Reply) {
        let Some(origin) = origin else { return };
        let done = Message::Done {
            req: origin.req,
            reply,
        };
        self.send(&origin.node, done);
    }

    /// Hand the driver the answer to request `id` (the caller checked it waits).
    pub(crate) fn reply(&mut self, id: crate::ReqId, reply: Reply) {
        self.outputs.push(Output::Reply { id, reply });
    }

    /// Arm `timer` at `at`.
    pub(crate) fn set_timer(&mut self, timer: Timer, at: Time) {
        self.timers.set(timer, at);
    }

    /// Arm `timer` at `at` unless it is armed already.
    pub(crate) fn arm(&mut self, timer: Timer, at: Time) {
        if !self.timers.is_armed(timer) {
            self.timers.set(timer, at);
        }
    }

    /// Disarm `timer`.
    pub(crate) fn cancel_timer(&mut self, timer: Timer) {
        self.timers.cancel(timer);
    }

    /// Whether `timer` is armed.
    pub(crate) fn is_armed(&self, timer: Timer) -> bool {
        self.timers.is_armed(timer)
    }

    /// When `timer` fires, if armed.
    pub(crate) fn timer(&self, timer: Timer) -> Option<Time> {
        self.timers.get(timer)
    }

    /// The earliest armed timer's deadline.
    pub(crate) fn next_timeout(&self) -> Option<Time> {
        self.timers.next()
    }

    /// Disarm and return the earliest timer due at `now`.
    pub(crate) fn pop_due(&mut self, now: Time) -> Option<Timer> {
        self.timers.pop_due(now)
    }

    /// Handle `envelope` again before the input returns, as if it had just arrived.
    pub(crate) fn requeue(&mut self, envelope: Envelope) {
        self.local.push_back(envelope);
    }

    /// The next message this node sent itself.
    pub(crate) fn take_local(&mut self) -> Option<Envelope> {
        self.local.pop_front()
    }

    /// Drop messages to self left over (a logic loop was cut short).
    pub(crate) fn clear_local(&mut self) {
        self.local.clear();
    }

    /// Move the outputs gathered so far to the driver's buffer.
    pub(crate) fn drain_into(&mut self, out: &mut Vec<Output>) {
        out.append(&mut self.outputs);
    }
}
