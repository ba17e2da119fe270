//! The key space's snapshot encoding, streamed both ways: nothing proportional to the data is
//! built in memory, and no length in the input is trusted beyond the bytes it is given.
//!
//! The layout is bincode's legacy encoding of the first format's serde structs (so snapshots
//! written by earlier versions read back): key count, then per key its bytes and its versions
//! (`main`, `sub`, tombstone flag, create revision, version, value length and bytes, lease), then
//! the revision and the compacted revision; integers fixed-width little-endian, lengths `u64`.
//! [`ValuesIn::Store`] omits the value bytes: the values database of the member that wrote it
//! holds them (its own local snapshots only).

use std::io::{Read, Write};

use bytes::Bytes;

use crate::store::{KeyData, Store, Version};
use crate::values::{write_batches, Value, ValueBatch};
use crate::MvccError;

/// Where an encoding keeps the values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValuesIn {
    /// In the encoding (snapshots sent to peers or clients).
    Body,
    /// In the writer's values database, by revision (a member's own snapshots).
    Store,
}

fn io(e: std::io::Error) -> MvccError {
    MvccError::Snapshot(e.to_string())
}

impl Store {
    /// Serializes the whole key space, values included (tests).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, MvccError> {
        let mut out = Vec::new();
        self.encode(&mut out, ValuesIn::Body)?;
        Ok(out)
    }

    /// Rebuilds a key space (values in memory) from [`Store::to_snapshot`] output.
    pub fn from_snapshot(bytes: &[u8]) -> Result<Store, MvccError> {
        Self::decode(bytes, bytes.len() as u64, ValuesIn::Body, Store::new())
    }

    /// Writes the key space to `w` (buffer it: the writes are small).
    pub fn encode(&self, mut w: impl Write, values: ValuesIn) -> Result<(), MvccError> {
        let mut put = |b: &[u8]| w.write_all(b).map_err(io);
        put(&(self.keys.len() as u64).to_le_bytes())?;
        for (k, h) in &self.keys {
            put(&(k.len() as u64).to_le_bytes())?;
            put(k)?;
            put(&(h.len() as u64).to_le_bytes())?;
            for v in h {
                put(&v.main.to_le_bytes())?;
                put(&v.sub.to_le_bytes())?;
                let Some(d) = &v.data else {
                    put(&[0])?;
                    continue;
                };
                put(&[1])?;
                put(&d.create_revision.to_le_bytes())?;
                put(&d.version.to_le_bytes())?;
                put(&(d.value.len() as u64).to_le_bytes())?;
                if values == ValuesIn::Body {
                    put(&self.values.load(v.main, v.sub, &d.value)?)?;
                }
                put(&d.lease.to_le_bytes())?;
            }
        }
        put(&self.revision.to_le_bytes())?;
        put(&self.compacted.to_le_bytes())
    }

    /// The length of [`Store::encode`]'s output, counted without reading a value.
    pub fn encoded_len(&self, values: ValuesIn) -> u64 {
        let mut n = 8 + 16;
        for (k, h) in &self.keys {
            n += 8 + k.len() as u64 + 8;
            for v in h {
                n += 17;
                if let Some(d) = &v.data {
                    n += 32;
                    if values == ValuesIn::Body {
                        n += d.value.len() as u64;
                    }
                }
            }
        }
        n
    }

    /// Reads a key space written by [`Store::encode`] from at most `limit` bytes of `r` into
    /// `into` (an empty store: its values go where `into`'s go). Values on disk are committed as
    /// they come, in bounded batches.
    pub fn decode(
        r: impl Read,
        limit: u64,
        values: ValuesIn,
        mut into: Store,
    ) -> Result<Store, MvccError> {
        if values == ValuesIn::Store && into.values.disk().is_none() {
            return Err(MvccError::Snapshot(
                "a snapshot whose values are in a database, read without one".into(),
            ));
        }
        let mut r = Bounded { r, left: limit };
        let keys = r.u64()?;
        let mut last_key: Option<Vec<u8>> = None;
        for _ in 0..keys {
            let len = r.len()?;
            let key = r.bytes(len)?;
            if last_key.as_ref().is_some_and(|l| *l >= key) {
                return Err(MvccError::Snapshot("keys out of order".into()));
            }
            let count = r.u64()?;
            // Exactly as long as it is (an empty Vec grows to 4 at its first push: three unused
            // versions per key of a million single-version keys are 200 MB), but no larger than a
            // damaged count could make it before the versions are there.
            let mut history = Vec::with_capacity(count.min(1024) as usize);
            for _ in 0..count {
                let main = r.i64()?;
                let sub = r.i64()?;
                let data = match r.u8()? {
                    0 => None,
                    1 => {
                        let create_revision = r.i64()?;
                        let version = r.i64()?;
                        let value = match values {
                            ValuesIn::Body => {
                                let len = r.len()?;
                                let bytes = Bytes::from(r.bytes(len)?);
                                into.values.store(main, sub, bytes)
                            }
                            // Only a length: the bytes are in the database, not after it.
                            ValuesIn::Store => {
                                let len = r.u64()?;
                                Value::Stored(u32::try_from(len).map_err(|_| {
                                    MvccError::Snapshot(format!("value of {len} bytes"))
                                })?)
                            }
                        };
                        let lease = r.i64()?;
                        Some(KeyData {
                            create_revision,
                            version,
                            value,
                            lease,
                        })
                    }
                    t => return Err(MvccError::Snapshot(format!("version tag {t}"))),
                };
                history.push(Version { main, sub, data });
            }
            into.values.commit_if_large()?;
            into.keys.insert(key.clone(), history);
            last_key = Some(key);
        }
        into.revision = r.i64()?;
        into.compacted = r.i64()?;
        into.values.commit()?;
        into.recount();
        Ok(into)
    }
}

impl Store {
    /// Writes the values section that follows a [`ValuesIn::Store`] encoding sent to another
    /// member: the count, then every stored value in revision order (revision, length, bytes),
    /// read in one ordered scan of the database. Returns the bytes written.
    pub fn encode_values(&self, mut w: impl Write) -> Result<u64, MvccError> {
        let keep = self.stored_revisions();
        w.write_all(&(keep.len() as u64).to_le_bytes())
            .map_err(io)?;
        let mut n = 8u64;
        self.values.scan(&keep, |k, v| {
            w.write_all(k).map_err(io)?;
            w.write_all(&(v.len() as u64).to_le_bytes()).map_err(io)?;
            w.write_all(v).map_err(io)?;
            n += 24 + v.len() as u64;
            Ok(())
        })?;
        Ok(n)
    }

    /// Reads a values section written by [`Store::encode_values`] from at most `limit` bytes of
    /// `r` into this store's values database: exactly the values its index references, in
    /// revision order, each of the length the index says; anything else is refused.
    pub fn decode_values(&mut self, r: impl Read, limit: u64) -> Result<(), MvccError> {
        let Some(db) = self.values.bulk_target() else {
            return Err(MvccError::Snapshot(
                "a values section for a store without a values database".into(),
            ));
        };
        let want = self.stored_versions();
        // Decoding here, writing on a second thread; written batches come back for reuse.
        let (full_tx, full_rx) = std::sync::mpsc::sync_channel::<ValueBatch>(1);
        let (empty_tx, empty_rx) = std::sync::mpsc::sync_channel::<ValueBatch>(BATCHES);
        let (read, wrote) = std::thread::scope(|s| {
            let writer = s.spawn(move || write_batches(&db, full_rx, empty_tx));
            let read = read_values(r, limit, &want, full_tx, empty_rx);
            let wrote = writer
                .join()
                .unwrap_or_else(|_| Err(MvccError::Storage("the values writer panicked".into())));
            (read, wrote)
        });
        // A writer that failed closes its end, which stops the reader: its error says why.
        wrote?;
        read?;
        self.values.refresh()
    }
}

/// Value batches a bulk load allocates: one being written, one queued, one being filled.
const BATCHES: usize = 3;

/// Reads a values section (see [`Store::decode_values`]) from `r`, checking it against `want`,
/// into batches sent to `full`, reusing those `empty` hands back.
fn read_values(
    r: impl Read,
    limit: u64,
    want: &[(crate::values::RevKey, u32)],
    full: std::sync::mpsc::SyncSender<ValueBatch>,
    empty: std::sync::mpsc::Receiver<ValueBatch>,
) -> Result<(), MvccError> {
    let mut r = Bounded { r, left: limit };
    let count = r.u64()?;
    if count != want.len() as u64 {
        return Err(MvccError::Snapshot(format!(
            "{count} values sent for {} stored versions",
            want.len()
        )));
    }
    let writer_gone = || MvccError::Storage("the values writer stopped".into());
    let mut batch = ValueBatch::default();
    let mut made = 1;
    for (rev, len) in want {
        let mut k = [0u8; 16];
        r.fill(&mut k)?;
        if k != *rev {
            return Err(MvccError::Snapshot("values out of revision order".into()));
        }
        let n = r.len()?;
        if n != *len as usize {
            return Err(MvccError::Snapshot(format!(
                "a value of {n} bytes where the index says {len}"
            )));
        }
        batch.push(k, n, |buf| r.fill(buf))?;
        if batch.is_full() {
            full.send(batch).map_err(|_| writer_gone())?;
            // A few batches in all: new ones until then, written ones after.
            batch = if made < BATCHES {
                made += 1;
                ValueBatch::default()
            } else {
                empty.recv().map_err(|_| writer_gone())?
            };
        }
    }
    if !batch.is_empty() {
        full.send(batch).map_err(|_| writer_gone())?;
    }
    Ok(())
}

/// A reader that refuses to read past `left` bytes.
struct Bounded<R> {
    r: R,
    left: u64,
}

impl<R: Read> Bounded<R> {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), MvccError> {
        if buf.len() as u64 > self.left {
            return Err(MvccError::Snapshot(format!(
                "{} bytes wanted, {} left",
                buf.len(),
                self.left
            )));
        }
        self.r.read_exact(buf).map_err(io)?;
        self.left -= buf.len() as u64;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, MvccError> {
        let mut b = [0u8; 1];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn u64(&mut self) -> Result<u64, MvccError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, MvccError> {
        let mut b = [0u8; 8];
        self.fill(&mut b)?;
        Ok(i64::from_le_bytes(b))
    }

    /// A length, refused when more than what is left could hold.
    fn len(&mut self) -> Result<usize, MvccError> {
        let n = self.u64()?;
        if n > self.left {
            return Err(MvccError::Snapshot(format!(
                "length {n} with {} bytes left",
                self.left
            )));
        }
        usize::try_from(n).map_err(|_| MvccError::Snapshot(format!("length {n}")))
    }

    fn bytes(&mut self, n: usize) -> Result<Vec<u8>, MvccError> {
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }
}
