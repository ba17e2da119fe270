//! The read lease on the Raft loop: granting linearizable reads from the lease or queueing them
//! for ReadIndex, answering followers' ReadIndex from the lease, the operator's membership hint,
//! and the guarded clock every lease decision samples.

use std::time::Instant;

use raft::eraftpb::{Message, MessageType};
use raft::StateRole;

use super::RaftLoop;
use crate::consensus::read_queue::{ReadQueue, ReadReply};
use crate::node::{NodeError, PolicyReply, ReadGrant, ReadLeaseStatusReply, ReadPath};
use crate::read_lease::clock_guard::ClockAnomaly;
use crate::read_lease::reads::{ReadDecision, ReadLeaseEvent};

impl RaftLoop {
    /// The operator's membership hint: applied (or ignored as stale), and the lease view after it.
    pub(super) fn set_policy(&mut self, expected_voters: u32, generation: u64) -> PolicyReply {
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
        PolicyReply { outcome, view }
    }

    /// The read lease's state with the Raft status at the same moment.
    pub(super) fn read_lease_status(&mut self) -> ReadLeaseStatusReply {
        let now = self.now();
        let view = self.read_lease.view(&self.raw, &self.conf_state, now);
        let status = self.shared.status.read().clone();
        ReadLeaseStatusReply {
            view,
            status,
            applied: self.applied,
        }
    }

    /// A linearizable read: granted from the lease when it is valid, else queued for ReadIndex.
    pub(super) fn on_read(&mut self, reply: ReadReply) {
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

    /// A follower's (or learner's) ReadIndex request, answered at once while this leader holds
    /// the lease: the lease already proves no other leader can have committed anything, so the
    /// heartbeat round raft-rs would run adds nothing. The answer is the commit index now; the
    /// follower serves the read once it has applied that far — the same reply raft-rs would send
    /// after the round, one round trip sooner. `None`: let raft-rs handle it.
    pub(super) fn answer_read_index_from_lease(
        &mut self,
        m: &Message,
        now: Instant,
    ) -> Option<Message> {
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

    /// Issues one ReadIndex for every read request received since the last cycle.
    pub(super) fn flush_reads(&mut self) {
        let Some(batch) = self.reads.take_waiting() else {
            return;
        };
        if self.raw.raft.leader_id == raft::INVALID_ID {
            // raft-rs silently drops a ReadIndex without a leader; answer "retry" instead.
            ReadQueue::fail(batch, NodeError::Retry("no leader".into()));
            return;
        }
        let now = self.now();
        let ctx = self.read_lease.start_round(&mut self.raw, now);
        self.reads.started(ctx, now, batch);
    }

    /// Samples the lease clock after the guard has compared it with the reference clock, so no
    /// lease decision uses a reading the guard has not seen.
    pub(super) fn now(&mut self) -> Instant {
        let before = self.clocks.reference_now();
        let now = self.clocks.lease_now();
        match before.zip(self.clocks.reference_now()) {
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

    pub(super) fn on_clock_anomaly(&mut self, a: ClockAnomaly, now: Instant) {
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
            self.key_leases.clock_gained(gained);
            self.read_lease.on_clock_gained(gained);
        }
        if a.lost_time() {
            self.clock_stepped = true;
        }
    }

    /// Lets the read lease see the cycle's outcome and counts what happened to it.
    pub(super) fn observe_read_lease(&mut self, now: Instant) {
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
}
