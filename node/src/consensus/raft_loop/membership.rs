//! Membership on the Raft loop: checking and proposing a change (leader only), applying the
//! configuration Raft applied to the read lease and the metrics, and leaving the cluster for good
//! once removed.

use raft::eraftpb::ConfState;
use raft::StateRole;

use super::{ProposalReply, RaftLoop};
use crate::node::NodeError;
use crate::replicated::command::Command;
use crate::replicated::membership::{self, ClusterFacts, MemberChange, PeerProgress};

impl RaftLoop {
    /// Checks a membership change against the cluster as this leader sees it and proposes it.
    pub(super) fn propose_member_change(
        &mut self,
        id: u64,
        change: MemberChange,
        reply: ProposalReply,
    ) {
        let r = &self.raw.raft;
        if r.state != StateRole::Leader {
            let _ = reply.send(Err(NodeError::NotLeader));
            return;
        }
        let checked = {
            let sm = self.shared.state.read();
            let progress = r
                .prs()
                .iter()
                .map(|(pid, p)| {
                    (
                        *pid,
                        PeerProgress {
                            matched: p.matched,
                            recent_active: p.recent_active,
                        },
                    )
                })
                .collect();
            membership::check(
                &change,
                &ClusterFacts {
                    members: Some(&sm.members),
                    removed: Some(&sm.removed),
                    me: r.id,
                    progress,
                    conf_change_pending: r.has_pending_conf()
                        || !self.conf_state.voters_outgoing.is_empty(),
                    max_learners: self.shared.config.max_learners,
                },
            )
        };
        if let Err(e) = checked {
            let _ = reply.send(Err(NodeError::Membership(e)));
            return;
        }
        let ctx = self.proposal_context(id);
        let proposed = match membership::conf_change(&change) {
            Some(cc) => self.raw.propose_conf_change(ctx, cc),
            None => self
                .raw
                .propose(ctx, Command::Member(change.clone()).encode()),
        };
        if proposed.is_ok() {
            tracing::info!(?change, "proposed membership change");
        }
        self.track_proposal(id, super::Pending::once(reply), proposed);
    }

    /// This member is no longer part of the cluster: remember it on disk (so the data dir is
    /// never used to rejoin) and tell the process to stop.
    pub(super) fn removed_from_cluster(&mut self) {
        if *self.shared.removed.borrow() {
            return;
        }
        let marker = crate::consensus::bootstrap::removed_marker(&self.shared.config.data_dir);
        let text = format!(
            "member {:x} removed from cluster {:x}\n",
            self.shared.member_id(),
            self.shared.state.read().cluster_id
        );
        // Durable before the member says it stops: a crash right after must not let this data
        // dir rejoin.
        if let Err(e) = crate::consensus::bootstrap::write_durably(&marker, text.as_bytes()) {
            tracing::error!("cannot write {}: {e}", marker.display());
        }
        tracing::warn!("this member has been permanently removed from the cluster");
        self.shared.removed.send_replace(true);
    }

    /// Membership facts for metrics.
    pub(super) fn publish_membership(&self) {
        let m = &self.shared.metrics;
        m.cluster_voters.set(self.conf_state.voters.len() as i64);
        m.cluster_learners
            .set(self.conf_state.learners.len() as i64);
        m.is_learner
            .set(self.conf_state.learners.contains(&self.shared.member_id()) as i64);
    }

    /// A configuration change was applied: the lease must be re-established under it.
    pub(super) fn conf_changed(&mut self, after: ConfState) {
        let now = self.now();
        self.read_lease.on_conf_change_applied(
            &self.conf_state,
            &after,
            now,
            &mut self.read_lease_events,
        );
        self.conf_state = after;
    }
}
