//! `metastore-node snapshot save FILE --endpoints URL[,URL…]`: streams a member's snapshot (the
//! Maintenance Snapshot call, as `etcdctl snapshot save` does) into FILE. The stream is checked
//! against the file's SHA-256 trailer before the file takes its name (written as `FILE.part`,
//! fsynced, renamed, directory fsynced), so FILE is either complete or absent. Used by the
//! operator's backup Jobs that write to a PersistentVolumeClaim.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// A saved snapshot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Saved {
    /// The store's revision in the snapshot.
    pub revision: i64,
    /// Bytes written.
    pub size: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
}

/// Why a save failed.
#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    /// No member answered, or the stream broke.
    #[error("snapshot stream: {0}")]
    Stream(#[from] etcd_client::Error),
    /// Writing the file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The bytes received are not a whole snapshot.
    #[error("snapshot damaged in transit: {0}")]
    Integrity(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SaveError + '_ {
    move |source| SaveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Checks a snapshot's trailer as it streams by: the SHA-256 of everything before the last 32
/// bytes.
struct TrailerCheck {
    hasher: Sha256,
    tail: Vec<u8>,
}

impl TrailerCheck {
    fn update(&mut self, data: &[u8]) {
        self.tail.extend_from_slice(data);
        if self.tail.len() > 32 {
            let cut = self.tail.len() - 32;
            self.hasher.update(&self.tail[..cut]);
            self.tail.drain(..cut);
        }
    }

    fn holds(self) -> bool {
        self.tail.len() == 32 && self.hasher.finalize()[..] == self.tail[..]
    }
}

/// Streams a snapshot from any of `endpoints` into `file` (see the module doc).
pub async fn save(
    endpoints: &[String],
    options: Option<etcd_client::ConnectOptions>,
    file: &Path,
) -> Result<Saved, SaveError> {
    let mut client = etcd_client::Client::connect(endpoints, options).await?;
    let mut stream = client.snapshot().await?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let mut part_name = file.as_os_str().to_os_string();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let result = async {
        let mut out = std::fs::File::create(&part).map_err(io(&part))?;
        let (mut revision, mut size, mut last_remaining) = (0, 0u64, None);
        let mut whole = Sha256::new();
        let mut check = TrailerCheck {
            hasher: Sha256::new(),
            tail: Vec::with_capacity(64),
        };
        while let Some(m) = stream.message().await? {
            if revision == 0 {
                revision = m.header().map_or(0, |h| h.revision());
            }
            let blob = m.blob();
            whole.update(blob);
            check.update(blob);
            size += blob.len() as u64;
            last_remaining = Some(m.remaining_bytes());
            out.write_all(blob).map_err(io(&part))?;
        }
        if last_remaining != Some(0) {
            return Err(SaveError::Integrity(format!(
                "cut short after {size} bytes"
            )));
        }
        if !check.holds() {
            return Err(SaveError::Integrity(format!(
                "the SHA-256 trailer does not match the {size} bytes received"
            )));
        }
        out.sync_all().map_err(io(&part))?;
        let sha256 = whole
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(Saved {
            revision,
            size,
            sha256,
        })
    }
    .await;
    match result {
        Ok(saved) => {
            std::fs::rename(&part, file).map_err(io(file))?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io(dir))?;
            }
            Ok(saved)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// Keeps the newest `keep` files of `dir` named `<prefix><digits>.db` (a schedule's backups,
/// named by their unix time) and deletes the others; returns the deleted names.
pub fn prune(dir: &Path, prefix: &str, keep: usize) -> std::io::Result<Vec<String>> {
    let mut scheduled: Vec<(u64, String)> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            let stamp = name.strip_prefix(prefix)?.strip_suffix(".db")?;
            let n: u64 = stamp.parse().ok()?;
            stamp
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then_some((n, name))
        })
        .collect();
    scheduled.sort();
    let cut = scheduled.len().saturating_sub(keep);
    let mut deleted = Vec::new();
    for (_, name) in scheduled.into_iter().take(cut) {
        std::fs::remove_file(dir.join(&name))?;
        deleted.push(name);
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_keeps_the_newest_scheduled_files_only() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "demo-100.db",
            "demo-300.db",
            "demo-200.db",
            "demo-manual.db",
            "demo-400.db.part",
            "other-50.db",
        ] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let deleted = prune(dir.path(), "demo-", 2).unwrap();
        assert_eq!(deleted, ["demo-100.db"]);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "demo-200.db",
                "demo-300.db",
                "demo-400.db.part",
                "demo-manual.db",
                "other-50.db"
            ]
        );
    }

    #[test]
    fn the_trailer_check_finds_a_changed_byte() {
        let body = b"a snapshot body".to_vec();
        let mut file = body.clone();
        file.extend_from_slice(&Sha256::digest(&body));
        let check = |bytes: &[u8]| {
            let mut c = TrailerCheck {
                hasher: Sha256::new(),
                tail: Vec::new(),
            };
            for chunk in bytes.chunks(5) {
                c.update(chunk);
            }
            c.holds()
        };
        assert!(check(&file));
        file[3] ^= 1;
        assert!(!check(&file));
    }
}
