//! The world: global virtual time, an event queue, the members, the network and the trace. Every
//! random choice comes from one generator seeded by the run's seed, and events at equal times run
//! in the order they were scheduled, so a seed replays exactly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metastore_node::consensus::bootstrap::snapshot_dir;
use metastore_node::consensus::snapshot_files::SnapshotFiles;
use metastore_node::consensus::snapshot_transfer::{self, ReceivedSnapshot};
use metastore_node::node::LoopMsg;
use metastore_node::read_lease::reopened::ReopenedHole;
use raft::eraftpb::{Message, MessageType};
use raft::StateRole;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::clock::{ClockParams, GlobalTime};
use super::history::{fmt_us, FreshAcks, Histories, LeaseInvariant, LeaseServe, VoteRefusal};
use super::member::{member_config, on_own_thread, MemberFlags, SimMember, SimOutbox};
use super::network::{Fate, NetworkProfile, Partitions};
use super::operator::Operator;
use super::workload::Clients;

/// One run's parameters.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// The seed.
    pub seed: u64,
    /// Simulated time, µs.
    pub duration_us: u64,
    /// A re-opened hole (test-only switch), if any.
    pub hole: Option<ReopenedHole>,
}

/// What a run found.
#[derive(Debug)]
pub struct Outcome {
    /// The first violation, if any.
    pub violation: Option<String>,
    /// Running hash of the whole trace.
    pub trace_hash: u64,
    /// Last lines of the trace.
    pub trace_tail: Vec<String>,
    /// Lease reads served.
    pub lease_reads: u64,
    /// Client operations checked.
    pub ops: usize,
    /// Terms with a commit.
    pub terms: usize,
    /// Simulated µs actually run.
    pub simulated_us: u64,
    /// Events handled, by kind.
    pub events: BTreeMap<&'static str, u64>,
    /// Vote grants checked.
    pub votes_checked: u64,
    /// Lease renewals checked.
    pub renewals_checked: u64,
}

/// Scheduled events.
pub enum Event {
    /// A peer message arrives.
    Deliver { to: u64, msg: Box<Message> },
    /// The transport reports a snapshot sent (or failed) back to its sender.
    SnapshotSent { to: u64, peer: u64, ok: bool },
    /// A member's tick is due.
    Wake { member: u64, gen: u64 },
    /// A client starts its next operation.
    Client(usize),
    /// A client gives up on its operation issued at this time, if still open.
    ClientDeadline(usize, u64),
    /// The nemesis acts.
    Nemesis,
    /// The operator reconciles.
    Operator,
    /// A crashed member restarts.
    Restart(u64),
    /// A member stops hearing the others for a while (µs).
    Deafen(u64, u64),
    /// A member's lease clock steps (ms).
    StepClock(u64, i64),
}

impl Event {
    fn kind(&self) -> &'static str {
        match self {
            Event::Deliver { .. } => "deliver",
            Event::SnapshotSent { .. } => "snapshot-sent",
            Event::Wake { .. } => "wake",
            Event::Client(_) => "client",
            Event::ClientDeadline(..) => "client-deadline",
            Event::Nemesis => "nemesis",
            Event::Operator => "operator",
            Event::Restart(_) => "restart",
            Event::Deafen(..) => "deafen",
            Event::StepClock(..) => "step-clock",
        }
    }
}

/// Probability that a lease renewal is followed at once by cutting its leader off: the moment
/// its lease is longest, so the worst case for a stale read.
const AMBUSH: f64 = 0.15;

const TRACE_TAIL: usize = 400;

/// The simulated world.
pub struct World {
    pub spec: RunSpec,
    pub rng: StdRng,
    pub time: GlobalTime,
    pub base: Instant,
    pub flags: MemberFlags,
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u64, SimMember>,
    pub net: NetworkProfile,
    pub partitions: Partitions,
    pub lease: LeaseInvariant,
    pub votes: VoteRefusal,
    pub acks: FreshAcks,
    pub histories: Histories,
    pub clients: Clients,
    pub operator: Operator,
    pub violation: Option<String>,
    logger: slog::Logger,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    trace_hash: std::collections::hash_map::DefaultHasher,
    trace: std::collections::VecDeque<String>,
    pub next_ordinal: usize,
    trace_lines: usize,
}

impl World {
    /// A world with one bootstrapped member, as a fresh `MetaStore` of size 1 starts.
    pub fn new(spec: RunSpec) -> Result<World, String> {
        let dir = match std::path::Path::new("/dev/shm").is_dir() {
            true => tempfile::Builder::new()
                .prefix("metastore-sim")
                .tempdir_in("/dev/shm"),
            false => tempfile::tempdir(),
        }
        .map_err(|e| e.to_string())?;
        // Timing settings vary by seed among ones the operator's CRD accepts; (250, 1400) is
        // not a whole number of ticks.
        let (heartbeat_ms, election_ms) =
            [(100, 1000), (250, 1400), (50, 500)][(spec.seed % 3) as usize];
        // So does the drift bound: the default, and a loose one (shorter leases, wider clocks).
        let max_drift = [0.1, 0.25][(spec.seed / 3 % 2) as usize];
        let flags = MemberFlags {
            heartbeat_ms,
            election_ms,
            max_drift,
            snapshot_count: 400,
            hole: spec.hole.map(|h| h.name().to_string()),
        };
        let mut w = World {
            rng: StdRng::seed_from_u64(spec.seed),
            spec,
            time: GlobalTime::default(),
            // Far enough ahead that no clock reading falls before it.
            base: Instant::now() + Duration::from_secs(3600),
            flags,
            dir,
            members: BTreeMap::new(),
            net: NetworkProfile::hostile(),
            partitions: Partitions::default(),
            lease: LeaseInvariant::default(),
            votes: VoteRefusal::default(),
            acks: FreshAcks::default(),
            histories: Histories::default(),
            clients: Clients::default(),
            operator: Operator::default(),
            violation: None,
            logger: slog::Logger::root(slog::Discard, slog::o!()),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            trace_hash: Default::default(),
            trace: Default::default(),
            next_ordinal: 0,
            trace_lines: std::env::var("SIM_TRACE_LINES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(TRACE_TAIL),
        };
        w.add_member(false, None)?;
        w.clients = Clients::new(8);
        for c in 0..w.clients.len() {
            let at = w.rng.gen_range(0..50_000);
            w.schedule(at, Event::Client(c));
        }
        w.schedule(500_000, Event::Nemesis);
        w.schedule(200_000, Event::Operator);
        Ok(w)
    }

    /// Creates and starts the member of the next ordinal; `join`: MemberAdd's answer.
    pub fn add_member(
        &mut self,
        existing: bool,
        join: Option<metastore_node::consensus::bootstrap::JoinInfo>,
    ) -> Result<u64, String> {
        let k = self.next_ordinal;
        self.next_ordinal += 1;
        let data_dir: PathBuf = self.dir.path().join(format!("m{k}"));
        let config = member_config(&self.flags, k, data_dir, existing)?;
        let rho = self.flags.max_drift;
        // Mostly at the edges of the allowed drift: that is where the bound is tight (a slow
        // leader with fast followers).
        let rate = match self.rng.gen_range(0..5) {
            0 | 1 => rho,
            2 | 3 => -rho,
            _ => self.rng.gen_range(-rho..rho),
        };
        let clock = ClockParams {
            rate,
            phase_us: self.rng.gen_range(0.0..10_000_000.0),
            step_us: 0,
        };
        let mut m = SimMember {
            id: join.as_ref().map_or(config.member_id, |j| j.member_id),
            ordinal: k,
            config,
            join,
            clock: Arc::new(Mutex::new(clock)),
            outbox: Arc::new(SimOutbox::default()),
            run: None,
            stalled_until: 0,
            wake_gen: 0,
            removed: false,
            boots: 0,
            rejected_before: 0,
            busy: self.rng.gen_bool(0.3),
        };
        let seed = self.rng.gen();
        m.start(
            self.base,
            &self.time,
            StdRng::seed_from_u64(seed),
            &self.logger,
        )?;
        let id = m.id;
        let lease_ms = m.config.read_lease.duration.as_millis();
        self.trace(format!(
            "m{k} {id:x} starts, clock rate {rate:+.4}, lease {lease_ms} ms"
        ));
        self.members.insert(id, m);
        self.poll(id);
        Ok(id)
    }

    /// Schedules `ev` at global `at`.
    pub fn schedule(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    /// Now, global µs.
    pub fn now(&self) -> u64 {
        self.time.now()
    }

    /// Adds a line to the trace (hashed, and kept while it is among the last lines).
    pub fn trace(&mut self, line: String) {
        let line = format!("{} {line}", fmt_us(self.now()));
        line.hash(&mut self.trace_hash);
        if self.trace.len() >= self.trace_lines {
            self.trace.pop_front();
        }
        self.trace.push_back(line);
    }

    /// Records the first violation.
    pub fn fail(&mut self, why: String) {
        if self.violation.is_none() {
            self.trace(format!("VIOLATION {why}"));
            self.violation = Some(why);
        }
    }

    /// Runs until the simulated time is up or a check fails.
    pub fn run(mut self) -> Outcome {
        let end = self.spec.duration_us;
        let mut counts: BTreeMap<&'static str, u64> = BTreeMap::new();
        while let Some(Reverse((at, seq))) = self.queue.pop() {
            if at > end || self.violation.is_some() {
                break;
            }
            self.time.set(at);
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            *counts.entry(ev.kind()).or_default() += 1;
            self.handle(ev);
        }
        let simulated_us = self.now();
        // Every message here comes from a correct member (delayed, reordered, duplicated or
        // lost): the guard must have let all of them through.
        let rejected: u64 = self
            .members
            .values()
            .map(|m| m.rejected_peer_messages())
            .sum();
        if rejected > 0 {
            let by: Vec<String> = self
                .members
                .values()
                .filter_map(|m| m.run.as_ref())
                .map(|r| {
                    r.rejected()
                        .iter()
                        .map(|(l, n)| format!("{l}={n}"))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .collect();
            self.fail(format!(
                "the peer message guard dropped {rejected} messages of correct members ({})",
                by.join("; ")
            ));
        }
        if self.violation.is_none() {
            self.clients.finish(&mut self.histories, simulated_us);
            if let Err(e) = self.histories.check() {
                self.fail(format!("not linearizable: {e}"));
            }
        }
        let ops = self.histories.len();
        Outcome {
            violation: self.violation.take(),
            trace_hash: self.trace_hash.finish(),
            trace_tail: self.trace.drain(..).collect(),
            lease_reads: self.lease.served,
            ops,
            terms: self.lease.terms(),
            simulated_us,
            events: counts,
            votes_checked: self.votes.checked,
            renewals_checked: self.acks.checked,
        }
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Deliver { to, msg } => self.deliver(to, msg),
            Event::SnapshotSent { to, peer, ok } => {
                if self.send_to(to, LoopMsg::SnapshotSent(peer, ok)) {
                    self.poll(to);
                }
            }
            Event::Wake { member, gen } => {
                if self.members.get(&member).is_some_and(|m| m.wake_gen == gen) {
                    self.poll(member);
                }
            }
            Event::Client(c) => self.client_acts(c),
            Event::ClientDeadline(c, call) => self.client_deadline(c, call),
            Event::Nemesis => self.nemesis_acts(),
            Event::Operator => self.operator_acts(),
            Event::Restart(id) => self.restart(id),
            Event::Deafen(id, hold) => self.deafen(id, hold),
            Event::StepClock(id, ms) => {
                self.step_clock(id, ms);
                // Something wakes the loop soon after (a message, a client).
                self.poll(id);
            }
        }
    }

    /// Hands a loop message to a running member (false: it is down).
    pub fn send_to(&mut self, id: u64, msg: LoopMsg) -> bool {
        match self.members.get(&id).and_then(|m| m.run.as_ref()) {
            Some(r) => r.tx.send(msg).is_ok(),
            None => false,
        }
    }

    fn deliver(&mut self, to: u64, msg: Box<Message>) {
        let now = self.now();
        let Some(m) = self.members.get(&to) else {
            return;
        };
        if m.stalled_until > now {
            // A stalled loop reads its socket later.
            let at = m.stalled_until;
            self.schedule(at, Event::Deliver { to, msg });
            return;
        }
        if self.partitions.is_blocked(msg.from, to, now) {
            return;
        }
        let lease_us = m.lease_us(now);
        match msg.get_msg_type() {
            // From the leader of its term or a newer one (older leaders' messages are ignored).
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
                if m.run
                    .as_ref()
                    .is_some_and(|r| msg.term >= r.raft.raft().term) =>
            {
                self.votes.contact(to, lease_us)
            }
            MessageType::MsgHeartbeatResponse => {
                self.acks
                    .response(to, msg.term, msg.from, msg.context.as_ref())
            }
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
                if msg.context.as_ref() == raft::CAMPAIGN_TRANSFER =>
            {
                self.votes.forced(to, msg.from, msg.term)
            }
            _ => {}
        }
        if msg.get_msg_type() == MessageType::MsgTimeoutNow {
            let (f, t) = (self.ordinal(msg.from), self.ordinal(to));
            self.trace(format!(
                "m{t} receives MsgTimeoutNow from m{f} (term {})",
                msg.term
            ));
        }
        let snapshot_from = (msg.get_msg_type() == MessageType::MsgSnapshot).then_some(msg.from);
        let delivered = if snapshot_from.is_some() {
            // As the transport does: the body streams from the sender's file into the
            // receiver's, which decodes it before the loop sees the message.
            match self.transfer_snapshot(&msg, to) {
                Ok(received) => self.send_to(to, LoopMsg::StepSnapshot(msg, Box::new(received))),
                Err(e) => {
                    let (f, t) = (self.ordinal(msg.from), self.ordinal(to));
                    self.trace(format!("snapshot m{f} -> m{t} failed: {e}"));
                    false
                }
            }
        } else {
            self.send_to(to, LoopMsg::Step(msg))
        };
        if let Some(from) = snapshot_from {
            self.schedule(
                now + 1_000,
                Event::SnapshotSent {
                    to: from,
                    peer: to,
                    ok: delivered,
                },
            );
        }
        if delivered {
            self.poll(to);
        }
    }

    /// Copies the snapshot `msg` names from its sender's snapshot files to `to`'s, as the
    /// transport would.
    fn transfer_snapshot(&self, msg: &Message, to: u64) -> Result<ReceivedSnapshot, String> {
        let dir = |id: u64| {
            self.members
                .get(&id)
                .filter(|m| m.is_up())
                .map(|m| snapshot_dir(&m.config.data_dir))
                .ok_or_else(|| format!("member {id:x} is down"))
        };
        let (from_dir, to_dir) = (dir(msg.from)?, dir(to)?);
        let meta = msg.get_snapshot().get_metadata();
        let sender = SnapshotFiles::open(&from_dir).map_err(|e| e.to_string())?;
        let store_of = |id: u64| {
            self.members
                .get(&id)
                .and_then(|m| m.run.as_ref())
                .ok_or_else(|| format!("member {id:x} is down"))
                .and_then(|r| {
                    r.shared
                        .state
                        .read()
                        .store
                        .empty_like()
                        .map_err(|e| e.to_string())
                })
        };
        let mut body = Vec::new();
        let values = store_of(msg.from)?.disk_values().map(|v| v.database());
        snapshot_transfer::write_sendable(&sender, meta, values.as_ref(), false, &mut body)?
            .ok_or("the snapshot file is gone")?;
        let receiver = SnapshotFiles::open(&to_dir).map_err(|e| e.to_string())?;
        snapshot_transfer::receive(&receiver, meta, &body[..], u64::MAX, store_of(to)?, None)
            .map_err(|e| e.to_string())
    }

    /// Runs one pass of a member's loop at the current time, then routes what it sent, feeds the
    /// checks and schedules its next tick.
    pub fn poll(&mut self, id: u64) {
        let now = self.now();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.stalled_until > now {
            // Runs when the stall ends.
            m.wake_gen += 1;
            let (gen, at) = (m.wake_gen, m.stalled_until);
            self.schedule(at, Event::Wake { member: id, gen });
            return;
        }
        let Some(run) = m.run.as_mut() else {
            return;
        };
        let term_before = run.raft.raft().term;
        let role_before = (run.raft.raft().state, run.raft.raft().leader_id);
        let answered_before = run.shared.metrics.read_index_answered_by_lease.get();
        let renewals_before = run.shared.metrics.read_lease_renewals.get();
        let raft = &mut run.raft;
        let (result, committed_term) = on_own_thread(move || {
            let result = raft.poll();
            let r = raft.raft();
            (result, r.raft_log.term(r.raft_log.committed).unwrap_or(0))
        });
        let r = run.raft.raft();
        let (term, state, committed) = (r.term, r.state, r.raft_log.committed);
        let answered = run.shared.metrics.read_index_answered_by_lease.get() - answered_before;
        let renewed = run.shared.metrics.read_lease_renewals.get() > renewals_before;
        let next_tick = run.raft.next_tick();
        let clock = *m.clock.lock().unwrap_or_else(|e| e.into_inner());
        let sent = m.outbox.take();
        let ordinal = m.ordinal;
        let role = (state, r.leader_id);
        if (term, role) != (term_before, role_before) {
            self.trace(format!(
                "m{ordinal} term {term} {:?} leader {:x} commit {committed}",
                role.0, role.1
            ));
        }
        match result {
            Ok(false) => {}
            Ok(true) => {
                self.trace(format!("m{ordinal} loop stopped"));
                if let Some(m) = self.members.get_mut(&id) {
                    m.crash();
                }
                return;
            }
            Err(e) => {
                self.fail(format!("m{ordinal} raft loop failed: {e}"));
                return;
            }
        }
        if state == StateRole::Leader && committed_term == term && term > 0 {
            self.lease.committed(term, id, now);
        }
        for _ in 0..answered {
            // A follower's ReadIndex answered from this leader's lease.
            let s = LeaseServe {
                member: id,
                at: now,
                term: term_before,
            };
            if let Err(e) = self.lease.serve(s) {
                self.fail(e);
            }
        }
        for msg in sent {
            self.route(msg);
        }
        if renewed {
            self.check_renewal(id, term);
            if self.rng.gen_bool(AMBUSH) {
                self.ambush(id);
            }
        }
        // The next tick, on this member's clock, mapped back to global time; sometimes late.
        let lease_us = next_tick
            .checked_duration_since(self.base)
            .map_or(0.0, |d| d.as_micros() as f64);
        let mut at = clock.global_at(lease_us).max(now + 1);
        // A busy loop or a slow fsync: the tick runs late (often, on a busy member).
        let busy = self.members.get(&id).is_some_and(|m| m.busy);
        let hb_us = self.flags.heartbeat_ms * 1000;
        if busy && self.rng.gen_bool(0.5) {
            at += self.rng.gen_range(1_000..hb_us / 2);
        } else if self.rng.gen_bool(0.05) {
            at += self.rng.gen_range(1_000..40_000);
        }
        if let Some(m) = self.members.get_mut(&id) {
            m.wake_gen += 1;
            let gen = m.wake_gen;
            self.schedule(at, Event::Wake { member: id, gen });
        }
        self.clients_after_poll(id);
    }

    fn route(&mut self, msg: Message) {
        let now = self.now();
        if msg.get_msg_type() == MessageType::MsgHeartbeat && !msg.context.is_empty() {
            if let Some(lease_us) = self.lease_us_of(msg.from) {
                self.acks
                    .heartbeat(msg.from, msg.term, msg.context.as_ref(), lease_us);
            }
        }
        let vote = matches!(
            msg.get_msg_type(),
            MessageType::MsgRequestVoteResponse | MessageType::MsgRequestPreVoteResponse
        );
        if vote && !msg.reject {
            if let (Some(m), Some(lease_us)) =
                (self.members.get(&msg.from), self.lease_us_of(msg.from))
            {
                let rl = &m.config.read_lease;
                let refusal = metastore_node::read_lease::tracker::min_vote_refusal(
                    rl.election_timeout,
                    rl.heartbeat_interval,
                );
                let refusal_us = refusal.as_micros() as f64;
                if let Err(e) = self
                    .votes
                    .granted(msg.from, msg.to, msg.term, lease_us, refusal_us)
                {
                    self.fail(e);
                }
            }
        }
        if self.partitions.is_blocked(msg.from, msg.to, now) {
            return;
        }
        let snapshot = msg.get_msg_type() == MessageType::MsgSnapshot;
        match self.net.fate(&msg, &mut self.rng) {
            Fate::Dropped if snapshot => {
                let (to, peer) = (msg.from, msg.to);
                self.schedule(
                    now + 50_000,
                    Event::SnapshotSent {
                        to,
                        peer,
                        ok: false,
                    },
                );
            }
            Fate::Dropped => {}
            Fate::Deliver(delays) => {
                if msg.get_msg_type() == MessageType::MsgTimeoutNow
                    && delays[0] > 200_000
                    && self.rng.gen_bool(0.5)
                {
                    // The link that held it fails the other way too: the old leader stops
                    // hearing the others from just before its MsgTimeoutNow lands.
                    let lead = self.rng.gen_range(0..20_000);
                    let at = now + delays[0].saturating_sub(lead);
                    let hold = self.rng.gen_range(1_000_000..2_500_000);
                    self.schedule(at, Event::Deafen(msg.from, hold));
                }
                for d in delays {
                    let to = msg.to;
                    self.schedule(
                        now + d,
                        Event::Deliver {
                            to,
                            msg: Box::new(msg.clone()),
                        },
                    );
                }
            }
        }
    }

    /// A lease renewal must rest on acknowledgements of heartbeats sent since its round.
    fn check_renewal(&mut self, id: u64, term: u64) {
        let now = self.now();
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        let Some(run) = m.run.as_mut() else {
            return;
        };
        let raft = &mut run.raft;
        let view = on_own_thread(move || raft.read_lease_view());
        let duration = m.config.read_lease.duration;
        let voters = run.shared.status.read().voters.clone();
        let lease_now = m.lease_us(now);
        if view.remaining.is_zero() {
            return;
        }
        // The lease runs to round + duration.
        let round_us = lease_now + view.remaining.as_micros() as f64 - duration.as_micros() as f64;
        if let Err(e) = self.acks.renewed(id, term, round_us, &voters) {
            self.fail(e);
        }
    }

    /// Restarts a crashed member from its data dir.
    fn restart(&mut self, id: u64) {
        let seed = self.rng.gen();
        let (base, time) = (self.base, self.time.clone());
        let Some(m) = self.members.get_mut(&id) else {
            return;
        };
        if m.removed || m.is_up() {
            return;
        }
        let ordinal = m.ordinal;
        let started = m.start(base, &time, StdRng::seed_from_u64(seed), &self.logger);
        match started {
            Ok(()) => {
                let line = match self.members.get(&id).and_then(|m| m.run.as_ref()) {
                    Some(r) => {
                        let raft = r.raft.raft();
                        format!(
                            "m{ordinal} restarts: k0={:?} term {} commit {} last {} applied {} voters {:x?}",
                            super::workload::read_local(r, "k0"),
                            raft.term,
                            raft.raft_log.committed,
                            raft.raft_log.last_index(),
                            *r.shared.applied.borrow(),
                            r.shared.status.read().voters
                        )
                    }
                    None => format!("m{ordinal} restarts"),
                };
                self.trace(line);
                self.poll(id);
            }
            // A member removed while it was down refuses to start, as it should.
            Err(e) if e.contains("removed") => self.trace(format!("m{ordinal} stays down: {e}")),
            Err(e) => self.fail(format!("restart: {e}")),
        }
    }

    /// Running members, by id.
    pub fn up(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| m.is_up())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Running members that believe they lead (an old leader cut off from the others still
    /// does).
    pub fn leaders(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|(_, m)| {
                m.run
                    .as_ref()
                    .is_some_and(|r| r.raft.raft().state == StateRole::Leader)
            })
            .map(|(id, _)| *id)
            .collect()
    }

    /// The running member that leads in the highest term, if any.
    pub fn leader(&self) -> Option<u64> {
        self.members
            .iter()
            .filter_map(|(id, m)| m.run.as_ref().map(|r| (id, r.raft.raft())))
            .filter(|(_, r)| r.state == StateRole::Leader)
            .max_by_key(|(_, r)| r.term)
            .map(|(id, _)| *id)
    }

    /// `member`'s lease clock now, µs from the base instant.
    fn lease_us_of(&self, member: u64) -> Option<f64> {
        let now = self.now();
        self.members.get(&member).map(|m| m.lease_us(now))
    }

    /// Ordinal of a member (for traces).
    pub fn ordinal(&self, id: u64) -> usize {
        self.members.get(&id).map_or(usize::MAX, |m| m.ordinal)
    }
}
