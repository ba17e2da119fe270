//! What the checks look at: the lease invariant, checked at every lease read as it is served,
//! and the clients' history, checked for per-key linearizability (WGL) at the end.

use std::collections::BTreeMap;

use metastore_testkit::checkers::wgl::{self, Input, Output, RegOp};

/// A lease read served: by whom, when (global µs) and in which term.
#[derive(Debug, Clone, Copy)]
pub struct LeaseServe {
    /// Member.
    pub member: u64,
    /// Global time.
    pub at: u64,
    /// Its term then.
    pub term: u64,
}

/// The lease invariant: no member serves a lease read at a time after another member committed
/// in a later term.
#[derive(Debug, Default)]
pub struct LeaseInvariant {
    /// First global time a leader committed an entry of each term.
    first_commit: BTreeMap<u64, (u64, u64)>,
    /// Lease reads served (count).
    pub served: u64,
}

impl LeaseInvariant {
    /// The leader `member` of `term` has committed an entry of that term by `at`.
    pub fn committed(&mut self, term: u64, member: u64, at: u64) {
        self.first_commit.entry(term).or_insert((at, member));
    }

    /// A lease read served; `Err` describes the violation.
    pub fn serve(&mut self, s: LeaseServe) -> Result<(), String> {
        self.served += 1;
        match self
            .first_commit
            .range(s.term + 1..)
            .find(|(_, (at, _))| *at <= s.at)
        {
            Some((later, (at, by))) => Err(format!(
                "stale lease read: member {:x} served a lease read at t={} in term {}, but \
                 member {by:x} had committed in term {later} at t={}",
                s.member,
                fmt_us(s.at),
                s.term,
                fmt_us(*at)
            )),
            None => Ok(()),
        }
    }

    /// Terms in which something was committed.
    pub fn terms(&self) -> usize {
        self.first_commit.len()
    }
}

/// The premise of the lease bound, checked at every vote a member grants: a voter that heard
/// from a leader grants no (pre)vote until `min_vote_refusal` has passed on its own lease clock
/// since then, except to a leader transfer's forced campaign.
#[derive(Debug, Default)]
pub struct VoteRefusal {
    /// Per member: its lease-clock reading (µs) when it last received a leader's message.
    contact: BTreeMap<u64, f64>,
    /// Per member: the (candidate, term) of a forced campaign it was asked to vote in.
    forced: BTreeMap<u64, (u64, u64)>,
    /// Votes checked.
    pub checked: u64,
}

impl VoteRefusal {
    /// `member` received a leader's message when its lease clock read `lease_us`.
    pub fn contact(&mut self, member: u64, lease_us: f64) {
        let c = self.contact.entry(member).or_insert(lease_us);
        *c = c.max(lease_us);
    }

    /// `member` was asked to vote in `candidate`'s forced (transfer) campaign for `term`.
    pub fn forced(&mut self, member: u64, candidate: u64, term: u64) {
        self.forced.insert(member, (candidate, term));
    }

    /// `member` granted a (pre)vote to `candidate` for `term` when its lease clock read
    /// `lease_us`; `Err` when that was inside its refusal.
    pub fn granted(
        &mut self,
        member: u64,
        candidate: u64,
        term: u64,
        lease_us: f64,
        refusal_us: f64,
    ) -> Result<(), String> {
        self.checked += 1;
        if self.forced.get(&member) == Some(&(candidate, term)) {
            return Ok(());
        }
        match self.contact.get(&member) {
            Some(c) if lease_us - c < refusal_us => Err(format!(
                "member {member:x} granted a vote to {candidate:x} for term {term} {:.1} ms after hearing from a leader (its clock); followers must refuse for {:.1} ms",
                (lease_us - c) / 1000.0,
                refusal_us / 1000.0
            )),
            _ => Ok(()),
        }
    }
}

/// Every lease renewal rests on fresh acknowledgements: when a leader's lease is renewed from a
/// round sampled at `s` (its clock), a quorum (with itself) must have answered heartbeats it
/// sent at or after `s`. A response is credited to the earliest heartbeat that carried its
/// context, so contexts that repeat make old answers count for new rounds, and are caught.
#[derive(Debug, Default)]
pub struct FreshAcks {
    /// (leader, term, context) → earliest send time on the leader's clock (µs).
    sent: BTreeMap<(u64, u64, Vec<u8>), f64>,
    /// (leader, term, follower) → latest credited send time.
    evidence: BTreeMap<(u64, u64, u64), f64>,
    /// Renewals checked.
    pub checked: u64,
}

impl FreshAcks {
    /// `leader` sent a heartbeat with `ctx` in `term` at `lease_us`.
    pub fn heartbeat(&mut self, leader: u64, term: u64, ctx: &[u8], lease_us: f64) {
        if ctx.is_empty() {
            return;
        }
        self.sent
            .entry((leader, term, ctx.to_vec()))
            .or_insert(lease_us);
    }

    /// `leader` received `follower`'s response carrying `ctx` in `term`.
    pub fn response(&mut self, leader: u64, term: u64, follower: u64, ctx: &[u8]) {
        let Some(at) = self.sent.get(&(leader, term, ctx.to_vec())).copied() else {
            return;
        };
        let e = self.evidence.entry((leader, term, follower)).or_insert(at);
        *e = e.max(at);
    }

    /// `leader`'s lease was renewed in `term` from a round sampled at `round_us`; `voters` is
    /// its configuration. `Err` when no quorum answered a heartbeat sent since.
    pub fn renewed(
        &mut self,
        leader: u64,
        term: u64,
        round_us: f64,
        voters: &[u64],
    ) -> Result<(), String> {
        self.checked += 1;
        let fresh = voters
            .iter()
            .filter(|v| {
                **v == leader
                    || self
                        .evidence
                        .get(&(leader, term, **v))
                        .is_some_and(|t| *t >= round_us - 1000.0)
            })
            .count();
        if fresh * 2 > voters.len() {
            return Ok(());
        }
        let seen: Vec<String> = voters
            .iter()
            .map(|v| {
                let e = self.evidence.get(&(leader, term, *v));
                format!("{v:x}: {:?}", e.map(|t| t / 1000.0))
            })
            .collect();
        Err(format!(
            "member {leader:x} renewed its lease in term {term} from a round sampled at {:.1} ms (its clock), but only {fresh} of {} voters answered a heartbeat sent since (latest answered heartbeats, ms: {seen:?})",
            round_us / 1000.0,
            voters.len()
        ))
    }
}

/// Seconds with µs, for traces and messages.
pub fn fmt_us(t: u64) -> String {
    format!("{}.{:06}", t / 1_000_000, t % 1_000_000)
}

/// Per-key histories of client operations.
#[derive(Debug, Default)]
pub struct Histories {
    ops: BTreeMap<String, Vec<RegOp>>,
}

impl Histories {
    /// Records a finished (or indeterminate) operation on `key`.
    pub fn record(
        &mut self,
        key: &str,
        client: usize,
        input: Input,
        output: Output,
        call: u64,
        ret: Option<u64>,
    ) {
        self.ops.entry(key.to_string()).or_default().push(RegOp {
            client,
            input,
            output,
            call,
            ret,
        });
    }

    /// Operations recorded.
    pub fn len(&self) -> usize {
        self.ops.values().map(Vec::len).sum()
    }

    /// Checks every key's history; `Err` names the key and the reason.
    pub fn check(&self) -> Result<usize, String> {
        let mut n = 0;
        for (key, ops) in &self.ops {
            n += wgl::check(ops, None).map_err(|e| format!("key {key}: {e}"))?;
        }
        Ok(n)
    }
}
