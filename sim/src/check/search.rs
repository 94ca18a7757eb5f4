//! Wing & Gong's linearizability search with Lowe's memoization, as in Porcupine's
//! `checkSingle`, for one key's register.
//!
//! Calls and returns are entries of a doubly linked list ordered by history position.
//! The search repeatedly linearizes ("lifts") a call that appears before the first
//! remaining return, if the register allows it and the pair (set of linearized
//! operations, register state) was not seen before; when it meets a return it
//! backtracks. Operations without a return (`info` or pending) sit at +infinity and are
//! optional: the search succeeds as soon as every required operation is linearized,
//! since an optional write can always be linearized last, or never.

// Hash maps and sets here are lookups and memo tables: none is iterated where the order
// could reach a verdict, a report or a history (those are sorted or B-tree ordered).
#![allow(clippy::disallowed_types)]

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::time::Instant;

/// Register state: an interned value, or [`ABSENT`].
pub(crate) type State = u32;
/// The absent (`null`) register value.
pub(crate) const ABSENT: State = u32::MAX;

/// What an operation does to the register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Action {
    /// Set the register (a delete writes [`ABSENT`]).
    Write(State),
    /// Observe the register: legal only when it holds this value.
    Read(State),
}

/// One operation as the search sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SearchOp {
    /// History position of the invoke.
    pub call: usize,
    /// History position of the completion; `None` = never returned (optional).
    pub ret: Option<usize>,
    /// Effect on the register.
    pub action: Action,
}

/// Limits of one search.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Budget {
    pub max_steps: u64,
    pub deadline: Option<Instant>,
    pub max_cache_bytes: usize,
}

/// Result of one search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Linearizable,
    Violation,
    Unknown(String),
}

fn step(state: State, action: Action) -> Option<State> {
    match action {
        Action::Write(v) => Some(v),
        Action::Read(v) => (v == state).then_some(state),
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Passes a precomputed 64-bit hash through.
#[derive(Default)]
struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A visited (linearized set, state) pair.
///
/// The set of linearized operations is stored through the list: with `F` the first
/// remaining return entry, every operation invoked before `F` is linearized except
/// those whose call entries still precede `F`, and no other is. So (`F`, the operations
/// whose calls precede `F`) identifies the set, in space proportional to the
/// concurrency at the frontier rather than to the history length.
#[derive(PartialEq, Eq)]
struct CacheKey {
    hash: u64,
    state: State,
    frontier: u32,
    pending: Box<[u32]>,
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        h.write_u64(self.hash);
    }
}

fn mix(h: u64, x: u64) -> u64 {
    splitmix(h ^ x)
}

/// The doubly linked list of call and return entries. Node 0 is the head, node
/// `2n + 1` the tail; nodes in between are entries in history order.
struct Entries {
    prev: Vec<u32>,
    next: Vec<u32>,
    /// Operation of each node (unused for head and tail).
    op: Vec<u32>,
    /// For a call node, its return node; `u32::MAX` for return nodes, head and tail.
    matching: Vec<u32>,
}

const HEAD: u32 = 0;

impl Entries {
    fn new(ops: &[SearchOp]) -> Self {
        let n = ops.len();
        // (position, is_return, op); returns at +infinity keep operation order.
        let mut ev: Vec<(usize, bool, usize)> = Vec::with_capacity(2 * n);
        for (i, o) in ops.iter().enumerate() {
            ev.push((o.call, false, i));
            ev.push((o.ret.unwrap_or(usize::MAX), true, i));
        }
        ev.sort_unstable();
        let total = 2 * n + 2;
        let mut e = Entries {
            prev: (0..total as u32).map(|i| i.saturating_sub(1)).collect(),
            next: (1..=total as u32).collect(),
            op: vec![0; total],
            matching: vec![u32::MAX; total],
        };
        let mut call_node = vec![0u32; n];
        for (k, &(_, is_ret, i)) in ev.iter().enumerate() {
            let node = k as u32 + 1;
            e.op[node as usize] = i as u32;
            if is_ret {
                e.matching[call_node[i] as usize] = node;
            } else {
                call_node[i] = node;
            }
        }
        e
    }

    fn is_call(&self, node: u32) -> bool {
        self.matching[node as usize] != u32::MAX
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        self.prev[n as usize] = p;
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        self.prev[n as usize] = node;
    }

    fn lift(&mut self, call: u32) {
        self.unlink(call);
        self.unlink(self.matching[call as usize]);
    }

    fn unlift(&mut self, call: u32) {
        self.relink(self.matching[call as usize]);
        self.relink(call);
    }

    /// The cache key of the current linearized set with register `state`.
    fn key(&self, state: State, scratch: &mut Vec<u32>) -> CacheKey {
        scratch.clear();
        let mut node = self.next[HEAD as usize];
        while self.is_call(node) {
            scratch.push(self.op[node as usize]);
            node = self.next[node as usize];
        }
        let mut hash = mix(u64::from(state), u64::from(node));
        for &op in scratch.iter() {
            hash = mix(hash, u64::from(op));
        }
        CacheKey {
            hash,
            state,
            frontier: node,
            pending: scratch.as_slice().into(),
        }
    }
}

/// Run the search on `ops` (any order); returns the outcome and the steps taken.
///
/// Optional writes whose value no read returns are left out first: in any
/// linearization they can be dropped without changing what a read sees.
pub(crate) fn search(ops: &[SearchOp], budget: &Budget) -> (Outcome, u64) {
    let read: HashSet<State> = ops
        .iter()
        .filter_map(|o| match o.action {
            Action::Read(v) => Some(v),
            Action::Write(_) => None,
        })
        .collect();
    let mut sorted: Vec<SearchOp> = ops
        .iter()
        .filter(|o| match o.action {
            Action::Write(v) => o.ret.is_some() || read.contains(&v),
            Action::Read(_) => true,
        })
        .copied()
        .collect();
    sorted.sort_by_key(|o| (o.call, o.ret));
    Search::new(&sorted, budget).run()
}

/// Where the search loop is.
#[derive(Clone, Copy)]
enum Cursor {
    /// Just arrived at a node: look for a forced move first.
    Fresh,
    /// Branching over the candidate writes, from `entry`; `optional` selects the
    /// second pass, over `info`/pending writes.
    Branch { entry: u32, optional: bool },
}

/// Forced moves found by a survey: a legal candidate read, a dead `ok` write.
struct Forced {
    read: Option<(u32, usize)>,
    write: Option<(u32, usize)>,
}

/// One linearization on the current path.
struct Frame {
    node: u32,
    state: State,
    /// A forced move: if it fails, the node it was made from fails too.
    forced: bool,
}

struct Search<'a> {
    ops: &'a [SearchOp],
    budget: &'a Budget,
    entries: Entries,
    scratch: Vec<u32>,
    cache: HashSet<CacheKey, BuildHasherDefault<PassThrough>>,
    cache_bytes: usize,
    stack: Vec<Frame>,
    state: State,
    required_left: usize,
    optional_left: usize,
    /// Per value (slot), how many reads of it are not linearized yet.
    readers_left: Vec<u32>,
    /// Per value (slot), how many writes of it are not linearized yet.
    writers_left: Vec<u32>,
    /// At the current branching node: the first return entry...
    frontier: u32,
    /// ...the values returned by the candidate reads...
    cand_reads: Vec<State>,
    /// ...and per value, the earliest return among candidate writes of it.
    best_writer: Vec<(State, u32)>,
    steps: u64,
}

fn bump<T: std::ops::AddAssign + std::ops::SubAssign + From<u8>>(n: &mut T, undo: bool) {
    if undo {
        *n += T::from(1);
    } else {
        *n -= T::from(1);
    }
}

fn slot(v: State, absent_slot: usize) -> usize {
    if v == ABSENT {
        absent_slot
    } else {
        v as usize
    }
}

impl<'a> Search<'a> {
    fn new(ops: &'a [SearchOp], budget: &'a Budget) -> Self {
        let required = ops.iter().filter(|o| o.ret.is_some()).count();
        let absent_slot = ops
            .iter()
            .filter_map(|o| match o.action {
                Action::Read(v) | Action::Write(v) if v != ABSENT => Some(v as usize + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        let mut readers_left = vec![0; absent_slot + 1];
        let mut writers_left = vec![0; absent_slot + 1];
        for o in ops {
            match o.action {
                Action::Read(v) => readers_left[slot(v, absent_slot)] += 1,
                Action::Write(v) => writers_left[slot(v, absent_slot)] += 1,
            }
        }
        Search {
            ops,
            budget,
            entries: Entries::new(ops),
            scratch: Vec::new(),
            cache: HashSet::default(),
            cache_bytes: 0,
            stack: Vec::new(),
            state: ABSENT,
            required_left: required,
            optional_left: ops.len() - required,
            readers_left,
            writers_left,
            frontier: 0,
            cand_reads: Vec::new(),
            best_writer: Vec::new(),
            steps: 0,
        }
    }

    fn over_budget(&self) -> Option<String> {
        if self.steps > self.budget.max_steps {
            return Some(format!(
                "search budget of {} steps exceeded",
                self.budget.max_steps
            ));
        }
        if self.cache_bytes > self.budget.max_cache_bytes {
            return Some(format!(
                "search memory budget of {} bytes exceeded",
                self.budget.max_cache_bytes
            ));
        }
        // The wall-clock budget ends the search as "unknown", never with another verdict.
        #[allow(clippy::disallowed_methods)]
        match self.budget.deadline {
            Some(d) if self.steps & 4095 == 0 && Instant::now() > d => {
                Some("search time budget exceeded".to_string())
            }
            _ => None,
        }
    }

    fn run(mut self) -> (Outcome, u64) {
        let mut cursor = Cursor::Fresh;
        while self.required_left > 0 {
            self.steps += 1;
            if let Some(reason) = self.over_budget() {
                return (Outcome::Unknown(reason), self.steps);
            }
            let next = match cursor {
                Cursor::Fresh => self.fresh(),
                Cursor::Branch { entry, optional } => self.branch(entry, optional),
            };
            match next {
                Some(c) => cursor = c,
                None => return (Outcome::Violation, self.steps),
            }
        }
        (Outcome::Linearizable, self.steps)
    }

    /// Whether write `i` writes a value that no remaining read returns.
    fn dead(&self, i: usize) -> bool {
        match self.ops[i].action {
            Action::Write(v) => self.readers_left[slot(v, self.readers_left.len() - 1)] == 0,
            Action::Read(_) => false,
        }
    }

    /// At a new node, make a forced move if there is one: linearize a candidate read
    /// that the register allows, else a candidate `ok` write whose value no remaining
    /// read returns. Either can be moved to the front of any linearization from here
    /// (a read does not change the state; such a write is immediately overwritten by
    /// the first operation, which must then be a write), so no alternative is tried.
    fn fresh(&mut self) -> Option<Cursor> {
        let forced = self.survey();
        if let Some((node, i)) = forced.read {
            return self.forced(node, i);
        }
        if self.stranded() {
            return self.backtrack();
        }
        match forced.write {
            Some((node, i)) => self.forced(node, i),
            None => Some(Cursor::Branch {
                entry: self.entries.next[HEAD as usize],
                optional: false,
            }),
        }
    }

    fn forced(&mut self, node: u32, i: usize) -> Option<Cursor> {
        if self.try_lift(node, i, true) {
            Some(Cursor::Fresh)
        } else {
            self.backtrack()
        }
    }

    /// Try the candidate at `entry`, or move on.
    fn branch(&mut self, entry: u32, optional: bool) -> Option<Cursor> {
        if !self.entries.is_call(entry) {
            if !optional && self.optional_left > 0 {
                let first = self.entries.next[HEAD as usize];
                return Some(Cursor::Branch {
                    entry: first,
                    optional: true,
                });
            }
            return self.backtrack();
        }
        let i = self.entries.op[entry as usize] as usize;
        let write = matches!(self.ops[i].action, Action::Write(_));
        let wanted =
            write && (self.ops[i].ret.is_none() == optional) && !(optional && self.dead(i));
        if wanted && self.useful(entry, i) && self.try_lift(entry, i, false) {
            return Some(Cursor::Fresh);
        }
        Some(Cursor::Branch {
            entry: self.entries.next[entry as usize],
            optional,
        })
    }

    /// With no candidate read allowed, the next operation is a write, which overwrites
    /// the state for good if reads of it remain and no remaining write can restore it.
    fn stranded(&self) -> bool {
        let k = slot(self.state, self.readers_left.len() - 1);
        self.readers_left[k] > 0 && self.writers_left[k] == 0
    }

    /// Whether linearizing write `i` (call `entry`) first needs trying at this node.
    ///
    /// - Among candidate writes of one value only the one returning first is tried: in a
    ///   linearization starting with another, the two can be swapped.
    /// - If no candidate read returns its value, its return is not the first one and no
    ///   other remaining write writes that value, the first return's operation would come
    ///   between it and every read of its value and overwrite it.
    fn useful(&self, entry: u32, i: usize) -> bool {
        let Action::Write(v) = self.ops[i].action else {
            return false;
        };
        let ret = self.entries.matching[entry as usize];
        if !self.best_writer.contains(&(v, ret)) {
            return false;
        }
        let absent_slot = self.readers_left.len() - 1;
        ret == self.frontier
            || self.writers_left[slot(v, absent_slot)] > 1
            || self.cand_reads.contains(&v)
    }

    /// Scan the candidates (calls before the first return): record the first return,
    /// the values candidate reads return and, per value, the candidate write returning
    /// first; report the forced moves available.
    fn survey(&mut self) -> Forced {
        let mut forced = Forced {
            read: None,
            write: None,
        };
        self.cand_reads.clear();
        self.best_writer.clear();
        let mut node = self.entries.next[HEAD as usize];
        while self.entries.is_call(node) {
            self.steps += 1;
            let i = self.entries.op[node as usize] as usize;
            match self.ops[i].action {
                Action::Read(v) if v == self.state => forced.read = forced.read.or(Some((node, i))),
                Action::Read(v) => self.cand_reads.push(v),
                Action::Write(_) if self.ops[i].ret.is_some() && self.dead(i) => {
                    forced.write = forced.write.or(Some((node, i)));
                }
                Action::Write(v) => {
                    let ret = self.entries.matching[node as usize];
                    match self.best_writer.iter_mut().find(|(w, _)| *w == v) {
                        Some(best) => best.1 = best.1.min(ret),
                        None => self.best_writer.push((v, ret)),
                    }
                }
            }
            node = self.entries.next[node as usize];
        }
        self.frontier = node;
        forced
    }

    /// Linearize the call `node` of operation `i` if legal and not yet explored.
    fn try_lift(&mut self, node: u32, i: usize, forced: bool) -> bool {
        let Some(next_state) = step(self.state, self.ops[i].action) else {
            return false;
        };
        self.entries.lift(node);
        let key = self.entries.key(next_state, &mut self.scratch);
        let bytes = 64 + 4 * key.pending.len();
        if !self.cache.insert(key) {
            self.entries.unlift(node);
            return false;
        }
        self.cache_bytes += bytes;
        self.stack.push(Frame {
            node,
            state: self.state,
            forced,
        });
        self.state = next_state;
        self.count(i, false);
        true
    }

    /// Undo linearizations up to the last one that was a choice, and continue with the
    /// next candidate after it; `None` when every choice is exhausted.
    fn backtrack(&mut self) -> Option<Cursor> {
        loop {
            let frame = self.stack.pop()?;
            let i = self.entries.op[frame.node as usize] as usize;
            self.state = frame.state;
            self.entries.unlift(frame.node);
            self.count(i, true);
            if !frame.forced {
                let _ = self.survey();
                let entry = self.entries.next[frame.node as usize];
                return Some(Cursor::Branch {
                    entry,
                    optional: self.ops[i].ret.is_none(),
                });
            }
        }
    }

    fn count(&mut self, i: usize, undo: bool) {
        let absent_slot = self.readers_left.len() - 1;
        let counter = if self.ops[i].ret.is_some() {
            &mut self.required_left
        } else {
            &mut self.optional_left
        };
        bump(counter, undo);
        match self.ops[i].action {
            Action::Read(v) => bump(&mut self.readers_left[slot(v, absent_slot)], undo),
            Action::Write(v) => bump(&mut self.writers_left[slot(v, absent_slot)], undo),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget() -> Budget {
        Budget {
            max_steps: 1_000_000,
            deadline: None,
            max_cache_bytes: 1 << 30,
        }
    }

    fn op(call: usize, ret: Option<usize>, action: Action) -> SearchOp {
        SearchOp { call, ret, action }
    }

    #[test]
    fn check_search_basics() {
        use Action::*;
        let b = budget();
        assert_eq!(search(&[], &b).0, Outcome::Linearizable);
        // write 1 completes, then read sees 1: fine; sees absent: violation.
        let ok = [op(0, Some(1), Write(1)), op(2, Some(3), Read(1))];
        assert_eq!(search(&ok, &b).0, Outcome::Linearizable);
        let stale = [op(0, Some(1), Write(1)), op(2, Some(3), Read(ABSENT))];
        assert_eq!(search(&stale, &b).0, Outcome::Violation);
        // concurrent: either is fine.
        let conc = [op(0, Some(2), Write(1)), op(1, Some(3), Read(ABSENT))];
        assert_eq!(search(&conc, &b).0, Outcome::Linearizable);
        // an optional write explains a later read, or is simply dropped.
        let info = [
            op(0, None, Write(1)),
            op(5, Some(6), Read(1)),
            op(7, Some(8), Read(1)),
        ];
        assert_eq!(search(&info, &b).0, Outcome::Linearizable);
        let flip = [
            op(0, None, Write(1)),
            op(5, Some(6), Read(1)),
            op(7, Some(8), Read(ABSENT)),
        ];
        assert_eq!(search(&flip, &b).0, Outcome::Violation);
    }

    #[test]
    fn check_search_budget_gives_unknown() {
        use Action::*;
        let ops: Vec<SearchOp> = (0..40)
            .map(|i| op(2 * i, Some(2 * i + 1), Write(i as u32)))
            .collect();
        assert_eq!(search(&ops, &budget()).0, Outcome::Linearizable);
        let b = Budget {
            max_steps: 10,
            ..budget()
        };
        assert!(matches!(search(&ops, &b).0, Outcome::Unknown(r) if r.contains("10 steps")));
        let b = Budget {
            max_cache_bytes: 100,
            ..budget()
        };
        assert!(matches!(search(&ops, &b).0, Outcome::Unknown(r) if r.contains("memory")));
    }

    #[test]
    fn check_search_many_concurrent_writes() {
        use Action::*;
        // 16 concurrent writes, then reads that need two of them in both orders.
        let mut ops: Vec<SearchOp> = (0..16)
            .map(|i| op(i, Some(100 + i), Write(i as u32)))
            .collect();
        ops.push(op(200, Some(201), Read(3)));
        ops.push(op(202, Some(203), Read(7)));
        assert_eq!(search(&ops, &budget()).0, Outcome::Violation);
        ops.pop();
        ops.push(op(50, Some(203), Read(7)));
        assert_eq!(search(&ops, &budget()).0, Outcome::Linearizable);
    }
}
