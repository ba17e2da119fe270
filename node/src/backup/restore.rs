//! `metastore-node snapshot status FILE` and `snapshot restore FILE`, like `etcdutl`: a snapshot
//! file (from `etcdctl snapshot save` or the Maintenance Snapshot call) is checked, described,
//! or turned into the data directory of a founding member of a new cluster — the store at the
//! snapshot's revision with its leases, the membership and cluster id from the flags, alarms and
//! the old cluster's removed members and proposal windows dropped.

use std::path::{Path, PathBuf};

use metastore_mvcc::{DiskValues, Store};

use crate::backup::format::{self, FormatError};
use crate::config::Config;
use crate::consensus::bootstrap::{self, BootstrapError};
use crate::replicated::kv_hash::kv_hash;
use crate::replicated::member::cluster_id;
use crate::replicated::state_machine::{SnapshotError, StateMachine};

/// A snapshot that cannot be described or restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The file is not a usable snapshot.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// Its state does not decode.
    #[error("snapshot file {0}: {1}")]
    State(String, SnapshotError),
    /// The target data directory is in use.
    #[error("data dir {0} exists and is not empty: restore needs a new data dir")]
    DataDirInUse(PathBuf),
    /// A scratch or data directory failed.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// The key space could not be read.
    #[error("snapshot key space: {0}")]
    Mvcc(#[from] metastore_mvcc::MvccError),
    /// The new data directory could not be written.
    #[error(transparent)]
    Bootstrap(#[from] BootstrapError),
}

/// What `snapshot status` reports.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// HashKV of the key space at `revision`: equal to a member's HashKV at that revision when
    /// it holds the same history.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// Keys live at `revision`.
    pub total_key: usize,
    /// Size of the file.
    pub total_size: u64,
    /// The file's SHA-256 integrity trailer, hex.
    pub sha256: String,
}

/// Reads the verified file at `path` into a state machine whose values go to a database at
/// `values` (created; the caller removes it).
fn load(path: &Path, values: &Path) -> Result<StateMachine, RestoreError> {
    let v = format::verify(path)?;
    let r = format::open_state(path, &v)?;
    let db = DiskValues::open(values, 64 << 20)?;
    StateMachine::read_snapshot(r, v.state_len, Store::on_disk(db.fresh_handle()?))
        .map_err(|e| RestoreError::State(path.display().to_string(), e))
}

/// A scratch directory for a values database, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(near: &Path) -> Result<Scratch, RestoreError> {
        let dir = near.join(format!(".metastore-restore-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| RestoreError::Io(dir.clone(), e))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks the snapshot file at `path` and describes it.
pub fn status(path: &Path) -> Result<SnapshotStatus, RestoreError> {
    let v = format::verify(path)?;
    let scratch = Scratch::new(&std::env::temp_dir())?;
    let sm = load(path, &scratch.0.join("values"))?;
    let revision = sm.store.current_revision();
    Ok(SnapshotStatus {
        hash: kv_hash(&sm.store, revision)?,
        revision,
        total_key: sm.store.key_count(),
        total_size: v.file_len,
        sha256: v.sha256,
    })
}

/// Writes the data directory `cfg.data_dir` of member `cfg.name` of a new cluster made of the
/// members of `cfg.initial_cluster`, holding the state of the snapshot file at `path`. Refuses a
/// data dir that is not empty, and a corrupt or truncated file, before writing anything.
pub fn restore(path: &Path, cfg: &Config) -> Result<bootstrap::Identity, RestoreError> {
    let dir = &cfg.data_dir;
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(RestoreError::DataDirInUse(dir.clone()));
    }
    std::fs::create_dir_all(dir).map_err(|e| RestoreError::Io(dir.clone(), e))?;
    let written = (|| {
        let scratch = Scratch::new(dir)?;
        let mut sm = load(path, &scratch.0.join("values"))?;
        let members = bootstrap::initial_members(cfg);
        sm.cluster_id = cluster_id(&members.keys().copied().collect::<Vec<_>>());
        sm.members = members;
        sm.removed.clear();
        sm.alarms.clear();
        sm.proposers.clear();
        Ok::<_, RestoreError>(bootstrap::create_restored(cfg, &sm)?)
    })();
    if written.is_err() {
        // Leave nothing a member could start from by mistake.
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}
