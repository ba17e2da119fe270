//! The leader lease, as pure bookkeeping over instants the caller supplies (so tests drive it with
//! a simulated clock).
//!
//! A lease runs from the time a heartbeat round was **sent** (`t_send`, sampled before the round
//! was handed to Raft), once a quorum of voters acknowledged that round: `valid while now <
//! t_send + L`. Followers that acknowledged at or after `t_send` refuse votes for an election
//! timeout on their own clocks, so no other leader can exist before `t_send + L` when `L` is
//! within [`max_safe_read_lease`]. Any doubt (term or role change, membership change, leader transfer)
//! expires the lease and bumps an epoch, so rounds started before the doubt never renew it.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Fixed safety margin subtracted from the lease bound (scheduling and send-path slack).
pub const READ_LEASE_MARGIN: Duration = Duration::from_millis(10);

/// How long a follower that has just heard from the leader refuses votes, at least, on its own
/// clock: raft-rs counts whole ticks, so it refuses until its `election_elapsed` reaches
/// `election_tick = ⌊election_timeout / heartbeat_interval⌋`, and its first tick after the
/// message may come at once — `(⌊ET/HB⌋ − 1) × HB`, not `ET − HB` when ET is not a multiple of HB.
pub fn min_vote_refusal(election_timeout: Duration, heartbeat_interval: Duration) -> Duration {
    let ticks = election_timeout.as_nanos() / heartbeat_interval.as_nanos().max(1);
    let whole = u32::try_from(ticks.saturating_sub(1)).unwrap_or(u32::MAX);
    heartbeat_interval.saturating_mul(whole)
}

/// The longest safe lease: followers refuse votes for at least [`min_vote_refusal`] after
/// hearing from the leader. Each member's clock guard holds its lease clock within `max_drift` of
/// its own raw clock, so the leader's clock may run `max_drift` slow (its lease lasts up to
/// `L / (1 − ρ)` of real time) while a follower's runs `max_drift` fast (its refusal lasts at
/// least `R / (1 + ρ)`): `L ≤ R (1 − ρ) / (1 + ρ)`, less a margin.
pub fn max_safe_read_lease(
    election_timeout: Duration,
    heartbeat_interval: Duration,
    max_drift: f64,
) -> Duration {
    let rho = max_drift.max(0.0);
    min_vote_refusal(election_timeout, heartbeat_interval)
        .mul_f64(((1.0 - rho) / (1.0 + rho)).max(0.0))
        .saturating_sub(READ_LEASE_MARGIN)
}

/// Why a lease ended early (the `reason` label of the expirations metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExpireReason {
    /// The term changed or this member stopped leading.
    LeaderChanged,
    /// A voter-changing configuration change was applied.
    ConfChange,
    /// A leader transfer started.
    LeaderTransfer,
    /// The policy disabled lease reads.
    Policy,
    /// The lease clock disagreed with the reference clock beyond the drift bound.
    ClockAnomaly,
}

impl ExpireReason {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ExpireReason::LeaderChanged => "leader_changed",
            ExpireReason::ConfChange => "conf_change",
            ExpireReason::LeaderTransfer => "leader_transfer",
            ExpireReason::Policy => "policy",
            ExpireReason::ClockAnomaly => "clock",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Round {
    sent: Instant,
    term: u64,
    epoch: u64,
}

/// Lease bookkeeping of one member.
#[derive(Debug)]
pub struct ReadLeaseTracker {
    duration: Duration,
    term: u64,
    expiry: Option<Instant>,
    epoch: u64,
    /// Rounds sent before this instant never renew (cool-down after a leader transfer).
    not_before: Option<Instant>,
    rounds: BTreeMap<u64, Round>,
}

/// Most rounds remembered; older ones (never acknowledged) are forgotten.
const MAX_ROUNDS: usize = 1024;

impl ReadLeaseTracker {
    /// A tracker granting leases of `duration`.
    pub fn new(duration: Duration) -> Self {
        ReadLeaseTracker {
            duration,
            term: 0,
            expiry: None,
            epoch: 0,
            not_before: None,
            rounds: BTreeMap::new(),
        }
    }

    /// Lease length.
    pub fn duration(&self) -> Duration {
        self.duration
    }

    /// Records a round (identified by `ctx`) sampled at `sent`, before it is handed to Raft.
    pub fn round_started(&mut self, ctx: u64, sent: Instant, term: u64) {
        self.rounds.insert(
            ctx,
            Round {
                sent,
                term,
                epoch: self.epoch,
            },
        );
        while self.rounds.len() > MAX_ROUNDS {
            self.rounds.pop_first();
        }
    }

    /// A quorum of voters acknowledged round `ctx` (or a later one) in `term`: renew from the
    /// round's send time. Returns true when the lease was extended.
    pub fn round_acked(&mut self, ctx: u64, term: u64) -> bool {
        let Some(r) = self.rounds.remove(&ctx) else {
            return false;
        };
        if r.term != term || r.epoch != self.epoch {
            return false;
        }
        if self.not_before.is_some_and(|nb| r.sent < nb) {
            return false;
        }
        let until = r.sent + self.duration;
        if self.term != term || self.expiry.is_none_or(|e| until > e) {
            self.term = term;
            self.expiry = Some(until);
            return true;
        }
        false
    }

    /// Ends the lease now; rounds already under way can no longer renew it.
    /// Returns true when a lease was actually in force.
    pub fn expire(&mut self, now: Instant) -> bool {
        let was = self.expiry.is_some_and(|e| now < e);
        self.expiry = None;
        self.epoch += 1;
        self.rounds.clear();
        was
    }

    /// Ends the lease and refuses renewals from rounds sent before `until`.
    pub fn suspend_until(&mut self, now: Instant, until: Instant) -> bool {
        let was = self.expire(now);
        self.not_before = Some(self.not_before.map_or(until, |nb| nb.max(until)));
        was
    }

    /// Time left on the lease for `term` at `now`, if it is in force.
    pub fn remaining(&self, now: Instant, term: u64) -> Option<Duration> {
        match self.expiry {
            Some(e) if self.term == term && now < e => Some(e - now),
            _ => None,
        }
    }

    /// Current epoch (changes whenever the lease is expired early).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Duration = Duration::from_millis(800);

    #[test]
    fn lease_runs_from_send_time_not_ack_time() {
        let t0 = Instant::now();
        let mut t = ReadLeaseTracker::new(L);
        assert!(t.remaining(t0, 1).is_none());
        t.round_started(1, t0, 1);
        // Acknowledged 300 ms later: still expires at t0 + L.
        assert!(t.round_acked(1, 1));
        let at = t0 + Duration::from_millis(300);
        assert_eq!(t.remaining(at, 1), Some(L - Duration::from_millis(300)));
        assert!(t.remaining(t0 + L, 1).is_none());
        // Another term's lease is no lease.
        assert!(t.remaining(at, 2).is_none());
    }

    #[test]
    fn rounds_from_before_an_expiry_never_renew() {
        let t0 = Instant::now();
        let mut t = ReadLeaseTracker::new(L);
        t.round_started(1, t0, 1);
        t.expire(t0);
        assert!(!t.round_acked(1, 1));
        t.round_started(2, t0 + Duration::from_millis(5), 1);
        assert!(!t.round_acked(2, 2), "acked in another term");
        t.round_started(3, t0 + Duration::from_millis(6), 1);
        assert!(t.round_acked(3, 1));
        // An older round acked late never shortens or extends past a newer one.
        t.round_started(4, t0, 1);
        assert!(!t.round_acked(4, 1));
    }

    #[test]
    fn suspension_refuses_rounds_sent_before_its_end() {
        let t0 = Instant::now();
        let mut t = ReadLeaseTracker::new(L);
        let end = t0 + Duration::from_millis(1000);
        t.suspend_until(t0, end);
        t.round_started(1, t0 + Duration::from_millis(10), 1);
        assert!(!t.round_acked(1, 1));
        t.round_started(2, end, 1);
        assert!(t.round_acked(2, 1));
    }

    #[test]
    fn safe_bound_accounts_for_tick_drift_and_margin() {
        let l = max_safe_read_lease(Duration::from_millis(1000), Duration::from_millis(100), 0.1);
        assert_eq!(
            l,
            Duration::from_millis(900).mul_f64(0.9 / 1.1) - READ_LEASE_MARGIN
        );
        // Leader 10 % slow, follower 10 % fast: the lease ends before the refusal does.
        let real_lease = (l + READ_LEASE_MARGIN).as_secs_f64() / 0.9;
        let real_refusal = 0.9 / 1.1;
        assert!(real_lease <= real_refusal + 1e-9);
        assert_eq!(
            max_safe_read_lease(Duration::from_millis(10), Duration::from_millis(10), 0.0),
            Duration::ZERO
        );
    }

    #[test]
    fn safe_bound_counts_whole_ticks() {
        // ET 1400 ms over HB 250 ms is 5 whole ticks: a follower may refuse votes for only
        // 4 x 250 = 1000 ms, not 1400 - 250 = 1150 ms.
        let (et, hb) = (Duration::from_millis(1400), Duration::from_millis(250));
        assert_eq!(min_vote_refusal(et, hb), Duration::from_millis(1000));
        assert_eq!(
            max_safe_read_lease(et, hb, 0.1),
            Duration::from_millis(1000).mul_f64(0.9 / 1.1) - READ_LEASE_MARGIN
        );
        assert_eq!(min_vote_refusal(hb, hb), Duration::ZERO);
        assert_eq!(min_vote_refusal(et, Duration::ZERO), Duration::ZERO);
    }
}
