//! State-machine snapshots on disk: one file per snapshot, written atomically with a checksum,
//! the newest few kept.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::Snapshot;

/// How many snapshot files survive pruning (the newest, plus one in case it is damaged).
const KEEP: usize = 2;

/// Errors of the snapshot directory.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    /// Reading or writing a file failed.
    #[error("snapshot file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The directory holding this member's snapshots.
pub struct SnapshotFiles {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl SnapshotFiles {
    /// Opens (creating if needed) the snapshot directory.
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
        })
    }

    fn name(snap: &Snapshot) -> String {
        let m = snap.get_metadata();
        format!("{:016x}-{:016x}.snap", m.term, m.index)
    }

    /// Writes a snapshot durably (temp file, fsync, rename, fsync dir), then prunes old ones.
    pub fn save(&self, snap: &Snapshot) -> Result<(), SnapshotFileError> {
        let path = self.dir.join(Self::name(snap));
        let tmp = path.with_extension("tmp");
        let body = snap.write_to_bytes().unwrap_or_default();
        let crc = crc32fast::hash(&body);
        {
            let mut f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&body).map_err(io_err(&tmp))?;
            f.write_all(&crc.to_le_bytes()).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
        }
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.prune()
    }

    fn list(&self) -> Result<Vec<PathBuf>, SnapshotFileError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        // Names sort by (term, index); the index decides which is newest.
        files.sort_by_key(|p| {
            p.file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.split_once('-'))
                .and_then(|(_, i)| u64::from_str_radix(i, 16).ok())
                .unwrap_or(0)
        });
        Ok(files)
    }

    fn prune(&self) -> Result<(), SnapshotFileError> {
        let files = self.list()?;
        if files.len() > KEEP {
            for p in &files[..files.len() - KEEP] {
                fs::remove_file(p).map_err(io_err(p))?;
            }
        }
        Ok(())
    }

    /// Loads the newest intact snapshot; damaged files are skipped with a warning.
    pub fn load_latest(&self) -> Result<Option<Snapshot>, SnapshotFileError> {
        for p in self.list()?.iter().rev() {
            let bytes = fs::read(p).map_err(io_err(p))?;
            if bytes.len() < 4 {
                tracing::warn!(path = %p.display(), "snapshot file too short; skipped");
                continue;
            }
            let (body, crc) = bytes.split_at(bytes.len() - 4);
            let mut want = [0u8; 4];
            want.copy_from_slice(crc);
            if crc32fast::hash(body) != u32::from_le_bytes(want) {
                tracing::warn!(path = %p.display(), "snapshot checksum mismatch; skipped");
                continue;
            }
            match Snapshot::parse_from_bytes(body) {
                Ok(s) => return Ok(Some(s)),
                Err(e) => {
                    tracing::warn!(path = %p.display(), "snapshot undecodable ({e}); skipped")
                }
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(index: u64) -> Snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = index;
        s.mut_metadata().term = 2;
        s.data = vec![index as u8; 10].into();
        s
    }

    #[test]
    fn newest_intact_snapshot_wins_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        assert!(files.load_latest().unwrap().is_none());
        for i in [5, 10, 15] {
            files.save(&snap(i)).unwrap();
        }
        assert_eq!(files.list().unwrap().len(), KEEP);
        assert_eq!(
            files.load_latest().unwrap().unwrap().get_metadata().index,
            15
        );
        // Damage the newest: the previous one is used.
        let newest = files.list().unwrap().pop().unwrap();
        let mut bytes = fs::read(&newest).unwrap();
        bytes[3] ^= 0xff;
        fs::write(&newest, bytes).unwrap();
        assert_eq!(
            files.load_latest().unwrap().unwrap().get_metadata().index,
            10
        );
    }
}
