//! Applying committed entries, one function per entry kind: client commands to the state
//! machine, configuration changes to Raft and the member list. The proposer of each entry is
//! answered in one place ([`RaftLoop::answer_proposer`]).

use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType};
use raft::StateRole;

use super::{LoopError, RaftLoop};
use crate::auth::AuthChange;
use crate::consensus::log::PersistBatch;
use crate::node::{NodeError, WatchBatch};
use crate::raft_context::ProposalContext;
use crate::replicated::command::{ApplyError, Command, CommandResponse, DecodeError};
use crate::replicated::member::peer_urls;
use crate::replicated::membership::{MemberChange, MembershipError};
use crate::replicated::state_machine::{ProposalAdmission, StateMachine};
use crate::replicated::version::{check_compatible, member_version};
use metastore_mvcc::MvccError;

/// What a run of applied entries changed, acted on once the run is applied.
#[derive(Default)]
struct Applied {
    /// The Raft configuration changed.
    members_changed: bool,
    /// Member metadata (peer URLs, names) changed.
    peers_changed: bool,
    /// This member was removed.
    removed_self: bool,
    /// Watch events, one batch per revision.
    watch: Vec<WatchBatch>,
}

impl RaftLoop {
    pub(super) fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), LoopError> {
        if entries.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let mut out = Applied::default();
        {
            let shared = self.shared.clone();
            let mut sm = shared.state.write();
            for e in entries {
                if e.index <= self.applied {
                    continue;
                }
                match e.get_entry_type() {
                    EntryType::EntryNormal if !e.data.is_empty() => {
                        self.apply_command(&mut sm, &e, &mut out)?
                    }
                    EntryType::EntryNormal => {}
                    EntryType::EntryConfChange => self.apply_conf_change(&e, &mut out)?,
                    EntryType::EntryConfChangeV2 => {
                        self.apply_conf_change_v2(&mut sm, &e, &mut out)?
                    }
                }
                self.applied = e.index;
                self.applied_bytes_since_snapshot += e.data.len() as u64;
            }
            // Readers see the batch only once its values are in the database.
            sm.store.commit()?;
        }
        self.after_apply(out)?;
        self.shared
            .metrics
            .apply_seconds
            .observe(started.elapsed().as_secs_f64());
        Ok(())
    }

    /// A client command (or one the leader proposed, e.g. a key-lease revocation).
    fn apply_command(
        &mut self,
        sm: &mut StateMachine,
        e: &Entry,
        out: &mut Applied,
    ) -> Result<(), LoopError> {
        if let Some(ctx) = ProposalContext::decode(&e.context) {
            let admission = sm.admit_proposal(ctx.member, ctx.seq);
            if admission != ProposalAdmission::Apply {
                // Every member skips it alike.
                self.shared.metrics.proposals_duplicate.inc();
                tracing::debug!(
                    index = e.index,
                    member = ctx.member,
                    seq = ctx.seq,
                    ?admission,
                    "skipping a proposal"
                );
                if ctx.member == self.shared.member_id() {
                    let last = sm.proposers.get(&ctx.member).map_or(0, |w| w.last);
                    self.proposal_seq = self.proposal_seq.max(last);
                    if admission == ProposalAdmission::Overtaken {
                        // It never took effect: its proposer may try again.
                        self.answer_proposer(
                            &e.context,
                            Err(NodeError::Retry("proposal overtaken by a newer one".into())),
                        );
                    }
                }
                return Ok(());
            }
        }
        let cmd = match Command::decode(&e.data) {
            Ok(cmd) => cmd,
            // Skipping a kind the others apply would make this member diverge: stop instead.
            Err(source @ DecodeError::UnknownKind { .. }) => {
                return Err(LoopError::UnknownEntry {
                    index: e.index,
                    source,
                })
            }
            // Every member skips the same entry, so they stay identical.
            Err(err) => {
                tracing::error!(index = e.index, "skipping entry: {err}");
                return Ok(());
            }
        };
        let sets_version = matches!(cmd, Command::ClusterVersion(_));
        out.peers_changed |= matches!(cmd, Command::Member(_));
        let key_lease_op = match cmd.request() {
            Command::LeaseGrant(r) => Some((r.id, Some(r.ttl))),
            Command::LeaseRevoke(r) => Some((r.id, None)),
            _ => None,
        };
        let token_prefix = match &cmd {
            Command::Auth {
                change: AuthChange::Authenticate { prefix, .. },
                ..
            } => Some(prefix.clone()),
            _ => None,
        };
        let mut result = sm.apply(cmd);
        if let Err(ApplyError::Mvcc(e @ MvccError::Storage(_))) = &result {
            return Err(LoopError::Values(e.clone()));
        }
        if let Ok(CommandResponse::Auth { effect, token, .. }) = &mut result {
            *token = self
                .shared
                .config
                .auth
                .tokens
                .applied(effect, token_prefix, e.index);
        }
        if sets_version {
            tracing::info!(version = %sm.cluster_version(), "cluster version set");
            check_compatible(sm.cluster_version(), member_version())?;
        }
        match (key_lease_op, &result) {
            (Some((id, Some(ttl))), Ok(_)) => {
                let now = self.now();
                self.key_leases.granted(id, ttl, now);
            }
            // Revoked, or already gone: stop tracking it either way.
            (Some((id, None)), _) => self.key_leases.revoked(id),
            _ => {}
        }
        if !sm.events.is_empty() {
            out.watch.push(WatchBatch {
                revision: sm.store.current_revision(),
                events: std::mem::take(&mut sm.events),
            });
        }
        self.answer_proposer(&e.context, Ok(result));
        Ok(())
    }

    /// A v1 configuration change (only the bootstrap entries carry these).
    fn apply_conf_change(&mut self, e: &Entry, out: &mut Applied) -> Result<(), LoopError> {
        let cc = ConfChange::parse_from_bytes(&e.data).map_err(raft::Error::CodecError)?;
        let after = self.raw.apply_conf_change(&cc)?;
        self.conf_changed(after);
        out.members_changed = true;
        Ok(())
    }

    /// A membership change: the Raft configuration, then the member list it carries.
    fn apply_conf_change_v2(
        &mut self,
        sm: &mut StateMachine,
        e: &Entry,
        out: &mut Applied,
    ) -> Result<(), LoopError> {
        let cc = ConfChangeV2::parse_from_bytes(&e.data).map_err(raft::Error::CodecError)?;
        let change = MemberChange::decode(&cc.context).ok();
        let me = self.shared.member_id();
        if change == Some(MemberChange::Remove(me)) && self.raw.raft.state == StateRole::Leader {
            // A leader outside its own configuration makes raft-rs panic the next time it
            // commits (its progress is gone; raft.rs 943, 1055). Step down first, as etcd's raft
            // does on removal; the others elect a leader among themselves.
            let term = self.raw.raft.term;
            self.raw.raft.become_follower(term, raft::INVALID_ID);
            tracing::info!("stepping down: this leader is being removed from the cluster");
        }
        let outcome = match self.raw.apply_conf_change(&cc) {
            Ok(after) => {
                self.conf_changed(after);
                if let Some(c) = &change {
                    sm.apply_member_change(c);
                    if *c == MemberChange::Remove(self.shared.member_id()) {
                        out.removed_self = true;
                    }
                }
                out.members_changed = true;
                Ok(Ok(CommandResponse::Members(
                    sm.members.values().cloned().collect(),
                )))
            }
            // The same refusal on every member: nothing changes anywhere.
            Err(err) => {
                tracing::warn!(index = e.index, "raft refused a conf change: {err}");
                Err(NodeError::Membership(MembershipError::Rejected(
                    err.to_string(),
                )))
            }
        };
        self.answer_proposer(&e.context, outcome);
        Ok(())
    }

    /// Persists a changed configuration, tells the transport about changed peers, leaves the
    /// cluster when removed, and publishes the applied index and the watch events.
    fn after_apply(&mut self, out: Applied) -> Result<(), LoopError> {
        if out.members_changed {
            self.raw.mut_store().persist(PersistBatch {
                conf_state: Some(self.conf_state.clone()),
                ..Default::default()
            })?;
        }
        if out.members_changed || out.peers_changed {
            self.outbox
                .set_peers(&peer_urls(&self.shared.state.read().members));
            self.publish_membership();
        }
        if out.removed_self {
            self.removed_from_cluster();
        }
        self.shared.applied.send_replace(self.applied);
        for b in out.watch {
            // No receivers is fine: nobody watches.
            let _ = self.shared.watch.send(self.watch_feed.admit(b));
        }
        Ok(())
    }
}
