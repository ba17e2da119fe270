//! Durable Raft log on `raft-engine`: entries, hard state, conf state and the truncation point,
//! exposed to raft-rs through its `Storage` trait.
//!
//! All writes go through [`RaftLog::persist`] in one `LogBatch` per ready cycle, so the entries and
//! hard state of a cycle share one fsync (group commit).

use std::path::Path;
use std::sync::Arc;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use raft_engine::{Command, Config as EngineConfig, Engine, LogBatch, MessageExt, ReadableSize};

/// The one Raft group a MetaStore member hosts inside raft-engine.
const GROUP: u64 = 1;
const KEY_HARD_STATE: &[u8] = b"hard_state";
const KEY_CONF_STATE: &[u8] = b"conf_state";
/// Index and term of the last entry removed from the log (the entry before `first_index`).
const KEY_TRUNCATED: &[u8] = b"truncated";

/// How much disk the log may hold before compacted entries are reclaimed. raft-engine's default
/// purge threshold is 10 GiB — a member on a 1 GiB volume would fill it before reclaiming
/// anything — so MetaStore sets its own: whole files of compacted entries are deleted (and the few
/// live entries in them rewritten) once the log passes `purge_threshold`. raft-engine keeps up to
/// 1.5 × `purge_threshold` of purged files to recycle, so the log's footprint stays below about
/// 2.5 × `purge_threshold` plus the entries not yet compacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogLimits {
    /// Size of one log file.
    pub file_size: u64,
    /// Total size past which compacted files are reclaimed.
    pub purge_threshold: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            file_size: 16 << 20,
            purge_threshold: 64 << 20,
        }
    }
}

impl LogLimits {
    /// Limits sized to a member's space quota: the purge threshold is 1/32 of it (64 MiB at
    /// etcd's default 2 GiB quota), between 8 MiB and 256 MiB, in files of a quarter of that.
    pub fn for_quota(quota_backend_bytes: u64) -> Self {
        let purge_threshold = (quota_backend_bytes / 32).clamp(8 << 20, 256 << 20);
        LogLimits {
            file_size: purge_threshold / 4,
            purge_threshold,
        }
    }
}

/// Reclaims the log's compacted files; safe to run beside the Raft loop's writes.
#[derive(Clone)]
pub struct LogPurger(Arc<Engine>);

impl LogPurger {
    /// Deletes whole files of compacted entries once the log passes its purge threshold.
    pub fn purge(&self) -> Result<(), LogError> {
        self.0.purge_expired_files()?;
        Ok(())
    }
}

/// Errors of the durable log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// raft-engine failed to open, read or write.
    #[error("raft log engine: {0}")]
    Engine(#[from] raft_engine::Error),
    /// A stored record did not decode.
    #[error("raft log record: {0}")]
    Decode(#[from] protobuf::ProtobufError),
}

struct EntryExt;
impl MessageExt for EntryExt {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

/// What one ready cycle asks to make durable.
#[derive(Default)]
pub struct PersistBatch {
    /// New entries (may overwrite a conflicting tail).
    pub entries: Vec<Entry>,
    /// New hard state, if it changed.
    pub hard_state: Option<HardState>,
    /// New conf state, if it changed.
    pub conf_state: Option<ConfState>,
    /// A snapshot received from the leader: the log is replaced by it.
    pub snapshot: Option<SnapshotMetadata>,
}

impl PersistBatch {
    /// True when nothing needs writing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
            && self.hard_state.is_none()
            && self.conf_state.is_none()
            && self.snapshot.is_none()
    }
}

/// The Raft log of one member. The ready loop is its only writer.
pub struct RaftLog {
    engine: Arc<Engine>,
    hard_state: HardState,
    conf_state: ConfState,
    truncated_index: u64,
    truncated_term: u64,
    /// Latest snapshot this member can send (its metadata: the transport streams the body from
    /// its file); installed by the ready loop.
    snapshot: Option<SnapshotMetadata>,
    /// Raft asked for a snapshot the stored one cannot serve (too old, or its configuration
    /// lacks the recipient, which raft-rs would refuse): the ready loop should take a new one.
    snapshot_wanted: std::sync::atomic::AtomicBool,
}

impl RaftLog {
    /// Opens (or creates) the log under `dir` with the default [`LogLimits`].
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        Self::open_with(dir, LogLimits::default())
    }

    /// Opens (or creates) the log under `dir`, reclaiming compacted files past `limits`.
    pub fn open_with(dir: &Path, limits: LogLimits) -> Result<Self, LogError> {
        let cfg = EngineConfig {
            dir: dir.to_string_lossy().into_owned(),
            target_file_size: ReadableSize(limits.file_size),
            purge_threshold: ReadableSize(limits.purge_threshold.max(limits.file_size)),
            ..Default::default()
        };
        let engine = Arc::new(Engine::open(cfg)?);
        let hard_state = engine
            .get_message::<HardState>(GROUP, KEY_HARD_STATE)?
            .unwrap_or_default();
        let conf_state = engine
            .get_message::<ConfState>(GROUP, KEY_CONF_STATE)?
            .unwrap_or_default();
        let truncated = engine
            .get_message::<SnapshotMetadata>(GROUP, KEY_TRUNCATED)?
            .unwrap_or_default();
        Ok(RaftLog {
            engine,
            hard_state,
            conf_state,
            truncated_index: truncated.index,
            truncated_term: truncated.term,
            snapshot: None,
            snapshot_wanted: Default::default(),
        })
    }

    /// True when this log has never been initialized (no conf state, no entries).
    pub fn is_blank(&self) -> bool {
        self.conf_state.voters.is_empty()
            && self.conf_state.learners.is_empty()
            && self.engine.last_index(GROUP).is_none()
            && self.truncated_index == 0
    }

    /// The stored hard state.
    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    /// The stored conf state.
    pub fn conf_state(&self) -> &ConfState {
        &self.conf_state
    }

    /// Index of the last entry removed from the log.
    pub fn truncated_index(&self) -> u64 {
        self.truncated_index
    }

    /// Makes a batch durable with one fsync.
    pub fn persist(&mut self, batch: PersistBatch) -> Result<(), LogError> {
        let mut lb = LogBatch::default();
        if let Some(meta) = &batch.snapshot {
            // The snapshot replaces the whole log: raft-engine refuses holes, so start over.
            lb.add_command(GROUP, Command::Clean);
            self.truncated_index = meta.index;
            self.truncated_term = meta.term;
            self.conf_state = meta.get_conf_state().clone();
            self.hard_state.commit = self.hard_state.commit.max(meta.index);
            self.hard_state.term = self.hard_state.term.max(meta.term);
            let mut t = SnapshotMetadata::default();
            t.index = meta.index;
            t.term = meta.term;
            lb.put_message(GROUP, KEY_TRUNCATED.to_vec(), &t)?;
            lb.put_message(GROUP, KEY_CONF_STATE.to_vec(), &self.conf_state)?;
            lb.put_message(GROUP, KEY_HARD_STATE.to_vec(), &self.hard_state)?;
        }
        if !batch.entries.is_empty() {
            lb.add_entries::<EntryExt>(GROUP, &batch.entries)?;
        }
        if let Some(hs) = batch.hard_state {
            self.hard_state = hs;
            lb.put_message(GROUP, KEY_HARD_STATE.to_vec(), &self.hard_state)?;
        }
        if let Some(cs) = batch.conf_state {
            self.conf_state = cs;
            lb.put_message(GROUP, KEY_CONF_STATE.to_vec(), &self.conf_state)?;
        }
        if !lb.is_empty() {
            self.engine.write(&mut lb, true)?;
        }
        Ok(())
    }

    /// Records a new commit index; written lazily with the next batch (Raft recovers commit).
    pub fn set_commit(&mut self, commit: u64) {
        self.hard_state.commit = self.hard_state.commit.max(commit);
    }

    /// Installs the latest local snapshot, then drops log entries up to `compact_to`
    /// (which must not exceed the snapshot's index).
    pub fn install_snapshot(
        &mut self,
        snapshot: SnapshotMetadata,
        compact_to: u64,
    ) -> Result<(), LogError> {
        let compact_to = compact_to.min(snapshot.index);
        self.snapshot = Some(snapshot);
        if compact_to <= self.truncated_index {
            return Ok(());
        }
        let term = self.term_of(compact_to)?;
        let mut t = SnapshotMetadata::default();
        t.index = compact_to;
        t.term = term;
        let mut lb = LogBatch::default();
        lb.put_message(GROUP, KEY_TRUNCATED.to_vec(), &t)?;
        lb.add_command(
            GROUP,
            Command::Compact {
                index: compact_to + 1,
            },
        );
        self.engine.write(&mut lb, true)?;
        self.truncated_index = compact_to;
        self.truncated_term = term;
        Ok(())
    }

    /// What reclaims whole files of compacted entries: raft-engine rewrites the few live entries
    /// in them, work proportional to the purge threshold, so the Raft loop hands it to a
    /// background job instead of doing it after each compaction.
    pub fn purger(&self) -> LogPurger {
        LogPurger(self.engine.clone())
    }

    /// True (once) when Raft asked for a snapshot the stored one could not serve.
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Remembers a snapshot received from the leader so it can be served onwards.
    pub fn set_snapshot(&mut self, snapshot: SnapshotMetadata) {
        self.snapshot = Some(snapshot);
    }

    /// Flushes everything to disk (used at shutdown).
    pub fn sync(&self) -> Result<(), LogError> {
        self.engine.sync()?;
        Ok(())
    }

    fn last(&self) -> u64 {
        match self.engine.last_index(GROUP) {
            Some(i) if i > self.truncated_index => i,
            _ => self.truncated_index,
        }
    }

    fn first(&self) -> u64 {
        self.truncated_index + 1
    }

    fn term_of(&self, idx: u64) -> Result<u64, LogError> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        Ok(self
            .engine
            .get_entry::<EntryExt>(GROUP, idx)?
            .map(|e| e.term)
            .unwrap_or(0))
    }
}

fn store_err(e: impl std::fmt::Display) -> raft::Error {
    raft::Error::Store(StorageError::Other(e.to_string().into()))
}

/// True when member `to` is part of the snapshot's configuration (raft-rs ignores a snapshot
/// that does not include the recipient).
fn includes(s: &SnapshotMetadata, to: u64) -> bool {
    let cs = s.get_conf_state();
    cs.voters.contains(&to)
        || cs.learners.contains(&to)
        || cs.voters_outgoing.contains(&to)
        || cs.learners_next.contains(&to)
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _ctx: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = Vec::with_capacity((high - low) as usize);
        let max = max_size.into().map(|m| m as usize);
        self.engine
            .fetch_entries_to::<EntryExt>(GROUP, low, high, max, &mut out)
            .map_err(store_err)?;
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated_index {
            return Ok(self.truncated_term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > self.last() {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        match self.engine.get_entry::<EntryExt>(GROUP, idx) {
            Ok(Some(e)) => Ok(e.term),
            Ok(None) => Err(raft::Error::Store(StorageError::Unavailable)),
            Err(e) => Err(store_err(e)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        match &self.snapshot {
            Some(s) if s.index >= request_index && includes(s, to) => {
                // The body is not here: the transport streams it from the snapshot file.
                let mut snap = Snapshot::default();
                snap.set_metadata(s.clone());
                Ok(snap)
            }
            _ => {
                self.snapshot_wanted
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage;

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e.data = vec![index as u8].into();
        e
    }

    #[test]
    fn entries_and_state_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut log = RaftLog::open(dir.path()).unwrap();
            assert!(log.is_blank());
            let mut hs = HardState::default();
            hs.term = 2;
            hs.vote = 7;
            hs.commit = 2;
            let mut cs = ConfState::default();
            cs.voters = vec![7, 8, 9];
            log.persist(PersistBatch {
                entries: (1..=3).map(|i| entry(i, 2)).collect(),
                hard_state: Some(hs),
                conf_state: Some(cs),
                snapshot: None,
            })
            .unwrap();
            // A conflicting tail overwrites entry 3 onwards.
            log.persist(PersistBatch {
                entries: vec![entry(3, 3), entry(4, 3)],
                ..Default::default()
            })
            .unwrap();
        }
        let log = RaftLog::open(dir.path()).unwrap();
        assert!(!log.is_blank());
        let st = log.initial_state().unwrap();
        assert_eq!(st.hard_state.vote, 7);
        assert_eq!(st.conf_state.voters, vec![7, 8, 9]);
        assert_eq!(log.first_index().unwrap(), 1);
        assert_eq!(log.last_index().unwrap(), 4);
        assert_eq!(log.term(3).unwrap(), 3);
        let ents = log
            .entries(1, 5, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(
            ents.iter().map(|e| e.term).collect::<Vec<_>>(),
            vec![2, 2, 3, 3]
        );
    }

    #[test]
    fn compaction_and_received_snapshot_move_first_index() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RaftLog::open(dir.path()).unwrap();
        log.persist(PersistBatch {
            entries: (1..=10).map(|i| entry(i, 1)).collect(),
            ..Default::default()
        })
        .unwrap();
        let mut snap = SnapshotMetadata::default();
        snap.index = 8;
        snap.term = 1;
        snap.mut_conf_state().voters = vec![1, 2];
        log.install_snapshot(snap, 6).unwrap();
        assert_eq!(log.first_index().unwrap(), 7);
        assert_eq!(log.term(6).unwrap(), 1);
        assert!(matches!(
            log.entries(5, 8, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
        assert_eq!(log.snapshot(8, 2).unwrap().get_metadata().index, 8);
        assert!(!log.take_snapshot_request());
        assert!(log.snapshot(9, 2).is_err(), "too old");
        assert!(log.take_snapshot_request(), "a newer one is wanted");
        assert!(!log.take_snapshot_request());
        // A snapshot whose configuration lacks the recipient would be ignored by raft-rs.
        assert!(log.snapshot(8, 3).is_err());
        assert!(log.take_snapshot_request());

        // A leader's snapshot far ahead replaces the log entirely.
        let mut meta = SnapshotMetadata::default();
        meta.index = 50;
        meta.term = 4;
        meta.mut_conf_state().voters = vec![1, 2, 3];
        log.persist(PersistBatch {
            snapshot: Some(meta),
            ..Default::default()
        })
        .unwrap();
        log.persist(PersistBatch {
            entries: vec![entry(51, 4)],
            ..Default::default()
        })
        .unwrap();
        drop(log);
        let log = RaftLog::open(dir.path()).unwrap();
        assert_eq!(log.first_index().unwrap(), 51);
        assert_eq!(log.last_index().unwrap(), 51);
        assert_eq!(log.term(50).unwrap(), 4);
        assert_eq!(log.conf_state().voters, vec![1, 2, 3]);
        assert_eq!(log.hard_state().commit, 50);
    }

    fn dir_size(dir: &std::path::Path) -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    }

    #[test]
    fn compaction_reclaims_the_disk_past_the_purge_threshold() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            file_size: 1 << 20,
            purge_threshold: 4 << 20,
        };
        let mut log = RaftLog::open_with(dir.path(), limits).unwrap();
        // Incompressible payloads (raft-engine compresses batches).
        let big = |i: u64| {
            let mut e = entry(i, 1);
            let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            e.data = (0..100 << 10)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect::<Vec<u8>>()
                .into();
            e
        };
        // 24 MiB of entries, a batch at a time, as ready cycles write them.
        for chunk in (1..=240u64).collect::<Vec<_>>().chunks(10) {
            log.persist(PersistBatch {
                entries: chunk.iter().map(|i| big(*i)).collect(),
                ..Default::default()
            })
            .unwrap();
        }
        assert!(dir_size(dir.path()) > 20 << 20);
        let mut snap = SnapshotMetadata::default();
        snap.index = 235;
        snap.term = 1;
        log.install_snapshot(snap, 230).unwrap();
        log.purger().purge().unwrap();
        // What stays: the live tail, the files not yet over the threshold, and up to 1.5 x the
        // threshold of purged files raft-engine keeps to recycle (files overshoot their target
        // by up to one batch). Without the limits (raft-engine's 10 GiB default) all 24 MiB stay.
        let after = dir_size(dir.path());
        assert!(after < 16 << 20, "{after} bytes left after compaction");
        // What is left still reads back, and survives a restart.
        assert_eq!(log.first_index().unwrap(), 231);
        drop(log);
        let log = RaftLog::open_with(dir.path(), limits).unwrap();
        let ents = log
            .entries(231, 241, None, GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(ents.len(), 10);
        assert_eq!(ents[9].data.len(), 100 << 10);
    }
}
