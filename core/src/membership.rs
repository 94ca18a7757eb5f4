//! A member's side of membership: asking to join or leave, preparing a view (fetching
//! what it adds through the hand-over), installing it on commit, finger updates, and
//! notices of removal and of abandoned changes.

use rand::Rng;

use crate::api::{Reply, ReqId, RequestError, Response};
use crate::handover::Handover;
use crate::message::{Envelope, Message, NodeRef, Prepare, View};
use crate::out::Out;
use crate::rejected::Rejected;
use crate::shared::{responsibility_of, tails_of, Gaining, Phase, Shared};
use crate::store::Range;

/// A `Commit` from the coordinator, as `Membership::on_commit` takes it.
pub(crate) struct CommitOrder<'a> {
    /// The change committed.
    pub(crate) epoch: u64,
    /// Members found failed while it was prepared (see `repair_if_source_failed`).
    pub(crate) failed: &'a [NodeRef],
    /// The leader's term.
    pub(crate) term: u64,
    /// No lease comes with it.
    pub(crate) hold_leases: bool,
    /// The coordinator group's seats.
    pub(crate) seats: Vec<NodeRef>,
}

/// A view change this node has been told to prepare.
#[derive(Clone, Debug)]
struct Preparing {
    view: View,
    fingers: Option<Vec<crate::message::NodeRef>>,
    /// What is fetched, and from where.
    fetching: Range,
    sources: Vec<NodeRef>,
    /// With virtual nodes under chain replication, the source of each piece.
    pieces: Vec<crate::message::Piece>,
    /// Whether everything the view adds has been fetched (`Ready` sent).
    ready: bool,
    /// When `Ready` was first sent: the leader heard from this node after that, and
    /// decided the change with its group, so the commit grants a lease from then (a
    /// node that just joined serves at once rather than after its first heartbeat).
    ready_at: Option<crate::Time>,
    /// Fetched entries of keys this node already serves, taken only once the change is
    /// committed (see [`Membership::take_fetched`]).
    deferred: Vec<(String, crate::Entry)>,
    /// When the prepare arrived.
    prepared_at: crate::Time,
}

/// The member side of membership changes.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    preparing: Option<Preparing>,
    /// Data-path messages that reached a joining node between its neighbours' commit and
    /// its own; handled once it commits.
    early: Vec<Envelope>,
    /// The client request waiting for a join or depart to finish.
    request: Option<ReqId>,
}

impl Membership {
    /// Keep `envelope` for after this node's join commits, if it is for the data path of
    /// a node prepared to join but not yet committed (its neighbours may have installed
    /// their views already). Returns it back otherwise.
    pub(crate) fn hold_early(&mut self, sh: &Shared, envelope: Envelope) -> Option<Envelope> {
        let prepared = sh.phase == Phase::Joining && self.preparing.is_some();
        let data_path = matches!(
            envelope.msg,
            Message::Route(_)
                | Message::TailRead { .. }
                | Message::ChainWrite(_)
                | Message::CollectAll { .. }
                | Message::OverlayWalk { .. }
        );
        if !(prepared && data_path) {
            return Some(envelope);
        }
        if self.early.len() < sh.limits.early_messages_max {
            self.early.push(envelope);
        }
        None
    }

    /// The client request `id` timed out: the join or depart may still complete, but
    /// nobody waits for it.
    pub(crate) fn forget_request(&mut self, id: ReqId) {
        if self.request == Some(id) {
            self.request = None;
        }
    }

    /// Answer the client waiting for the join or depart, if any.
    fn finish(&mut self, sh: &Shared, out: &mut Out, reply: Reply) {
        if let Some(id) = self.request.take() {
            out.respond(Some(sh.origin(id)), reply);
        }
    }

    // ----- joining and leaving -----

    /// Client request `id` asks an idle node to join.
    pub(crate) fn join(&mut self, sh: &mut Shared, out: &mut Out, id: ReqId) {
        self.request = Some(id);
        self.start_joining(sh, out);
    }

    /// Become a joiner with a fresh incarnation and ask the coordinator to let us in.
    fn start_joining(&mut self, sh: &mut Shared, out: &mut Out) {
        sh.phase = Phase::Joining;
        sh.incarnation = out.now ^ out.rng.gen::<u64>();
        send_join_request(sh, out);
    }

    /// Client request `id` asks an active member to leave.
    pub(crate) fn depart(&mut self, sh: &mut Shared, out: &mut Out, id: ReqId) {
        sh.phase = Phase::Departing;
        self.request = Some(id);
        send_depart_request(sh, out);
    }

    /// Heartbeat tick: a join or depart the coordinator has not started preparing is
    /// asked for again (the request, or the answer, may have been lost).
    pub(crate) fn on_tick(&mut self, sh: &Shared, ho: &mut Handover, out: &mut Out) {
        self.continue_repair(sh, ho, out);
        if let Some(p) = &self.preparing {
            // A join prepared by a leader that lost its lead before deciding it neither
            // commits nor aborts, and the next leader knows nothing of it: past a
            // failure timeout the joiner asks again (a leader still driving the change
            // takes it for a duplicate; a new one prepares it afresh, and the newer
            // prepare replaces this one). A removed eventual primary holding the only
            // copy of writes it acknowledged waited for good: seed 7644 of the eventual
            // partition campaign.
            let waited = out.now.saturating_sub(p.prepared_at);
            if sh.phase == Phase::Joining && waited > sh.timing.failure_timeout_ns {
                send_join_request_prepared(sh, out, Some(p.view.epoch));
            }
            return;
        }
        match sh.phase {
            Phase::Joining => send_join_request(sh, out),
            Phase::Departing => send_depart_request(sh, out),
            _ => {}
        }
    }

    /// Forget ring state and data; remember the successor to pass stray lookups to.
    pub(crate) fn leave(&mut self, sh: &mut Shared, ho: &mut Handover) {
        sh.forward_to = sh.view.succs.first().cloned();
        sh.phase = Phase::Idle;
        sh.view = View::default();
        sh.fingers.clear();
        sh.store.clear();
        sh.gaining = None;
        // Replica writes sent under the old view may still arrive: they are repaired
        // through `forward_to`. Hand-overs still waiting for acknowledgements stay, so
        // their forwards can be sent again.
        ho.leave();
        self.preparing = None;
    }

    /// Leave as `leave` does, but keep the entries, as a node back from its disk does:
    /// they are merged with what the ring sends when it joins again, and pushed to its
    /// fellow replicas (`push_leftovers`).
    fn leave_keeping_entries(&mut self, sh: &mut Shared, ho: &mut Handover) {
        let store = std::mem::take(&mut sh.store);
        self.leave(sh, ho);
        sh.comeback.leftovers |= !store.is_empty();
        sh.store = store;
    }

    /// The coordinator refused this node's join or depart.
    pub(crate) fn on_refused(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        reason: RequestError,
        term: u64,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, term, "refused")?;
        match sh.phase {
            Phase::Joining => {
                // Drop whatever a prepared-then-abandoned join fetched (but not what
                // the node came back with from its disk).
                sh.phase = Phase::Idle;
                if !sh.comeback.leftovers {
                    sh.store.clear();
                }
                sh.gaining = None;
                ho.leave();
                self.preparing = None;
                self.early.clear();
            }
            Phase::Departing => sh.phase = Phase::Active,
            _ => return Ok(()),
        }
        self.finish(sh, out, Err(reason));
        Ok(())
    }

    /// The coordinator removed this node (it was silent too long). Leave, and come back
    /// empty through a fresh join, as a restarted node does.
    pub(crate) fn on_removed(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        term: u64,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, term, "removed")?;
        if !sh.is_member() {
            return Ok(());
        }
        let departing = sh.phase == Phase::Departing;
        // Under eventual consistency a primary acknowledges before it replicates: cut off
        // and removed, it may hold the only copy of writes it acknowledged. It keeps its
        // entries, as a node back from its disk does, and pushes them to its fellow
        // replicas once it has joined again (newer versions win). A chain member holds
        // nothing acknowledged that its chain's tail lacks, and comes back empty.
        if departing {
            push_own_range(sh, out);
            // Removed while it departed: it was cut off, and the ring took its ranges
            // from other holders, which may lack writes it holds as a replica whose
            // primary has crashed since. Every entry goes to its primary as a hint
            // (as a departing node's entries do when it commits: see `on_commit`).
            ho.hint_all(sh);
            self.leave(sh, ho);
            ho.send_hints(sh, out);
        } else if sh.config.consistency.is_chain() {
            self.leave(sh, ho);
        } else {
            self.leave_keeping_entries(sh, ho);
        }
        if departing {
            let node = sh.addr();
            self.finish(sh, out, Ok(Response::Departed { node }));
            return Ok(());
        }
        self.start_joining(sh, out);
        Ok(())
    }

    /// The bootstrap this node follows restarted, and its coordinator group had no other
    /// seat (see `Message::Rejoin`): nobody will lead this view again. Leave it keeping
    /// the entries, as a node back from its disk, and ask the bootstrap to join: it
    /// founds the ring again and waits for the members that ask.
    #[allow(clippy::too_many_arguments)] // the fields of `Message::Rejoin`
    pub(crate) fn on_rejoin(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        ring_id: u64,
        nonce: u64,
    ) -> Result<(), Rejected> {
        let follows = *sh.coordinator == *from.addr && *sh.bootstrap == *from.addr;
        // With no seat known yet (no leader announcement since it joined), the
        // bootstrap's word stands: another member showed it the group was its alone.
        let sole_seat = sh.seats.iter().all(|s| s.id == from.id);
        let same_ring = sh.ring_id == ring_id || sh.ring_id == 0;
        if !(follows && sole_seat && same_ring) || sh.comeback.rejoined_for == nonce {
            return Err(Rejected::not_coordinator("rejoin", from));
        }
        sh.comeback.rejoined_for = nonce;
        match sh.phase {
            Phase::Idle => return Ok(()),
            // A join the dead incarnation prepared: what it fetched is not this node's
            // yet (the members that hold it rejoin too).
            Phase::Joining if !sh.comeback.leftovers => self.leave(sh, ho),
            Phase::Joining => self.leave_keeping_entries(sh, ho),
            Phase::Active | Phase::Departing => {
                if sh.phase == Phase::Departing {
                    self.finish(sh, out, Err(RequestError::RingRecovering));
                }
                self.leave_keeping_entries(sh, ho);
            }
        }
        sh.lease_until = 0;
        self.early.clear();
        // The founded ring starts its terms again.
        sh.term = 0;
        sh.seats.clear();
        sh.coordinator_seen = out.now;
        self.start_joining(sh, out);
        Ok(())
    }

    /// A leader announced itself (or a seat or member pointed at it): follow the newest
    /// term. From the leader itself, in answer to a heartbeat sent at `lease_from`, it
    /// renews this node's lease.
    #[allow(clippy::too_many_arguments)] // the fields of `Message::Leader`
    pub(crate) fn on_leader(
        &mut self,
        sh: &mut Shared,
        out: &Out,
        from: &NodeRef,
        term: u64,
        leader: NodeRef,
        seats: Vec<NodeRef>,
        ring_id: u64,
        lease_from: Option<crate::Time>,
    ) {
        if term < sh.term {
            return;
        }
        if term > sh.term || *leader.addr != *sh.coordinator {
            sh.term = term;
            sh.coordinator = leader.addr.clone();
        }
        if seats.len() <= crate::coordinator::SEATS_MAX {
            sh.seats = seats;
        }
        sh.ring_id = ring_id;
        if from.id == leader.id {
            sh.coordinator_seen = out.now;
            if let Some(sent) = lease_from {
                sh.renew_lease(sent, out.now);
            }
        }
    }

    /// A node cut off while the lead moved asked this member (with a heartbeat): point
    /// it at the leader this member follows.
    pub(crate) fn point_at_leader(sh: &Shared, out: &mut Out, to: &NodeRef) {
        let relay = Message::Leader {
            term: sh.term,
            leader: NodeRef::new(&sh.coordinator),
            seats: sh.seats.clone(),
            ring_id: sh.ring_id,
            config_id: 0,
            lease_from: None,
        };
        out.send(to, relay);
    }

    /// A restarted bootstrap found its ring: join it (a client's join request, if one
    /// waits, is answered when the join is done).
    pub(crate) fn rejoin(&mut self, sh: &mut Shared, out: &mut Out) {
        self.start_joining(sh, out);
    }

    /// This node founded a ring: answer a join request that waits.
    pub(crate) fn founded(&mut self, sh: &Shared, out: &mut Out) {
        let me = sh.me.clone();
        let joined = Response::Joined {
            predecessor: me.clone(),
            successor: me,
        };
        self.finish(sh, out, Ok(joined));
    }

    /// A restarted bootstrap found a ring with other settings: refuse the join that waits.
    pub(crate) fn refuse_recovery(&mut self, sh: &Shared, out: &mut Out, reason: String) {
        self.finish(sh, out, Err(RequestError::JoinRefused { reason }));
    }

    /// Client request `id` waits for the outcome of a restarted bootstrap's search for
    /// its ring.
    pub(crate) fn wait_recovery(&mut self, id: ReqId) {
        self.request = Some(id);
    }

    // ----- a change: prepare, commit, abort -----

    /// The coordinator's next view for this node: fetch what it adds, then say `Ready`.
    pub(crate) fn on_prepare(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        prepare: Prepare,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, prepare.term, "prepare")?;
        if sh.phase == Phase::Idle {
            return Err(Rejected::not_member("prepare", from, sh.phase));
        }
        self.commit_if_decided(sh, ho, out, from, &prepare)?;
        // A joiner accepts only the prepare of its own join (the one that carries its
        // finger table); any other is meant for an earlier incarnation at this address.
        // (A joiner whose join was decided without it took that commit just above.)
        if sh.phase == Phase::Joining && prepare.fingers.is_none() {
            return Err(Rejected::not_member("prepare", from, sh.phase));
        }
        let epoch = prepare.view.epoch;
        // Epochs only grow: a prepare older than the view installed or being prepared is
        // a late duplicate, and taking it would drop the newer change.
        let newest = self
            .preparing
            .as_ref()
            .map_or(sh.view.epoch, |p| p.view.epoch.max(sh.view.epoch));
        let installed = sh.is_member() && epoch <= sh.view.epoch;
        if installed || epoch < newest {
            return Err(Rejected::wrong_epoch("prepare", from, epoch));
        }
        if let Some(p) = &self.preparing {
            if p.view.epoch == epoch {
                // Sent again (something was lost): answer again if ready, else ask again.
                if p.ready {
                    send_ready(sh, out, epoch);
                } else {
                    ho.refetch(out, &prepare.sources);
                }
                return Ok(());
            }
        }
        let (k, vnodes) = match sh.phase {
            Phase::Joining => (prepare.config.k, prepare.config.vnodes),
            _ => (sh.config.k, sh.config.vnodes),
        };
        let me_listed = prepare.view.preds.contains(&sh.me) || prepare.view.succs.contains(&sh.me);
        if let Err(reason) = prepare.view.check(k, vnodes).and(match me_listed {
            true => Err("the view lists its own node as a neighbour".to_string()),
            false => Ok(()),
        }) {
            return Err(Rejected::Malformed {
                kind: "prepare",
                from: from.addr.to_string(),
                reason,
            });
        }
        if sh.phase == Phase::Joining {
            sh.config = prepare.config;
        }
        self.start_preparing(sh, ho, out, prepare);
        Ok(())
    }

    /// A prepare that says the change this node is still prepared for was decided: that
    /// change went on without this node (its commit was lost or is late, say behind a
    /// partition), and the coordinator plans the next one on the view it installed. Take
    /// the commit it missed first, as the straggler's commit it would be sent on its next
    /// heartbeat (named failed itself, so it fetches again before it serves as a tail).
    /// Preparing the next change from the older installed view instead would drop what
    /// this node fetched for the decided one, which the next change's sources count on:
    /// it may hold the only copy left of those keys.
    fn commit_if_decided(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        prepare: &Prepare,
    ) -> Result<(), Rejected> {
        // A joiner too: its join was decided and the leader, having given up on its lost
        // commit (a joiner sends no heartbeats to be answered with one), went on to the
        // next change, which lists it as a member. Refusing that prepare as meant for
        // another incarnation left the change waiting for this node's `Ready` for good.
        // Under eventual consistency the changes decided since may be several (a new
        // leader decided two without it, 1% loss, seed 895 of k = 2): a joiner is sent a
        // member's prepare only if the ring lists it, which only the join it is prepared
        // for can have done (a join that is abandoned lists nothing, and another attempt
        // prepares it anew); what it missed since, anti-entropy brings. Not under chain
        // replication: a chain member that missed several changes holds copies no chain
        // step will bring up to date (replicas diverged in 9 of 2,000 runs of 5 nodes with
        // 1% loss); there the leader takes the joiner out and lets it in afresh.
        let joining = sh.phase == Phase::Joining;
        let eventual = !sh.config.consistency.is_chain();
        let missed = self.preparing.as_ref().and_then(|p| {
            let decided = match joining && eventual {
                true => p.view.epoch <= prepare.decided,
                false => p.view.epoch == prepare.decided,
            };
            let missed = p.ready && p.view.ring_size > 0 && decided;
            (missed && p.view.epoch < prepare.view.epoch).then_some(p.view.epoch)
        });
        let Some(missed) = missed else {
            return Ok(());
        };
        if !(sh.is_member() || joining) {
            return Ok(());
        }
        let failed = [sh.me.clone()];
        let commit = CommitOrder {
            epoch: missed,
            failed: &failed,
            term: prepare.term,
            hold_leases: true,
            seats: Vec::new(),
        };
        self.on_commit(sh, ho, out, from, commit)?;
        if joining && sh.phase == Phase::Active {
            // Its join is done everywhere (the next change is under way): answer it.
            self.on_change_done(sh, out, from, prepare.term)?;
        }
        Ok(())
    }

    /// Take `prepare` (checked, and newer than anything here) as the view to prepare.
    fn start_preparing(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        prepare: Prepare,
    ) {
        let Prepare {
            view,
            sources,
            fingers,
            resync,
            pieces,
            ..
        } = prepare;
        let epoch = view.epoch;
        let old = match sh.is_member() {
            true => sh.responsibility(),
            false => Range::Empty,
        };
        let new = responsibility_of(&view, &sh.me, sh.config.k);
        let gained = Range::gained(old, new);
        // Whatever this node holds outside its responsibility is left over from an
        // abandoned change (its abort may arrive after this prepare) or an older view:
        // the gained range must come from the sources alone.
        match old {
            // A node back from its disk keeps what is still its to hold: merged by
            // version with what the sources send, it brings back writes whose other
            // copies are gone (a whole ring restarted).
            Range::Empty if sh.comeback.leftovers => {
                // Under eventual consistency what it will not hold goes to the keys'
                // primaries as hints first: removed while cut off, this node may hold the
                // only copy of writes it acknowledged meanwhile, of keys its new range no
                // longer takes (seed 1866 of eventual campaigns on 4 nodes with 1% loss:
                // the bootstrap, cut off for 4 s, acknowledged two writes as primary and
                // dropped them here when it rejoined). Chain members keep the rule of a
                // node back from its disk.
                if !sh.config.consistency.is_chain() {
                    ho.hint_outside(sh, new);
                    ho.send_hints(sh, out);
                }
                sh.store.retain_range(new);
            }
            Range::Empty => trim_store(sh, ho, out, None),
            keep => trim_store(sh, ho, out, Some(keep)),
        }
        // After a failure, a chain member whose nearest predecessor changed takes again
        // from it every key it does not head: that predecessor precedes it in each of
        // those chains, so holds every acknowledged write.
        let chain = sh.config.consistency.is_chain();
        let new_pred = view.preds.first().map(|p| p.id);
        let pred_changed = sh.view.preds.first().map(|p| p.id) != new_pred;
        // With virtual nodes the coordinator names what to fetch key by key (see
        // `vnode_chain_pieces`), refetches after a failure included.
        let vnode_chains = chain && sh.has_vnodes();
        let fetching = match (new, new_pred) {
            _ if vnode_chains => match pieces.is_empty() {
                true => Range::Empty,
                false => new,
            },
            (Range::Interval { from, .. }, Some(p1))
                if resync && chain && sh.is_member() && pred_changed && p1 != from =>
            {
                Range::Interval { from, to: p1 }
            }
            _ => gained,
        };
        let mut sources: Vec<NodeRef> = match fetching {
            Range::Empty => Vec::new(),
            _ => sources.into_iter().filter(|s| s.id != sh.me.id).collect(),
        };
        // After a removal that leaves at most k members, each part of the gain comes
        // from the last of its old replicas still in the ring (`Prepare::pieces`): the
        // nearest source may be gaining the same keys, and hold none of them yet.
        let pieces = match vnode_chains || (chain && fetching == gained && covers(&pieces, gained))
        {
            true => pieces,
            false => Vec::new(),
        };
        if chain && pieces.is_empty() {
            // The nearest source is this node's predecessor in every chain it joins, so it
            // holds every acknowledged write; a farther one (upstream, nearer the head)
            // may also hold writes its chain never committed, which a new tail must not
            // serve. So a chain member fetches from, and is forwarded to by, the nearest
            // source only.
            sources.truncate(1);
        }
        sh.gaining = Some(Gaining {
            epoch,
            range: gained,
            tails: tails_of(&view, &sh.me, sh.config.k),
        });
        self.preparing = Some(Preparing {
            view,
            fingers,
            fetching,
            sources: sources.clone(),
            pieces: match vnode_chains {
                true => pieces.clone(),
                false => Vec::new(),
            },
            ready: false,
            ready_at: None,
            deferred: Vec::new(),
            prepared_at: out.now,
        });
        // A node back from its disk says what it holds, and is sent only what it missed.
        let have = match sh.comeback.leftovers {
            true => sh.store.fetch_digests(fetching),
            false => Vec::new(),
        };
        let done = match pieces.is_empty() {
            true => ho.start_fetch(out, epoch, fetching, &sources, have),
            false => ho.start_fetch_pieces(out, epoch, fetching, &pieces),
        };
        if done {
            self.mark_ready(sh, out);
        }
    }

    /// Store what a fetch for change `epoch` brought. Under chain replication the
    /// entries of keys this node already serves wait until that change commits: a member
    /// whose predecessor changes fetches again from it, and that predecessor may hold
    /// writes its chain never committed; a tail that took them now would serve them at
    /// once, before the change is decided, though it may never be (a leader cut off from
    /// its group prepares changes it cannot decide).
    pub(crate) fn take_fetched(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        epoch: u64,
        entries: impl IntoIterator<Item = (String, crate::Entry)>,
    ) {
        let chain = sh.config.consistency.is_chain();
        let serving = sh.responsibility();
        let mut waiting = match &mut self.preparing {
            Some(p) if chain && sh.is_member() && p.view.epoch == epoch => Some(&mut p.deferred),
            _ => None,
        };
        for (key, entry) in entries {
            match &mut waiting {
                Some(deferred) if serving.contains(crate::Id::of_key(&key)) => {
                    deferred.push((key, entry));
                }
                _ => ho.apply(sh, out, &key, entry),
            }
        }
    }

    /// Everything the prepared view adds has been fetched.
    pub(crate) fn mark_ready(&mut self, sh: &Shared, out: &mut Out) {
        if let Some(p) = &mut self.preparing {
            p.ready = true;
            p.ready_at.get_or_insert(out.now);
            send_ready(sh, out, p.view.epoch);
        }
    }

    /// Install the prepared view `commit.epoch` and drop what it takes away.
    pub(crate) fn on_commit(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        commit: CommitOrder<'_>,
    ) -> Result<(), Rejected> {
        let CommitOrder {
            epoch,
            failed,
            term,
            hold_leases,
            seats,
        } = commit;
        from_coordinator(sh, out, from, term, "commit")?;
        if !seats.is_empty() && seats.len() <= crate::coordinator::SEATS_MAX {
            sh.seats = seats;
        }
        if ho.is_ack_pending(epoch) {
            // Still waiting for hand-over forwards to be acknowledged: send them again,
            // and show the coordinator this node is alive (it may have left the ring, and
            // sends no heartbeats any more).
            ho.resend_forwards(out, epoch);
            let alive = Message::Heartbeat {
                term: sh.term,
                epoch: sh.view.epoch,
                preparing: None,
                sent: out.now,
            };
            out.send_addr(&sh.coordinator, alive);
            return Ok(());
        }
        let prepared = self
            .preparing
            .as_ref()
            .is_some_and(|p| p.view.epoch == epoch && p.ready);
        if !prepared {
            if sh.view.epoch == epoch || (epoch != 0 && sh.left_epoch == epoch) {
                // A duplicate commit (or a leader finishing the change that took this
                // node out): acknowledge again.
                out.send_addr(&sh.coordinator, Message::Ack { epoch });
                return Ok(());
            }
            return Err(Rejected::wrong_epoch("commit", from, epoch));
        }
        let Some(p) = self.preparing.take() else {
            return Ok(());
        };
        sh.gaining = None;
        ho.committed(epoch, out.after(sh.timing.handover_grace_ns));
        if p.view.ring_size == 0 {
            push_own_range(sh, out);
            // Every entry it holds goes to its key's head (or primary) as a hint, sent
            // until acknowledged; the head applies it (newer versions win) and sends it
            // on to the other replicas, down the chain in order under chain replication.
            // The ring takes this node's ranges from other holders, which may lack a
            // write it holds: a tail whose hand-over forward to the new holder was lost,
            // and that crashed with the chain's middle node, left this node the only copy
            // of an acknowledged write (CRAQ, 5 nodes, seed 3045 of the partition
            // campaign); so did an eventual primary that replicated a write only to this
            // node on its side of a partition and crashed (k = 5 on 5 nodes, seed 4397).
            // Through the head, a write this node held that its chain never committed
            // reaches the replicas in chain order, as a client write does: no tail serves
            // what a node before it lacks.
            ho.hint_all(sh);
            self.leave(sh, ho);
            sh.left_epoch = epoch;
            ho.ack_when_handed_over(sh, out, epoch);
            ho.send_hints(sh, out);
            // The client hears of the departure when the whole change is done
            // (`ChangeDone`): the nodes after this one commit in later waves, and until
            // then the ring it would see still routes through this node.
            return Ok(());
        }
        sh.comeback.hold_writes |= hold_leases;
        if let Some(ready_at) = p.ready_at.filter(|_| !hold_leases) {
            sh.renew_lease(ready_at, out.now);
        }
        let (fetching, sources, pieces) = (p.fetching, p.sources, p.pieces);
        sh.view = p.view;
        if let Some(fingers) = p.fingers {
            sh.fingers.install(fingers, epoch);
        }
        let keep = sh.responsibility();
        trim_store(sh, ho, out, Some(keep));
        ho.forget_forwarded(epoch);
        for (key, entry) in p.deferred {
            if keep.contains(crate::Id::of_key(&key)) {
                ho.apply(sh, out, &key, entry);
            }
        }
        ho.ack_when_handed_over(sh, out, epoch);
        let fetched = (fetching, sources.as_slice(), pieces.as_slice());
        self.repair_if_source_failed(sh, ho, out, epoch, fetched, failed);
        if sh.phase == Phase::Joining {
            sh.phase = Phase::Active;
            sh.forward_to = None;
            if std::mem::take(&mut sh.comeback.leftovers) {
                push_leftovers(sh, out);
            }
            // Handle the messages that arrived before the join committed. The client
            // hears of the join when the whole change is done (`ChangeDone`), so that
            // the ring it then sees already includes this node everywhere.
            for envelope in std::mem::take(&mut self.early) {
                out.requeue(envelope);
            }
        }
        Ok(())
    }

    /// Under chain replication, a node whose fetch source failed before its hand-over
    /// forwards were all acknowledged may lack writes the chain acknowledged, and it may
    /// now be their tail: it serves no tail read until it has fetched the range again
    /// from its nearest live predecessor, which precedes it in those chains.
    fn repair_if_source_failed(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        epoch: u64,
        (fetching, sources, pieces): (Range, &[NodeRef], &[crate::message::Piece]),
        failed: &[NodeRef],
    ) {
        let chain = sh.config.consistency.is_chain();
        // A straggler (named failed itself: the change committed without it) may have
        // missed forwards as surely as a node whose source failed.
        let straggler = failed.contains(&sh.me);
        let source_failed = sources.iter().any(|s| failed.contains(s));
        if !chain || fetching == Range::Empty || !(straggler || source_failed) {
            return;
        }
        // Chains over virtual nodes: a straggler whose sources all live fetches each
        // piece again from its source, which holds every write it acknowledged since
        // (the forwards it missed included), also of keys this node now heads, which no
        // node before it holds.
        if straggler && !source_failed && !pieces.is_empty() {
            sh.unsure = true;
            ho.start_repair_pieces(out, epoch, fetching, pieces);
            return;
        }
        // Chains over virtual nodes: each stretch from the nearest live node before this
        // one in its chain (see `Shared::upstream_pieces`); if there is none, as below.
        let pieces = match sh.has_vnodes() {
            true => sh.upstream_pieces(fetching, |n| failed.contains(n)),
            false => Vec::new(),
        };
        if !pieces.is_empty() {
            sh.unsure = true;
            ho.start_repair_pieces(out, epoch, fetching, &pieces);
            return;
        }
        let source = sh
            .view
            .preds
            .iter()
            .find(|n| !failed.contains(n) && n.id != sh.me.id)
            .cloned();
        let Some(source) = source else { return };
        sh.unsure = true;
        ho.start_repair(out, epoch, fetching, &source);
    }

    /// Heartbeat tick of a node in doubt (see `repair_if_source_failed`): a repair fetch
    /// lost is asked again from the nearest predecessor, until one completes, also while
    /// a change is prepared (this node answers no fetch meanwhile, and the change may need
    /// it as a source). It asks for every key this node holds: the predecessor precedes it
    /// in the chain of each key they share, and sends nothing of the keys this node
    /// heads. A predecessor the prepared change takes out of the ring is passed over: it
    /// may be gone.
    fn continue_repair(&self, sh: &Shared, ho: &mut Handover, out: &mut Out) {
        if !sh.unsure || !sh.is_member() {
            return;
        }
        let next = self.preparing.as_ref().map(|p| &p.view);
        let stays = |n: &&NodeRef| next.is_none_or(|v| v.preds.contains(n) || v.succs.contains(n));
        if sh.has_vnodes() {
            let range = sh.responsibility();
            let mut pieces = sh.upstream_pieces(range, |n| !stays(&n));
            // No chain of its keys has a node before this one that stays: from the
            // nearest predecessor that stays, as without virtual nodes (a repair from a
            // node that is going away would never end, and a node in doubt answers no
            // fetch: the change taking it away would wait on it).
            if pieces.is_empty() {
                let Some(source) = sh.view.preds.iter().find(stays).cloned() else {
                    return;
                };
                pieces.push(crate::message::Piece { range, source });
            }
            match ho.repair_epoch() {
                // A repair whose sources all stay is asked again of them (a straggler's
                // is from its own sources, see `repair_if_source_failed`); one waiting on
                // a node that is going away starts afresh.
                Some(epoch) if epoch == sh.view.epoch && ho.repair_sources_all(stays) => {
                    ho.ask_repair_again(out)
                }
                _ => ho.start_repair_pieces(out, sh.view.epoch, range, &pieces),
            }
            return;
        }
        let Some(source) = sh.view.preds.iter().find(stays).cloned() else {
            return;
        };
        match ho.repair_epoch() {
            Some(epoch) if epoch == sh.view.epoch => ho.refetch_repair(out, &source),
            _ => ho.start_repair(out, sh.view.epoch, sh.responsibility(), &source),
        }
    }

    /// The coordinator finished the change that let this node in (or out): answer the
    /// client that asked.
    pub(crate) fn on_change_done(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        from: &NodeRef,
        term: u64,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, term, "change_done")?;
        match sh.phase {
            Phase::Idle => {
                // The change that took this node out is done everywhere.
                let node = sh.addr();
                self.finish(sh, out, Ok(Response::Departed { node }));
            }
            Phase::Active => {
                let reply = match (sh.view.preds.first(), sh.view.succs.first()) {
                    (Some(p), Some(s)) => Ok(Response::Joined {
                        predecessor: p.clone(),
                        successor: s.clone(),
                    }),
                    _ => Err(RequestError::NotJoined),
                };
                self.finish(sh, out, reply);
            }
            _ => {}
        }
        Ok(())
    }

    /// The change being prepared was abandoned: forget its next view and hand-overs.
    pub(crate) fn on_abort(
        &mut self,
        sh: &mut Shared,
        ho: &mut Handover,
        out: &mut Out,
        from: &NodeRef,
        epoch: u64,
        term: u64,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, term, "abort")?;
        if self
            .preparing
            .as_ref()
            .is_some_and(|p| p.view.epoch == epoch)
        {
            self.preparing = None;
            sh.gaining = None;
            // Drop what the abandoned change had us fetch.
            match sh.is_member() {
                true => {
                    let keep = sh.responsibility();
                    trim_store(sh, ho, out, Some(keep));
                }
                false if sh.comeback.leftovers => {}
                false => trim_store(sh, ho, out, None),
            }
        }
        ho.abort(epoch);
        Ok(())
    }

    /// Some finger table entries changed.
    pub(crate) fn on_fingers(
        &mut self,
        sh: &mut Shared,
        out: &mut Out,
        from: &NodeRef,
        epoch: u64,
        term: u64,
        updates: Vec<(u8, NodeRef)>,
    ) -> Result<(), Rejected> {
        from_coordinator(sh, out, from, term, "fingers")?;
        if sh.fingers.nodes.is_empty() {
            return Err(Rejected::not_member("fingers", from, sh.phase));
        }
        for (i, node) in updates {
            sh.fingers.update(i as usize, node, epoch);
        }
        Ok(())
    }
}

/// Keep only `keep` of the store (`None`: nothing). Under eventual consistency, writes
/// forwarded to this node for a change that did not commit here become hints, sent to
/// their primaries until one acknowledges, rather than vanish with the rest.
fn trim_store(sh: &mut Shared, ho: &mut Handover, out: &mut Out, keep: Option<Range>) {
    ho.hint_dropped(sh, keep);
    match keep {
        Some(range) => {
            sh.store.retain_range(range);
        }
        None => sh.store.clear(),
    }
    ho.send_hints(sh, out);
}

/// Take a coordinator message only from the newest term this node has seen (a newer
/// term makes its sender the coordinator): a leader that lost the lead can no longer
/// change anything here.
fn from_coordinator(
    sh: &mut Shared,
    out: &Out,
    from: &NodeRef,
    term: u64,
    kind: &'static str,
) -> Result<(), Rejected> {
    match sh.follow(from, term, out.now) {
        true => Ok(()),
        false => Err(Rejected::not_coordinator(kind, from)),
    }
}

/// Whether `pieces` cut `range` into consecutive parts, in order (see
/// `Prepare::pieces`); a node that computed another gain than its leader ignores them.
/// The whole ring (a joiner's gain on a ring of at most k members) is covered by two or
/// more parts that end where the first begins.
fn covers(pieces: &[crate::message::Piece], range: Range) -> bool {
    let (from, to) = match (range, pieces.first()) {
        (Range::Interval { from, to }, _) => (from, to),
        (Range::All, Some(first)) if pieces.len() >= 2 => match first.range {
            Range::Interval { from, .. } => (from, from),
            _ => return false,
        },
        _ => return false,
    };
    let mut at = from;
    for piece in pieces {
        match piece.range {
            // `(a, a]` would be the whole circle.
            Range::Interval { from: f, to: t } if f == at && f != t => at = t,
            _ => return false,
        }
    }
    !pieces.is_empty() && at == to
}

fn send_ready(sh: &Shared, out: &mut Out, epoch: u64) {
    out.send_addr(&sh.coordinator, Message::Ready { epoch });
}

fn send_join_request(sh: &Shared, out: &mut Out) {
    send_join_request_prepared(sh, out, None);
}

fn send_join_request_prepared(sh: &Shared, out: &mut Out, prepared: Option<u64>) {
    let request = Message::JoinRequest {
        node: sh.me.clone(),
        incarnation: sh.incarnation,
        hops: 0,
        ring: sh.comeback.record.clone(),
        prepared,
    };
    out.send_addr(&sh.coordinator, request);
}

fn send_depart_request(sh: &Shared, out: &mut Out) {
    let request = Message::DepartRequest {
        node: sh.me.clone(),
    };
    out.send_addr(&sh.coordinator, request);
}

/// A departing (or, while departing, removed) primary under eventual consistency pushes
/// the keys it was primary of to its successors, which hold them after it: cut off from
/// them, it may have acknowledged writes they never got (the hand-over fetches from
/// the nearest other holder, not from it). Chain replication needs none of this: a
/// chain's tail holds everything acknowledged.
fn push_own_range(sh: &Shared, out: &mut Out) {
    if sh.config.consistency.is_chain() {
        return;
    }
    let own = match sh.view.preds.first() {
        Some(pred) if pred.id != sh.me.id => Range::Interval {
            from: pred.id,
            to: sh.me.id,
        },
        _ => Range::All,
    };
    let entries = sh.store.entries_in(own);
    if entries.is_empty() {
        return;
    }
    let k = sh.config.k.max(1);
    // The nodes that hold these keys once this one is gone: the next member of each of
    // `k` processes (with virtual nodes another position of this node's own process
    // may be one of them; members of a process already named add nothing).
    let mut targets: Vec<&NodeRef> = Vec::new();
    for n in sh.view.succs.iter().filter(|n| n.id != sh.me.id) {
        if targets.len() >= k {
            break;
        }
        if !targets.iter().any(|t| t.same_process(n)) {
            targets.push(n);
        }
    }
    for chunk in entries.chunks(sh.limits.snapshot_chunk_entries.max(1)) {
        for to in &targets {
            let msg = Message::SyncPush {
                entries: chunk.to_vec(),
            };
            out.send(to, msg);
        }
    }
}

/// A member back from its disk has joined: push what it holds to its fellow replicas
/// (each takes the keys it holds, newer versions winning), so that writes whose other
/// copies were lost, or are on members that rejoined before it, reach every replica
/// (the leader withholds leases until the members it waits for have done so).
fn push_leftovers(sh: &Shared, out: &mut Out) {
    let mut peers: Vec<NodeRef> = Vec::new();
    for n in sh.view.preds.iter().chain(&sh.view.succs) {
        if n.id != sh.me.id && !peers.contains(n) {
            peers.push(n.clone());
        }
    }
    let entries = sh.store.entries_in(Range::All);
    for chunk in entries.chunks(sh.limits.snapshot_chunk_entries.max(1)) {
        for to in &peers {
            let msg = Message::SyncPush {
                entries: chunk.to_vec(),
            };
            out.send(to, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Piece;

    fn piece(from: &NodeRef, to: &NodeRef) -> Piece {
        Piece {
            range: Range::Interval {
                from: from.id,
                to: to.id,
            },
            source: to.clone(),
        }
    }

    /// Pieces cover an interval when consecutive from its start to its end, and the whole
    /// ring when two or more end where the first begins.
    #[test]
    fn pieces_cover_an_interval_or_the_whole_ring() {
        let [a, b, c] = ["10.0.0.1:5000", "10.0.0.2:5000", "10.0.0.3:5000"].map(NodeRef::new);
        let ab_bc = [piece(&a, &b), piece(&b, &c)];
        let whole = [piece(&a, &b), piece(&b, &a)];
        let ac = Range::Interval {
            from: a.id,
            to: c.id,
        };
        assert!(covers(&ab_bc, ac));
        assert!(!covers(&ab_bc[..1], ac));
        assert!(!covers(&[piece(&b, &c), piece(&a, &b)], ac));
        assert!(covers(&whole, Range::All));
        assert!(!covers(&ab_bc, Range::All));
        assert!(!covers(&whole[..1], Range::All));
        assert!(!covers(&[], Range::All));
        assert!(!covers(&whole, Range::Empty));
    }
}
