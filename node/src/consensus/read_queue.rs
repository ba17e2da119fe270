//! Linearizable reads waiting for Raft: the requests received in one drain of the loop's channel
//! share one ReadIndex round; batches in flight wait for Raft's answer, and give up after an
//! election timeout (raft-rs drops a ReadIndex silently on a leader change).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::node::{NodeError, ReadGrant, ReadPath};

/// Where a read's grant goes.
pub type ReadReply = oneshot::Sender<Result<ReadGrant, NodeError>>;

/// Reads waiting for a ReadIndex round, and rounds in flight.
#[derive(Default)]
pub struct ReadQueue {
    /// Requests received in the current drain; they share one ReadIndex.
    waiting: Vec<ReadReply>,
    /// Batches in flight, by round context, with the time the round started.
    in_flight: BTreeMap<u64, (Instant, Vec<ReadReply>)>,
}

fn send_all(replies: Vec<ReadReply>, outcome: Result<ReadGrant, NodeError>) {
    for r in replies {
        let _ = r.send(outcome.clone());
    }
}

impl ReadQueue {
    /// A read that needs a ReadIndex round.
    pub fn push(&mut self, reply: ReadReply) {
        self.waiting.push(reply);
    }

    /// The reads received since the last round, if any.
    pub fn take_waiting(&mut self) -> Option<Vec<ReadReply>> {
        (!self.waiting.is_empty()).then(|| std::mem::take(&mut self.waiting))
    }

    /// `batch` waits for the round `ctx` started at `now`.
    pub fn started(&mut self, ctx: u64, now: Instant, batch: Vec<ReadReply>) {
        self.in_flight.insert(ctx, (now, batch));
    }

    /// Raft answered round `ctx`: its reads may be served once `index` is applied.
    pub fn answered(&mut self, ctx: u64, index: u64) {
        if let Some((_, replies)) = self.in_flight.remove(&ctx) {
            send_all(
                replies,
                Ok(ReadGrant {
                    index,
                    path: ReadPath::ReadIndex,
                }),
            );
        }
    }

    /// Answers "retry" to every round older than `limit`.
    pub fn expire(&mut self, now: Instant, limit: Duration) {
        let expired: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) > limit)
            .map(|(c, _)| *c)
            .collect();
        for c in expired {
            if let Some((_, replies)) = self.in_flight.remove(&c) {
                send_all(replies, Err(NodeError::Retry("read index expired".into())));
            }
        }
    }

    /// Answers `e` to every read, waiting or in flight.
    pub fn fail_all(&mut self, e: &NodeError) {
        for (_, (_, rs)) in std::mem::take(&mut self.in_flight) {
            send_all(rs, Err(e.clone()));
        }
        send_all(std::mem::take(&mut self.waiting), Err(e.clone()));
    }

    /// Answers `e` to `batch`.
    pub fn fail(batch: Vec<ReadReply>, e: NodeError) {
        send_all(batch, Err(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_are_answered_by_context_and_old_ones_expire() {
        let mut q = ReadQueue::default();
        assert!(q.take_waiting().is_none());
        let (a, mut ra) = oneshot::channel();
        let (b, mut rb) = oneshot::channel();
        q.push(a);
        let t0 = Instant::now();
        let first = q.take_waiting().unwrap_or_default();
        q.started(1, t0, first);
        q.push(b);
        let second = q.take_waiting().unwrap_or_default();
        q.started(2, t0 + Duration::from_secs(2), second);
        q.answered(2, 7);
        assert_eq!(
            rb.try_recv().ok().and_then(|r| r.ok()).map(|g| g.index),
            Some(7)
        );
        q.expire(t0 + Duration::from_secs(2), Duration::from_secs(1));
        assert!(matches!(ra.try_recv(), Ok(Err(NodeError::Retry(_)))));
    }
}
