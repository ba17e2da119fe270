//! The one thread that owns the `RawNode`: it steps messages, ticks, batches proposals and
//! ReadIndex requests, persists each ready cycle with one fsync, sends messages, applies committed
//! entries and takes snapshots. This file drives Raft and dispatches requests; applying entries,
//! snapshots, membership, the read lease and key leases are handled in the child modules (their
//! state in `consensus::read_queue` and `consensus::key_leases`).

mod apply;
mod key_leases;
mod membership;
mod read_lease;
mod snapshots;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use rand::rngs::StdRng;
use rand::Rng;
use tokio::sync::oneshot;

use crate::consensus::bootstrap::Opened;
use crate::consensus::key_leases::KeyLeases;
use crate::consensus::log::{LogError, PersistBatch, RaftLog};
use crate::consensus::loop_env::{BackgroundJobs, ElectionJitter, LoopClocks, LoopEnv, PeerOutbox};
use crate::consensus::message_guard;
use crate::consensus::read_queue::ReadQueue;
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles};
use crate::consensus::snapshot_transfer::ReceivedSnapshot;
use crate::node::{LoopMsg, NodeError, Shared, WatchFeed};
use crate::raft_context::ProposalContext;
use crate::read_lease::clock_guard::ClockGuard;
use crate::read_lease::reads::{ReadLease, ReadLeaseEvent};
use crate::replicated::command::ApplyResult;
use crate::replicated::state_machine::SnapshotError;

/// Most messages taken from the channel before the loop handles a ready cycle.
const MAX_DRAIN: usize = 4096;

/// How long the loop may take to stop after a shutdown request before the process gives up on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    /// The values database failed while applying: the state may be half-applied, so the member
    /// stops (its log rebuilds the state at restart).
    #[error("values database: {0}")]
    Values(#[from] metastore_mvcc::MvccError),
    /// A snapshot did not (de)serialize.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A committed entry of a kind this member's version does not know.
    #[error("entry {index}: {source}")]
    UnknownEntry {
        /// Its index.
        index: u64,
        /// What was unknown.
        source: crate::replicated::command::DecodeError,
    },
    /// The cluster version is one this member cannot run under.
    #[error(transparent)]
    Version(#[from] crate::replicated::version::VersionError),
    /// Raft accepted a snapshot this loop was not handed (a bug, never a peer's doing).
    #[error("raft installs snapshot {index} (term {term}), which was never received")]
    SnapshotNotReceived {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
    },
}

type ProposalReply = oneshot::Sender<Result<ApplyResult, NodeError>>;

/// A proposal of this member's waiting to be applied, kept whole so it can be proposed again:
/// one forwarded to a leader that lost leadership (or lost on the way) would otherwise wait
/// out the request timeout. Its context carries its sequence number, so a copy applied after
/// the original is skipped as a duplicate ([`StateMachine::admit_proposal`]).
struct Pending {
    reply: ProposalReply,
    context: Vec<u8>,
    /// The entry's data; None for a configuration change, which is never proposed again
    /// (its caller retries it as a whole).
    data: Option<Vec<u8>>,
}

impl Pending {
    /// A proposal that is not proposed again.
    pub(super) fn once(reply: ProposalReply) -> Self {
        Pending {
            reply,
            context: Vec::new(),
            data: None,
        }
    }
}

/// The Raft loop's state.
pub struct RaftLoop {
    raw: RawNode<RaftLog>,
    shared: Arc<Shared>,
    rx: Receiver<LoopMsg>,
    outbox: Arc<dyn PeerOutbox>,
    snapshots: SnapshotFiles,
    /// Proposals from this member's clients, by id, waiting to be applied.
    proposals: HashMap<u64, Pending>,
    /// Linearizable reads waiting for a ReadIndex round.
    reads: ReadQueue,
    /// Lease reads: decides when a read may skip the ReadIndex round.
    read_lease: ReadLease,
    read_lease_events: Vec<ReadLeaseEvent>,
    applied: u64,
    snapshot_index: u64,
    conf_state: ConfState,
    last_leader: u64,
    last_sweep: Instant,
    /// Deadlines of etcd TTL leases (acted on by the leader only).
    key_leases: KeyLeases,
    /// The lease clock (lease decisions and ticks) and the reference clock.
    clocks: Box<dyn LoopClocks>,
    /// Election timeouts (and the boot nonce) come from here.
    rng: StdRng,
    jitter: ElectionJitter,
    /// When the next Raft tick is due, on the lease clock.
    next_tick: Instant,
    /// This member's last proposal sequence number (see `ProposalContext`).
    proposal_seq: u64,
    /// Checks the lease clock against the raw monotonic clock.
    clock: ClockGuard,
    /// The lease clock lost time: reschedule the next tick on the new readings.
    clock_stepped: bool,
    /// A message from the leader arrived in this drain (stamped once the drain ends, so the
    /// clock is not sampled per append).
    heard_leader: bool,
    /// Where snapshots are written, off this thread.
    jobs: Arc<dyn BackgroundJobs>,
    /// This loop's own channel, for those jobs to report back.
    loopback: crossbeam_channel::Sender<LoopMsg>,
    /// A local snapshot is being written.
    snapshot_in_flight: bool,
    /// The compaction mark of the view the snapshot in flight is written from.
    snapshot_compaction_mark: u64,
    /// Bytes of entries applied since the last snapshot was started.
    applied_bytes_since_snapshot: u64,
    /// The log's compacted files are being reclaimed.
    purge_in_flight: Arc<std::sync::atomic::AtomicBool>,
    /// Snapshots received from peers in this drain, ready to install, by (index, term); dropped
    /// at the end of the turn unless Raft accepted one.
    received_snapshots: HashMap<(u64, u64), Box<ReceivedSnapshot>>,
    /// A failure found while handling a message, returned by the turn.
    failed: Option<LoopError>,
    /// Keeps the revisions buffered for watchers within their byte budget.
    watch_feed: WatchFeed,
}

impl RaftLoop {
    /// Builds the loop around an opened member, in the environment `env` (the system's, or a
    /// simulation's).
    pub fn new(opened: Opened, shared: Arc<Shared>, rx: Receiver<LoopMsg>, env: LoopEnv) -> Self {
        let LoopEnv {
            mut clocks,
            outbox,
            mut rng,
            since_start,
            seq_floor,
            jobs,
            loopback,
        } = env;
        let conf_state = opened.raw.store().conf_state().clone();
        let shared_drift = shared.config.read_lease.max_drift;
        // On the lease clock: the restarted-voter window is measured on it.
        let now = clocks.lease_now();
        let started = now.checked_sub(since_start).unwrap_or(now);
        // A new nonce on every start keeps ReadIndex contexts unique across restarts.
        let read_lease = ReadLease::new(
            shared.config.read_lease,
            started,
            shared.member_id(),
            rng.gen(),
        );
        let next_tick = now + shared.config.heartbeat_interval;
        // Above every sequence an earlier incarnation used: the wall clock (in ns, faster than
        // any member proposes), and above what the state machine has applied from us.
        let applied_seq = opened
            .state
            .proposers
            .get(&shared.member_id())
            .map_or(0, |w| w.last);
        let proposal_seq = seq_floor.max(applied_seq);
        let mut l = RaftLoop {
            raw: opened.raw,
            shared,
            rx,
            outbox,
            snapshots: opened.snapshots,
            proposals: HashMap::new(),
            reads: ReadQueue::default(),
            read_lease,
            read_lease_events: Vec::new(),
            applied: opened.applied,
            snapshot_index: opened.applied,
            conf_state,
            last_leader: 0,
            last_sweep: started,
            key_leases: KeyLeases::new(&opened.state.leases, started),
            clock: ClockGuard::new(shared_drift),
            clocks,
            rng,
            jitter: ElectionJitter::default(),
            next_tick,
            proposal_seq,
            clock_stepped: false,
            heard_leader: false,
            jobs,
            loopback,
            snapshot_in_flight: false,
            snapshot_compaction_mark: 0,
            applied_bytes_since_snapshot: 0,
            purge_in_flight: Arc::default(),
            received_snapshots: HashMap::new(),
            failed: None,
            watch_feed: WatchFeed::default(),
        };
        l.jitter.redraw(&mut l.raw, &mut l.rng);
        l.publish_status();
        l.publish_membership();
        l
    }

    /// Runs until shutdown or a fatal error.
    pub fn run(mut self) -> Result<(), LoopError> {
        let result = loop {
            self.shared.loop_heartbeat_ms.store(
                self.shared.started.elapsed().as_millis() as u64,
                Ordering::Relaxed,
            );
            let now = self.now();
            let wait = self.next_tick.saturating_duration_since(now);
            let cpu_before = thread_cpu_time();
            let (stop, busy_since) = self.drain(wait);
            let turn = self.turn();
            let cpu = thread_cpu_time().saturating_sub(cpu_before);
            self.observe_pause(busy_since.elapsed(), cpu);
            if let Err(e) = turn {
                break Err(e);
            }
            if stop {
                break Ok(());
            }
        };
        self.stop()?;
        result
    }

    /// One pass without waiting, for a driver that owns time (the simulation): handles what is
    /// queued, then ticks if due, starts ReadIndex rounds, persists, sends and applies — what
    /// [`RaftLoop::run`] does each time it wakes. `Ok(true)`: the loop was told to stop.
    pub fn poll(&mut self) -> Result<bool, LoopError> {
        let (stop, _) = self.drain(Duration::ZERO);
        self.turn()?;
        Ok(stop)
    }

    /// When the next Raft tick is due, on this member's lease clock.
    pub fn next_tick(&self) -> Instant {
        self.next_tick
    }

    /// Raft's view, for a driver's checks (read only).
    pub fn raft(&self) -> &raft::Raft<RaftLog> {
        &self.raw.raft
    }

    /// The read lease now (what LeaseStatus reports), for a driver's checks.
    pub fn read_lease_view(&mut self) -> crate::read_lease::reads::ReadLeaseView {
        let now = self.now();
        self.read_lease.view(&self.raw, &self.conf_state, now)
    }

    /// Fails whatever waits and syncs the log: the end of an orderly stop.
    pub fn stop(&mut self) -> Result<(), LoopError> {
        self.fail_all(NodeError::Stopped);
        self.raw.store().sync()?;
        Ok(())
    }

    /// Everything after a drain: tick if due, ReadIndex rounds, the ready cycle, the lease's look
    /// at the outcome and the periodic sweep.
    fn turn(&mut self) -> Result<(), LoopError> {
        let tick = self.shared.config.heartbeat_interval;
        let now = self.now();
        if std::mem::take(&mut self.heard_leader) {
            // At or after every receipt in the drain: the refusal it starts is never short.
            self.read_lease.heard_from_leader(now);
        }
        if std::mem::take(&mut self.clock_stepped) {
            self.next_tick = now;
        }
        if now >= self.next_tick {
            self.on_tick(now);
            self.next_tick += tick;
            if self.next_tick < now {
                self.next_tick = now + tick;
            }
        }
        self.flush_reads();
        let ready = self.on_ready();
        // Received snapshots Raft did not take (stale, or superseded in the same drain).
        self.received_snapshots.clear();
        ready?;
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        let now_after = self.now();
        self.observe_read_lease(now_after);
        if now.duration_since(self.last_sweep) >= tick {
            self.sweep(now);
        }
        Ok(())
    }

    /// Records how long one pass kept the loop from heartbeating.
    /// `cpu` is the loop thread's CPU time in that pass: a pause much longer than it was spent
    /// waiting (for the disk, or for a core), not computing.
    fn observe_pause(&self, busy: Duration, cpu: Duration) {
        let m = &self.shared.metrics;
        m.raft_loop_turn_seconds.observe(busy.as_secs_f64());
        let ms = busy.as_millis() as i64;
        if ms > m.raft_loop_longest_pause_ms.get() {
            m.raft_loop_longest_pause_ms.set(ms);
        }
        let cpu_ms = cpu.as_millis() as i64;
        if cpu_ms > m.raft_loop_longest_cpu_ms.get() {
            m.raft_loop_longest_cpu_ms.set(cpu_ms);
        }
    }

    /// Waits up to `wait` for a message, then handles it and whatever else is queued (bounded).
    /// Returns whether to stop, and when the wait ended (the start of the loop's busy time).
    fn drain(&mut self, wait: Duration) -> (bool, Instant) {
        let mut stop = false;
        let received = self.rx.recv_timeout(wait);
        let woke = Instant::now();
        match received {
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
        (stop, woke)
    }

    /// One heartbeat interval passed: renew the read lease if it wants to, tick Raft, expire key
    /// leases and publish the read lease's state.
    fn on_tick(&mut self, now: Instant) {
        if self
            .read_lease
            .wants_renewal(&self.raw, &self.conf_state, now)
        {
            self.read_lease.start_round(&mut self.raw, now);
        }
        self.raw.tick();
        self.jitter.redraw(&mut self.raw, &mut self.rng);
        self.expire_key_leases(now);
        let view = self.read_lease.view(&self.raw, &self.conf_state, now);
        let m = &self.shared.metrics;
        m.read_lease_valid.set(view.valid as i64);
        m.read_lease_policy_enabled.set(view.policy_enabled as i64);
    }

    /// Handles one message; false means stop.
    fn handle(&mut self, m: LoopMsg) -> bool {
        if m.from_outside() {
            self.shared.loop_queue.leave();
        }
        let go_on = self.dispatch(m);
        self.jitter.redraw(&mut self.raw, &mut self.rng);
        go_on
    }

    fn dispatch(&mut self, m: LoopMsg) -> bool {
        match m {
            LoopMsg::Propose { id, data, reply } => {
                let ctx = self.proposal_context(id);
                let proposed = self.raw.propose(ctx.clone(), data.clone());
                self.track_proposal(
                    id,
                    Pending {
                        reply,
                        context: ctx,
                        data: Some(data),
                    },
                    proposed,
                );
            }
            LoopMsg::Read { reply } => self.on_read(reply),
            LoopMsg::Step(msg) if msg.get_msg_type() == MessageType::MsgSnapshot => {
                // Snapshots come only through the snapshot stream, written and decoded first.
                tracing::warn!(
                    from = msg.from,
                    "dropped a snapshot outside the snapshot stream"
                );
            }
            LoopMsg::Step(msg) | LoopMsg::StepOwn(msg) => {
                if self.guard(&msg) {
                    self.on_step(*msg)
                }
            }
            LoopMsg::StepSnapshot(msg, received) => {
                // A refused snapshot's file goes with `received`.
                if self.guard(&msg) {
                    let m = msg.get_snapshot().get_metadata();
                    self.received_snapshots.insert((m.index, m.term), received);
                    self.on_step(*msg);
                }
            }
            LoopMsg::SnapshotWritten(result) => {
                if let Err(e) = self.snapshot_written(result) {
                    self.failed = Some(e);
                }
            }
            LoopMsg::SetPolicy {
                expected_voters,
                generation,
                reply,
            } => {
                let _ = reply.send(self.set_policy(expected_voters, generation));
            }
            LoopMsg::ReadLeaseStatus { reply } => {
                let _ = reply.send(self.read_lease_status());
            }
            LoopMsg::ChangeMembership { id, change, reply } => {
                self.propose_member_change(id, change, reply)
            }
            LoopMsg::TransferLeader { target, reply } => {
                let _ = reply.send(self.transfer_leader(target));
            }
            LoopMsg::HandOffLeadership { reply } => {
                let _ = reply.send(self.hand_off_leadership());
            }
            LoopMsg::KeyLeaseKeepAlive { id, reply } => {
                let _ = reply.send(self.key_lease_keep_alive(id));
            }
            LoopMsg::KeyLeaseTimeToLive { id, reply } => {
                let _ = reply.send(self.key_lease_time_to_live(id));
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

    /// The context of an entry this member proposes with `id` (the next sequence number).
    fn proposal_context(&mut self, id: u64) -> Vec<u8> {
        self.proposal_seq += 1;
        ProposalContext {
            member: self.shared.member_id(),
            id,
            seq: self.proposal_seq,
        }
        .encode()
    }

    /// Remembers who waits for proposal `id`, or tells them at once that Raft refused it.
    fn track_proposal(&mut self, id: u64, pending: Pending, proposed: raft::Result<()>) {
        match proposed {
            Ok(()) => {
                self.proposals.insert(id, pending);
            }
            Err(e) => {
                let _ = pending.reply.send(Err(NodeError::Retry(e.to_string())));
            }
        }
    }

    /// Under a new leader, proposes again every proposal still waiting, oldest first (see
    /// [`Pending`]); one Raft refuses now stays to wait for its answer or its timeout.
    fn propose_again(&mut self) {
        let mut ids: Vec<u64> = self.proposals.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            if let Some(Pending {
                context,
                data: Some(data),
                ..
            }) = self.proposals.get(&id)
            {
                let (ctx, data) = (context.clone(), data.clone());
                if self.raw.propose(ctx, data).is_ok() {
                    self.shared.metrics.proposals_repeated.inc();
                }
            }
        }
    }

    /// Answers the client waiting for the entry with `context`, when this member proposed it.
    fn answer_proposer(&mut self, context: &[u8], outcome: Result<ApplyResult, NodeError>) {
        let Some(ProposalContext { member, id, .. }) = ProposalContext::decode(context) else {
            return;
        };
        if member != self.shared.member_id() {
            return;
        }
        if let Some(p) = self.proposals.remove(&id) {
            let _ = p.reply.send(outcome);
        }
    }

    /// True when a peer message may be stepped; else it is counted and dropped (see
    /// [`message_guard::check_against_raft`]).
    fn guard(&self, msg: &Message) -> bool {
        match message_guard::check_against_raft(&self.raw.raft, msg) {
            Ok(()) => true,
            Err(r) => {
                r.record(&self.shared.metrics, msg);
                false
            }
        }
    }

    /// A message from a peer.
    fn on_step(&mut self, msg: Message) {
        // Only these messages need the (guarded) clock; the rest of the peer traffic should not
        // pay for sampling it.
        let admitted = match msg.get_msg_type() {
            MessageType::MsgReadIndex => {
                let now = self.now();
                if let Some(resp) = self.answer_read_index_from_lease(&msg, now) {
                    self.send(vec![resp]);
                    return;
                }
                true
            }
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote => {
                let now = self.now();
                self.read_lease.admit(&msg, now)
            }
            _ => {
                self.heard_leader |= ReadLease::from_leader(&msg, self.raw.raft.term);
                true
            }
        };
        if !admitted {
            self.shared.metrics.votes_ignored.inc();
            tracing::debug!(
                from = msg.from,
                "restarted voter ignores a (pre)vote request"
            );
        } else if let Err(e) = self.raw.step(msg) {
            tracing::debug!("step: {e}");
        }
    }

    /// Starts a leader transfer to `target` (leader only, to a voter).
    fn transfer_leader(&mut self, target: u64) -> Result<(), NodeError> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return Err(NodeError::NotLeader);
        }
        if !self.conf_state.voters.contains(&target) {
            return Err(NodeError::BadLeaderTransferee);
        }
        if target != r.id {
            tracing::info!(to = format_args!("{target:x}"), "transferring leadership");
            self.raw.transfer_leader(target);
        }
        Ok(())
    }

    /// Starts a transfer to the voter whose log matches the most of ours (as etcd does when a
    /// leader stops), so the cluster does not wait out an election timeout.
    fn hand_off_leadership(&mut self) -> Option<u64> {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            return None;
        }
        let me = r.id;
        let target = r
            .prs()
            .iter()
            .filter(|(id, p)| **id != me && self.conf_state.voters.contains(id) && p.recent_active)
            .max_by_key(|(_, p)| p.matched)
            .map(|(id, _)| *id)?;
        self.transfer_leader(target).ok().map(|()| target)
    }

    /// Expires ReadIndex batches Raft dropped (leader change) and forgets abandoned proposals.
    fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        self.reads.expire(now, self.shared.config.election_timeout);
        self.proposals.retain(|_, p| !p.reply.is_closed());
    }

    fn fail_all(&mut self, e: NodeError) {
        for (_, p) in self.proposals.drain() {
            let _ = p.reply.send(Err(e.clone()));
        }
        self.reads.fail_all(&e);
    }

    /// Hands messages to the transport; the read lease sees every one first (a `MsgTimeoutNow`
    /// ends it for the term).
    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        // Sampling the guarded clock costs two system calls: only for the rare message it needs.
        if ReadLease::timeout_now_term(&msgs).is_some() {
            let now = self.now();
            self.read_lease
                .on_sent(&msgs, now, &mut self.read_lease_events);
        }
        self.outbox.send(msgs);
    }

    fn on_ready(&mut self) -> Result<(), LoopError> {
        if !self.raw.has_ready() {
            self.publish_status();
            return Ok(());
        }
        let mut ready = self.raw.ready();
        if !ready.messages().is_empty() {
            self.send(ready.take_messages());
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
            self.send(ready.take_persisted_messages());
        }
        let states = ready.take_read_states();
        let term = self.raw.raft.term;
        for (ctx, index) in
            self.read_lease
                .on_read_states(states, term, &mut self.read_lease_events)
        {
            self.reads.answered(ctx, index);
        }
        let mut light = self.raw.advance(ready);
        if let Some(c) = light.commit_index() {
            self.raw.mut_store().set_commit(c);
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries())?;
        self.raw.advance_apply_to(self.applied);
        self.maybe_snapshot()?;
        self.publish_status();
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
            self.last_leader = leader;
            if leader != raft::INVALID_ID {
                m.leader_changes.inc();
                tracing::info!(
                    leader = format_args!("{leader:x}"),
                    term = r.term,
                    "leader elected"
                );
                self.propose_again();
            }
        }
    }
}

/// CPU time the calling thread has used (`CLOCK_THREAD_CPUTIME_ID`); zero if it cannot be read.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 || ts.tv_sec < 0 || ts.tv_nsec < 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
