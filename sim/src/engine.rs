//! The event queue and the seeded random streams.
//!
//! Events are ordered by `(virtual time in ns, insertion sequence)`: two events at the
//! same time run in the order they were scheduled, so a run depends only on the seed and
//! the configuration. Payloads live in a slab so the heap only moves 24-byte keys.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A priority queue of events keyed by `(time, insertion sequence)`.
#[derive(Debug)]
pub struct EventQueue<E> {
    heap: BinaryHeap<Reverse<(u64, u64, u32)>>,
    slots: Vec<Option<E>>,
    free: Vec<u32>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedule `event` at virtual time `at_ns`.
    pub fn push(&mut self, at_ns: u64, event: E) {
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(event);
                slot
            }
            None => {
                assert!(self.slots.len() < u32::MAX as usize, "event slab full");
                self.slots.push(Some(event));
                (self.slots.len() - 1) as u32
            }
        };
        self.heap.push(Reverse((at_ns, self.seq, slot)));
        self.seq += 1;
    }

    /// The earliest event and its time; ties go to the event scheduled first.
    pub fn pop(&mut self) -> Option<(u64, E)> {
        let Reverse((at_ns, _, slot)) = self.heap.pop()?;
        let event = self.slots[slot as usize]
            .take()
            .expect("queued slot holds an event");
        self.free.push(slot);
        Some((at_ns, event))
    }

    /// Time of the earliest event.
    pub fn peek_time(&self) -> Option<u64> {
        self.heap.peek().map(|Reverse((t, _, _))| *t)
    }

    /// Number of queued events.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether no event is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Drop every queued event.
    pub fn clear(&mut self) {
        self.heap.clear();
        self.slots.clear();
        self.free.clear();
    }
}

/// The random streams of one run, all derived from `seed` in a fixed order, so adding
/// draws to one purpose never shifts another's.
#[derive(Debug)]
pub struct Streams {
    /// Network draws.
    pub network: ChaCha8Rng,
    /// Fault schedule draws.
    pub faults: ChaCha8Rng,
    /// Workload draws.
    pub workload: ChaCha8Rng,
    /// Node seeds.
    pub nodes: ChaCha8Rng,
}

impl Streams {
    /// Derive every stream from `seed` with one ChaCha generator.
    pub fn from_seed(seed: u64) -> Streams {
        let mut root = ChaCha8Rng::seed_from_u64(seed);
        let mut child = || ChaCha8Rng::seed_from_u64(root.next_u64());
        Streams {
            network: child(),
            faults: child(),
            workload: child(),
            nodes: child(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_in_time_then_insertion_order() {
        let mut q = EventQueue::new();
        q.push(5, "c");
        q.push(1, "a");
        q.push(5, "d");
        q.push(1, "b");
        let order: Vec<_> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(order, vec![(1, "a"), (1, "b"), (5, "c"), (5, "d")]);
        assert!(q.is_empty());
    }

    #[test]
    fn slots_are_reused() {
        let mut q = EventQueue::new();
        for i in 0..100u64 {
            q.push(i, i);
            assert_eq!(q.pop(), Some((i, i)));
        }
        assert_eq!(q.slots.len(), 1);
    }

    #[test]
    fn streams_are_reproducible() {
        let mut a = Streams::from_seed(9);
        let mut b = Streams::from_seed(9);
        assert_eq!(a.network.next_u64(), b.network.next_u64());
        assert_ne!(a.faults.next_u64(), a.workload.next_u64());
    }
}
