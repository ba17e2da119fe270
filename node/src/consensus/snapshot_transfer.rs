//! Snapshots between members, off the Raft thread: one sent is streamed from its file (with
//! the values a member's own snapshot leaves in its values database put back in); one received
//! is decoded as it arrives (bounded memory, bounded size) into a state machine and saved as the
//! receiver's own snapshot, so the Raft loop only swaps the state in when Raft accepts it.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use raft::eraftpb::SnapshotMetadata;

use crate::consensus::direct_file::DirectFile;
use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles, WrittenSnapshot};
use crate::replicated::state_machine::StateMachine;
use crate::replicated::version::Version;
use metastore_mvcc::ValuesDatabase;

/// Room for history and encoding beyond the quota in a snapshot body.
const SNAPSHOT_SLACK: u64 = 256 << 20;

/// The largest snapshot body a member with this quota accepts from a peer: the quota counts key
/// and value bytes of every version, the body adds a few dozen bytes per version on top.
pub fn max_snapshot_bytes(quota_backend_bytes: u64) -> u64 {
    quota_backend_bytes
        .saturating_mul(2)
        .saturating_add(SNAPSHOT_SLACK)
}

/// First bytes of a snapshot body that carries the sender's values database file (an image, see
/// [`metastore_mvcc::image`]) ahead of the index: then its length (8 bytes, little-endian), the
/// file (in segments, see [`SEGMENT`], and its CRC-32), the index's length (8 bytes) and the index as a snapshot file holds it (values by
/// reference, all in the image).
/// Sent only once the cluster version says every member reads it ([`IMAGE_FROM`]).
const IMAGE_MAGIC: [u8; 8] = *b"MSVIMG01";

/// How many of a received values database's values are looked at against the index that came
/// with it (all of them, up to this many: see [`metastore_mvcc::Store::check_stored_values`]).
const CHECKED_VALUES: usize = 2048;

/// The cluster version from which snapshots carry the values database file.
pub const IMAGE_FROM: Version = Version::new(0, 2, 0);

/// A received snapshot ready to install.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    /// The durable file, under a temporary name until the Raft loop adopts it.
    pub file: WrittenSnapshot,
    /// The state it holds.
    pub state: StateMachine,
    /// The values database the sender sent with it, when it did: the state's values are there.
    pub values_file: Option<PendingValues>,
}

/// Where a member keeps its values database: what a received image of one becomes.
#[derive(Debug, Clone)]
pub struct ValuesHome {
    /// The live database file (`member/values.redb`).
    pub path: PathBuf,
    /// The database's page cache.
    pub cache_bytes: usize,
}

impl ValuesHome {
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The start of the names a database received with snapshot `(term, index)` waits under
    /// until the snapshot is adopted: a restart knows whether the snapshot it starts from needs
    /// one.
    fn pending_prefix(term: u64, index: u64) -> String {
        format!("values-{term:016x}-{index:016x}.")
    }

    /// A name of its own for one received database (two transfers of one snapshot may overlap).
    fn pending_path(&self, meta: &SnapshotMetadata) -> PathBuf {
        self.dir().join(format!(
            "{}{}-{}.pending",
            Self::pending_prefix(meta.term, meta.index),
            std::process::id(),
            next_transfer()
        ))
    }

    /// At start, before the database is opened: a received database whose snapshot became the
    /// newest (`newest` as `(term, index)`) before a crash replaces the live one; any other
    /// received database is left over and goes.
    pub fn settle_pending(&self, newest: Option<(u64, u64)>) -> io::Result<()> {
        let wanted = newest.map(|(term, index)| Self::pending_prefix(term, index));
        let mut names: Vec<String> = fs::read_dir(self.dir())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                (n.starts_with("values-") && n.ends_with(".pending"))
                    || (n.starts_with("values.") && n.ends_with(".incoming"))
            })
            .collect();
        names.sort();
        // Any database received with that snapshot holds what it references: take one.
        let adopt = wanted.and_then(|w| names.iter().rposition(|n| n.starts_with(&w)));
        if let Some(i) = adopt {
            let name = names.remove(i);
            tracing::info!("adopting the values database received with the snapshot: {name}");
            fs::rename(self.dir().join(&name), &self.path)?;
            fs::File::open(self.dir())?.sync_all()?;
        }
        for n in names {
            fs::remove_file(self.dir().join(n))?;
        }
        Ok(())
    }
}

/// A number of its own for each received image in this process (file names).
fn next_transfer() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A received values database, durable under its pending name; removed when dropped unless
/// kept for adoption ([`PendingValues::keep`]).
#[derive(Debug)]
pub struct PendingValues {
    path: PathBuf,
    kept: bool,
}

impl PendingValues {
    /// Keeps the file whatever happens next, before the snapshot it came with is adopted: once
    /// that snapshot is the newest, only this database can back it, and a restart adopts it
    /// ([`ValuesHome::settle_pending`]) if [`KeptValues::adopt`] did not.
    pub fn keep(mut self) -> KeptValues {
        self.kept = true;
        KeptValues(self.path.clone())
    }
}

impl Drop for PendingValues {
    fn drop(&mut self) {
        if !self.kept {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A received values database kept for adoption.
#[derive(Debug)]
pub struct KeptValues(PathBuf);

impl KeptValues {
    /// Makes it the member's values database (rename over `live`, fsync of the directory).
    /// Called once the snapshot it came with is adopted.
    pub fn adopt(self, live: &Path) -> Result<(), SnapshotFileError> {
        let err = |source| SnapshotFileError::Io {
            path: live.to_path_buf(),
            source,
        };
        fs::rename(&self.0, live).map_err(err)?;
        if let Some(dir) = live.parent() {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(err)?;
        }
        Ok(())
    }
}

/// The image travels in segments of this many bytes (the last may be shorter), each after a
/// flag byte: [`SEGMENT_ZEROS`] (nothing follows: the file's unused space, often holes) or
/// [`SEGMENT_DATA`] (the segment follows).
const SEGMENT: usize = 64 * 1024;
const SEGMENT_ZEROS: u8 = 0;
const SEGMENT_DATA: u8 = 1;

/// Writes the `len` bytes of `img` as segments, then a CRC-32 of the image (4 bytes,
/// little-endian); returns the bytes written.
fn send_segments(mut img: impl Read, mut w: impl Write, len: u64) -> io::Result<u64> {
    let mut buf = vec![0u8; SEGMENT];
    let (mut done, mut sent) = (0u64, 0u64);
    let mut crc = crc32fast::Hasher::new();
    while done < len {
        let n = (len - done).min(SEGMENT as u64) as usize;
        img.read_exact(&mut buf[..n])?;
        crc.update(&buf[..n]);
        if buf[..n].iter().all(|b| *b == 0) {
            w.write_all(&[SEGMENT_ZEROS])?;
            sent += 1;
        } else {
            w.write_all(&[SEGMENT_DATA])?;
            w.write_all(&buf[..n])?;
            sent += 1 + n as u64;
        }
        done += n as u64;
    }
    w.write_all(&crc.finalize().to_le_bytes())?;
    Ok(sent + 4)
}

/// Writes the `len`-byte image that `r` delivers as segments into `f`, leaving holes for zeros,
/// and makes it durable; true if it bypassed the page cache.
fn receive_segments(mut r: impl Read, mut f: DirectFile, len: u64) -> io::Result<bool> {
    let zeros = vec![0u8; SEGMENT];
    let mut done = 0u64;
    let mut crc = crc32fast::Hasher::new();
    while done < len {
        let n = (len - done).min(SEGMENT as u64) as usize;
        let mut flag = [0u8; 1];
        r.read_exact(&mut flag)?;
        match flag[0] {
            SEGMENT_ZEROS => crc.update(&zeros[..n]),
            SEGMENT_DATA => {
                let buf = f.next(done, n)?;
                r.read_exact(buf)?;
                crc.update(buf);
            }
            other => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("values database image: segment flag {other} at {done}"),
                ))
            }
        }
        done += n as u64;
    }
    let mut sum = [0u8; 4];
    r.read_exact(&mut sum)?;
    if u32::from_le_bytes(sum) != crc.finalize() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "values database image: checksum mismatch",
        ));
    }
    f.finish(len)
}

/// Receives the values database image at the start of a body into `home`'s pending file for
/// `meta`: written, fsynced, renamed, opened.
fn receive_image(
    body: &mut impl Read,
    limit: u64,
    home: &ValuesHome,
    meta: &SnapshotMetadata,
) -> Result<(PendingValues, metastore_mvcc::DiskValues), SnapshotFileError> {
    let incoming = home.dir().join(format!(
        "values.{}-{}.incoming",
        std::process::id(),
        next_transfer()
    ));
    let at = |p: &Path| {
        let p = p.to_path_buf();
        move |source| SnapshotFileError::Io { path: p, source }
    };
    let mut len = [0u8; 8];
    body.read_exact(&mut len).map_err(at(&incoming))?;
    let len = u64::from_le_bytes(len);
    if len > limit {
        return Err(SnapshotFileError::TooLarge { limit });
    }
    let started = std::time::Instant::now();
    let written =
        DirectFile::create(&incoming, true).and_then(|f| receive_segments(&mut *body, f, len));
    let direct = match written {
        Ok(direct) => direct,
        Err(e) => {
            let _ = fs::remove_file(&incoming);
            return Err(at(&incoming)(e));
        }
    };
    let pending = home.pending_path(meta);
    if let Err(e) = fs::rename(&incoming, &pending) {
        let _ = fs::remove_file(&incoming);
        return Err(at(&pending)(e));
    }
    let pending = PendingValues {
        path: pending,
        kept: false,
    };
    fs::File::open(home.dir())
        .and_then(|d| d.sync_all())
        .map_err(at(home.dir()))?;
    // The checksum says it arrived as sent; the database engine still must not take this member
    // down if what was sent is damaged.
    let opened = std::panic::catch_unwind(|| {
        metastore_mvcc::DiskValues::open(&pending.path, home.cache_bytes)
    });
    let values = match opened {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the database engine panicked opening it".to_string()),
    }
    .map_err(|e| SnapshotFileError::Body {
        path: pending.path.clone(),
        reason: format!("the received values database does not open: {e}"),
    })?;
    tracing::info!(
        bytes = len,
        direct,
        took_ms = started.elapsed().as_millis() as u64,
        "received values database image"
    );
    Ok((pending, values))
}

/// Decodes the body `body` of snapshot `meta` as it arrives (refusing more than `limit` bytes)
/// into `into` (an empty key space: see [`metastore_mvcc::Store::empty_like`]; values on disk
/// are written to the values database as they come), then writes this member's own snapshot
/// file of the state (values by reference, made durable first) into `files`. Nothing the size of
/// the body is written twice or held in memory. Blocking: call it off the Raft thread and off
/// async workers.
///
/// A body that starts with the sender's values database (an image) needs `home`: the database is
/// received beside the live one and the state's values are read from it.
pub fn receive(
    files: &SnapshotFiles,
    meta: &SnapshotMetadata,
    body: impl Read,
    limit: u64,
    into: metastore_mvcc::Store,
    home: Option<&ValuesHome>,
) -> Result<ReceivedSnapshot, SnapshotFileError> {
    let body_err = |reason: String| SnapshotFileError::Body {
        path: "received snapshot".into(),
        reason,
    };
    let started = std::time::Instant::now();
    let mut body = Counted { r: body, n: 0 };
    let mut prefix = [0u8; 8];
    body.read_exact(&mut prefix)
        .map_err(|e| body_err(format!("length prefix: {e}")))?;
    let mut into = into;
    let mut values_file = None;
    // How long the image took to arrive, be made durable and open (a learner's catch-up time is
    // mostly this).
    let mut image_ms = None;
    // With an image: the index's declared length, and where in the stream it starts (its end
    // is checked: the index's last fields are optional, so a cut there would otherwise pass).
    let mut index_len = None;
    if prefix == IMAGE_MAGIC {
        let Some(home) = home else {
            return Err(body_err(
                "a values database image, and this member keeps its values in memory".into(),
            ));
        };
        let (pending, values) = receive_image(&mut body, limit, home, meta)?;
        image_ms = Some(started.elapsed().as_millis() as u64);
        into = metastore_mvcc::Store::on_disk(values);
        values_file = Some(pending);
        let mut len = [0u8; 8];
        body.read_exact(&mut len)
            .map_err(|e| body_err(format!("index length: {e}")))?;
        index_len = Some((u64::from_le_bytes(len), body.n));
        body.read_exact(&mut prefix)
            .map_err(|e| body_err(format!("length prefix: {e}")))?;
        if !StateMachine::values_in_store(prefix) {
            return Err(body_err(
                "a values database image before an index that does not use it".into(),
            ));
        }
    }
    // The image counted against the limit on its own: the index after it may take as much as
    // a snapshot without one.
    let limit = match index_len {
        Some((_, start)) => limit.saturating_add(start),
        None => limit,
    };
    // The key space alone is declared larger than the limit.
    if StateMachine::key_space_len(prefix).saturating_add(8) > limit {
        return Err(SnapshotFileError::TooLarge { limit });
    }
    let whole = io::Cursor::new(prefix).chain(&mut body);
    let too_large = |n: u64| n >= limit;
    // An index after an image is this member's snapshot file as it will be (its values are all
    // in the database that came with it, as they were in the sender's): saved as it is read.
    let mut teed = match values_file {
        Some(_) => Some(files.create(meta, u64::MAX)?),
        None => None,
    };
    let decoded = match teed.as_mut() {
        Some(w) => StateMachine::read_snapshot(Tee { r: whole, w }, limit, into),
        None => StateMachine::read_snapshot(whole, limit, into),
    };
    let mut state = match decoded {
        Ok(s) => s,
        // Decoding stopped at the limit: the body is larger than this member accepts.
        Err(_) if too_large(body.n) => return Err(SnapshotFileError::TooLarge { limit }),
        Err(e) => return Err(body_err(e.to_string())),
    };
    if StateMachine::values_in_store(prefix) && values_file.is_none() {
        // The index came first; its values follow in revision order.
        let left = limit.saturating_sub(body.n);
        if let Err(e) = state.store.decode_values(&mut body, left) {
            return Err(if too_large(body.n) {
                SnapshotFileError::TooLarge { limit }
            } else {
                body_err(e.to_string())
            });
        }
    }
    if let Some((len, start)) = index_len {
        if body.n - start != len {
            return Err(body_err(format!(
                "an index of {} bytes where {len} were declared",
                body.n - start
            )));
        }
    }
    let mut rest = [0u8; 1];
    match body.read(&mut rest) {
        Ok(0) => {}
        Ok(_) if body.n > limit => return Err(SnapshotFileError::TooLarge { limit }),
        Ok(_) => return Err(body_err("bytes after the end of the state".into())),
        Err(e) => return Err(body_err(e.to_string())),
    }
    let index_ms = started.elapsed().as_millis() as u64;
    if values_file.is_some() {
        // The sender's guarantee, checked: the values the index references are in the database
        // that came with it, at their lengths (all of them in a small one; see the method).
        state
            .store
            .check_stored_values(CHECKED_VALUES)
            .map_err(|e| body_err(format!("the received values database: {e}")))?;
    }
    let decoded = started.elapsed();
    if let Some(values) = state.store.disk_values() {
        values.sync().map_err(|e| body_err(e.to_string()))?;
    }
    let file = match teed {
        Some(w) => w.finish()?,
        None => {
            let mut w = files.create(meta, u64::MAX)?;
            state
                .write_snapshot(&mut w, metastore_mvcc::ValuesIn::Store)
                .map_err(|e| body_err(e.to_string()))?;
            w.finish()?
        }
    };
    tracing::info!(
        index = meta.index,
        bytes = body.n,
        values = if values_file.is_some() {
            "image"
        } else {
            "stream"
        },
        image_ms,
        index_ms,
        decoded_ms = decoded.as_millis() as u64,
        saved_ms = (started.elapsed() - decoded).as_millis() as u64,
        "received snapshot"
    );
    Ok(ReceivedSnapshot {
        file,
        state,
        values_file,
    })
}

/// A reader that copies what it reads into `w`.
struct Tee<R, W> {
    r: R,
    w: W,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.w.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A reader that counts what it reads.
struct Counted<R> {
    r: R,
    n: u64,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.r.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

/// Writes the body of snapshot `meta` as peers read it, values included, into `w`; `values` is
/// the member's live values database. With `as_image` (every member reads images), a member's
/// own snapshot whose values are in that database goes as an image of its file followed by the
/// file as it is ([`IMAGE_MAGIC`]). Otherwise: the file as it is, or, for such a snapshot, its
/// index (decoded against `values`, and encoded again) followed by a values
/// section ([`metastore_mvcc::Store::encode_values`]). `None` when the file is gone (a newer one
/// replaced it); else the bytes written. Blocking.
pub fn write_sendable(
    files: &SnapshotFiles,
    meta: &SnapshotMetadata,
    values: Option<&ValuesDatabase>,
    as_image: bool,
    mut w: impl Write,
) -> Result<Option<u64>, String> {
    let Some((mut body, len)) = files.open_body(meta).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let mut prefix = [0u8; 8];
    body.read_exact(&mut prefix).map_err(|e| e.to_string())?;
    if !StateMachine::values_in_store(prefix) {
        w.write_all(&prefix).map_err(|e| e.to_string())?;
        let copied = io::copy(&mut body, &mut w).map_err(|e| e.to_string())?;
        w.flush().map_err(|e| e.to_string())?;
        return Ok(Some(8 + copied));
    }
    if let Some(db) = values.filter(|_| as_image) {
        match db.image() {
            Ok(img) => return write_with_image(files, meta, img, (prefix, body, len), w),
            // Another peer's image is being read, say: this one gets the values as a stream.
            Err(e) => tracing::info!("sending the snapshot's values as a stream: {e}"),
        }
    }
    // The index, then its values in revision order: one ordered scan of the values database
    // here, sequential inserts at the receiver. The index is decoded against a view of the
    // database pinned now (not earlier: a pin keeps freed pages from reuse).
    let into = match values {
        Some(v) => metastore_mvcc::Store::on_disk(v.handle().map_err(|e| e.to_string())?),
        None => metastore_mvcc::Store::new(),
    };
    let state = StateMachine::read_snapshot(io::Cursor::new(prefix).chain(body), len, into)
        .map_err(|e| e.to_string())?;
    let mut counted = CountingWriter { w, n: 0 };
    state
        .write_snapshot(&mut counted, metastore_mvcc::ValuesIn::Store)
        .map_err(|e| e.to_string())?;
    state
        .store
        .encode_values(&mut counted)
        .map_err(|e| e.to_string())?;
    counted.flush().map_err(|e| e.to_string())?;
    Ok(Some(counted.n))
}

/// The image form of [`write_sendable`]: `img` begun after the snapshot's file was opened.
fn write_with_image(
    files: &SnapshotFiles,
    meta: &SnapshotMetadata,
    img: metastore_mvcc::image::Image,
    (prefix, mut body, body_len): ([u8; 8], impl Read, u64),
    w: impl Write,
) -> Result<Option<u64>, String> {
    // The snapshot's values were durable before its file existed, so they were committed before
    // the image's durable commit; one is deleted only after a newer snapshot has replaced this
    // file. So while the file is still there after the image began, the image holds them all.
    if !files.contains(meta) {
        return Ok(None);
    }
    let mut w = CountingWriter { w, n: 0 };
    let len = img.len();
    let e = |e: io::Error| e.to_string();
    w.write_all(&IMAGE_MAGIC).map_err(e)?;
    w.write_all(&len.to_le_bytes()).map_err(e)?;
    send_segments(img, &mut w, len).map_err(e)?;
    w.write_all(&body_len.to_le_bytes()).map_err(e)?;
    w.write_all(&prefix).map_err(e)?;
    let copied = 8 + io::copy(&mut body, &mut w).map_err(e)?;
    if copied != body_len {
        return Err(format!(
            "snapshot {} changed while it was sent ({copied} bytes of {body_len})",
            meta.index
        ));
    }
    w.flush().map_err(e)?;
    Ok(Some(w.n))
}

/// A writer that counts what passes through.
struct CountingWriter<W> {
    w: W,
    n: u64,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.w.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// A `Read` over chunks handed over from an async task (the gRPC stream), for [`receive`] on a
/// blocking thread.
pub struct ChunkReader {
    rx: tokio::sync::mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    /// Reads the chunks `rx` delivers until it closes.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        ChunkReader {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(c) => {
                    self.current = c;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::member::Member;
    use std::collections::BTreeMap;

    fn state() -> StateMachine {
        let mut members = BTreeMap::new();
        members.insert(
            1,
            Member {
                id: 1,
                name: "a".into(),
                peer_urls: vec!["http://127.0.0.1:1".into()],
                client_urls: vec![],
                is_learner: false,
            },
        );
        let mut sm = StateMachine::bootstrap(7, members);
        for i in 0..100u32 {
            let put = etcd_client::proto::PbPutRequest {
                key: format!("k{i}").into_bytes(),
                value: vec![b'v'; 100],
                ..Default::default()
            };
            sm.store.put(&put).unwrap();
        }
        sm
    }

    /// What a member whose own snapshot of `sm` keeps its values in the store sends a peer.
    fn sendable(sm: &StateMachine) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        files
            .write(&meta(), |w| {
                sm.write_snapshot(w, metastore_mvcc::ValuesIn::Store)
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        let mut sent = Vec::new();
        let n = write_sendable(
            &files,
            &meta(),
            sm.store.disk_values().map(|v| v.database()).as_ref(),
            false,
            &mut sent,
        )
        .unwrap()
        .unwrap();
        assert_eq!(n, sent.len() as u64);
        sent
    }

    /// Every key and version of `a` and `b` read the same, and their snapshots are equal.
    fn assert_same_key_space(a: &StateMachine, b: &StateMachine) {
        let all = etcd_client::proto::PbRangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        assert_eq!(a.store.range(&all).unwrap(), b.store.range(&all).unwrap());
        assert_eq!(
            a.store.to_snapshot().unwrap(),
            b.store.to_snapshot().unwrap()
        );
    }

    /// A state on `store` after `puts` puts over `keys` keys (values of `len` bytes and up,
    /// growing), compacted at revision `compact` and committed.
    fn written(
        store: metastore_mvcc::Store,
        puts: u32,
        keys: u32,
        len: usize,
        compact: i64,
    ) -> StateMachine {
        let mut sm = StateMachine::bootstrap_in(store, 7, BTreeMap::new());
        for i in 0..puts {
            let put = etcd_client::proto::PbPutRequest {
                key: format!("k{}", i % keys).into_bytes(),
                value: vec![b'a' + (i % 26) as u8; len + i as usize],
                ..Default::default()
            };
            sm.store.put(&put).unwrap();
        }
        sm.store.compact(compact).unwrap();
        sm.store.commit().unwrap();
        sm
    }

    fn meta() -> SnapshotMetadata {
        let mut m = SnapshotMetadata::default();
        m.index = 9;
        m.term = 3;
        m
    }

    #[test]
    fn a_snapshot_whose_values_are_on_disk_travels_as_index_then_values_and_damage_is_refused() {
        use metastore_mvcc::{DiskValues, Store};
        let on_disk = || Store::on_disk(DiskValues::in_memory().unwrap());
        let sm = written(on_disk(), 50, 20, 10, 30);
        let sent = sendable(&sm);
        let dir2 = tempfile::tempdir().unwrap();
        let theirs = SnapshotFiles::open(dir2.path()).unwrap();
        let got = receive(&theirs, &meta(), &sent[..], 1 << 20, on_disk(), None).unwrap();
        assert_same_key_space(&got.state, &sm);
        // Cut anywhere, or a value's length changed: refused.
        for cut in (0..sent.len()).step_by(7) {
            assert!(receive(&theirs, &meta(), &sent[..cut], 1 << 20, on_disk(), None).is_err());
        }
        // The last value (revision order: the last put, 59 bytes) follows its 8-byte length.
        let mut longer = sent.clone();
        let at = sent.len() - 59 - 8;
        longer[at] ^= 1;
        assert!(receive(&theirs, &meta(), &longer[..], 1 << 20, on_disk(), None).is_err());
        let mut extra = sent.clone();
        extra.push(0);
        assert!(receive(&theirs, &meta(), &extra[..], 1 << 20, on_disk(), None).is_err());
    }

    /// With an image: the body starts with the sender's values database file; the receiver
    /// keeps it under its pending name, reads the same state from it, and adopting it makes it
    /// the live database. A body cut anywhere is refused and leaves no file behind.
    #[test]
    fn a_snapshot_travels_with_an_image_of_the_values_file() {
        use metastore_mvcc::{DiskValues, Store};
        let ours = tempfile::tempdir().unwrap();
        let values = DiskValues::open(&ours.path().join("values.redb"), 1 << 20).unwrap();
        let sm = written(Store::on_disk(values), 400, 150, 200, 200);
        let files = SnapshotFiles::open(&ours.path().join("snap")).unwrap();
        files
            .write(&meta(), |w| {
                sm.store
                    .disk_values()
                    .unwrap()
                    .sync()
                    .map_err(|e| e.to_string())?;
                sm.write_snapshot(w, metastore_mvcc::ValuesIn::Store)
                    .map_err(|e| e.to_string())
            })
            .unwrap();
        let db = sm.store.disk_values().unwrap().database();
        let mut sent = Vec::new();
        let n = write_sendable(&files, &meta(), Some(&db), true, &mut sent)
            .unwrap()
            .unwrap();
        assert_eq!(n, sent.len() as u64);
        assert_eq!(sent[..8], IMAGE_MAGIC);

        let theirs = tempfile::tempdir().unwrap();
        let home = ValuesHome {
            path: theirs.path().join("values.redb"),
            cache_bytes: 1 << 20,
        };
        let their_files = SnapshotFiles::open(&theirs.path().join("snap")).unwrap();
        let leftovers = || {
            std::fs::read_dir(theirs.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "snap")
                .collect::<Vec<_>>()
        };
        let take = |body: &[u8], limit: u64| {
            receive(
                &their_files,
                &meta(),
                body,
                limit,
                Store::new(),
                Some(&home),
            )
        };
        for cut in [4, 12, 20, sent.len() / 2, sent.len() - 1] {
            let r = take(&sent[..cut], 1 << 26);
            assert!(r.is_err(), "cut at {cut}");
            assert!(leftovers().is_empty(), "cut at {cut}: {:?}", leftovers());
        }
        // Too large for this member: refused before the file is written.
        let r = take(&sent[..], 1000);
        assert!(matches!(r, Err(SnapshotFileError::TooLarge { .. })));
        // A segment flag or an image byte changed on the way: refused.
        for at in [16, 100] {
            let mut bad = sent.clone();
            bad[at] ^= 0x5a;
            let r = take(&bad[..], 1 << 26);
            assert!(r.is_err(), "byte {at} changed");
            assert!(leftovers().is_empty(), "{:?}", leftovers());
        }
        // Mangled at random (bytes flipped, removed, inserted): refused or decoded, never a
        // panic, and nothing left behind.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut refused = 0;
        for _ in 0..150 {
            let mut bad = sent.clone();
            let at = rng.gen_range(0..bad.len());
            match rng.gen_range(0..3) {
                0 => bad[at] ^= 1 << rng.gen_range(0..8),
                1 => {
                    bad.remove(at);
                }
                _ => bad.insert(at, rng.gen()),
            }
            let r = take(&bad[..], 1 << 26);
            refused += usize::from(r.is_err());
            drop(r);
            assert!(leftovers().is_empty(), "{:?}", leftovers());
        }
        assert!(refused > 140, "{refused} of 150 refused");
        // A member without a values database cannot take one.
        assert!(receive(
            &their_files,
            &meta(),
            &sent[..],
            1 << 26,
            Store::new(),
            None
        )
        .is_err());

        let got = take(&sent[..], 1 << 26).unwrap();
        assert_same_key_space(&got.state, &sm);
        their_files.adopt(got.file, &meta()).unwrap();
        got.values_file.unwrap().keep().adopt(&home.path).unwrap();
        assert_eq!(leftovers(), vec!["values.redb".to_string()]);
        drop(got.state);
        // What a restart reads: the adopted snapshot over the adopted database.
        let (_, body, len) = their_files.open_latest().unwrap().unwrap();
        let reopened = Store::on_disk(DiskValues::open(&home.path, 1 << 20).unwrap());
        let restarted = StateMachine::read_snapshot(body, len, reopened).unwrap();
        assert_same_key_space(&restarted, &sm);
    }

    /// A crash after the snapshot was adopted and before its database replaced the live one is
    /// finished at start; a database received for any other snapshot is removed.
    #[test]
    fn a_pending_values_database_is_settled_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let home = ValuesHome {
            path: dir.path().join("values.redb"),
            cache_bytes: 1 << 20,
        };
        std::fs::write(&home.path, b"old").unwrap();
        std::fs::write(home.pending_path(&meta()), b"new").unwrap();
        let mut other = meta();
        other.index = 5;
        std::fs::write(home.pending_path(&other), b"other").unwrap();
        std::fs::write(home.pending_path(&meta()), b"new too").unwrap();
        std::fs::write(dir.path().join("values.7-1.incoming"), b"half").unwrap();
        home.settle_pending(Some((meta().term, meta().index)))
            .unwrap();
        // Either database received with the snapshot backs it: one is taken, the other goes.
        let taken = std::fs::read(&home.path).unwrap();
        assert!(taken == b"new" || taken == b"new too", "{taken:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        std::fs::write(home.pending_path(&meta()), b"newer").unwrap();
        home.settle_pending(None).unwrap();
        assert_eq!(std::fs::read(&home.path).unwrap(), taken);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// A snapshot body mangled at random (bytes flipped, removed, inserted, lengths set huge)
    /// is refused or decoded, never a panic and never more memory than the limit allows.
    #[test]
    fn mangled_snapshot_bodies_never_panic_the_receiver() {
        use metastore_mvcc::{DiskValues, Store};
        use rand::{Rng, SeedableRng};
        let on_disk = || Store::on_disk(DiskValues::in_memory().unwrap());
        let mut sm = StateMachine::bootstrap_in(on_disk(), 7, BTreeMap::new());
        for i in 0..40u32 {
            let put = etcd_client::proto::PbPutRequest {
                key: format!("k{}", i % 15).into_bytes(),
                value: vec![b'a' + (i % 26) as u8; 5 + i as usize],
                lease: 0,
                ..Default::default()
            };
            sm.store.put(&put).unwrap();
        }
        sm.store.commit().unwrap();
        let sent = sendable(&sm);
        let theirs_dir = tempfile::tempdir().unwrap();
        let theirs = SnapshotFiles::open(theirs_dir.path()).unwrap();
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..400 {
            let mut body = sent.clone();
            for _ in 0..rng.gen_range(1..4) {
                let at = rng.gen_range(0..body.len());
                match rng.gen_range(0..4) {
                    0 => body[at] ^= 1 << rng.gen_range(0..8),
                    1 => {
                        body.remove(at);
                    }
                    2 => body.insert(at, rng.gen()),
                    _ => {
                        let end = (at + 8).min(body.len());
                        body[at..end].fill(0xff);
                    }
                }
            }
            match receive(&theirs, &meta(), &body[..], 1 << 20, on_disk(), None) {
                Ok(_) => ok += 1,
                Err(_) => refused += 1,
            }
        }
        // Most damage is caught; a flipped bit inside a value's bytes is not (no per-value
        // checksum in the stream: the transport is TCP, and TLS between members).
        assert!(refused > 200, "{ok} decoded, {refused} refused");
    }

    #[test]
    fn a_received_snapshot_is_written_and_decoded_and_an_oversized_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let files = SnapshotFiles::open(dir.path()).unwrap();
        let sm = state();
        let body = sm.to_snapshot().unwrap();
        let got = receive(
            &files,
            &meta(),
            body.as_slice(),
            1 << 20,
            metastore_mvcc::Store::new(),
            None,
        )
        .unwrap();
        assert_eq!(got.state.store, sm.store);
        assert_eq!(got.state.members, sm.members);
        files.adopt(got.file, &meta()).unwrap();
        let (m, _, _) = files.open_latest().unwrap().unwrap();
        assert_eq!(m, meta());
        let err = receive(
            &files,
            &meta(),
            body.as_slice(),
            1000,
            metastore_mvcc::Store::new(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotFileError::TooLarge { .. }), "{err}");
        // Truncated: refused, and nothing is left behind but the adopted file.
        let err = receive(
            &files,
            &meta(),
            &body[..body.len() / 2],
            1 << 20,
            metastore_mvcc::Store::new(),
            None,
        )
        .unwrap_err();
        assert!(matches!(err, SnapshotFileError::Body { .. }), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn chunks_from_an_async_task_read_as_one_stream() {
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let t = std::thread::spawn(move || {
            let mut out = Vec::new();
            ChunkReader::new(rx).read_to_end(&mut out).unwrap();
            out
        });
        for c in [vec![1u8, 2], vec![], vec![3, 4, 5]] {
            tx.blocking_send(c).unwrap();
        }
        drop(tx);
        assert_eq!(t.join().unwrap(), vec![1, 2, 3, 4, 5]);
    }
}
