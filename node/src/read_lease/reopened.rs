//! TEST ONLY: switches that re-open, one at a time, the five lease holes closed in issue 15, so
//! the deterministic simulation can show that it catches each of them. Set only through the
//! hidden `--unsafe-test-reopen-hole` flag (never by a default, the operator or the chart).

use std::time::Duration;

use crate::read_lease::tracker::{min_vote_refusal, READ_LEASE_MARGIN};

/// One re-opened hole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReopenedHole {
    /// 1. The lease bound uses the configured election timeout, not the whole ticks raft-rs
    ///    counts.
    WholeTicks,
    /// 2. ReadIndex contexts are bare round numbers, the same on every member and restart.
    SharedContexts,
    /// 3. Followers refuse votes only for raft-rs's tick count, not for a measured time.
    TickRefusal,
    /// 4. A sent `MsgTimeoutNow` does not end the lease for its term.
    Transfer,
    /// 5. The lease bound covers one member's drift, not the leader's and a follower's together.
    Drift,
}

impl ReopenedHole {
    /// Every hole, in issue order.
    pub const ALL: [ReopenedHole; 5] = [
        ReopenedHole::WholeTicks,
        ReopenedHole::SharedContexts,
        ReopenedHole::TickRefusal,
        ReopenedHole::Transfer,
        ReopenedHole::Drift,
    ];

    /// The flag value.
    pub fn name(self) -> &'static str {
        match self {
            ReopenedHole::WholeTicks => "whole-ticks",
            ReopenedHole::SharedContexts => "shared-contexts",
            ReopenedHole::TickRefusal => "tick-refusal",
            ReopenedHole::Transfer => "transfer",
            ReopenedHole::Drift => "drift",
        }
    }

    /// Parses a flag value.
    pub fn parse(s: &str) -> Option<ReopenedHole> {
        Self::ALL.into_iter().find(|h| h.name() == s)
    }

    /// The (unsafe) longest lease the hole's old bound allowed, for the holes that lived in the
    /// bound; `None` for the others.
    pub fn max_lease(
        self,
        election_timeout: Duration,
        heartbeat_interval: Duration,
        max_drift: f64,
    ) -> Option<Duration> {
        let rho = max_drift.max(0.0);
        let lease = match self {
            ReopenedHole::WholeTicks => {
                election_timeout.mul_f64(((1.0 - rho) / (1.0 + rho)).max(0.0))
            }
            ReopenedHole::Drift => {
                min_vote_refusal(election_timeout, heartbeat_interval).mul_f64(1.0 - rho)
            }
            _ => return None,
        };
        Some(lease.saturating_sub(READ_LEASE_MARGIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::read_lease::tracker::max_safe_read_lease;

    #[test]
    fn names_round_trip_and_the_old_bounds_are_longer_than_the_safe_one() {
        for h in ReopenedHole::ALL {
            assert_eq!(ReopenedHole::parse(h.name()), Some(h));
        }
        let (et, hb) = (Duration::from_millis(1000), Duration::from_millis(100));
        let safe = max_safe_read_lease(et, hb, 0.1);
        for h in [ReopenedHole::WholeTicks, ReopenedHole::Drift] {
            assert!(h.max_lease(et, hb, 0.1).unwrap() > safe, "{h:?}");
        }
        assert_eq!(ReopenedHole::Transfer.max_lease(et, hb, 0.1), None);
    }
}
