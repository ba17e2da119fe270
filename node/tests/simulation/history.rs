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
