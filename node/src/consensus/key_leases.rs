//! Deadlines of etcd TTL leases ("key leases"), kept by the leader on its own clock: when each
//! lease expires, which expired leases this leader is revoking, and the answers to KeepAlive and
//! TimeToLive. Not replicated: a new leader starts every lease afresh with a full TTL (as etcd
//! does), so no lease ever expires early across a leader change. Pure bookkeeping, no I/O.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::node::{KeyLeaseTtl, NodeError};
use crate::replicated::state_machine::{KeyLeaseRecord, LeaseTable};

/// Most expired leases revoked per tick.
pub const MAX_REVOKES_PER_TICK: usize = 500;

fn ttl_duration(ttl: i64) -> Duration {
    Duration::from_secs(ttl.max(0) as u64)
}

/// The leader's view of key-lease deadlines.
#[derive(Debug, Default)]
pub struct KeyLeases {
    /// When each lease expires (acted on by the leader only).
    deadlines: HashMap<i64, Instant>,
    /// The same deadlines in expiry order, so a tick looks only at the expired ones (not at
    /// every lease).
    by_deadline: BTreeSet<(Instant, i64)>,
    /// Leases whose revocation this leader proposed, and when.
    revoking: HashMap<i64, Instant>,
    /// This member led at the last check.
    led: bool,
}

impl KeyLeases {
    /// Every lease of `leases` expiring one TTL from `now`.
    pub fn new(leases: &LeaseTable, now: Instant) -> Self {
        let mut k = KeyLeases::default();
        k.restart(leases, now);
        k
    }

    /// Starts every lease afresh (a new leader, or a snapshot replaced the state).
    pub fn restart(&mut self, leases: &LeaseTable, now: Instant) {
        self.deadlines = leases
            .iter()
            .map(|(id, l)| (*id, now + ttl_duration(l.ttl)))
            .collect();
        self.reindex();
        self.revoking.clear();
    }

    /// Rebuilds the expiry order from the deadlines.
    fn reindex(&mut self) {
        self.by_deadline = self.deadlines.iter().map(|(id, d)| (*d, *id)).collect();
    }

    fn set_deadline(&mut self, id: i64, at: Instant) {
        if let Some(old) = self.deadlines.insert(id, at) {
            self.by_deadline.remove(&(old, id));
        }
        self.by_deadline.insert((at, id));
    }

    /// A grant was applied.
    pub fn granted(&mut self, id: i64, ttl: i64, now: Instant) {
        self.set_deadline(id, now + ttl_duration(ttl));
    }

    /// A revocation was applied (or the lease was already gone): stop tracking it.
    pub fn revoked(&mut self, id: i64) {
        if let Some(old) = self.deadlines.remove(&id) {
            self.by_deadline.remove(&(old, id));
        }
        self.revoking.remove(&id);
    }

    /// The lease clock jumped forward by `gained` without that time really passing: no lease
    /// may expire early because of it.
    pub fn clock_gained(&mut self, gained: Duration) {
        for d in self.deadlines.values_mut() {
            *d += gained;
        }
        self.reindex();
    }

    /// Renews `id` (the caller leads): its granted TTL, or `KeyLeaseNotFound`.
    pub fn keep_alive(
        &mut self,
        id: i64,
        record: Option<&KeyLeaseRecord>,
        now: Instant,
    ) -> Result<i64, NodeError> {
        // An expired lease is being revoked: renewing it now would promise a TTL the pending
        // revocation is about to break (etcd answers not found too).
        let expired =
            self.revoking.contains_key(&id) || self.deadlines.get(&id).is_some_and(|d| *d <= now);
        match record {
            Some(l) if !expired => {
                self.set_deadline(id, now + ttl_duration(l.ttl));
                Ok(l.ttl)
            }
            _ => Err(NodeError::KeyLeaseNotFound),
        }
    }

    /// Time left on `id` (the caller leads).
    pub fn time_to_live(
        &self,
        id: i64,
        record: Option<&KeyLeaseRecord>,
        now: Instant,
    ) -> Result<KeyLeaseTtl, NodeError> {
        let l = record.ok_or(NodeError::KeyLeaseNotFound)?;
        let left = self
            .deadlines
            .get(&id)
            .map_or(Duration::ZERO, |d| d.saturating_duration_since(now));
        Ok(KeyLeaseTtl {
            granted: l.ttl,
            // Whole seconds left, truncated, as etcd reports them.
            remaining: left.as_secs() as i64,
            keys: l.keys.iter().cloned().collect(),
        })
    }

    /// Notes whether this member leads; true when it has just become leader, and the caller
    /// must then [`restart`](Self::restart) every lease.
    pub fn note_leading(&mut self, leading: bool) -> bool {
        let became = leading && !self.led;
        self.led = leading;
        became
    }

    /// The expired leases the leader should propose to revoke now, longest expired first: not
    /// already being revoked within `retry`, at most [`MAX_REVOKES_PER_TICK`]. Looks only at
    /// expired leases.
    pub fn due(&self, now: Instant, retry: Duration) -> Vec<i64> {
        self.by_deadline
            .iter()
            .take_while(|(d, _)| *d <= now)
            .filter(|(_, id)| {
                self.revoking
                    .get(id)
                    .is_none_or(|t| now.duration_since(*t) > retry)
            })
            .map(|(_, id)| *id)
            .take(MAX_REVOKES_PER_TICK)
            .collect()
    }

    /// The revocation of `id` was proposed at `now`.
    pub fn revoking(&mut self, id: i64, now: Instant) {
        self.revoking.insert(id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases(ids: &[(i64, i64)]) -> LeaseTable {
        ids.iter()
            .map(|(id, ttl)| {
                (
                    *id,
                    KeyLeaseRecord {
                        ttl: *ttl,
                        ..Default::default()
                    },
                )
            })
            .collect()
    }

    #[test]
    fn a_new_leader_restarts_every_lease_and_revokes_only_once_per_retry() {
        let t0 = Instant::now();
        let all = leases(&[(1, 1), (2, 10)]);
        let mut k = KeyLeases::new(&all, t0);
        let retry = Duration::from_secs(1);
        assert!(!k.note_leading(false));
        // Becoming leader at t0+5 s gives both leases a full TTL from then.
        let t = t0 + Duration::from_secs(5);
        assert!(k.note_leading(true));
        k.restart(&all, t);
        assert!(!k.note_leading(true));
        assert!(k.due(t, retry).is_empty());
        let later = t + Duration::from_secs(2);
        assert_eq!(k.due(later, retry), vec![1]);
        k.revoking(1, later);
        assert!(k.due(later, retry).is_empty());
        assert_eq!(
            k.keep_alive(1, all.get(&1), later),
            Err(NodeError::KeyLeaseNotFound)
        );
        assert_eq!(k.keep_alive(2, all.get(&2), later), Ok(10));
        k.revoked(1);
        assert_eq!(
            k.time_to_live(2, all.get(&2), later).map(|t| t.remaining),
            Ok(10)
        );
    }

    #[test]
    fn expired_leases_come_longest_expired_first_and_renewals_move_them() {
        let t0 = Instant::now();
        let mut k = KeyLeases::default();
        let retry = Duration::from_secs(1);
        for (id, ttl) in [(1, 30), (2, 10), (3, 20), (4, 40)] {
            k.granted(id, ttl, t0);
        }
        assert_eq!(k.due(t0 + Duration::from_secs(25), retry), vec![2, 3]);
        // Renewed at t0+5 s, lease 2 now expires at t0+15 s, still before 3.
        let all = leases(&[(2, 10)]);
        assert_eq!(
            k.keep_alive(2, all.get(&2), t0 + Duration::from_secs(5)),
            Ok(10)
        );
        assert_eq!(k.due(t0 + Duration::from_secs(16), retry), vec![2]);
        assert_eq!(k.due(t0 + Duration::from_secs(35), retry), vec![2, 3, 1]);
        // A clock jump pushes every deadline out.
        k.clock_gained(Duration::from_secs(100));
        assert!(k.due(t0 + Duration::from_secs(35), retry).is_empty());
        k.revoked(2);
        assert_eq!(k.due(t0 + Duration::from_secs(200), retry), vec![3, 1, 4]);
    }
}
