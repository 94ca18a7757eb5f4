//! Messages between nodes. Every variant derives serde so drivers can put it on the wire.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::api::{Pair, Reply, ReqId};
use crate::config::ClusterConfig;
use crate::store::{Entry, Range, Version};
use crate::Id;

/// A node's id and advertised address. The id is always SHA-1 of the address: a
/// deserialized `NodeRef` whose id does not match is refused.
///
/// With virtual nodes (`ClusterConfig::vnodes` > 1) one process owns several ring
/// positions, each a node with an address of its own; `process` names the process (the
/// address of its first position) so that a key's replicas are placed on distinct
/// processes. Two `NodeRef`s are equal when their id and address are: the process is
/// placement information, carried where placement is decided (views, join requests),
/// not by every message.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "NodeRefWire")]
pub struct NodeRef {
    /// SHA-1 of `addr`.
    pub id: Id,
    /// `host:port`.
    pub addr: Arc<str>,
    /// The process this position belongs to, when it is not its own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Arc<str>>,
}

impl NodeRef {
    /// The node advertised at `addr`.
    pub fn new(addr: &str) -> NodeRef {
        NodeRef {
            id: Id::of_addr(addr),
            addr: Arc::from(addr),
            process: None,
        }
    }

    /// The node advertised at `addr`, one position of the process `process` (the address
    /// of that process's first position; the same as `addr` for the first one).
    pub fn of_process(addr: &str, process: &str) -> NodeRef {
        let mut node = NodeRef::new(addr);
        if process != addr {
            node.process = Some(Arc::from(process));
        }
        node
    }

    /// The process this position belongs to.
    pub fn process(&self) -> &str {
        self.process.as_deref().unwrap_or(&self.addr)
    }

    /// Whether `self` and `other` are positions of one process.
    pub fn same_process(&self, other: &NodeRef) -> bool {
        self.process() == other.process()
    }
}

impl PartialEq for NodeRef {
    fn eq(&self, other: &NodeRef) -> bool {
        self.id == other.id && self.addr == other.addr
    }
}

impl Eq for NodeRef {}

impl PartialOrd for NodeRef {
    fn partial_cmp(&self, other: &NodeRef) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for NodeRef {
    fn cmp(&self, other: &NodeRef) -> std::cmp::Ordering {
        (self.id, &self.addr).cmp(&(other.id, &other.addr))
    }
}

impl std::hash::Hash for NodeRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.addr.hash(state);
    }
}

impl fmt::Debug for NodeRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.addr)
    }
}

#[derive(Deserialize)]
struct NodeRefWire {
    id: Id,
    addr: String,
    #[serde(default)]
    process: Option<String>,
}

impl TryFrom<NodeRefWire> for NodeRef {
    type Error = String;
    fn try_from(w: NodeRefWire) -> Result<Self, Self::Error> {
        let node = match &w.process {
            Some(process) => NodeRef::of_process(&w.addr, process),
            None => NodeRef::new(&w.addr),
        };
        if node.id != w.id {
            return Err(format!("node id {} is not SHA-1 of '{}'", w.id, w.addr));
        }
        Ok(node)
    }
}

/// What one node knows of its neighbourhood, as installed by the bootstrap.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct View {
    /// Configuration epoch this view belongs to.
    pub epoch: u64,
    /// Number of members in the ring.
    pub ring_size: usize,
    /// Nearest predecessors, nearest first; `min(k + 1, ring_size - 1)` of them.
    pub preds: Vec<NodeRef>,
    /// Nearest successors, nearest first; `min(k + 1, ring_size - 1)` of them.
    pub succs: Vec<NodeRef>,
}

impl View {
    /// Whether this view is well formed for a ring with replication factor `k` and
    /// `vnodes` positions per process: a view of a ring of `n ≥ 1` members lists
    /// `min(k + 1, n - 1)` predecessors and as many successors (with virtual nodes, up to
    /// `n - 1` each: see [`crate::ring::Ring::view_of`]); the empty view (`ring_size` 0)
    /// of a departing node lists none. Views the coordinator builds always are; one from
    /// the network may not be.
    pub fn check(&self, k: usize, vnodes: u32) -> Result<(), String> {
        let want = match self.ring_size {
            0 => 0,
            n => (k + 1).min(n - 1),
        };
        let fits = match vnodes > 1 {
            true => {
                let most = self.ring_size.saturating_sub(1);
                self.preds.len() <= most && self.succs.len() <= most
            }
            false => self.preds.len() == want && self.succs.len() == want,
        };
        if !fits {
            return Err(format!(
                "a view of {} members with k = {k} lists {want} predecessors and successors, \
                 not {} and {}",
                self.ring_size,
                self.preds.len(),
                self.succs.len()
            ));
        }
        Ok(())
    }
}

/// Coordinator → affected node: the next view, and where to fetch what it adds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PrepareWire")]
pub struct Prepare {
    /// The next view.
    pub view: View,
    /// Cluster settings (new members learn them here).
    pub config: ClusterConfig,
    /// Nodes that together hold every key the receiver gains: the node leaving or the
    /// joiner's successor, or after a failure the receiver's nearest live predecessors
    /// (one of them held each key as an earlier replica).
    pub sources: Vec<NodeRef>,
    /// A joining node's whole finger table.
    pub fingers: Option<Vec<NodeRef>>,
    /// Set when members were removed as failed: a chain member whose nearest
    /// predecessor changed fetches again every key it does not head, from that
    /// predecessor (a failed source may have died before its hand-over forwards
    /// arrived, leaving an earlier copy short of acknowledged writes).
    #[serde(default)]
    pub resync: bool,
    /// The coordinator's term (see `Message::Commit`).
    #[serde(default)]
    pub term: u64,
    /// The epoch of the last change the coordinator's group decided when this was sent.
    /// A node still prepared for that change missed its commit (the change went on
    /// without it); it commits it before it prepares this one, so it keeps what it
    /// fetched for it: the sources of this change count on that.
    #[serde(default)]
    pub decided: u64,
    /// Under chain replication, after a removal that leaves at most k members: where
    /// each part of what the receiver gains comes from, the last of that part's old
    /// replicas still in the ring. There every member gains, and its nearest
    /// predecessor may gain the same keys in the same change, so holds nothing of them
    /// yet. Empty otherwise: everything comes from `sources`.
    #[serde(default)]
    pub pieces: Vec<Piece>,
}

/// Part of a prepared node's gain and the node that holds it (see [`Prepare::pieces`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Piece {
    /// The keys.
    pub range: Range,
    /// Where to fetch them.
    pub source: NodeRef,
}

impl Prepare {
    /// Whether the prepare is well formed (see [`View::check`]).
    pub fn check(&self) -> Result<(), String> {
        crate::config::ClusterConfig::new(
            self.config.k,
            self.config.consistency,
            self.config.routing,
        )
        .and_then(|c| c.with_vnodes(self.config.vnodes))
        .map_err(|e| e.to_string())?;
        self.view.check(self.config.k, self.config.vnodes)?;
        if self.sources.len() > crate::config::MAX_K + 1 {
            return Err(format!("{} fetch sources", self.sources.len()));
        }
        // A removal leaving at most k members: one piece per old primary at most.
        if self.pieces.len() > crate::config::MAX_K {
            return Err(format!("{} fetch pieces", self.pieces.len()));
        }
        match &self.fingers {
            Some(f) if f.len() != crate::id::ID_BITS => {
                Err(format!("a finger table of {} entries", f.len()))
            }
            _ => Ok(()),
        }
    }
}

#[derive(Deserialize)]
struct PrepareWire {
    view: View,
    config: ClusterConfig,
    sources: Vec<NodeRef>,
    fingers: Option<Vec<NodeRef>>,
    #[serde(default)]
    resync: bool,
    #[serde(default)]
    term: u64,
    #[serde(default)]
    decided: u64,
    #[serde(default)]
    pieces: Vec<Piece>,
}

impl TryFrom<PrepareWire> for Prepare {
    type Error = String;
    fn try_from(w: PrepareWire) -> Result<Self, Self::Error> {
        let prepare = Prepare {
            view: w.view,
            config: w.config,
            sources: w.sources,
            fingers: w.fingers,
            resync: w.resync,
            term: w.term,
            decided: w.decided,
            pieces: w.pieces,
        };
        prepare.check()?;
        Ok(prepare)
    }
}

/// A versioned write on its way down a key's chain, as received by one chain member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ChainStepWire")]
pub struct ChainStep {
    /// Client waiting for the tail's acknowledgement, if any.
    pub origin: Option<Origin>,
    /// The key.
    pub key: String,
    /// The versioned write.
    pub entry: Entry,
    /// Whether the key had a live value at the head before this write.
    pub existed: bool,
    /// This receiver's position in the chain (head = 0).
    pub position: u8,
    /// Chain length, `min(k, N)`.
    pub chain_len: u8,
    /// Lookup hops the client's request took to the head.
    pub hops: u32,
    /// Repair budget, as in `Replicate`.
    pub ttl: u8,
}

impl ChainStep {
    /// Whether the step is well formed: a position inside a chain of 1 to `MAX_K` nodes.
    pub fn check(&self) -> Result<(), String> {
        let len = self.chain_len as usize;
        if len == 0 || len > crate::config::MAX_K || self.position >= self.chain_len {
            return Err(format!(
                "chain position {} of a chain of {}",
                self.position, self.chain_len
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct ChainStepWire {
    origin: Option<Origin>,
    key: String,
    entry: Entry,
    existed: bool,
    position: u8,
    chain_len: u8,
    hops: u32,
    ttl: u8,
}

impl TryFrom<ChainStepWire> for ChainStep {
    type Error = String;
    fn try_from(w: ChainStepWire) -> Result<Self, Self::Error> {
        let step = ChainStep {
            origin: w.origin,
            key: w.key,
            entry: w.entry,
            existed: w.existed,
            position: w.position,
            chain_len: w.chain_len,
            hops: w.hops,
            ttl: w.ttl,
        };
        step.check()?;
        Ok(step)
    }
}

/// What a member tells the address it was started with as bootstrap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingInfo {
    /// The ring's identity.
    pub ring_id: u64,
    /// Its settings: a bootstrap started with others refuses to take part.
    pub settings: ClusterConfig,
    /// The newest coordinator term the member knows.
    pub term: u64,
    /// The coordinator it follows.
    pub coordinator: NodeRef,
    /// The coordinator group's seats it knows: when that group was the bootstrap alone,
    /// a restarted bootstrap knows no other seat can lead the ring.
    #[serde(default)]
    pub seats: Vec<NodeRef>,
}

/// Where a routed operation came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Node that holds the client's request.
    pub node: NodeRef,
    /// The request's id there.
    pub req: ReqId,
    /// The origin's incarnation, so request ids reused after a restart stay distinct.
    #[serde(default)]
    pub incarnation: u64,
}

/// A client write a hand-over forward carries: its origin, and whether the key existed
/// before it.
pub type Writer = (Origin, bool);

/// What a routed operation does once it reaches the right node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Insert (`Some`) or delete (`None`).
    Write {
        /// The new value, or `None` to delete.
        value: Option<String>,
    },
    /// Query.
    Read,
    /// A replica write that reached a node no longer responsible for the key, on its way
    /// to the key's current primary. Has no client.
    Repair {
        /// The entry to merge.
        entry: Entry,
        /// Repairs the primary's re-replication may still cause.
        ttl: u8,
    },
}

/// An operation travelling towards the node responsible for `key`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Routed {
    /// Who waits for the answer; `None` for repairs.
    pub origin: Option<Origin>,
    /// The key.
    pub key: String,
    /// What to do there.
    pub action: Action,
    /// Forwards so far.
    pub hops: u32,
    /// Forwards that did not bring the operation closer to its key (views that disagree
    /// during a change, or a dead node skipped): a lookup that keeps circling is ended.
    #[serde(default)]
    pub laps: u32,
    /// Sent again by its origin after a failure (see `Node::redrive`): a write is applied
    /// only by a replica that applied it before (which sends that same version down the
    /// chain again), never afresh, since a node that lost its record of it (a new head
    /// that restarted or joined) cannot tell whether it took effect elsewhere.
    #[serde(default)]
    pub redriven: bool,
}

/// Forwards without progress a lookup may take before it is ended as looping. Each lap
/// costs up to a ring's worth of hops, and duplicated messages multiply each lap.
pub const LAPS_MAX: u32 = 4;

/// Repair budget of a fresh replica write: how many times it may be bounced to the key's
/// primary while views change under it.
pub const REPAIR_TTL: u8 = 8;

/// Times a join request may be passed on. The longest honest path is a member whose
/// coordinator is a seat that no longer leads, then that seat, then the leader; two more
/// cover beliefs a step staler.
pub const JOIN_FORWARDS_MAX: u8 = 4;

/// Most members a join request's ring record may name (a bound on what a peer can make
/// a restarted bootstrap hold).
pub const RING_RECORD_MAX: usize = 1 << 16;

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sender.
    pub from: NodeRef,
    /// The content.
    pub msg: Message,
}

/// Node-to-node protocol messages.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// A node asks to join; sent to (or forwarded to) the coordinator.
    JoinRequest {
        /// The joining node.
        node: NodeRef,
        /// Chosen afresh by the node each time it starts to join: a join request from a
        /// member with a new incarnation means it restarted and lost its state; one with
        /// the same incarnation is a duplicate.
        incarnation: u64,
        /// How many nodes have passed it on. Each passes it to the coordinator it
        /// believes in, and beliefs go stale: without a bound, nodes that each believe
        /// the next one coordinates pass a request round for ever (and every retry of
        /// the joiner adds another). Past [`JOIN_FORWARDS_MAX`] it is dropped; the
        /// joiner retries.
        #[serde(default)]
        hops: u8,
        /// From a member back from its disk that held a coordinator seat: the whole
        /// ring its record names (see [`crate::RingRecord`]). Last, so that encodings
        /// without it still decode.
        #[serde(default)]
        ring: Option<crate::disk::RingRecord>,
        /// From a joiner asking again while it waits on a prepared join: the epoch of the
        /// view it prepared. A leader that lists it already sees that it never learned
        /// its join committed (see `Leader::on_join_request`). Last, as `ring`.
        #[serde(default)]
        prepared: Option<u64>,
    },
    /// A node asks to leave; sent to the coordinator.
    DepartRequest {
        /// The departing node.
        node: NodeRef,
    },
    /// The coordinator refuses a join or depart.
    Refused {
        /// Why.
        reason: crate::api::RequestError,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
    },
    /// Coordinator → affected node: here is your next view; fetch what it adds to your
    /// responsibility from its sources, then say `Ready`.
    Prepare(Prepare),
    /// Gainer → source: send me the entries in `range`, and forward writes in it until
    /// the epoch commits.
    Fetch {
        /// Epoch being prepared.
        epoch: u64,
        /// Keys wanted.
        range: Range,
        /// A node back from its disk: its [`crate::Store::fetch_digests`] of `range`, so
        /// that only the buckets where it differs are sent (empty: send everything).
        #[serde(default)]
        have: Vec<u64>,
    },
    /// Source → gainer: one chunk of the requested entries.
    Snapshot {
        /// Epoch being prepared.
        epoch: u64,
        /// This chunk's index.
        chunk: u32,
        /// Number of chunks.
        chunks: u32,
        /// The entries, tombstones included.
        entries: Vec<(String, Entry)>,
    },
    /// Affected node → coordinator: I have everything my next view needs.
    Ready {
        /// Epoch being prepared.
        epoch: u64,
    },
    /// Coordinator → affected node: install the prepared view.
    Commit {
        /// Epoch to install.
        epoch: u64,
        /// Nodes of this change that failed before acknowledging their commit: a node
        /// that fetched from one of them may lack writes its forwards still carried, and
        /// fetches again (see `Membership::on_commit`).
        #[serde(default)]
        failed: Vec<NodeRef>,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
        /// The commit grants no lease (a ring founded again from its disks waits for its
        /// members: see `Comeback::awaiting`).
        #[serde(default)]
        hold_leases: bool,
        /// The coordinator group's seats. A joiner learns them with its first commit,
        /// before the leader answers any heartbeat of it: should that leader be the
        /// group's only seat and crash at once, its restart can tell (`Message::Rejoin`).
        #[serde(default)]
        seats: Vec<NodeRef>,
    },
    /// Affected node → coordinator: the view is installed and surplus keys dropped.
    Ack {
        /// Installed epoch.
        epoch: u64,
    },
    /// Coordinator → a joiner: the change that let it in is complete everywhere.
    ChangeDone {
        /// Epoch of the change.
        epoch: u64,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
    },
    /// Coordinator → any node: some finger table entries changed.
    Fingers {
        /// Configuration epoch.
        epoch: u64,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
        /// `(index, node)` pairs.
        updates: Vec<(u8, NodeRef)>,
    },
    /// A lookup hop.
    Route(Routed),
    /// Chain replication: the head sends a read to the tail, which answers the client.
    TailRead {
        /// Who asked.
        origin: Origin,
        /// The key.
        key: String,
        /// Lookup hops so far.
        hops: u32,
    },
    /// Chain replication: apply the write and pass it on; the tail answers the client.
    ChainWrite(ChainStep),
    /// CRAQ, tail → the key's other replicas (after a chain write), or → a replica that
    /// asked (`VersionQuery`, answered to its client by the tail itself): the tail has
    /// committed `version` of `key`, so a replica that stores that version may serve it.
    CraqClean {
        /// The key.
        key: String,
        /// The version the tail stores (`None`: it has no entry of the key).
        version: Option<Version>,
    },
    /// CRAQ, a replica whose copy of `key` is not known clean → the key's tail: which
    /// entry have you committed?
    VersionQuery {
        /// Who asked.
        origin: Origin,
        /// The key.
        key: String,
        /// Lookup hops so far.
        hops: u32,
    },
    /// Asynchronous replication, and writes forwarded during a hand-over.
    Replicate {
        /// The entries.
        entries: Vec<(String, Entry)>,
        /// How many more times a receiver that should not hold the key may send it on to
        /// the key's primary. Bounded, so views in flux cannot make a loop.
        ttl: u8,
        /// When not 0, the receiver acknowledges it in a `ReplicateAck`; the sender
        /// resends until it does (a lost replica write would otherwise wait for
        /// anti-entropy).
        #[serde(default)]
        seq: u64,
        /// The epoch of the view the primary sent it under (0: not said). A hand-over
        /// source that applies it does not forward it, once that hand-over has
        /// committed, to a node that this view already made one of the key's replicas:
        /// the primary sent it there itself.
        #[serde(default)]
        epoch: u64,
    },
    /// `Replicate`s with these sequence numbers arrived. A replica gathers them for a
    /// few milliseconds, so under load one acknowledgement covers many writes.
    ReplicateAck {
        /// The acknowledged `Replicate`s' `seq`s.
        seqs: Vec<u64>,
    },
    /// Hand-over: a write the source applied in a range the receiver is fetching, sent
    /// until the change commits and acknowledged one by one, so the source can tell the
    /// bootstrap that everything reached the new holder.
    Forward {
        /// Epoch of the hand-over.
        epoch: u64,
        /// Sequence number within that hand-over.
        seq: u64,
        /// The key.
        key: String,
        /// The write.
        entry: Entry,
        /// Repair budget, as in `Replicate`.
        ttl: u8,
        /// The client write it is, when the source applied one (and whether the key
        /// existed before it): the fetcher, perhaps the key's next head, remembers it,
        /// so a copy of that write the network delivers to it later is not applied
        /// again, over a later write.
        #[serde(default)]
        writer: Option<Writer>,
    },
    /// Acknowledges a `Forward`.
    ForwardAck {
        /// Epoch of the hand-over.
        epoch: u64,
        /// Its sequence number.
        seq: u64,
        /// Under eventual consistency, when the receiver does not hold the forwarded key
        /// (a later change took it elsewhere, or the hand-over was abandoned): the keys it
        /// does hold, so that the source forwards it no others.
        #[serde(default)]
        held: Option<Range>,
    },
    /// The answer to a client's request, sent to its origin node.
    Done {
        /// The request at the origin.
        req: ReqId,
        /// The answer.
        reply: Reply,
    },
    /// `query *`: walks the ring once, each node adding the keys it is primary for.
    CollectAll {
        /// Who asked.
        origin: Origin,
        /// Pairs so far.
        pairs: Vec<Pair>,
        /// Nodes visited.
        visited: u32,
    },
    /// Member → coordinator: I am alive, and this is where I stand.
    Heartbeat {
        /// The newest coordinator term the member has seen.
        term: u64,
        /// Epoch of the member's installed view.
        epoch: u64,
        /// Epoch of the view it is preparing, if any: the coordinator aborts one that
        /// no longer leads anywhere (its change was never decided).
        preparing: Option<u64>,
        /// When the member sent it, on its own clock: a leader that grants a lease
        /// echoes it, and the member's lease runs from this time.
        #[serde(default)]
        sent: u64,
    },
    /// The coordinator of `term` is `leader`: sent by a new leader to every member, in
    /// answer to heartbeats, and by other seats to point a member at the leader.
    Leader {
        /// The leader's term.
        term: u64,
        /// The leader.
        leader: NodeRef,
        /// The coordinator group's seats, where a member looks for the leader when it
        /// stops answering.
        seats: Vec<NodeRef>,
        /// The ring's identity.
        ring_id: u64,
        /// The group configuration the leader runs: a seat of an older one that is not
        /// among `seats` lost its seat.
        #[serde(default)]
        config_id: u32,
        /// In answer to a heartbeat, when the leader grants a lease: the heartbeat's
        /// `sent` time, echoed.
        #[serde(default)]
        lease_from: Option<u64>,
    },
    /// Member → the address it was started with as bootstrap, when that is not the
    /// coordinator: lets a restarted bootstrap find the ring it belongs to.
    Hello(RingInfo),
    /// A restarted bootstrap → a member whose `Hello` names the bootstrap's previous
    /// incarnation as its coordinator, in a group with no other seat: that group died
    /// with it. The member leaves its view keeping its entries, as a node back from its
    /// disk does, and joins again; the bootstrap founds the ring again once most members
    /// have asked, and grants no lease until they are back.
    Rejoin {
        /// The ring.
        ring_id: u64,
        /// Drawn by the bootstrap's new incarnation: a member obeys each one once.
        nonce: u64,
    },
    /// Between coordinator seats: omnipaxos.
    Consensus(Box<crate::coordinator::Consensus>),
    /// A seat of the previous configuration → a new seat: the directory to start from.
    GroupJoin(Box<crate::coordinator::Directory>),
    /// Coordinator → a node it waits for: these nodes are being removed as failed, so
    /// hand-over forwards to them need not arrive before the commit of `epoch` is
    /// acknowledged.
    Unreachable {
        /// The change being committed.
        epoch: u64,
        /// The coordinator's term.
        term: u64,
        /// The nodes being removed.
        nodes: Vec<NodeRef>,
    },
    /// Omnipaxos' leader → the other seats, every election round: the length of its log
    /// (a seat whose log is shorter catches up).
    GroupLog {
        /// The configuration.
        config_id: u32,
        /// The leader's accepted entries.
        log_len: u64,
        /// The leader's decided entries.
        decided: u64,
    },
    /// A seat → the other seats, every group tick while it has not heard from
    /// omnipaxos' leader for a while: a seat stands for election early only when a
    /// majority says so (see `Group::tick`), so a leader that only one seat cannot
    /// reach (one broken link) keeps its place.
    GroupQuiet {
        /// The configuration.
        config_id: u32,
        /// The sender's seat in it (its omnipaxos pid).
        pid: u64,
        /// Group ticks since the sender last heard from the leader.
        quiet: u64,
    },
    /// A new seat has its directory.
    GroupJoinAck {
        /// The configuration it started.
        config_id: u32,
    },
    /// Liveness probe to a successor.
    Ping,
    /// Answer to `Ping`.
    Pong,
    /// Coordinator → node: you were declared failed and removed from the ring.
    Removed {
        /// Epoch of the removal.
        epoch: u64,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
    },
    /// Coordinator → affected node: the change being prepared was abandoned.
    Abort {
        /// Epoch of the abandoned change.
        epoch: u64,
        /// The sender's coordinator term: a member takes coordinator messages only from
        /// the newest term it has seen, and follows its sender.
        #[serde(default)]
        term: u64,
    },
    /// Primary → the node that sent it a hinted repair (a `Repair` with an origin): the
    /// key's entry of `version` is applied at its primary, the hint can go.
    HintAck {
        /// The key.
        key: String,
        /// The version the repair carried.
        version: crate::store::Version,
    },
    /// Anti-entropy, primary → replica: digests of the primary's keys in `range`.
    SyncDigest {
        /// The primary's own range.
        range: Range,
        /// One digest per bucket.
        digests: Vec<u64>,
    },
    /// Anti-entropy, replica → primary: its entries in the buckets that differ.
    SyncDiff {
        /// The range compared.
        range: Range,
        /// Indices of the buckets that differ.
        buckets: Vec<u32>,
        /// The replica's entries in those buckets.
        entries: Vec<(String, Entry)>,
    },
    /// Anti-entropy, primary → replica: entries the replica lacked or had older.
    SyncPush {
        /// The entries.
        entries: Vec<(String, Entry)>,
    },
    /// `overlay`: walks the ring once from the bootstrap.
    OverlayWalk {
        /// Who asked.
        origin: Origin,
        /// Nodes so far, in ring order.
        nodes: Vec<String>,
    },
}

impl Message {
    /// A join request to pass on, one hop further; `None` for one that has been passed
    /// on [`JOIN_FORWARDS_MAX`] times, or for any other message.
    pub(crate) fn join_forwarded(mut self) -> Option<Message> {
        match &mut self {
            Message::JoinRequest { hops, .. } if *hops < JOIN_FORWARDS_MAX => *hops += 1,
            _ => return None,
        }
        Some(self)
    }

    /// Whether the message is well formed: the checks decoding applies (see
    /// [`Prepare::check`], [`ChainStep::check`]) and the bounds on the other variants. The
    /// core checks every message it is handed, so one built in memory (the simulator)
    /// is held to the same rules as one decoded from the network.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Message::Prepare(p) => p.check(),
            Message::ChainWrite(step) => step.check(),
            Message::Snapshot { chunk, chunks, .. } if chunk >= chunks => {
                Err(format!("snapshot chunk {chunk} of {chunks}"))
            }
            Message::Fetch { have, .. }
                if !have.is_empty() && have.len() != crate::store::FETCH_BUCKETS =>
            {
                Err(format!("{} fetch digest buckets", have.len()))
            }
            Message::SyncDigest { digests, .. }
                if digests.len() != crate::store::DIGEST_BUCKETS =>
            {
                Err(format!("{} digest buckets", digests.len()))
            }
            Message::JoinRequest {
                ring: Some(record), ..
            } if record.members.len() > RING_RECORD_MAX => {
                Err(format!("{} members in a ring record", record.members.len()))
            }
            Message::Fingers { updates, .. }
                if updates
                    .iter()
                    .any(|(i, _)| *i as usize >= crate::id::ID_BITS) =>
            {
                Err("a finger index beyond the table".into())
            }
            _ => Ok(()),
        }
    }

    /// Short name of the message, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::JoinRequest { .. } => "join_request",
            Message::DepartRequest { .. } => "depart_request",
            Message::Refused { .. } => "refused",
            Message::Prepare(_) => "prepare",
            Message::Fetch { .. } => "fetch",
            Message::Snapshot { .. } => "snapshot",
            Message::Ready { .. } => "ready",
            Message::Commit { .. } => "commit",
            Message::Ack { .. } => "ack",
            Message::Fingers { .. } => "fingers",
            Message::ChangeDone { .. } => "change_done",
            Message::Route(_) => "route",
            Message::TailRead { .. } => "tail_read",
            Message::ChainWrite(_) => "chain_write",
            Message::CraqClean { .. } => "craq_clean",
            Message::VersionQuery { .. } => "version_query",
            Message::Replicate { .. } => "replicate",
            Message::Forward { .. } => "forward",
            Message::ForwardAck { .. } => "forward_ack",
            Message::ReplicateAck { .. } => "replicate_ack",
            Message::Done { .. } => "done",
            Message::CollectAll { .. } => "collect_all",
            Message::OverlayWalk { .. } => "overlay_walk",
            Message::Heartbeat { .. } => "heartbeat",
            Message::Leader { .. } => "leader",
            Message::Hello(_) => "hello",
            Message::Rejoin { .. } => "rejoin",
            Message::Consensus(_) => "consensus",
            Message::GroupJoin(_) => "group_join",
            Message::GroupJoinAck { .. } => "group_join_ack",
            Message::GroupQuiet { .. } => "group_quiet",
            Message::GroupLog { .. } => "group_log",
            Message::Unreachable { .. } => "unreachable",
            Message::Ping => "ping",
            Message::Pong => "pong",
            Message::Removed { .. } => "removed",
            Message::Abort { .. } => "abort",
            Message::HintAck { .. } => "hint_ack",
            Message::SyncDigest { .. } => "sync_digest",
            Message::SyncDiff { .. } => "sync_diff",
            Message::SyncPush { .. } => "sync_push",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ref_round_trips_and_refuses_forged_ids() {
        let n = NodeRef::new("127.0.0.1:5000");
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(serde_json::from_str::<NodeRef>(&json).unwrap(), n);
        let forged = json.replace("127.0.0.1:5000", "127.0.0.1:5001");
        assert!(serde_json::from_str::<NodeRef>(&forged).is_err());
    }

    #[test]
    fn unknown_message_type_is_an_error() {
        let bad = r#"{"from":{"id":"00","addr":"x"},"msg":{"type":"bogus"}}"#;
        assert!(serde_json::from_str::<Envelope>(bad).is_err());
    }
}
