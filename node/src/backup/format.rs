//! The snapshot file: what the Maintenance Snapshot call streams and `etcdctl snapshot save`
//! writes — a magic, the state's length, the state (a member snapshot body), zero padding to a
//! multiple of 512 bytes, then the SHA-256 of all that (etcdctl checks `size % 512 == 32`) — and
//! reading one back with its integrity checked, streaming, never whole in memory.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

/// Magic at the start of a snapshot stream.
pub const SNAPSHOT_MAGIC: &[u8; 24] = b"METASTORE-SNAPSHOT-1\0\0\0\0";

/// Length of the whole Snapshot stream for a state of `state_len` bytes.
pub fn framed_len(state_len: u64) -> u64 {
    (SNAPSHOT_MAGIC.len() as u64 + 8 + state_len).div_ceil(512) * 512 + 32
}

/// The snapshot as etcdctl expects a database stream: length-prefixed state, zero padding to a
/// multiple of 512 bytes, then the SHA-256 of all that (etcdctl checks `size % 512 == 32`).
/// The state is written into it as a stream and leaves as chunks (hashed as they go), so no copy
/// of the state is ever whole in memory.
pub struct SnapshotFramer<F> {
    emit: F,
    chunk: usize,
    buf: Vec<u8>,
    hasher: sha2::Sha256,
    declared: u64,
    written: u64,
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> SnapshotFramer<F> {
    /// A framer for a state of `state_len` bytes, handing `chunk`-byte pieces to `emit`.
    pub fn new(state_len: u64, chunk: usize, emit: F) -> io::Result<Self> {
        use sha2::Digest;
        let mut f = SnapshotFramer {
            emit,
            chunk: chunk.max(1),
            buf: Vec::new(),
            hasher: sha2::Sha256::new(),
            declared: state_len,
            written: 0,
        };
        f.push(SNAPSHOT_MAGIC, true)?;
        f.push(&state_len.to_be_bytes(), true)?;
        Ok(f)
    }

    fn push(&mut self, data: &[u8], hashed: bool) -> io::Result<()> {
        use sha2::Digest;
        if hashed {
            self.hasher.update(data);
        }
        self.buf.extend_from_slice(data);
        while self.buf.len() >= self.chunk {
            let rest = self.buf.split_off(self.chunk);
            (self.emit)(std::mem::replace(&mut self.buf, rest))?;
        }
        Ok(())
    }

    /// Pads, appends the digest and sends the last piece; fails if the state written was not
    /// the length declared.
    pub fn finish(mut self) -> io::Result<()> {
        use sha2::Digest;
        if self.written != self.declared {
            return Err(io::Error::other(format!(
                "state was {} bytes, {} declared",
                self.written, self.declared
            )));
        }
        let body = SNAPSHOT_MAGIC.len() as u64 + 8 + self.declared;
        let pad = (body.div_ceil(512) * 512 - body) as usize;
        self.push(&vec![0u8; pad], true)?;
        let digest = std::mem::take(&mut self.hasher).finalize();
        self.push(&digest, false)?;
        if !self.buf.is_empty() {
            (self.emit)(std::mem::take(&mut self.buf))?;
        }
        Ok(())
    }
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> Write for SnapshotFramer<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.push(data, true)?;
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A snapshot file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file cannot be read.
    #[error("snapshot file {0}: {1}")]
    Io(String, io::Error),
    /// Not a MetaStore snapshot (another magic: an etcd bbolt file, say).
    #[error("snapshot file {0}: not a MetaStore snapshot (no MetaStore magic at its start)")]
    NotASnapshot(String),
    /// Shorter or longer than its header says: cut off in transfer, or appended to.
    #[error("snapshot file {0}: {1} bytes, but its header says {2}: truncated or damaged")]
    Length(String, u64, u64),
    /// The SHA-256 trailer does not match the contents.
    #[error("snapshot file {0}: integrity hash mismatch: the file is corrupt")]
    HashMismatch(String),
}

/// A snapshot file whose length and integrity hash were checked.
#[derive(Debug, Clone)]
pub struct Verified {
    /// Length of the state inside.
    pub state_len: u64,
    /// Length of the whole file.
    pub file_len: u64,
    /// The SHA-256 trailer, hex.
    pub sha256: String,
}

const HEADER_LEN: u64 = SNAPSHOT_MAGIC.len() as u64 + 8;

/// Checks the file at `path`: magic, length and SHA-256 trailer (reading it once, streaming).
pub fn verify(path: &Path) -> Result<Verified, FormatError> {
    use sha2::Digest;
    let name = path.display().to_string();
    let ioe = |e| FormatError::Io(name.clone(), e);
    let mut f = File::open(path).map_err(ioe)?;
    let file_len = f.metadata().map_err(ioe)?.len();
    let mut header = [0u8; HEADER_LEN as usize];
    if f.read_exact(&mut header).is_err() || header[..SNAPSHOT_MAGIC.len()] != SNAPSHOT_MAGIC[..] {
        return Err(FormatError::NotASnapshot(name));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[SNAPSHOT_MAGIC.len()..]);
    let state_len = u64::from_be_bytes(len);
    let want = state_len
        .checked_add(HEADER_LEN + 512 + 32)
        .map(|_| framed_len(state_len))
        .unwrap_or(u64::MAX);
    if want != file_len {
        return Err(FormatError::Length(name, file_len, want));
    }
    let mut hasher = sha2::Sha256::new();
    hasher.update(header);
    let mut body = BufReader::with_capacity(1 << 20, (&mut f).take(file_len - HEADER_LEN - 32));
    io::copy(&mut body, &mut HashWriter(&mut hasher)).map_err(ioe)?;
    let mut trailer = [0u8; 32];
    f.read_exact(&mut trailer).map_err(ioe)?;
    let digest = hasher.finalize();
    if digest[..] != trailer[..] {
        return Err(FormatError::HashMismatch(name));
    }
    Ok(Verified {
        state_len,
        file_len,
        sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

struct HashWriter<'a>(&'a mut sha2::Sha256);

impl Write for HashWriter<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        use sha2::Digest;
        self.0.update(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The state inside a verified file, as a stream of `v.state_len` bytes.
pub fn open_state(path: &Path, v: &Verified) -> Result<impl Read, FormatError> {
    let name = path.display().to_string();
    let mut f = File::open(path).map_err(|e| FormatError::Io(name.clone(), e))?;
    f.seek(SeekFrom::Start(HEADER_LEN))
        .map_err(|e| FormatError::Io(name, e))?;
    Ok(BufReader::with_capacity(1 << 20, f.take(v.state_len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole stream built in one piece, as etcdctl reads it.
    fn framed(state: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&(state.len() as u64).to_be_bytes());
        out.extend_from_slice(state);
        out.resize(out.len().div_ceil(512) * 512, 0);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    #[test]
    fn frames_are_the_framed_stream_cut_into_chunks() {
        for len in [0usize, 1, 479, 480, 481, 1000, 70_000] {
            let state: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for chunk in [1usize, 7, 32, 512, 1000, 32 * 1024] {
                let mut parts: Vec<Vec<u8>> = Vec::new();
                let mut f = SnapshotFramer::new(len as u64, chunk, |b| {
                    parts.push(b);
                    Ok(())
                })
                .unwrap();
                // Written in uneven pieces, as a serializer would.
                for piece in state.chunks(13) {
                    f.write_all(piece).unwrap();
                }
                f.finish().unwrap();
                let total = framed_len(len as u64);
                assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= chunk));
                let joined = parts.concat();
                assert_eq!(joined.len() as u64, total);
                assert_eq!(total % 512, 32, "etcdctl's size check");
                assert_eq!(joined, framed(&state), "len {len}, chunk {chunk}");
            }
        }
        // A state shorter than declared is an error, not a wrong stream.
        let f = SnapshotFramer::new(10, 4, |_| Ok(())).unwrap();
        assert!(f.finish().is_err());
    }

    #[test]
    fn files_are_verified_before_they_are_read() {
        let dir = std::env::temp_dir().join(format!("ms-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let state: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let good = framed(&state);
        let p = dir.join("s.db");
        std::fs::write(&p, &good).unwrap();
        let v = verify(&p).unwrap();
        assert_eq!(v.state_len, 5000);
        let mut back = Vec::new();
        open_state(&p, &v).unwrap().read_to_end(&mut back).unwrap();
        assert_eq!(back, state);
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        std::fs::write(&p, &flipped).unwrap();
        assert!(matches!(verify(&p), Err(FormatError::HashMismatch(_))));
        std::fs::write(&p, &good[..good.len() - 512]).unwrap();
        assert!(matches!(verify(&p), Err(FormatError::Length(..))));
        std::fs::write(&p, b"bolt db or anything else").unwrap();
        assert!(matches!(verify(&p), Err(FormatError::NotASnapshot(_))));
        let mut huge = good[..32].to_vec();
        huge[24..32].copy_from_slice(&u64::MAX.to_be_bytes());
        std::fs::write(&p, &huge).unwrap();
        assert!(verify(&p).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
