//! A new file written at increasing offsets, straight to the disk where the file system allows
//! it (`O_DIRECT`), for a received values database image.
//!
//! Written through the page cache, a gigabyte-sized image costs the receiving thread as much CPU
//! in the kernel's copy as receiving it (and fresh page-cache pages are slow to come by on a
//! virtual machine); the fsync at the end then writes it all out at once. Written directly, the
//! bytes go from one aligned buffer to the disk in runs of [`RUN`] bytes and the fsync has
//! nothing left but metadata. File systems without `O_DIRECT` (tmpfs) get the same bytes through
//! the page cache.

use std::fs;
use std::io;
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// Alignment `O_DIRECT` asks of buffers, offsets and lengths (the largest logical block size in
/// use; 512-byte devices accept it too).
const ALIGN: usize = 4096;
/// Bytes gathered before one write.
const RUN: usize = 1 << 20;

/// A file being written (see the module doc).
pub struct DirectFile {
    path: PathBuf,
    f: fs::File,
    direct: bool,
    /// `RUN + ALIGN` bytes: the run starts at `start`, aligned.
    buf: Vec<u8>,
    start: usize,
    /// File offset of the run's first byte, and how much of the run is filled.
    at: u64,
    filled: usize,
}

impl DirectFile {
    /// Creates `path` (which must not exist), for direct writes if `direct` and the file system
    /// has them.
    pub fn create(path: &Path, direct: bool) -> io::Result<Self> {
        let open = |flags: i32| {
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(path)
        };
        let (f, direct) = match direct.then(|| open(libc::O_DIRECT)) {
            Some(Ok(f)) => (f, true),
            Some(Err(e)) if e.raw_os_error() != Some(libc::EINVAL) => return Err(e),
            _ => (open(0)?, false),
        };
        let buf = vec![0u8; RUN + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Ok(DirectFile {
            path: path.to_path_buf(),
            f,
            direct,
            buf,
            start,
            at: 0,
            filled: 0,
        })
    }

    /// Room for the `n` bytes (at most [`RUN`]) at file offset `offset` (a multiple of 4 KiB,
    /// past everything written before): fill it, and they are written with the run they join.
    pub fn next(&mut self, offset: u64, n: usize) -> io::Result<&mut [u8]> {
        if n > RUN || !offset.is_multiple_of(ALIGN as u64) || offset < self.at + self.filled as u64
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{n} bytes at {offset}: not the next part of the file"),
            ));
        }
        if self.filled > 0 && (self.at + self.filled as u64 != offset || self.filled + n > RUN) {
            self.flush()?;
        }
        if self.filled == 0 {
            self.at = offset;
        }
        let from = self.start + self.filled;
        self.filled += n;
        Ok(&mut self.buf[from..from + n])
    }

    /// Writes the run gathered so far.
    fn flush(&mut self) -> io::Result<()> {
        if self.filled == 0 {
            return Ok(());
        }
        // A direct write covers whole blocks: a short last part is padded with zeros, cut off
        // again by `finish`.
        let n = if self.direct {
            self.filled.next_multiple_of(ALIGN)
        } else {
            self.filled
        };
        self.buf[self.start + self.filled..self.start + n].fill(0);
        let run = &self.buf[self.start..self.start + n];
        match self.f.write_all_at(run, self.at) {
            // The file system took the open flag but not the write: the page cache it is.
            Err(e) if self.direct && e.raw_os_error() == Some(libc::EINVAL) => {
                self.f = fs::OpenOptions::new().write(true).open(&self.path)?;
                self.direct = false;
                self.f.write_all_at(&run[..self.filled], self.at)?;
            }
            other => other?,
        }
        self.at += self.filled as u64;
        self.filled = 0;
        Ok(())
    }

    /// Writes what is left, sets the file's length to `len` (the space never written stays a
    /// hole) and makes it durable; true if every write went straight to the disk.
    pub fn finish(mut self, len: u64) -> io::Result<bool> {
        self.flush()?;
        self.f.set_len(len)?;
        self.f.sync_all()?;
        Ok(self.direct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs of data with gaps between, a short last part: the file reads back as written, with
    /// zeros in the gaps, whichever way it was written.
    #[test]
    fn a_file_written_in_parts_reads_back_as_written() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            let path = dir.path().join(format!("f-{direct}"));
            let mut f = DirectFile::create(&path, direct).unwrap();
            let seg = 64 * 1024;
            let mut want = vec![0u8; 40 * seg + 1000];
            for k in (0..40).filter(|k| k % 7 != 3) {
                let n = if k == 39 { 1000 + seg } else { seg };
                let n = n.min(want.len() - k * seg);
                let part = f.next((k * seg) as u64, n).unwrap();
                for (i, b) in part.iter_mut().enumerate() {
                    *b = (k * 31 + i % 251) as u8 | 1;
                }
                want[k * seg..k * seg + n].copy_from_slice(part);
            }
            assert!(f.next(0, 10).is_err(), "went back");
            assert!(f.next(12345 * 4096 + 1, 10).is_err(), "unaligned");
            let went_direct = f.finish(want.len() as u64).unwrap();
            assert!(direct || !went_direct, "asked for the page cache");
            assert_eq!(fs::read(&path).unwrap(), want, "direct: {direct}");
        }
    }
}
