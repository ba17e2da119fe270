//! The one thread that owns the `RawNode`: it steps messages, ticks, batches proposals and
//! ReadIndex requests, persists each ready cycle with one fsync, sends messages, applies committed
//! entries and takes snapshots.

use crate::read_lease::clock_guard::{reference_now, ClockAnomaly, ClockGuard, LeaseClock};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeV2, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::oneshot;

use crate::consensus::bootstrap::Opened;
use crate::consensus::log::{LogError, PersistBatch, RaftLog};
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles};
use crate::consensus::transport::Transport;
use crate::node::{
    LoopMsg, NodeError, PolicyReply, ReadGrant, ReadLeaseStatusReply, ReadPath, Shared, WatchBatch,
};
use crate::raft_context::ProposalContext;
use crate::read_lease::reads::{ReadDecision, ReadLease, ReadLeaseEvent};
use crate::replicated::command::{ApplyResult, Command, CommandResponse};
use crate::replicated::member::peer_urls;
use crate::replicated::membership::{
    self, ClusterFacts, MemberChange, MembershipError, PeerProgress,
};
use crate::replicated::state_machine::{SnapshotError, StateMachine};

/// Most messages taken from the channel before the loop handles a ready cycle.
const MAX_DRAIN: usize = 4096;

/// A failure that stops the member: the log or the disk can no longer be trusted.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The Raft log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Raft itself failed.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Saving or loading a snapshot failed.
    #[error(transparent)]
    SnapshotFile(#[from] SnapshotFileError),
    /// A snapshot did not (de)serialize.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

type ProposalReply = oneshot::Sender<Result<ApplyResult, NodeError>>;
type ReadReply = oneshot::Sender<Result<ReadGrant, NodeError>>;

/// The Raft loop's state.
pub struct RaftLoop {
    raw: RawNode<RaftLog>,
    shared: Arc<Shared>,
    rx: Receiver<LoopMsg>,
    transport: Arc<Transport>,
    snapshots: SnapshotFiles,
    /// Proposals from this member's clients, by id, waiting to be applied.
    proposals: HashMap<u64, ProposalReply>,
    /// ReadIndex requests received in the current drain; they share one ReadIndex.
    reads: Vec<ReadReply>,
    /// ReadIndex batches in flight, by context.
    read_batches: BTreeMap<u64, (Instant, Vec<ReadReply>)>,
    /// Lease reads: decides when a read may skip the ReadIndex round.
    read_lease: ReadLease,
    read_lease_events: Vec<ReadLeaseEvent>,
    applied: u64,
    snapshot_index: u64,
    conf_state: ConfState,
    last_leader: u64,
    last_sweep: Instant,
    /// When each lease expires (acted on by the leader only).
    lease_deadlines: HashMap<i64, Instant>,
    /// Leases whose revocation this leader proposed, and when.
    revoking: HashMap<i64, Instant>,
    /// This member led at the last lease check.
    led_leases: bool,
    /// The clock lease decisions and ticks use.
    lease_clock: LeaseClock,
    /// Checks the lease clock against the raw monotonic clock.
    clock: ClockGuard,
    /// The lease clock lost time: reschedule the next tick on the new readings.
    clock_stepped: bool,
}

/// Most expired leases revoked per tick.
const MAX_REVOKES_PER_TICK: usize = 500;

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// Every lease of `sm` expiring one TTL from `now`.
fn fresh_deadlines(sm: &StateMachine, now: Instant) -> HashMap<i64, Instant> {
    sm.leases
        .iter()
        .map(|(id, l)| (*id, now + ttl_duration(l.ttl)))
        .collect()
}

impl RaftLoop {
    /// Builds the loop around an opened member.
    pub fn new(
        opened: Opened,
        shared: Arc<Shared>,
        rx: Receiver<LoopMsg>,
        transport: Arc<Transport>,
    ) -> Self {
        let conf_state = opened.raw.store().conf_state().clone();
        let shared_drift = shared.config.read_lease.max_drift;
        let mut lease_clock = LeaseClock::new(shared.config.test_clock_offset_file.clone());
        // On the lease clock: the restarted-voter window is measured on it.
        let now = lease_clock.now();
        let started = now.checked_sub(shared.started.elapsed()).unwrap_or(now);
        let read_lease = ReadLease::new(shared.config.read_lease, started);
        let mut l = RaftLoop {
            raw: opened.raw,
            shared,
            rx,
            transport,
            snapshots: opened.snapshots,
            proposals: HashMap::new(),
            reads: Vec::new(),
            read_batches: BTreeMap::new(),
            read_lease,
            read_lease_events: Vec::new(),
            applied: opened.applied,
            snapshot_index: opened.applied,
            conf_state,
            last_leader: 0,
            last_sweep: started,
            lease_deadlines: fresh_deadlines(&opened.state, started),
            revoking: HashMap::new(),
            led_leases: false,
            clock: ClockGuard::new(shared_drift),
            lease_clock,
            clock_stepped: false,
        };
        l.publish_status();
        l.publish_membership();
        l
    }

    /// Runs until shutdown or a fatal error.
    pub fn run(mut self) -> Result<(), LoopError> {
        let tick = self.shared.config.heartbeat_interval;
        let mut next_tick = self.now() + tick;
        let result = loop {
            self.shared.loop_heartbeat_ms.store(
                self.shared.started.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
            let wait = next_tick.saturating_duration_since(self.now());
            let mut stop = false;
            match self.rx.recv_timeout(wait) {
                Ok(m) => {
                    stop |= !self.handle(m);
                    for _ in 0..MAX_DRAIN {
                        match self.rx.try_recv() {
                            Ok(m) => stop |= !self.handle(m),
                            Err(_) => break,
                        }
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => stop = true,
            }
            let now = self.now();
            if std::mem::take(&mut self.clock_stepped) {
                next_tick = now;
            }
            if now >= next_tick {
                if self
                    .read_lease
                    .wants_renewal(&self.raw, &self.conf_state, now)
                {
                    self.read_lease.start_round(&mut self.raw, now);
                }
                self.raw.tick();
                self.expire_leases(now);
                let view = self.read_lease.view(&self.raw, &self.conf_state, now);
                let m = &self.shared.metrics;
                m.read_lease_valid.set(view.valid as i64);
                m.read_lease_policy_enabled.set(view.policy_enabled as i64);
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
            }
            self.flush_reads();
            if let Err(e) = self.on_ready() {
                break Err(e);
            }
            let now_after = self.now();
            self.observe_read_lease(now_after);
            if now.duration_since(self.last_sweep) >= self.shared.config.heartbeat_interval {
                self.sweep(now);
            }
            if stop {
                break Ok(());
            }
        };
        self.fail_all(NodeError::Stopped);
        self.raw.store().sync()?;
        result
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, m: LoopMsg) -> bool {
        match m {
            LoopMsg::Propose { id, data, reply } => {
                let ctx = ProposalContext {
                    member: self.shared.member_id(),
                    id,
                }
                .encode();
                match self.raw.propose(ctx, data) {
                    Ok(()) => {
                        self.proposals.insert(id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(NodeError::Retry(e.to_string())));
                    }
                }
            }
            LoopMsg::Read { reply } => {
                let now = self.now();
                match self.read_lease.decide(&self.raw, &self.conf_state, now) {
                    ReadDecision::Lease { index } => {
                        let _ = reply.send(Ok(ReadGrant {
                            index,
                            path: ReadPath::Lease,
                        }));
                    }
                    ReadDecision::ReadIndex => self.reads.push(reply),
                }
            }
            LoopMsg::Step(msg) => {
                // Only these messages need the (guarded) clock; the rest of the peer traffic
                // should not pay for sampling it.
                let admitted = match msg.get_msg_type() {
                    MessageType::MsgReadIndex => {
                        let now = self.now();
                        if let Some(resp) = self.answer_read_index_from_lease(&msg, now) {
                            self.transport.send(vec![resp]);
                            return true;
                        }
                        true
                    }
                    MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                        let now = self.now();
                        self.read_lease.admit(&msg, now)
                    }
                    _ => true,
                };
                if !admitted {
                    self.shared.metrics.votes_ignored.inc();
                    tracing::debug!(
                        from = msg.from,
                        "restarted voter ignores a (pre)vote request"
                    );
                } else if let Err(e) = self.raw.step(*msg) {
                    tracing::debug!("step: {e}");
                }
            }
            LoopMsg::SetPolicy {
                expected_voters,
                generation,
                reply,
            } => {
                let outcome = self.read_lease.set_hint(expected_voters, generation);
                let now = self.now();
                self.read_lease.observe(
                    &self.raw,
                    &self.conf_state,
                    now,
                    &mut self.read_lease_events,
                );
                let view = self.read_lease.view(&self.raw, &self.conf_state, now);
                tracing::info!(expected_voters, generation, ?outcome, enabled = view.policy_enabled, reason = %view.reason, "membership hint");
                let _ = reply.send(PolicyReply { outcome, view });
            }
            LoopMsg::ReadLeaseStatus { reply } => {
                let now = self.now();
                let view = self.read_lease.view(&self.raw, &self.conf_state, now);
                let status = self.shared.status.read().clone();
                let _ = reply.send(ReadLeaseStatusReply {
                    view,
                    status,
                    applied: self.applied,
                });
            }
            LoopMsg::ChangeMembership { id, change, reply } => {
                self.propose_member_change(id, change, reply)
            }
            LoopMsg::TransferLeader { target, reply } => {
                let r = &self.raw.raft;
                let result = if r.state != StateRole::Leader {
                    Err(NodeError::NotLeader)
                } else if !self.conf_state.voters.contains(&target) {
                    Err(NodeError::BadLeaderTransferee)
                } else {
                    if target != r.id {
                        tracing::info!(to = format_args!("{target:x}"), "transferring leadership");
                        self.raw.transfer_leader(target);
                    }
                    Ok(())
                };
                let _ = reply.send(result);
            }
            LoopMsg::KeyLeaseKeepAlive { id, reply } => {
                let r = if self.raw.raft.state != StateRole::Leader {
                    Err(NodeError::NotLeader)
                } else {
                    let now = self.now();
                    // An expired lease is being revoked: renewing it now would promise a TTL
                    // the pending revocation is about to break (etcd answers not found too).
                    let expired = self.revoking.contains_key(&id)
                        || self.lease_deadlines.get(&id).is_some_and(|d| *d <= now);
                    match self.shared.state.read().leases.get(&id) {
                        Some(l) if !expired => {
                            self.lease_deadlines.insert(id, now + ttl_duration(l.ttl));
                            Ok(l.ttl)
                        }
                        _ => Err(NodeError::KeyLeaseNotFound),
                    }
                };
                let _ = reply.send(r);
            }
            LoopMsg::KeyLeaseTimeToLive { id, reply } => {
                let r = if self.raw.raft.state != StateRole::Leader {
                    Err(NodeError::NotLeader)
                } else {
                    let now = self.now();
                    match self.shared.state.read().leases.get(&id) {
                        Some(l) => {
                            let left = self
                                .lease_deadlines
                                .get(&id)
                                .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
                            Ok(crate::node::KeyLeaseTtl {
                                granted: l.ttl,
                                // Whole seconds left, truncated, as etcd reports them.
                                remaining: left.as_secs() as i64,
                                keys: l.keys.iter().cloned().collect(),
                            })
                        }
                        None => Err(NodeError::KeyLeaseNotFound),
                    }
                };
                let _ = reply.send(r);
            }
            LoopMsg::RemovedByPeer(peer) => {
                tracing::error!(
                    peer = format_args!("{peer:x}"),
                    "a peer says this member was removed from the cluster"
                );
                self.removed_from_cluster();
            }
            LoopMsg::Unreachable(id) => self.raw.report_unreachable(id),
            LoopMsg::SnapshotSent(id, ok) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.raw.report_snapshot(id, status);
            }
            LoopMsg::Shutdown => return false,
        }
        true
    }

    /// Issues one ReadIndex for every read request received since the last cycle.
    fn flush_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.reads);
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // raft-rs silently drops a ReadIndex without a leader; answer "retry" instead.
            for r in batch {
                let _ = r.send(Err(NodeError::Retry("no leader".into())));
            }
            return;
        }
        let now = self.now();
        let ctx = self.read_lease.start_round(&mut self.raw, now);
        self.read_batches.insert(ctx, (now, batch));
    }

    /// Expires ReadIndex batches Raft dropped (leader change) and forgets abandoned proposals.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let limit = self.shared.config.election_timeout;
        let expired: Vec<u64> = self
            .read_batches
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) > limit)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            if let Some((_, replies)) = self.read_batches.remove(&c) {
                for r in replies {
                    let _ = r.send(Err(NodeError::Retry("read index expired".into())));
                }
            }
        }
        self.proposals.retain(|_, r| !r.is_closed());
    }

    fn fail_all(&mut self, e: NodeError) {
        for (_, r) in self.proposals.drain() {
            let _ = r.send(Err(e.clone()));
        }
        for (_, (_, rs)) in std::mem::take(&mut self.read_batches) {
            for r in rs {
                let _ = r.send(Err(e.clone()));
            }
        }
        for r in self.reads.drain(..) {
            let _ = r.send(Err(e.clone()));
        }
    }

    fn on_ready(&mut self) -> Result<(), LoopError> {
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.transport.send(ready.take_messages());
        }
        let mut batch = PersistBatch::default();
        if !ready.snapshot().is_empty() {
            let snap = ready.snapshot().clone();
            batch.snapshot = Some(snap.get_metadata().clone());
            self.install_received_snapshot(snap)?;
        }
        self.apply_entries(ready.take_committed_entries())?;
        batch.entries = ready.take_entries();
        if let Some(hs) = ready.hs() {
            batch.hard_state = Some(hs.clone());
        }
        if batch.snapshot.is_some() {
            batch.conf_state = Some(self.conf_state.clone());
        }
        if !batch.is_empty() {
            let t = self.now();
            self.raw.mut_store().persist(batch)?;
            self.shared
                .metrics
                .fsync_seconds
                .observe(t.elapsed().as_secs_f64());
        }
        if !ready.persisted_messages().is_empty() {
            self.transport.send(ready.take_persisted_messages());
        }
        let states = ready.take_read_states();
        let term = self.raw.raft.term;
        for (ctx, index) in
            self.read_lease
                .on_read_states(states, term, &mut self.read_lease_events)
        {
            if let Some((_, replies)) = self.read_batches.remove(&ctx) {
                for r in replies {
                    let _ = r.send(Ok(ReadGrant {
                        index,
                        path: ReadPath::ReadIndex,
                    }));
                }
            }
        }
        let mut light = self.raw.advance(ready);
        if let Some(c) = light.commit_index() {
            self.raw.mut_store().set_commit(c);
        }
        self.transport.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply_to(self.applied);
        self.maybe_snapshot()?;
        self.publish_status();
        Ok(())
    }

    /// Lets the lease see the cycle's outcome and counts what happened to it.
    /// A follower's (or learner's) ReadIndex request, answered at once while this leader holds
    /// the lease: the lease already proves no other leader can have committed anything, so the
    /// heartbeat round raft-rs would run adds nothing. The answer is the commit index now; the
    /// follower serves the read once it has applied that far — the same reply raft-rs would send
    /// after the round, one round trip sooner. `None`: let raft-rs handle it.
    fn answer_read_index_from_lease(&mut self, m: &Message, now: Instant) -> Option<Message> {
        if self.raw.raft.state != StateRole::Leader || m.from == self.raw.raft.id {
            return None;
        }
        if m.entries.len() != 1 {
            return None;
        }
        let ReadDecision::Lease { index } =
            self.read_lease.decide(&self.raw, &self.conf_state, now)
        else {
            return None;
        };
        let mut resp = Message::default();
        resp.set_msg_type(MessageType::MsgReadIndexResp);
        resp.from = self.raw.raft.id;
        resp.to = m.from;
        resp.term = self.raw.raft.term;
        resp.index = index;
        resp.entries = m.entries.clone();
        self.shared.metrics.read_index_answered_by_lease.inc();
        Some(resp)
    }

    /// Samples the lease clock after the guard has compared it with the reference clock, so no
    /// lease decision uses a reading the guard has not seen.
    fn now(&mut self) -> Instant {
        let before = reference_now();
        let now = self.lease_clock.now();
        match before.zip(reference_now()) {
            Some((before, after)) => {
                if let Some(a) = self.clock.observe_bracketed(now, before, after) {
                    self.on_clock_anomaly(a, now);
                }
            }
            // Cannot check the clock: no lease reads (ReadIndex is always correct).
            None => self
                .read_lease
                .on_clock_anomaly(now, &mut self.read_lease_events),
        }
        now
    }

    fn on_clock_anomaly(&mut self, a: ClockAnomaly, now: Instant) {
        self.shared
            .metrics
            .clock_anomalies
            .with_label_values(&[a.label()])
            .inc();
        tracing::warn!(
            kind = a.label(),
            amount_ms = a.amount().as_millis() as u64,
            "the monotonic clock disagrees with the raw hardware clock beyond --max-clock-drift; \
             lease reads fall back to ReadIndex for an election timeout"
        );
        self.read_lease
            .on_clock_anomaly(now, &mut self.read_lease_events);
        if let ClockAnomaly::Forward(gained) = a {
            // Time that did not really pass must not expire leases (keys) early, nor end the
            // restarted-voter window early.
            for d in self.lease_deadlines.values_mut() {
                *d += gained;
            }
            self.read_lease.on_clock_gained(gained);
        }
        if a.lost_time() {
            self.clock_stepped = true;
        }
    }

    fn observe_read_lease(&mut self, now: Instant) {
        self.read_lease.observe(
            &self.raw,
            &self.conf_state,
            now,
            &mut self.read_lease_events,
        );
        let m = &self.shared.metrics;
        for e in self.read_lease_events.drain(..) {
            match e {
                ReadLeaseEvent::Renewed => m.read_lease_renewals.inc(),
                ReadLeaseEvent::Expired(reason) => m
                    .read_lease_expirations
                    .with_label_values(&[reason.label()])
                    .inc(),
            }
        }
    }

    fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), LoopError> {
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let me = self.shared.member_id();
        let mut members_changed = false;
        let mut peers_changed = false;
        let mut removed_self = false;
        let mut batches = Vec::new();
        {
            let shared = self.shared.clone();
            let mut sm = shared.state.write();
            for e in entries {
                if e.index <= self.applied {
                    continue;
                }
                match e.get_entry_type() {
                    EntryType::EntryNormal if !e.data.is_empty() => {
                        match Command::decode(&e.data) {
                            Ok(cmd) => {
                                peers_changed |= matches!(cmd, Command::Member(_));
                                let lease_op = match &cmd {
                                    Command::LeaseGrant(r) => Some((r.id, Some(r.ttl))),
                                    Command::LeaseRevoke(r) => Some((r.id, None)),
                                    _ => None,
                                };
                                let result = sm.apply(cmd);
                                match (lease_op, &result) {
                                    (Some((id, Some(ttl))), Ok(_)) => {
                                        let now = self.now();
                                        self.lease_deadlines.insert(id, now + ttl_duration(ttl));
                                    }
                                    // Revoked, or already gone: stop tracking it either way.
                                    (Some((id, None)), _) => {
                                        self.lease_deadlines.remove(&id);
                                        self.revoking.remove(&id);
                                    }
                                    _ => {}
                                }
                                if !sm.events.is_empty() {
                                    batches.push(Arc::new(WatchBatch {
                                        revision: sm.store.current_revision(),
                                        events: std::mem::take(&mut sm.events),
                                    }));
                                }
                                if let Some(ProposalContext { member: from, id }) =
                                    ProposalContext::decode(&e.context)
                                {
                                    if from == me {
                                        if let Some(reply) = self.proposals.remove(&id) {
                                            let _ = reply.send(Ok(result));
                                        }
                                    }
                                }
                            }
                            // Every member skips the same entry, so they stay identical.
                            Err(err) => tracing::error!(index = e.index, "skipping entry: {err}"),
                        }
                    }
                    EntryType::EntryNormal => {}
                    EntryType::EntryConfChange => {
                        let cc = ConfChange::parse_from_bytes(&e.data)
                            .map_err(raft::Error::CodecError)?;
                        let after = self.raw.apply_conf_change(&cc)?;
                        self.conf_changed(after);
                        members_changed = true;
                    }
                    EntryType::EntryConfChangeV2 => {
                        let cc = ConfChangeV2::parse_from_bytes(&e.data)
                            .map_err(raft::Error::CodecError)?;
                        let change = MemberChange::decode(&cc.context).ok();
                        let outcome = match self.raw.apply_conf_change(&cc) {
                            Ok(after) => {
                                self.conf_changed(after);
                                if let Some(c) = &change {
                                    sm.apply_member_change(c);
                                    if *c == MemberChange::Remove(me) {
                                        removed_self = true;
                                    }
                                }
                                members_changed = true;
                                Ok(Ok(CommandResponse::Members(
                                    sm.members.values().cloned().collect(),
                                )))
                            }
                            // The same refusal on every member: nothing changes anywhere.
                            Err(err) => {
                                tracing::warn!(
                                    index = e.index,
                                    "raft refused a conf change: {err}"
                                );
                                Err(NodeError::Membership(MembershipError::Rejected(
                                    err.to_string(),
                                )))
                            }
                        };
                        if let Some(ProposalContext { member: from, id }) =
                            ProposalContext::decode(&e.context)
                        {
                            if from == me {
                                if let Some(reply) = self.proposals.remove(&id) {
                                    let _ = reply.send(outcome);
                                }
                            }
                        }
                    }
                }
                self.applied = e.index;
            }
        }
        if members_changed {
            self.raw.mut_store().persist(PersistBatch {
                conf_state: Some(self.conf_state.clone()),
                ..Default::default()
            })?;
        }
        if members_changed || peers_changed {
            self.transport
                .set_peers(&peer_urls(&self.shared.state.read().members));
            self.publish_membership();
        }
        if removed_self {
            self.removed_from_cluster();
        }
        self.shared.applied.send_replace(self.applied);
        for b in batches {
            // No receivers is fine: nobody watches.
            let _ = self.shared.watch.send(b);
        }
        self.shared
            .metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// The leader revokes expired leases through Raft. A new leader first gives every lease a
    /// full TTL (as etcd does), so no lease ever expires early across a leader change.
    fn expire_leases(&mut self, now: Instant) {
        let leading = self.raw.raft.state == StateRole::Leader;
        if leading && !self.led_leases {
            self.lease_deadlines = fresh_deadlines(&self.shared.state.read(), now);
            self.revoking.clear();
        }
        self.led_leases = leading;
        if !leading {
            return;
        }
        let retry = self.shared.config.election_timeout;
        let expired: Vec<i64> = self
            .lease_deadlines
            .iter()
            .filter(|(id, d)| {
                **d <= now
                    && self
                        .revoking
                        .get(id)
                        .is_none_or(|t| now.duration_since(*t) > retry)
            })
            .map(|(id, _)| *id)
            .take(MAX_REVOKES_PER_TICK)
            .collect();
        for id in expired {
            let cmd = Command::LeaseRevoke(etcd_client::proto::PbLeaseRevokeRequest { id });
            let ctx = ProposalContext {
                member: self.shared.member_id(),
                id: 0,
            }
            .encode();
            match self.raw.propose(ctx, cmd.encode()) {
                Ok(()) => {
                    tracing::debug!(lease = id, "lease expired: revoking");
                    self.revoking.insert(id, now);
                }
                Err(e) => tracing::debug!(lease = id, "cannot propose revoke: {e}"),
            }
        }
    }

    /// Checks a membership change against the cluster as this leader sees it and proposes it.
    fn propose_member_change(&mut self, id: u64, change: MemberChange, reply: ProposalReply) {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            let _ = reply.send(Err(NodeError::NotLeader));
            return;
        }
        let checked = {
            let sm = self.shared.state.read();
            let progress = r
                .prs()
                .iter()
                .map(|(pid, p)| {
                    (
                        *pid,
                        PeerProgress {
                            matched: p.matched,
                            recent_active: p.recent_active,
                        },
                    )
                })
                .collect();
            membership::check(
                &change,
                &ClusterFacts {
                    members: Some(&sm.members),
                    removed: Some(&sm.removed),
                    me: r.id,
                    progress,
                    conf_change_pending: r.has_pending_conf()
                        || !self.conf_state.voters_outgoing.is_empty(),
                    max_learners: self.shared.config.max_learners,
                },
            )
        };
        if let Err(e) = checked {
            let _ = reply.send(Err(NodeError::Membership(e)));
            return;
        }
        let ctx = ProposalContext {
            member: self.shared.member_id(),
            id,
        }
        .encode();
        let proposed = match membership::conf_change(&change) {
            Some(cc) => self.raw.propose_conf_change(ctx, cc),
            None => self
                .raw
                .propose(ctx, Command::Member(change.clone()).encode()),
        };
        match proposed {
            Ok(()) => {
                tracing::info!(?change, "proposed membership change");
                self.proposals.insert(id, reply);
            }
            Err(e) => {
                let _ = reply.send(Err(NodeError::Retry(e.to_string())));
            }
        }
    }

    /// This member is no longer part of the cluster: remember it on disk (so the data dir is
    /// never used to rejoin) and tell the process to stop.
    fn removed_from_cluster(&mut self) {
        if *self.shared.removed.borrow() {
            return;
        }
        let marker = crate::consensus::bootstrap::removed_marker(&self.shared.config.data_dir);
        let text = format!(
            "member {:x} removed from cluster {:x}\n",
            self.shared.member_id(),
            self.shared.state.read().cluster_id
        );
        if let Err(e) = std::fs::write(&marker, text) {
            tracing::error!("cannot write {}: {e}", marker.display());
        }
        tracing::warn!("this member has been permanently removed from the cluster");
        self.shared.removed.send_replace(true);
    }

    /// Membership facts for metrics.
    fn publish_membership(&self) {
        let m = &self.shared.metrics;
        m.cluster_voters.set(self.conf_state.voters.len() as i64);
        m.cluster_learners
            .set(self.conf_state.learners.len() as i64);
        m.is_learner
            .set(self.conf_state.learners.contains(&self.shared.member_id()) as i64);
    }

    /// A configuration change was applied: the lease must be re-established under it.
    fn conf_changed(&mut self, after: ConfState) {
        let now = self.now();
        self.read_lease.on_conf_change_applied(
            &self.conf_state,
            &after,
            now,
            &mut self.read_lease_events,
        );
        self.conf_state = after;
    }

    fn install_received_snapshot(&mut self, snap: Snapshot) -> Result<(), LoopError> {
        let meta = snap.get_metadata().clone();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installing snapshot from leader"
        );
        let sm = StateMachine::from_snapshot(&snap.data)?;
        // On disk before the log forgets the entries it replaces.
        self.snapshots.save(&snap)?;
        let peers = peer_urls(&sm.members);
        let revision = sm.store.current_revision();
        self.lease_deadlines = fresh_deadlines(&sm, self.now());
        self.revoking.clear();
        *self.shared.state.write() = sm;
        // Watchers catch up from the new state's history.
        let _ = self.shared.watch.send(Arc::new(WatchBatch {
            revision,
            events: vec![],
        }));
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        self.conf_changed(meta.get_conf_state().clone());
        self.raw.mut_store().set_snapshot(snap);
        self.shared.applied.send_replace(self.applied);
        self.transport.set_peers(&peers);
        self.publish_membership();
        self.shared.metrics.snapshots_installed.inc();
        if self
            .shared
            .state
            .read()
            .removed
            .contains(&self.shared.member_id())
        {
            self.removed_from_cluster();
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), LoopError> {
        let cfg = &self.shared.config;
        // A peer needs a snapshot newer than the stored one (e.g. a new learner).
        let wanted = self.raw.store().take_snapshot_request() && self.applied > self.snapshot_index;
        if !wanted && self.applied < self.snapshot_index + cfg.snapshot_count {
            return Ok(());
        }
        let started = Instant::now();
        let data = self.shared.state.read().to_snapshot()?;
        let mut snap = Snapshot::default();
        snap.data = data.into();
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.raw.raft.raft_log.term(self.applied)?;
        meta.set_conf_state(self.conf_state.clone());
        self.snapshots.save(&snap)?;
        let compact_to = self.applied.saturating_sub(cfg.snapshot_catchup_entries);
        self.raw.mut_store().install_snapshot(snap, compact_to)?;
        self.snapshot_index = self.applied;
        self.shared.metrics.snapshots_saved.inc();
        tracing::info!(
            index = self.applied,
            compacted_to = compact_to,
            took_ms = started.elapsed().as_millis() as u64,
            "saved snapshot"
        );
        Ok(())
    }

    fn publish_status(&mut self) {
        let r = &self.raw.raft;
        let leader = r.leader_id;
        {
            let mut st = self.shared.status.write();
            st.term = r.term;
            st.leader_id = leader;
            st.commit_index = r.raft_log.committed;
            st.voters = self.conf_state.voters.clone();
            st.learners = self.conf_state.learners.clone();
        }
        let m = &self.shared.metrics;
        m.raft_term.set(r.term as i64);
        m.is_leader.set((r.state == StateRole::Leader) as i64);
        m.has_leader.set((leader != raft::INVALID_ID) as i64);
        m.leader_id.set(leader as i64);
        m.commit_index.set(r.raft_log.committed as i64);
        m.applied_index.set(self.applied as i64);
        if leader != self.last_leader {
            if leader != raft::INVALID_ID {
                m.leader_changes.inc();
                tracing::info!(
                    leader = format_args!("{leader:x}"),
                    term = r.term,
                    "leader elected"
                );
            }
            self.last_leader = leader;
        }
    }
}

/// How long the loop may take to stop after a shutdown request before the process gives up on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
