//! Lease reads around a `RawNode`: the one place that decides whether a linearizable read may be
//! served from local state without a ReadIndex round (docs/lease-reads.md). Generic over the Raft
//! storage and driven with explicit instants, so the production loop and the deterministic
//! multi-node simulation in the tests run exactly this code.

use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Message, MessageType};
use raft::{RawNode, ReadState, StateRole, Storage};

use crate::raft_context::ReadIndexContext;
use crate::read_lease::policy::{HintOutcome, PolicyDecision, RaftFacts, ReadLeasePolicy};
use crate::read_lease::reopened::ReopenedHole;
use crate::read_lease::tracker::{min_vote_refusal, ExpireReason, ReadLeaseTracker};

/// Lease settings, validated at start-up.
#[derive(Debug, Clone, Copy)]
pub struct ReadLeaseSettings {
    /// `--lease-read`.
    pub enabled: bool,
    /// Lease length (≤ the safe maximum).
    pub duration: Duration,
    /// Non-randomized election timeout.
    pub election_timeout: Duration,
    /// Heartbeat interval (one Raft tick).
    pub heartbeat_interval: Duration,
    /// Largest clock-rate difference the lease tolerates (`--max-clock-drift`).
    pub max_drift: f64,
    /// React to clock anomalies (off only with the test-only unsafe switch).
    pub guard_clock: bool,
    /// TEST ONLY: a lease hole re-opened (`--unsafe-test-reopen-hole`); `None` in production.
    pub reopened: Option<ReopenedHole>,
}

/// How a linearizable read may be served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadDecision {
    /// From local state once `applied >= index` (the commit index at decision time).
    Lease {
        /// Commit index to wait for.
        index: u64,
    },
    /// Through a ReadIndex round.
    ReadIndex,
}

/// Something worth counting that happened to the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLeaseEvent {
    /// A round renewed the lease.
    Renewed,
    /// The lease ended early.
    Expired(ExpireReason),
}

/// A snapshot of the lease for status endpoints.
#[derive(Debug, Clone, Default)]
pub struct ReadLeaseView {
    /// Policy allows lease reads.
    pub policy_enabled: bool,
    /// Policy's reason.
    pub reason: String,
    /// A lease read would be served now.
    pub valid: bool,
    /// Time left on the lease.
    pub remaining: Duration,
    /// Expected voters pushed by the operator (0 = none).
    pub expected_voters: u32,
    /// Generation of that push.
    pub generation: u64,
}

/// Lease-read state of one member.
pub struct ReadLease {
    settings: ReadLeaseSettings,
    tracker: ReadLeaseTracker,
    policy: ReadLeasePolicy,
    started: Instant,
    /// When this member last heard from the leader of its current term (on the lease clock).
    leader_contact: Option<Instant>,
    /// This member's id and boot nonce, in every ReadIndex context it sends.
    member: u64,
    boot: u64,
    next_ctx: u64,
    term: u64,
    was_leader: bool,
    transferring: bool,
    /// The term in which this member sent a `MsgTimeoutNow`: its target may start a forced
    /// election (which ignores followers' vote refusal) whenever that message arrives, however
    /// late the transport delivers it and even if raft-rs has cancelled the transfer, so no lease
    /// read is served for the rest of that term.
    timeout_now_term: Option<u64>,
    policy_enabled: bool,
    last_lease_read: Option<Instant>,
}

/// Facts about voters of a conf state.
fn voters_of(cs: &ConfState) -> (&[u64], &[u64]) {
    (&cs.voters, &cs.voters_outgoing)
}

fn is_single_voter(id: u64, cs: &ConfState) -> bool {
    cs.voters == [id] && cs.voters_outgoing.is_empty()
}

impl ReadLease {
    /// State for member `member` (re)started at `started`; `boot` must differ on every start
    /// (it keeps ReadIndex contexts unique across restarts).
    pub fn new(settings: ReadLeaseSettings, started: Instant, member: u64, boot: u64) -> Self {
        ReadLease {
            settings,
            tracker: ReadLeaseTracker::new(settings.duration),
            policy: ReadLeasePolicy::new(settings.enabled),
            started,
            leader_contact: None,
            member,
            boot,
            next_ctx: 1,
            term: 0,
            was_leader: false,
            transferring: false,
            timeout_now_term: None,
            policy_enabled: false,
            last_lease_read: None,
        }
    }

    /// A restarted voter forgets which leader it heard from; it must not vote (or pre-vote) for
    /// one election timeout after start, or it could help elect a leader while the old leader's
    /// lease still runs. False means: drop the message.
    ///
    /// A voter that heard from the leader also refuses (pre)votes for the refusal the lease bound
    /// assumes, [`min_vote_refusal`], measured on its own clock from that contact: raft-rs
    /// counts ticks, and a tick that runs late (a slow fsync, a busy thread) or an extra one
    /// would otherwise end its refusal early. Forced elections of a leader transfer are let
    /// through, as raft-rs lets them through its own check.
    pub fn admit(&self, m: &Message, now: Instant) -> bool {
        let vote = matches!(
            m.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        if !vote {
            return true;
        }
        if now < self.started + self.settings.election_timeout {
            return false;
        }
        if self.reopened(ReopenedHole::TickRefusal) {
            return true;
        }
        let forced = m.context.as_ref() == raft::CAMPAIGN_TRANSFER;
        let refusal = min_vote_refusal(
            self.settings.election_timeout,
            self.settings.heartbeat_interval,
        );
        forced || self.leader_contact.is_none_or(|t| now >= t + refusal)
    }

    /// True for a message that proves the leader of `term` (this member's current term, or a
    /// newer one) is alive: the messages that reset raft-rs's election timer.
    pub fn from_leader(m: &Message, term: u64) -> bool {
        matches!(
            m.get_msg_type(),
            MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
        ) && m.term >= term
    }

    /// This member heard from its leader (see [`ReadLease::from_leader`]) at or before `now`.
    pub fn heard_from_leader(&mut self, now: Instant) {
        self.leader_contact = Some(self.leader_contact.map_or(now, |t| t.max(now)));
    }

    /// The context of round `round` of this incarnation.
    fn context(&self, round: u64) -> ReadIndexContext {
        if self.reopened(ReopenedHole::SharedContexts) {
            return ReadIndexContext {
                member: 0,
                boot: 0,
                round,
            };
        }
        ReadIndexContext {
            member: self.member,
            boot: self.boot,
            round,
        }
    }

    fn reopened(&self, hole: ReopenedHole) -> bool {
        self.settings.reopened == Some(hole)
    }

    /// Starts a ReadIndex round stamped with `now`, sampled before Raft sends its heartbeats.
    /// Returns the round's context.
    pub fn start_round<S: Storage>(&mut self, raw: &mut RawNode<S>, now: Instant) -> u64 {
        let ctx = self.next_ctx;
        self.next_ctx += 1;
        if raw.raft.state == StateRole::Leader {
            self.tracker.round_started(ctx, now, raw.raft.term);
        }
        raw.read_index(self.context(ctx).encode());
        ctx
    }

    /// Handles ReadStates: each is a round a quorum acknowledged (as leader) or a follower's
    /// answered ReadIndex. Returns `(ctx, index)` pairs and the lease events.
    pub fn on_read_states(
        &mut self,
        states: Vec<ReadState>,
        term: u64,
        events: &mut Vec<ReadLeaseEvent>,
    ) -> Vec<(u64, u64)> {
        let mut out = Vec::with_capacity(states.len());
        for rs in states {
            // Only this incarnation's own rounds: anything else answers no read of ours and
            // must never renew the lease.
            let mine = self.context(0);
            let Some(ctx) = ReadIndexContext::decode(&rs.request_ctx)
                .filter(|c| c.member == mine.member && c.boot == mine.boot)
                .map(|c| c.round)
            else {
                continue;
            };
            if self.tracker.round_acked(ctx, term) {
                events.push(ReadLeaseEvent::Renewed);
            }
            out.push((ctx, rs.index));
        }
        out
    }

    /// Looks at Raft after each cycle: a new term, a lost leadership or a leader transfer expires
    /// the lease; the policy is re-evaluated.
    pub fn observe<S: Storage>(
        &mut self,
        raw: &RawNode<S>,
        cs: &ConfState,
        now: Instant,
        events: &mut Vec<ReadLeaseEvent>,
    ) {
        let r = &raw.raft;
        let leader = r.state == StateRole::Leader;
        if r.term != self.term || (self.was_leader && !leader) {
            if self.tracker.expire(now) {
                events.push(ReadLeaseEvent::Expired(ExpireReason::LeaderChanged));
            }
            self.term = r.term;
            self.transferring = false;
        }
        self.was_leader = leader;
        let transferring = leader && r.lead_transferee.is_some();
        if transferring {
            // Until the transfer ends, and for one election timeout after (a delayed
            // MsgTimeoutNow may still start a forced election that ignores follower leases).
            let until = now + self.settings.election_timeout;
            if self.tracker.suspend_until(now, until) || !self.transferring {
                events.push(ReadLeaseEvent::Expired(ExpireReason::LeaderTransfer));
            }
        }
        self.transferring = transferring;
        let enabled = self.evaluate(raw, cs).enabled;
        if self.policy_enabled && !enabled && self.tracker.expire(now) {
            events.push(ReadLeaseEvent::Expired(ExpireReason::Policy));
        }
        self.policy_enabled = enabled;
    }

    /// Messages handed to the transport: a `MsgTimeoutNow` ends the lease for the rest of its
    /// term (see `timeout_now_term`). Call it for every message this member sends.
    pub fn on_sent(&mut self, msgs: &[Message], now: Instant, events: &mut Vec<ReadLeaseEvent>) {
        let Some(term) = Self::timeout_now_term(msgs) else {
            return;
        };
        if self.reopened(ReopenedHole::Transfer) {
            return;
        }
        self.timeout_now_term = Some(term);
        if self.tracker.expire(now) {
            events.push(ReadLeaseEvent::Expired(ExpireReason::LeaderTransfer));
        }
    }

    /// The newest term of a `MsgTimeoutNow` among `msgs`, if any: what [`ReadLease::on_sent`]
    /// acts on, so a caller can skip sampling the clock for it when there is none.
    pub fn timeout_now_term(msgs: &[Message]) -> Option<u64> {
        msgs.iter()
            .filter(|m| m.get_msg_type() == MessageType::MsgTimeoutNow)
            .map(|m| m.term)
            .max()
    }

    /// True when this member sent a `MsgTimeoutNow` in `term`.
    fn timeout_now_sent_in(&self, term: u64) -> bool {
        self.timeout_now_term == Some(term)
    }

    /// The lease clock jumped `gained` ahead of real time: the restarted-voter window (measured
    /// on that clock) must not end early because of it.
    pub fn on_clock_gained(&mut self, gained: Duration) {
        if let Some(s) = self.started.checked_add(gained) {
            self.started = s;
        }
        // Nor the vote refusal that runs from the last contact with the leader.
        if let Some(t) = self.leader_contact.and_then(|t| t.checked_add(gained)) {
            self.leader_contact = Some(t);
        }
    }

    /// The lease clock disagreed with the reference clock beyond the drift bound: end the lease
    /// and refuse renewals from rounds sent before one election timeout from now, so lease reads
    /// resume only on a clock that has behaved for that long (a clock that keeps misbehaving
    /// keeps them off). Reads meanwhile go through ReadIndex.
    pub fn on_clock_anomaly(&mut self, now: Instant, events: &mut Vec<ReadLeaseEvent>) {
        if !self.settings.guard_clock {
            return;
        }
        let until = now + self.settings.election_timeout;
        if self.tracker.suspend_until(now, until) {
            events.push(ReadLeaseEvent::Expired(ExpireReason::ClockAnomaly));
        }
    }

    /// Applying a voter-changing configuration change expires the lease; a fresh round under the
    /// new configuration must re-establish it.
    pub fn on_conf_change_applied(
        &mut self,
        before: &ConfState,
        after: &ConfState,
        now: Instant,
        events: &mut Vec<ReadLeaseEvent>,
    ) {
        let voters_changed =
            before.voters != after.voters || before.voters_outgoing != after.voters_outgoing;
        if voters_changed {
            // Even with no lease in force, bump the epoch so rounds under way cannot renew.
            if self.tracker.expire(now) {
                events.push(ReadLeaseEvent::Expired(ExpireReason::ConfChange));
            }
        }
    }

    fn evaluate<S: Storage>(&self, raw: &RawNode<S>, cs: &ConfState) -> PolicyDecision {
        let (voters, outgoing) = voters_of(cs);
        self.policy.evaluate(RaftFacts {
            voters,
            voters_outgoing: outgoing,
            conf_change_in_flight: raw.raft.has_pending_conf(),
        })
    }

    /// The commit index a lease read at `now` may use, or `None` when the lease cannot serve it.
    /// Pure: the safety check itself, shared by [`ReadLease::decide`] and status.
    pub fn lease_index<S: Storage>(
        &self,
        raw: &RawNode<S>,
        cs: &ConfState,
        now: Instant,
    ) -> Option<u64> {
        let r = &raw.raft;
        if r.state != StateRole::Leader
            || !r.commit_to_current_term()
            || r.lead_transferee.is_some()
            || self.timeout_now_sent_in(r.term)
        {
            return None;
        }
        let me = r.id;
        if !cs.voters.contains(&me) && !cs.voters_outgoing.contains(&me) {
            return None;
        }
        if !self.evaluate(raw, cs).enabled {
            return None;
        }
        // A quorum of one needs no clock: nobody else can be elected.
        if is_single_voter(me, cs) || self.tracker.remaining(now, r.term).is_some() {
            return Some(r.raft_log.committed);
        }
        None
    }

    /// Decides how to serve a linearizable read arriving at `now` (call on the Raft thread, so
    /// the commit index is exact), and remembers that lease reads are wanted.
    pub fn decide<S: Storage>(
        &mut self,
        raw: &RawNode<S>,
        cs: &ConfState,
        now: Instant,
    ) -> ReadDecision {
        if raw.raft.state == StateRole::Leader {
            self.last_lease_read = Some(now);
        }
        match self.lease_index(raw, cs, now) {
            Some(index) => ReadDecision::Lease { index },
            None => ReadDecision::ReadIndex,
        }
    }

    /// True when the leader should start a renewal round now: lease reads were wanted recently
    /// and the lease is missing or past half its length.
    pub fn wants_renewal<S: Storage>(
        &self,
        raw: &RawNode<S>,
        cs: &ConfState,
        now: Instant,
    ) -> bool {
        let r = &raw.raft;
        if r.state != StateRole::Leader
            || is_single_voter(r.id, cs)
            || !self.policy_enabled
            || self.timeout_now_sent_in(r.term)
        {
            return false;
        }
        let recently = self
            .last_lease_read
            .is_some_and(|t| now.saturating_duration_since(t) < 2 * self.settings.duration);
        let low = self
            .tracker
            .remaining(now, r.term)
            .is_none_or(|left| left < self.settings.duration / 2);
        recently && low
    }

    /// Takes an operator hint.
    pub fn set_hint(&mut self, expected_voters: u32, generation: u64) -> HintOutcome {
        self.policy.set_hint(expected_voters, generation)
    }

    /// Status for LeaseStatus and metrics.
    pub fn view<S: Storage>(
        &self,
        raw: &RawNode<S>,
        cs: &ConfState,
        now: Instant,
    ) -> ReadLeaseView {
        let d = self.evaluate(raw, cs);
        let r = &raw.raft;
        let single = r.state == StateRole::Leader && is_single_voter(r.id, cs);
        let remaining = self.tracker.remaining(now, r.term);
        let hint = self.policy.hint();
        ReadLeaseView {
            policy_enabled: d.enabled,
            reason: d.reason,
            valid: self.lease_index(raw, cs, now).is_some(),
            remaining: if single {
                self.settings.duration
            } else {
                remaining.unwrap_or_default()
            },
            expected_voters: hint.map_or(0, |h| h.expected_voters),
            generation: hint.map_or(0, |h| h.generation),
        }
    }

    /// Epoch of the underlying tracker (changes at every early expiry).
    pub fn epoch(&self) -> u64 {
        self.tracker.epoch()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forward_clock_jump_does_not_shorten_the_restarted_voter_window() {
        let t0 = Instant::now();
        let et = Duration::from_millis(500);
        let mut l = ReadLease::new(
            ReadLeaseSettings {
                enabled: true,
                duration: Duration::from_millis(400),
                election_timeout: et,
                heartbeat_interval: Duration::from_millis(100),
                max_drift: 0.1,
                guard_clock: true,
                reopened: None,
            },
            t0,
            1,
            1,
        );
        let mut vote = Message::default();
        vote.set_msg_type(MessageType::MsgRequestPreVote);
        // The clock jumps 2 s ahead 100 ms after start; the guard reports it.
        let jumped = t0 + Duration::from_millis(2100);
        assert!(
            l.admit(&vote, jumped),
            "without compensation the window is over"
        );
        l.on_clock_gained(Duration::from_secs(2));
        assert!(
            !l.admit(&vote, jumped),
            "100 ms of real time: still refusing votes"
        );
        assert!(l.admit(&vote, jumped + et));
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        assert!(l.admit(&append, jumped));
    }
}
