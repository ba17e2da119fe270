//! Snapshots between members, off the Raft thread: one sent is streamed from its file (with
//! the values a member's own snapshot leaves in its values database put back in); one received
//! is decoded as it arrives (bounded memory, bounded size) into a state machine and saved as the
//! receiver's own snapshot, so the Raft loop only swaps the state in when Raft accepts it.

use std::io::{self, Read, Write};

use raft::eraftpb::SnapshotMetadata;

use crate::consensus::snapshot_files::{SnapshotFileError, SnapshotFiles, WrittenSnapshot};
use crate::replicated::state_machine::StateMachine;

/// Room for history and encoding beyond the quota in a snapshot body.
const SNAPSHOT_SLACK: u64 = 256 << 20;

/// The largest snapshot body a member with this quota accepts from a peer: the quota counts key
/// and value bytes of every version, the body adds a few dozen bytes per version on top.
pub fn max_snapshot_bytes(quota_backend_bytes: u64) -> u64 {
    quota_backend_bytes
        .saturating_mul(2)
        .saturating_add(SNAPSHOT_SLACK)
}

/// A received snapshot ready to install.
#[derive(Debug)]
pub struct ReceivedSnapshot {
    /// The durable file, under a temporary name until the Raft loop adopts it.
    pub file: WrittenSnapshot,
    /// The state it holds.
    pub state: StateMachine,
}

/// Decodes the body `body` of snapshot `meta` as it arrives (refusing more than `limit` bytes)
/// into `into` (an empty key space: see [`metastore_mvcc::Store::empty_like`]; values on disk
/// are written to the values database as they come), then writes this member's own snapshot
/// file of the state (values by reference, made durable first) into `files`. Nothing the size of
/// the body is written twice or held in memory. Blocking: call it off the Raft thread and off
/// async workers.
pub fn receive(
    files: &SnapshotFiles,
    meta: &SnapshotMetadata,
    body: impl Read,
    limit: u64,
    into: metastore_mvcc::Store,
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
    // The key space alone is declared larger than the limit.
    if StateMachine::key_space_len(prefix).saturating_add(8) > limit {
        return Err(SnapshotFileError::TooLarge { limit });
    }
    let whole = io::Cursor::new(prefix).chain(&mut body);
    let too_large = |n: u64| n >= limit;
    let mut state = match StateMachine::read_snapshot(whole, limit, into) {
        Ok(s) => s,
        // Decoding stopped at the limit: the body is larger than this member accepts.
        Err(_) if too_large(body.n) => return Err(SnapshotFileError::TooLarge { limit }),
        Err(e) => return Err(body_err(e.to_string())),
    };
    if StateMachine::values_in_store(prefix) {
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
    let mut rest = [0u8; 1];
    match body.read(&mut rest) {
        Ok(0) => {}
        Ok(_) if body.n > limit => return Err(SnapshotFileError::TooLarge { limit }),
        Ok(_) => return Err(body_err("bytes after the end of the state".into())),
        Err(e) => return Err(body_err(e.to_string())),
    }
    let decoded = started.elapsed();
    if let Some(values) = state.store.disk_values() {
        values.sync().map_err(|e| body_err(e.to_string()))?;
    }
    let mut w = files.create(meta, u64::MAX)?;
    state
        .write_snapshot(&mut w, metastore_mvcc::ValuesIn::Store)
        .map_err(|e| body_err(e.to_string()))?;
    let file = w.finish()?;
    tracing::info!(
        index = meta.index,
        bytes = body.n,
        decoded_ms = decoded.as_millis() as u64,
        saved_ms = (started.elapsed() - decoded).as_millis() as u64,
        "received snapshot"
    );
    Ok(ReceivedSnapshot { file, state })
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

/// Writes the body of snapshot `meta` as peers read it, values included, into `w`: the file as
/// it is, or, for a member's own snapshot whose values are in its values database, its index
/// (decoded into `into`, see [`metastore_mvcc::Store::empty_like`], and encoded again) followed
/// by a values section ([`metastore_mvcc::Store::encode_values`]). `None` when the file is gone (a newer one replaced it); else the bytes written.
/// Blocking.
pub fn write_sendable(
    files: &SnapshotFiles,
    meta: &SnapshotMetadata,
    into: metastore_mvcc::Store,
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
    // The index, then its values in revision order: one ordered scan of the values database
    // here, sequential inserts at the receiver.
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
        let n = write_sendable(&files, &meta(), sm.store.empty_like().unwrap(), &mut sent)
            .unwrap()
            .unwrap();
        assert_eq!(n, sent.len() as u64);
        sent
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
        let mut sm = StateMachine::bootstrap_in(on_disk(), 7, BTreeMap::new());
        for i in 0..50u32 {
            let put = etcd_client::proto::PbPutRequest {
                key: format!("k{}", i % 20).into_bytes(),
                value: vec![b'a' + (i % 26) as u8; 10 + i as usize],
                ..Default::default()
            };
            sm.store.put(&put).unwrap();
        }
        sm.store.compact(30).unwrap();
        sm.store.commit().unwrap();
        let sent = sendable(&sm);
        let dir2 = tempfile::tempdir().unwrap();
        let theirs = SnapshotFiles::open(dir2.path()).unwrap();
        let got = receive(&theirs, &meta(), &sent[..], 1 << 20, on_disk()).unwrap();
        let all = etcd_client::proto::PbRangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..Default::default()
        };
        assert_eq!(
            got.state.store.range(&all).unwrap(),
            sm.store.range(&all).unwrap()
        );
        assert_eq!(
            got.state.store.to_snapshot().unwrap(),
            sm.store.to_snapshot().unwrap()
        );
        // Cut anywhere, or a value's length changed: refused.
        for cut in (0..sent.len()).step_by(7) {
            assert!(receive(&theirs, &meta(), &sent[..cut], 1 << 20, on_disk()).is_err());
        }
        // The last value (revision order: the last put, 59 bytes) follows its 8-byte length.
        let mut longer = sent.clone();
        let at = sent.len() - 59 - 8;
        longer[at] ^= 1;
        assert!(receive(&theirs, &meta(), &longer[..], 1 << 20, on_disk()).is_err());
        let mut extra = sent.clone();
        extra.push(0);
        assert!(receive(&theirs, &meta(), &extra[..], 1 << 20, on_disk()).is_err());
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
            match receive(&theirs, &meta(), &body[..], 1 << 20, on_disk()) {
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
