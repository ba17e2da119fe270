//! Snapshots: installing one the leader sent, and taking one every `--snapshot-count` entries
//! (or when a peer needs a newer one), after which the log is compacted.

use std::sync::Arc;
use std::time::Instant;

use raft::eraftpb::Snapshot;

use super::{LoopError, RaftLoop};
use crate::node::WatchBatch;
use crate::replicated::member::peer_urls;
use crate::replicated::state_machine::StateMachine;

impl RaftLoop {
    /// Replaces the state with a snapshot the leader sent.
    pub(super) fn install_received_snapshot(&mut self, snap: Snapshot) -> Result<(), LoopError> {
        let meta = snap.get_metadata().clone();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installing snapshot from leader"
        );
        let sm = StateMachine::from_snapshot(&snap.data)?;
        // On disk before the log forgets the entries it replaces.
        self.snapshots.save(&snap)?;
        let peers = peer_urls(&sm.members);
        let revision = sm.store.current_revision();
        let now = self.now();
        self.key_leases.restart(&sm.leases, now);
        *self.shared.state.write() = sm;
        // Watchers catch up from the new state's history.
        let _ = self.shared.watch.send(Arc::new(WatchBatch {
            revision,
            events: vec![],
        }));
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        self.conf_changed(meta.get_conf_state().clone());
        self.raw.mut_store().set_snapshot(snap);
        self.shared.applied.send_replace(self.applied);
        self.outbox.set_peers(&peers);
        self.publish_membership();
        self.shared.metrics.snapshots_installed.inc();
        if self
            .shared
            .state
            .read()
            .removed
            .contains(&self.shared.member_id())
        {
            self.removed_from_cluster();
        }
        Ok(())
    }

    /// Saves a snapshot every `--snapshot-count` entries, or when a peer needs a newer one,
    /// and compacts the log behind it.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), LoopError> {
        let cfg = &self.shared.config;
        // A peer needs a snapshot newer than the stored one (e.g. a new learner).
        let wanted = self.raw.store().take_snapshot_request() && self.applied > self.snapshot_index;
        if !wanted && self.applied < self.snapshot_index + cfg.snapshot_count {
            return Ok(());
        }
        let started = Instant::now();
        let data = self.shared.state.read().to_snapshot()?;
        let mut snap = Snapshot::default();
        snap.data = data.into();
        let meta = snap.mut_metadata();
        meta.index = self.applied;
        meta.term = self.raw.raft.raft_log.term(self.applied)?;
        meta.set_conf_state(self.conf_state.clone());
        self.snapshots.save(&snap)?;
        let compact_to = self.applied.saturating_sub(cfg.snapshot_catchup_entries);
        self.raw.mut_store().install_snapshot(snap, compact_to)?;
        self.snapshot_index = self.applied;
        self.shared.metrics.snapshots_saved.inc();
        tracing::info!(
            index = self.applied,
            compacted_to = compact_to,
            took_ms = started.elapsed().as_millis() as u64,
            "saved snapshot"
        );
        Ok(())
    }
}
