//! The values database file, copied as of one moment while the member goes on writing it: what a
//! snapshot sends a new member instead of every value to re-insert there (etcd sends its bbolt
//! file the same way; re-inserting 1 GiB into the receiver's B-tree was the slow part of a
//! learner's catch-up).
//!
//! The database runs on [`ImageableFile`], redb's own file backend with a copy-on-write hook: while
//! an image is read, a write or truncation over a part the reader has not passed yet first saves
//! that part's old bytes (into an unnamed file beside the database: each block at most once, so
//! never more than the image), so the reader sees the file as it was when the image began. redb keeps
//! the pages of its last durable commit until the next durable commit, and its file is
//! recoverable after a crash at any moment; so a copy as of a moment right after a durable commit
//! opens (redb repairs it as after a crash, quickly since the commit saved its allocator state)
//! as that commit or a later one.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What the backend's I/O methods fail with (redb 4 without `experimental-api-5`).
type BackendIoError = io::Error;

/// Granularity of saved old bytes (redb's page size).
const BLOCK: u64 = 4096;

/// Bytes an image reads from the file per step (writes wait at most one step).
const STEP: u64 = 256 * 1024;

/// An image in progress.
#[derive(Debug)]
struct Frozen {
    /// The file's length when the image began: the image's length.
    len: u64,
    /// The reader has passed `[0, copied)` (a multiple of [`BLOCK`]).
    copied: u64,
    /// Blocks at or past `copied` overwritten since the image began: where their old bytes are
    /// in `spill`. Each block is saved at most once, so the spill file never outgrows the image.
    saved: BTreeMap<u64, u64>,
    /// An unnamed file beside the database holding the saved old bytes (disk, not memory).
    spill: File,
    spill_len: u64,
    /// Saving or reading failed: the image is lost (the live database never is).
    failed: Option<String>,
}

/// What the backend and the images share: a second handle on the file (positional reads), the
/// directory spill files go to, and the image in progress, if any.
#[derive(Debug)]
pub(crate) struct ImageState {
    file: File,
    dir: PathBuf,
    frozen: Mutex<Option<Frozen>>,
}

fn lock(m: &Mutex<Option<Frozen>>) -> MutexGuard<'_, Option<Frozen>> {
    // A panic while holding it left plain data behind: go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl ImageState {
    /// Saves the old bytes of the blocks of `[from, to)` that the image still needs. A failure
    /// (the spill file's disk is full, say) ends the image, not the write: the database must go
    /// on whatever happens to a copy of it.
    fn save_or_fail(&self, f: &mut Frozen, from: u64, to: u64) {
        if f.failed.is_some() {
            return;
        }
        if let Err(e) = self.save(f, from, to) {
            f.failed = Some(format!("saving the old bytes failed: {e}"));
            f.saved.clear();
        }
    }

    fn save(&self, f: &mut Frozen, from: u64, to: u64) -> io::Result<()> {
        let to = to.min(f.len);
        let mut b = from.max(f.copied) / BLOCK;
        let mut old = [0u8; BLOCK as usize];
        while b * BLOCK < to {
            if let std::collections::btree_map::Entry::Vacant(slot) = f.saved.entry(b) {
                let n = BLOCK.min(f.len - b * BLOCK) as usize;
                self.file.read_exact_at(&mut old[..n], b * BLOCK)?;
                f.spill.write_all_at(&old[..n], f.spill_len)?;
                slot.insert(f.spill_len);
                f.spill_len += n as u64;
            }
            b += 1;
        }
        Ok(())
    }
}

/// redb's file backend, able to hand out a point-in-time copy of its file ([`Image`]).
#[derive(Debug)]
pub struct ImageableFile {
    inner: FileBackend,
    state: Arc<ImageState>,
}

impl ImageableFile {
    /// A backend over `file`, and the handle images are taken through; images spill the old bytes
    /// they keep into `dir` (the database's directory).
    pub(crate) fn new(file: File, dir: &Path) -> io::Result<(Self, Arc<ImageState>)> {
        let state = Arc::new(ImageState {
            file: file.try_clone()?,
            dir: dir.to_path_buf(),
            frozen: Mutex::new(None),
        });
        let inner = FileBackend::new(file).map_err(io::Error::other)?;
        Ok((
            ImageableFile {
                inner,
                state: state.clone(),
            },
            state,
        ))
    }
}

impl StorageBackend for ImageableFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        let mut frozen = lock(&self.state.frozen);
        if let Some(f) = frozen.as_mut() {
            if len < f.len {
                self.state.save_or_fail(f, len, f.len);
            }
        }
        self.inner.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.inner.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        let mut frozen = lock(&self.state.frozen);
        if let Some(f) = frozen.as_mut() {
            let end = offset + data.len() as u64;
            self.state.save_or_fail(f, offset, end);
        }
        self.inner.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}

/// Why an image could not be taken or read.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Another image of this database is being read (one at a time).
    #[error("an image of the values database is already being read")]
    Busy,
    /// The database is not in a file (tests' in-memory databases).
    #[error("the values database is not a file")]
    NotAFile,
    /// Reading or committing failed.
    #[error("values database image: {0}")]
    Io(String),
}

/// A point-in-time copy of the values database file, read as a stream; the file goes back to
/// plain writes when it is dropped.
#[derive(Debug)]
pub struct Image {
    state: Arc<ImageState>,
    len: u64,
}

impl Image {
    /// Starts an image of the file as it is now.
    pub(crate) fn begin(state: Arc<ImageState>) -> Result<Image, ImageError> {
        let len = {
            let mut frozen = lock(&state.frozen);
            if frozen.is_some() {
                return Err(ImageError::Busy);
            }
            // The length under the lock: no write or truncation comes between it and the freeze.
            let len = state
                .file
                .metadata()
                .map_err(|e| ImageError::Io(e.to_string()))?
                .len();
            let spill =
                tempfile::tempfile_in(&state.dir).map_err(|e| ImageError::Io(e.to_string()))?;
            *frozen = Some(Frozen {
                len,
                copied: 0,
                saved: BTreeMap::new(),
                spill,
                spill_len: 0,
                failed: None,
            });
            len
        };
        Ok(Image { state, len })
    }

    /// The image's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Bytes saved so far because the live file was written over a part not yet read.
    pub fn saved_bytes(&self) -> u64 {
        lock(&self.state.frozen).as_ref().map_or(0, |f| f.spill_len)
    }

    /// True for an image of an empty file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `out` with the image's bytes from `f.copied` on: the file's, overlaid with the saved
    /// old bytes of those blocks (which are released).
    fn fill(&self, f: &mut Frozen, out: &mut [u8]) -> io::Result<()> {
        let start = f.copied;
        let end = start + out.len() as u64;
        // Only the file's data is read: its holes (much of a redb file that grew in big steps)
        // are zeros without asking the kernel to make zeroed pages of them. No write comes
        // between finding the holes and reading (writes wait for `frozen`).
        let mut pos = start;
        while pos < end {
            let (data, hole) = data_after(&self.state.file, pos, end)?;
            out[(pos - start) as usize..(data - start) as usize].fill(0);
            // The file may have been cut short since the image began: those blocks were saved.
            let mut got = data;
            while got < hole {
                let at = (got - start) as usize..(hole - start) as usize;
                match self.state.file.read_at(&mut out[at], got)? {
                    0 => break,
                    n => got += n as u64,
                }
            }
            out[(got - start) as usize..(hole - start) as usize].fill(0);
            pos = hole;
        }
        let blocks: Vec<u64> = f
            .saved
            .range(start / BLOCK..end.div_ceil(BLOCK))
            .map(|(b, _)| *b)
            .collect();
        for b in blocks {
            if let Some(at_spill) = f.saved.remove(&b) {
                let at = (b * BLOCK - start) as usize;
                let n = (BLOCK as usize).min(out.len() - at);
                f.spill.read_exact_at(&mut out[at..at + n], at_spill)?;
            }
        }
        Ok(())
    }
}

/// The first run of data in `file` at or after `pos` and before `end`, as `(start, end)`;
/// `(end, end)` when there is none. Where the file system cannot tell holes from data, all of it
/// is data.
fn data_after(file: &File, pos: u64, end: u64) -> io::Result<(u64, u64)> {
    use rustix::fs::{seek, SeekFrom};
    let data = match seek(file, SeekFrom::Data(pos)) {
        Ok(d) => d.min(end),
        // Nothing but hole from `pos` to the end of the file.
        Err(rustix::io::Errno::NXIO) => return Ok((end, end)),
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => return Ok((pos, end)),
        Err(e) => return Err(e.into()),
    };
    if data >= end {
        return Ok((end, end));
    }
    let hole = match seek(file, SeekFrom::Hole(data)) {
        Ok(h) if h > data => h.min(end),
        Ok(_) => end,
        Err(rustix::io::Errno::NXIO) => end,
        Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) => end,
        Err(e) => return Err(e.into()),
    };
    Ok((data, hole))
}

/// Reads whole blocks (buffers of at least [`BLOCK`] bytes; `io::copy`'s are larger), so the
/// part already read always ends at a block boundary.
impl Read for Image {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut frozen = lock(&self.state.frozen);
        let Some(f) = frozen.as_mut() else {
            return Err(io::Error::other("the image was ended"));
        };
        if let Some(why) = &f.failed {
            return Err(io::Error::other(format!(
                "values database image lost: {why}"
            )));
        }
        let left = f.len - f.copied;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let room = (buf.len() as u64).min(STEP);
        let n = if left <= room {
            left
        } else if room >= BLOCK {
            room / BLOCK * BLOCK
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "an image is read in buffers of at least 4096 bytes",
            ));
        };
        let out = &mut buf[..n as usize];
        if let Err(e) = self.fill(f, out) {
            // Saved blocks may be gone already: a retry would read the live bytes.
            f.failed = Some(format!("reading failed: {e}"));
            return Err(e);
        }
        f.copied += n;
        Ok(n as usize)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        *lock(&self.state.frozen) = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::values::{rev_key, DiskValues};
    use bytes::Bytes;

    /// Reads `img` to its end in buffers of `step` bytes, calling `between(round, copied)` after
    /// each read (rounds count from 1).
    fn read_while(img: &mut Image, step: usize, mut between: impl FnMut(i64, u64)) -> Vec<u8> {
        let mut copy = Vec::new();
        let mut buf = vec![0u8; step];
        let mut round = 0;
        loop {
            let n = img.read(&mut buf).unwrap();
            if n == 0 {
                return copy;
            }
            copy.extend_from_slice(&buf[..n]);
            round += 1;
            between(round, copy.len() as u64);
        }
    }

    fn value(i: i64) -> Vec<u8> {
        vec![(i % 251) as u8; 300 + (i % 700) as usize]
    }

    /// A copy begun after a durable commit opens as a database that holds everything committed
    /// before it, while the live file is written, grown and shrunk as the copy is read; one image
    /// at a time.
    #[test]
    fn an_image_is_the_database_as_of_its_start_while_writes_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut live = DiskValues::open(&dir.path().join("values.redb"), 1 << 20).unwrap();
        for i in 0..3000 {
            live.put(rev_key(i, 0), Bytes::from(value(i)));
            if i % 200 == 0 {
                live.commit().unwrap();
            }
        }
        live.commit().unwrap();
        let db = live.database();
        let mut img = db.image().unwrap();
        assert!(matches!(db.image(), Err(ImageError::Busy)));
        let mut rounds = 0;
        let copy = read_while(&mut img, 16 * 1024, |round, _| {
            // Meanwhile: values overwritten, new ones, many deleted (the file's end is freed and
            // a durable commit may shrink it).
            rounds = round;
            for i in 0..20 {
                live.put(rev_key(i + round * 20, 0), Bytes::from(vec![0xEE; 900]));
                live.put(
                    rev_key(10_000 + round * 20 + i, 0),
                    Bytes::from(vec![1; 2000]),
                );
            }
            if round % 3 == 0 {
                live.ready.extend(
                    (0..3000)
                        .filter(|i| i % 3 == round % 2)
                        .map(|i| rev_key(i, 0)),
                );
                live.commit().unwrap();
                live.sync().unwrap();
            } else {
                live.commit().unwrap();
            }
        });
        assert_eq!(copy.len() as u64, img.len());
        // The writes did land on parts not yet read (else this test would show nothing).
        assert!(img.saved_bytes() > 0);
        drop(img);
        assert!(rounds > 10, "the copy was read in {rounds} steps");
        // The image ended: the next one may begin.
        drop(db.image().unwrap());
        let path = dir.path().join("copy.redb");
        std::fs::write(&path, &copy).unwrap();
        let copied = DiskValues::open(&path, 1 << 20).unwrap();
        for i in 0..3000 {
            assert_eq!(
                copied.get(&rev_key(i, 0)).unwrap().as_ref(),
                value(i).as_slice(),
                "revision {i}"
            );
        }
    }

    /// A file with holes (as redb grows its file) is copied as it was, its holes as zeros, while
    /// writes land in holes, in data and past the end ahead of the reader, and the file is cut
    /// short and grown again.
    #[test]
    fn holes_are_copied_as_zeros_while_they_fill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holey");
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .unwrap();
        let (backend, state) = ImageableFile::new(file, dir.path()).unwrap();
        let mib = 1 << 20;
        let len = 6 * mib;
        backend.set_len(len).unwrap();
        // Data at 0, 2 MiB and the last 3 KiB; holes between.
        for (at, n, b) in [
            (0, 3 * BLOCK + 100, 7u8),
            (2 * mib, mib, 9),
            (len - 3000, 3000, 5),
        ] {
            backend.write(at, &vec![b; n as usize]).unwrap();
        }
        let want = std::fs::read(&path).unwrap();
        let mut img = Image::begin(state.clone()).unwrap();
        let copy = read_while(&mut img, STEP as usize, |round, copied| {
            let ahead = copied + 10;
            match round {
                // Into a hole, into data, across both.
                1 => backend.write(mib, &[1; 5000]).unwrap(),
                2 => backend.write(2 * mib + 4096, &[2; 100]).unwrap(),
                3 => backend.write(2 * mib - 3000, &[3; 9000]).unwrap(),
                // Cut short, then grown back: the end reads as it was.
                5 => {
                    backend.set_len(ahead + 2 * mib).unwrap();
                    backend.set_len(len + mib).unwrap();
                    backend.write(len - 100, &[4; 200]).unwrap();
                }
                _ => backend.write(ahead, &[6; 4096]).unwrap(),
            }
        });
        assert_eq!(copy.len() as u64, len);
        assert!(copy == want, "the copy differs from the file as it was");
        assert!(img.saved_bytes() > 0);
    }

    /// A buffer smaller than a block is refused with a clear error, not served partly.
    #[test]
    fn an_image_is_read_in_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let live = DiskValues::open(&dir.path().join("values.redb"), 1 << 20).unwrap();
        let mut img = live.database().image().unwrap();
        assert!(img.len() > BLOCK);
        let mut small = [0u8; 100];
        let err = img.read(&mut small).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }

    /// A database in memory has no file to copy.
    #[test]
    fn a_database_in_memory_has_no_image() {
        let live = DiskValues::in_memory().unwrap();
        assert!(matches!(live.database().image(), Err(ImageError::NotAFile)));
    }
}
