//! Snapshots: installing one a peer sent (written and decoded off this thread by the transport),
//! and taking one every `--snapshot-count` entries (or when a peer needs a newer one): the state
//! is cloned here in O(1) (persistent maps), written by a background job, and the log is
//! compacted behind it when the job reports back.

use std::time::Instant;

use raft::eraftpb::{Snapshot, SnapshotMetadata};

use super::{LoopError, RaftLoop};
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotWritten};
use crate::node::{LoopMsg, WatchBatch};
use crate::replicated::member::peer_urls;
use metastore_mvcc::ValuesIn;

/// Once the state is larger than [`SNAPSHOT_THROTTLE_FROM`], a periodic snapshot waits until the
/// entries applied since the last one add up to at least 1/SNAPSHOT_STATE_SHARE of the state, so
/// writing snapshots costs at most that many times the log's own bytes.
const SNAPSHOT_STATE_SHARE: u64 = 4;

/// Below this size a snapshot is cheap: `--snapshot-count` alone decides.
const SNAPSHOT_THROTTLE_FROM: u64 = 64 << 20;

impl RaftLoop {
    /// Replaces the state with a snapshot a peer sent, which Raft accepted.
    pub(super) fn install_received_snapshot(&mut self, snap: Snapshot) -> Result<(), LoopError> {
        let meta = snap.get_metadata().clone();
        tracing::info!(
            index = meta.index,
            term = meta.term,
            "installing snapshot from leader"
        );
        let received = self
            .received_snapshots
            .remove(&(meta.index, meta.term))
            .ok_or(LoopError::SnapshotNotReceived {
                index: meta.index,
                term: meta.term,
            })?;
        let received = *received;
        // A snapshot of a cluster at a version this member cannot run under is refused before
        // it reaches the disk.
        crate::replicated::version::check_compatible(
            received.state.cluster_version(),
            crate::replicated::version::member_version(),
        )?;
        // On disk before the log forgets the entries it replaces; a values database that came
        // with it replaces this member's (a crash between the two is finished at restart).
        // Kept before the snapshot is adopted: a failure from here on leaves it for the restart
        // (the error stops the member), never deletes it.
        let values = received.values_file.map(|v| v.keep());
        self.snapshots.adopt(received.file, &meta)?;
        if let Some(values) = values {
            values.adopt(&crate::consensus::bootstrap::values_path(
                &self.shared.config.data_dir,
            ))?;
            self.shared.metrics.snapshot_images_installed.inc();
        }
        let sm = received.state;
        let peers = peer_urls(&sm.members);
        let revision = sm.store.current_revision();
        let now = self.now();
        self.key_leases.restart(&sm.leases, now);
        // Values the old state held and the new one does not reference go, off this thread.
        crate::consensus::bootstrap::sweep_in_background(sm.store.clone());
        // The old state is freed after the lock is released.
        let old = std::mem::replace(&mut *self.shared.state.write(), sm);
        drop(old);
        // Watchers catch up from the new state's history.
        let marker = self.watch_feed.admit(WatchBatch {
            revision,
            events: vec![],
        });
        let _ = self.shared.watch.send(marker);
        self.applied = meta.index;
        self.snapshot_index = meta.index;
        self.conf_changed(meta.get_conf_state().clone());
        self.raw.mut_store().set_snapshot(meta);
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

    /// Starts a snapshot every `--snapshot-count` entries, or when a peer needs a newer one:
    /// the state is cloned (O(1)) and written by a background job; one at a time.
    pub(super) fn maybe_snapshot(&mut self) -> Result<(), LoopError> {
        if self.snapshot_in_flight {
            return Ok(());
        }
        let cfg = &self.shared.config;
        // A peer needs a snapshot newer than the stored one (e.g. a new learner).
        let wanted = self.raw.store().take_snapshot_request() && self.applied > self.snapshot_index;
        if !wanted {
            if self.applied < self.snapshot_index + cfg.snapshot_count {
                return Ok(());
            }
            // A snapshot writes the index (values on disk are referenced, not rewritten): not
            // before the log has grown by a share of it, or a large index with small entries
            // would be rewritten every few seconds and keep the disk (and the log's fsyncs) busy.
            let state = {
                let sm = self.shared.state.read();
                sm.held_bytes() - sm.store.value_bytes_on_disk()
            };
            if state > SNAPSHOT_THROTTLE_FROM
                && self.applied_bytes_since_snapshot < state / SNAPSHOT_STATE_SHARE
            {
                return Ok(());
            }
        }
        let mut meta = SnapshotMetadata::default();
        meta.index = self.applied;
        meta.term = self.raw.raft.raft_log.term(self.applied)?;
        meta.set_conf_state(self.conf_state.clone());
        let view = self.shared.state.read().clone();
        self.snapshot_compaction_mark = view.store.compaction_mark();
        let files = self.snapshots.clone();
        let tx = self.loopback.clone();
        self.snapshot_in_flight = true;
        self.applied_bytes_since_snapshot = 0;
        self.jobs.spawn(
            "snapshot",
            Box::new(move || {
                let started = Instant::now();
                // The values stay in the values database: durable before the snapshot that
                // references them.
                let result = files
                    .write(&meta, |w| {
                        if let Some(values) = view.store.disk_values() {
                            values.sync().map_err(|e| e.to_string())?;
                        }
                        view.write_snapshot(w, ValuesIn::Store)
                            .map_err(|e| e.to_string())
                    })
                    .map(|bytes| SnapshotWritten {
                        meta,
                        bytes,
                        took: started.elapsed(),
                    });
                // Release the view before reporting: writes stop copying shared nodes.
                drop(view);
                let _ = tx.send(LoopMsg::SnapshotWritten(result));
            }),
        );
        Ok(())
    }

    /// A background snapshot finished: serve it to peers and compact the log behind it.
    pub(super) fn snapshot_written(
        &mut self,
        result: Result<SnapshotWritten, SnapshotFileError>,
    ) -> Result<(), LoopError> {
        self.snapshot_in_flight = false;
        let w = result?;
        if w.meta.index <= self.snapshot_index {
            // A snapshot from the leader replaced the state meanwhile.
            return Ok(());
        }
        let index = w.meta.index;
        // The previous snapshot is gone: values compacted before this one was taken may go too.
        self.shared
            .state
            .write()
            .store
            .release_deletes(self.snapshot_compaction_mark);
        let compact_to = index.saturating_sub(self.shared.config.snapshot_catchup_entries);
        self.raw.mut_store().install_snapshot(w.meta, compact_to)?;
        self.snapshot_index = index;
        self.purge_log();
        let m = &self.shared.metrics;
        m.snapshots_saved.inc();
        m.snapshot_write_seconds.observe(w.took.as_secs_f64());
        tracing::info!(
            index,
            compacted_to = compact_to,
            bytes = w.bytes,
            took_ms = w.took.as_millis() as u64,
            "saved snapshot"
        );
        Ok(())
    }

    /// Reclaims the log's compacted files in a background job, one at a time.
    fn purge_log(&mut self) {
        if self
            .purge_in_flight
            .swap(true, std::sync::atomic::Ordering::AcqRel)
        {
            return;
        }
        let purger = self.raw.store().purger();
        let in_flight = self.purge_in_flight.clone();
        self.jobs.spawn(
            "log-purge",
            Box::new(move || {
                if let Err(e) = purger.purge() {
                    // The disk is not reclaimed this time; the next compaction tries again.
                    tracing::warn!("reclaiming compacted log files failed: {e}");
                }
                in_flight.store(false, std::sync::atomic::Ordering::Release);
            }),
        );
    }
}
