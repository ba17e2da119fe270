//! State-machine snapshots on disk: one file per snapshot, written as a stream (never whole in
//! memory), made durable atomically, checksummed, the newest few kept.
//!
//! A file is `MAGIC`, the snapshot's metadata (a length-prefixed protobuf), the body (the state
//! machine's serialized form, `StateMachine::write_snapshot`) and a CRC-32 of everything before
//! it. Files of the first format (a whole protobuf `Snapshot` plus CRC) are still read.

use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{Snapshot, SnapshotMetadata};

/// How many snapshot files survive pruning: only the newest. An older one could not restore the
/// member anyway (the log is compacted behind the newest), and each copy costs the whole state
/// on disk.
const KEEP: usize = 1;

/// First bytes of a snapshot file of the streamed format.
const MAGIC: &[u8; 8] = b"MSSNAP02";

/// Largest metadata block accepted (a conf state of a few members is far smaller).
const MAX_META: u32 = 1 << 20;

/// Buffer size for streaming snapshot files.
const BUF: usize = 1 << 20;

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
    /// The body could not be produced or read back.
    #[error("snapshot file {path}: {reason}")]
    Body {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A received snapshot is larger than this member accepts.
    #[error("snapshot larger than {limit} bytes refused")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

/// A local snapshot, durable on disk (what the background job reports to the Raft loop).
#[derive(Debug)]
pub struct SnapshotWritten {
    /// What it covers.
    pub meta: SnapshotMetadata,
    /// Size of its body.
    pub bytes: u64,
    /// How long writing it took (off the Raft thread).
    pub took: std::time::Duration,
}

/// The directory holding this member's snapshots. Cheap to clone (it is a path).
#[derive(Debug, Clone)]
pub struct SnapshotFiles {
    dir: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A writer that keeps a CRC-32 of what passes through it and counts the bytes.
struct Checksummed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Checksummed<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A snapshot file being written under a temporary name. Dropped unfinished (an error, a
/// refused or abandoned transfer), the temporary file is removed.
pub struct SnapshotFileWriter {
    out: Checksummed<BufWriter<fs::File>>,
    tmp: PathBuf,
    limit: u64,
    body_start: u64,
    over_limit: bool,
}

impl Write for SnapshotFileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.out.len - self.body_start + buf.len() as u64 > self.limit {
            self.over_limit = true;
            return Err(io::Error::other(format!(
                "snapshot larger than {} bytes refused",
                self.limit
            )));
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl SnapshotFileWriter {
    /// True once a write was refused for going over the size limit.
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// Bytes of body written so far.
    pub fn body_len(&self) -> u64 {
        self.out.len - self.body_start
    }

    /// Seals the file (checksum, fsync) and returns it, still under its temporary name.
    pub fn finish(mut self) -> Result<WrittenSnapshot, SnapshotFileError> {
        let crc = std::mem::take(&mut self.out.crc).finalize();
        let tmp = std::mem::take(&mut self.tmp);
        let file = (|| {
            self.out.inner.write_all(&crc.to_le_bytes())?;
            self.out.inner.flush()?;
            self.out.inner.get_ref().sync_all()
        })();
        let written = WrittenSnapshot { tmp };
        file.map_err(io_err(&written.tmp))?;
        Ok(written)
    }
}

impl Drop for SnapshotFileWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// A complete, durable snapshot file under its temporary name, not yet one the member restarts
/// from. Dropped without [`SnapshotFiles::adopt`], the file is removed.
#[derive(Debug)]
pub struct WrittenSnapshot {
    tmp: PathBuf,
}

impl WrittenSnapshot {
    /// Opens the body for reading (to rebuild the state from it). The checksum is not verified
    /// again: it was computed over exactly these bytes as they were written.
    pub fn body(&self) -> Result<SnapshotBody, SnapshotFileError> {
        match open_file(&self.tmp, Verify::No)? {
            Opened::Streamed(_, body) => Ok(body),
            Opened::Legacy(_) => Err(SnapshotFileError::Body {
                path: self.tmp.clone(),
                reason: "not a streamed snapshot file".into(),
            }),
        }
    }
}

impl Drop for WrittenSnapshot {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The body of a snapshot file, read as a stream.
pub type SnapshotBody = BufReader<io::Take<fs::File>>;

/// A snapshot body of either format, read as a stream.
pub type BodyReader = Box<dyn Read + Send>;

/// The newest snapshot: its metadata, its body and the body's length.
pub type LatestSnapshot = (SnapshotMetadata, BodyReader, u64);

/// A snapshot file's contents, by format.
enum Opened {
    /// Metadata and a reader over the body (the checksum was verified).
    Streamed(SnapshotMetadata, SnapshotBody),
    /// A whole snapshot of the first format.
    Legacy(Snapshot),
}

/// Whether [`open_file`] verifies a streamed file's checksum.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// A file read from disk later: check it first, in a streaming pass over the whole file.
    Yes,
    /// A file this process has just written and checksummed.
    No,
}

/// Reads a snapshot file: the checksum over the whole file first (a streaming pass, unless
/// `verify` says it was just written), then the header.
fn open_file(path: &Path, verify: Verify) -> Result<Opened, SnapshotFileError> {
    let mut f = fs::File::open(path).map_err(io_err(path))?;
    let bad = |reason: &str| SnapshotFileError::Body {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let len = f.metadata().map_err(io_err(path))?.len();
    if len < 4 {
        return Err(bad("too short"));
    }
    let mut magic = [0u8; 8];
    let streamed = len >= 16 && f.read_exact(&mut magic).is_ok() && &magic == MAGIC;
    if !streamed {
        let bytes = fs::read(path).map_err(io_err(path))?;
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body).to_le_bytes() != crc {
            return Err(bad("checksum mismatch"));
        }
        return Snapshot::parse_from_bytes(body)
            .map(Opened::Legacy)
            .map_err(|e| bad(&format!("undecodable ({e})")));
    }
    if verify == Verify::Yes && !verify_checksum(&mut f, len).map_err(io_err(path))? {
        return Err(bad("checksum mismatch"));
    }
    f.seek(SeekFrom::Start(MAGIC.len() as u64))
        .map_err(io_err(path))?;
    let mut n = [0u8; 4];
    f.read_exact(&mut n).map_err(io_err(path))?;
    let meta_len = u32::from_le_bytes(n);
    let body_start = (MAGIC.len() + 4) as u64 + u64::from(meta_len);
    if meta_len > MAX_META || body_start > len - 4 {
        return Err(bad("bad metadata length"));
    }
    let mut meta = vec![0u8; meta_len as usize];
    f.read_exact(&mut meta).map_err(io_err(path))?;
    let meta = SnapshotMetadata::parse_from_bytes(&meta)
        .map_err(|e| bad(&format!("undecodable metadata ({e})")))?;
    let body = BufReader::with_capacity(BUF, f.take(len - 4 - body_start));
    Ok(Opened::Streamed(meta, body))
}

/// True when the CRC-32 trailer of a streamed file of `len` bytes matches everything before it.
fn verify_checksum(f: &mut fs::File, len: u64) -> io::Result<bool> {
    f.seek(SeekFrom::Start(0))?;
    let mut hasher = crc32fast::Hasher::new();
    let mut reader = BufReader::with_capacity(BUF, (&mut *f).take(len - 4));
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            break;
        }
        hasher.update(chunk);
        let n = chunk.len();
        reader.consume(n);
    }
    let mut want = [0u8; 4];
    f.read_exact(&mut want)?;
    Ok(hasher.finalize() == u32::from_le_bytes(want))
}

/// Index of a snapshot file named `<term>-<index>.snap`.
fn index_of(p: &Path) -> u64 {
    p.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .and_then(|(_, i)| u64::from_str_radix(i, 16).ok())
        .unwrap_or(0)
}

impl SnapshotFiles {
    /// Opens (creating if needed) the snapshot directory.
    pub fn open(dir: &Path) -> Result<Self, SnapshotFileError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        Ok(SnapshotFiles {
            dir: dir.to_path_buf(),
        })
    }

    /// Removes temporary files a crash left behind; only at start-up, before anything writes
    /// (a transfer in progress holds its own temporary file).
    pub fn remove_leftovers(&self) -> Result<(), SnapshotFileError> {
        for e in fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "tmp") {
                let _ = fs::remove_file(&p);
            }
        }
        Ok(())
    }

    fn path_of(&self, meta: &SnapshotMetadata) -> PathBuf {
        self.dir
            .join(format!("{:016x}-{:016x}.snap", meta.term, meta.index))
    }

    /// Starts a snapshot file for `meta` under a temporary name; the body is written into the
    /// returned writer (at most `limit` bytes of it), then [`SnapshotFileWriter::finish`].
    pub fn create(
        &self,
        meta: &SnapshotMetadata,
        limit: u64,
    ) -> Result<SnapshotFileWriter, SnapshotFileError> {
        // Unique among concurrent writers of this process (a local snapshot and a received one).
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .path_of(meta)
            .with_extension(format!("{}.{n}.tmp", std::process::id()));
        let f = fs::File::create(&tmp).map_err(io_err(&tmp))?;
        let mut out = Checksummed {
            inner: BufWriter::with_capacity(BUF, f),
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        let meta_bytes = meta.write_to_bytes().unwrap_or_default();
        let header = (|| {
            out.write_all(MAGIC)?;
            out.write_all(&(meta_bytes.len() as u32).to_le_bytes())?;
            out.write_all(&meta_bytes)
        })();
        let body_start = out.len;
        let w = SnapshotFileWriter {
            out,
            tmp,
            limit,
            body_start,
            over_limit: false,
        };
        header.map_err(io_err(&w.tmp))?;
        Ok(w)
    }

    /// Makes a written snapshot the one this member restarts from (rename, fsync of the
    /// directory), then prunes older ones.
    pub fn adopt(
        &self,
        mut written: WrittenSnapshot,
        meta: &SnapshotMetadata,
    ) -> Result<(), SnapshotFileError> {
        let path = self.path_of(meta);
        let tmp = std::mem::take(&mut written.tmp);
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        self.prune()
    }

    /// Writes a snapshot whose body `body` produces, durably, and prunes old ones; returns the
    /// body's size.
    pub fn write(
        &self,
        meta: &SnapshotMetadata,
        body: impl FnOnce(&mut SnapshotFileWriter) -> Result<(), String>,
    ) -> Result<u64, SnapshotFileError> {
        let mut w = self.create(meta, u64::MAX)?;
        body(&mut w).map_err(|reason| SnapshotFileError::Body {
            path: w.tmp.clone(),
            reason,
        })?;
        let size = w.body_len();
        let written = w.finish()?;
        self.adopt(written, meta)?;
        Ok(size)
    }

    fn list(&self) -> Result<Vec<PathBuf>, SnapshotFileError> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map_err(io_err(&self.dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .collect();
        // Names sort by (term, index); the index decides which is newest.
        files.sort_by_key(|p| index_of(p));
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

    /// The newest intact snapshot: its metadata, its body as a stream and its length. Damaged files are
    /// skipped with a warning.
    pub fn open_latest(&self) -> Result<Option<LatestSnapshot>, SnapshotFileError> {
        for p in self.list()?.iter().rev() {
            match open_file(p, Verify::Yes) {
                Ok(Opened::Streamed(meta, body)) => {
                    let len = body.get_ref().limit();
                    return Ok(Some((meta, Box::new(body), len)));
                }
                Ok(Opened::Legacy(mut snap)) => {
                    let data = snap.take_data().to_vec();
                    let len = data.len() as u64;
                    let body = io::Cursor::new(data);
                    return Ok(Some((snap.take_metadata(), Box::new(body), len)));
                }
                Err(e) => tracing::warn!("{e}; skipped"),
            }
        }
        Ok(None)
    }

    /// True while the file of snapshot `meta` is there (no newer snapshot has replaced it).
    pub fn contains(&self, meta: &SnapshotMetadata) -> bool {
        self.path_of(meta).exists()
    }

    /// `(term, index)` of the newest snapshot file, by its name (not opened).
    pub fn newest(&self) -> Result<Option<(u64, u64)>, SnapshotFileError> {
        Ok(self.list()?.last().and_then(|p| {
            let stem = p.file_stem()?.to_str()?;
            let (term, index) = stem.split_once('-')?;
            Some((
                u64::from_str_radix(term, 16).ok()?,
                u64::from_str_radix(index, 16).ok()?,
            ))
        }))
    }

    /// The body of the snapshot `meta` names, to send to a peer; `None` when that file is gone
    /// (a newer one replaced it).
    pub fn open_body(
        &self,
        meta: &SnapshotMetadata,
    ) -> Result<Option<(BodyReader, u64)>, SnapshotFileError> {
        let path = self.path_of(meta);
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(match open_file(&path, Verify::Yes)? {
            Opened::Streamed(_, body) => {
                let len = body.get_ref().limit();
                (Box::new(body), len)
            }
            Opened::Legacy(mut snap) => {
                let data = snap.take_data().to_vec();
                let len = data.len() as u64;
                (Box::new(io::Cursor::new(data)), len)
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(index: u64) -> SnapshotMetadata {
        let mut m = SnapshotMetadata::default();
        m.index = index;
        m.term = 2;
        m.mut_conf_state().voters = vec![1, 2, 3];
        m
    }

    fn body_of(index: u64) -> Vec<u8> {
        vec![index as u8; 3000 + index as usize]
    }

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn newest_intact_snapshot_wins_and_old_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        assert!(files.open_latest().unwrap().is_none());
        for i in [5, 10, 15] {
            let size = files
                .write(&meta(i), |w| {
                    w.write_all(&body_of(i)).map_err(|e| e.to_string())
                })
                .unwrap();
            assert_eq!(size, body_of(i).len() as u64);
        }
        assert_eq!(files.list().unwrap().len(), KEEP);
        let (m, body, _) = files.open_latest().unwrap().unwrap();
        assert_eq!(m, meta(15));
        assert_eq!(read_all(body), body_of(15));
        let (body, len) = files.open_body(&meta(15)).unwrap().unwrap();
        assert_eq!(len, body_of(15).len() as u64);
        assert_eq!(read_all(body), body_of(15));
        assert!(files.open_body(&meta(10)).unwrap().is_none(), "pruned");
        // A damaged file is skipped (with a warning), and so is a truncated one.
        let newest = files.list().unwrap().pop().unwrap();
        let bytes = fs::read(&newest).unwrap();
        let mut damaged = bytes.clone();
        damaged[100] ^= 0xff;
        fs::write(&newest, damaged).unwrap();
        assert!(files.open_latest().unwrap().is_none());
        fs::write(&newest, &bytes[..bytes.len() - 10]).unwrap();
        assert!(files.open_latest().unwrap().is_none());
        fs::write(&newest, &bytes).unwrap();
        assert_eq!(files.open_latest().unwrap().unwrap().0, meta(15));
    }

    #[test]
    fn files_of_the_first_format_are_still_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut snap = Snapshot::default();
        *snap.mut_metadata() = meta(7);
        snap.data = body_of(7).into();
        let body = snap.write_to_bytes().unwrap();
        let mut bytes = body.clone();
        bytes.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        fs::write(
            dir.path().join(format!("{:016x}-{:016x}.snap", 2, 7)),
            bytes,
        )
        .unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let (m, body, len) = files.open_latest().unwrap().unwrap();
        assert_eq!(len, body_of(7).len() as u64);
        assert_eq!(m, meta(7));
        assert_eq!(read_all(body), body_of(7));
    }

    #[test]
    fn an_unfinished_or_oversized_file_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let mut w = files.create(&meta(3), 100).unwrap();
        w.write_all(&[1; 100]).unwrap();
        assert!(w.write_all(&[1; 1]).is_err(), "over the limit");
        drop(w);
        let w = files.create(&meta(4), 100).unwrap();
        let written = w.finish().unwrap();
        assert_eq!(read_all(written.body().unwrap()), Vec::<u8>::new());
        drop(written);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        // A crash leaves a temporary file: start-up removes it, opening the directory does not
        // (another handle's transfer may be writing it).
        let stray = dir.path().join("0000-0005.1.0.tmp");
        fs::write(&stray, b"half").unwrap();
        SnapshotFiles::open(dir.path()).unwrap();
        assert!(stray.exists());
        files.remove_leftovers().unwrap();
        assert!(!stray.exists());
    }
}
