//! The automatic compaction task: wakes up on the policy's schedule and, on the leader only,
//! proposes the compaction through Raft like a client's.

use std::time::Instant;

use crate::auto_compaction::{AutoCompaction, Sampler};
use crate::node::NodeHandle;
use crate::replicated::command::Command;

/// Runs the compactor until the process stops.
pub async fn run(node: NodeHandle, policy: AutoCompaction) {
    let Some((every, retention)) = policy.schedule() else {
        return;
    };
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let sh = &node.shared;
        let (current, compacted) = {
            let sm = sh.state.read();
            (sm.store.current_revision(), sm.store.compacted_revision())
        };
        let target = match policy {
            AutoCompaction::Periodic(_) => sampler.sample(Instant::now(), current, retention),
            AutoCompaction::Revision(n) => Some(current - n),
            AutoCompaction::Off => None,
        };
        let leader = sh.status.read().leader_id == sh.member_id();
        if let Some(rev) = target.filter(|r| *r > compacted && leader) {
            let cmd = Command::Compact(etcd_client::proto::PbCompactionRequest {
                revision: rev,
                physical: false,
            });
            match node.propose(cmd).await {
                Ok(_) => tracing::info!(revision = rev, "auto-compacted"),
                Err(e) => tracing::debug!(revision = rev, "auto-compaction: {e}"),
            }
        }
    }
}
