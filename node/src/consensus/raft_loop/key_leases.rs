//! Key leases (etcd TTL leases) on the Raft loop: KeepAlive and TimeToLive answered by the
//! leader from its deadlines, and expired leases revoked through Raft.

use std::time::Instant;

use raft::StateRole;

use super::RaftLoop;
use crate::node::{KeyLeaseTtl, NodeError};
use crate::replicated::command::Command;

impl RaftLoop {
    pub(super) fn key_lease_keep_alive(&mut self, id: i64) -> Result<i64, NodeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(NodeError::NotLeader);
        }
        let now = self.now();
        let sm = self.shared.state.read();
        self.key_leases.keep_alive(id, sm.leases.get(&id), now)
    }

    pub(super) fn key_lease_time_to_live(&mut self, id: i64) -> Result<KeyLeaseTtl, NodeError> {
        if self.raw.raft.state != StateRole::Leader {
            return Err(NodeError::NotLeader);
        }
        let now = self.now();
        let sm = self.shared.state.read();
        self.key_leases.time_to_live(id, sm.leases.get(&id), now)
    }

    /// The leader revokes expired key leases through Raft. A new leader first gives every lease
    /// a full TTL (as etcd does), so no lease ever expires early across a leader change.
    pub(super) fn expire_key_leases(&mut self, now: Instant) {
        let leading = self.raw.raft.state == StateRole::Leader;
        if self.key_leases.note_leading(leading) {
            self.key_leases
                .restart(&self.shared.state.read().leases, now);
        }
        if !leading {
            return;
        }
        for id in self
            .key_leases
            .due(now, self.shared.config.election_timeout)
        {
            let cmd = Command::LeaseRevoke(etcd_client::proto::PbLeaseRevokeRequest { id });
            let ctx = self.proposal_context(0);
            match self.raw.propose(ctx, cmd.encode()) {
                Ok(()) => {
                    tracing::debug!(lease = id, "lease expired: revoking");
                    self.key_leases.revoking(id, now);
                }
                Err(e) => tracing::debug!(lease = id, "cannot propose revoke: {e}"),
            }
        }
    }
}
