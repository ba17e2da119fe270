//! The key space: per-key version histories in a persistent ordered map, the global revision,
//! writes, compaction and snapshots.
//!
//! The map is `imbl::OrdMap` (a B-tree whose nodes are shared by reference count) and values are
//! `Bytes`, so cloning a `Store` is O(1): a snapshot is a clone taken on the Raft thread and
//! written out elsewhere while writes go on (a write after the clone copies only the nodes on
//! its path, once).

use std::ops::Bound;

use bytes::Bytes;
use imbl::OrdMap;

use etcd_client::proto::{
    PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbEvent, PbKeyValue, PbPutRequest,
    PbPutResponse, PbResponseHeader,
};

use crate::consts::event_type;
use crate::values::{rev_key, DiskValues, RevKey, Value, Values};
use crate::MvccError;

/// One version of a key: written at `main` (sub-ordered by `sub` inside a txn); `None` = deleted.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Version {
    pub main: i64,
    pub sub: i64,
    pub data: Option<KeyData>,
}

/// What a live version holds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct KeyData {
    pub create_revision: i64,
    pub version: i64,
    pub value: Value,
    pub lease: i64,
}

/// Result of a write: the response and the events it produced (for watches), in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Applied<T> {
    /// The etcd response (header revision set, other header fields left to the caller).
    pub response: T,
    /// Events in revision order.
    pub events: Vec<PbEvent>,
}

/// The MVCC key space: an in-memory index of every key's versions, and their values (in the
/// index, or on disk: see [`crate::values`]). Cloning it is O(1) and gives a read view.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) keys: OrdMap<Vec<u8>, Vec<Version>>,
    pub(crate) revision: i64,
    pub(crate) compacted: i64,
    /// Bytes held for every stored version (see `version_bytes`), kept as writes and compactions happen
    /// (the quota check reads it on every write; recounting was O(history)).
    size_bytes: u64,
    /// Value bytes of every stored version (part of `size_bytes`).
    value_bytes: u64,
    pub(crate) values: Values,
    /// Largest Range (or compared range) a read builds, in bytes.
    pub(crate) max_response_bytes: u64,
}

/// The largest response etcd's gRPC server sends (`math.MaxInt32`): a Range that would build a
/// larger one is refused while it is being built, before it holds that much.
pub const MAX_RESPONSE_BYTES: u64 = i32::MAX as u64;

/// What one key-value adds to a response beyond its key and value bytes (revisions, version,
/// lease, framing).
pub(crate) const KV_OVERHEAD_BYTES: u64 = 40;

/// Two stores are equal when they hold the same versions (values compared as held: bytes in
/// memory, lengths on disk).
impl PartialEq for Store {
    fn eq(&self, other: &Self) -> bool {
        self.keys == other.keys
            && self.revision == other.revision
            && self.compacted == other.compacted
    }
}

/// What one version costs in memory beyond its key and value bytes: the version itself (revisions,
/// version, lease, the value's handle) and its share of the history vector and tree node.
pub const VERSION_OVERHEAD_BYTES: u64 = 64;

/// Bytes one version of `key` accounts for in the quota: what the member really holds for it.
fn version_bytes(key: &[u8], v: &Version) -> u64 {
    (key.len() + v.data.as_ref().map_or(0, |d| d.value.len())) as u64 + VERSION_OVERHEAD_BYTES
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

/// Key bounds of a request, with etcd's conventions: empty `range_end` = the key alone,
/// `range_end == "\0"` = every key from `key` on.
pub(crate) fn bounds<'a>(key: &'a [u8], range_end: &'a [u8]) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    if range_end.is_empty() {
        (Bound::Included(key), Bound::Included(key))
    } else if range_end == [0] {
        (Bound::Included(key), Bound::Unbounded)
    } else {
        (Bound::Included(key), Bound::Excluded(range_end))
    }
}

/// True when the bounds describe an empty interval (BTreeMap::range panics on those).
pub(crate) fn empty_bounds(b: &(Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match b {
        (Bound::Included(k), Bound::Excluded(e)) => e <= k,
        _ => false,
    }
}

impl Version {
    /// The key-value this version is (`None` for a tombstone), its value read from `values`.
    pub(crate) fn to_kv(
        &self,
        key: &[u8],
        values: &Values,
    ) -> Result<Option<PbKeyValue>, MvccError> {
        let Some(d) = &self.data else {
            return Ok(None);
        };
        Ok(Some(PbKeyValue {
            key: key.to_vec(),
            create_revision: d.create_revision,
            mod_revision: self.main,
            version: d.version,
            value: values.load(self.main, self.sub, &d.value)?.to_vec(),
            lease: d.lease,
        }))
    }
}

/// The newest version of a history visible at `rev`.
pub(crate) fn visible_at(history: &[Version], rev: i64) -> Option<&Version> {
    history.iter().rev().find(|v| v.main <= rev)
}

pub(crate) fn header(revision: i64) -> Option<PbResponseHeader> {
    Some(PbResponseHeader {
        revision,
        ..Default::default()
    })
}

impl Store {
    /// An empty key space at revision 1, like a fresh etcd, its values held in memory.
    pub fn new() -> Self {
        Store {
            keys: OrdMap::new(),
            revision: 1,
            compacted: 0,
            size_bytes: 0,
            value_bytes: 0,
            values: Values::Memory,
            max_response_bytes: MAX_RESPONSE_BYTES,
        }
    }

    /// An empty key space whose values are kept in `values`.
    pub fn on_disk(values: DiskValues) -> Self {
        Store {
            values: Values::Disk(values),
            ..Self::new()
        }
    }

    /// An empty key space whose values go where this one's go (the target of a snapshot read).
    pub fn empty_like(&self) -> Result<Store, MvccError> {
        Ok(match self.values.disk() {
            Some(d) => Store::on_disk(d.fresh_handle()?),
            None => Store::new(),
        })
    }

    /// Sets the largest response a Range may build (default [`MAX_RESPONSE_BYTES`]).
    pub fn set_max_response_bytes(&mut self, bytes: u64) {
        self.max_response_bytes = bytes;
    }

    /// The values database, when values are on disk.
    pub fn disk_values(&self) -> Option<&DiskValues> {
        self.values.disk()
    }

    /// The current revision.
    pub fn current_revision(&self) -> i64 {
        self.revision
    }

    /// The revision of the last compaction (0 if never compacted).
    pub fn compacted_revision(&self) -> i64 {
        self.compacted
    }

    /// Number of live keys at the current revision.
    pub fn key_count(&self) -> usize {
        self.keys
            .values()
            .filter(|h| h.last().is_some_and(|v| v.data.is_some()))
            .count()
    }

    /// Bytes held for every stored version: key, value and [`VERSION_OVERHEAD_BYTES`].
    pub fn approximate_size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Value bytes kept in the values database (0 when values are in memory): what a local
    /// snapshot, which references them, does not write.
    pub fn value_bytes_on_disk(&self) -> u64 {
        match self.values.disk() {
            Some(_) => self.value_bytes,
            None => 0,
        }
    }

    /// Counts [`Store::approximate_size_bytes`] from scratch.
    fn count_size_bytes(&self) -> u64 {
        self.keys
            .iter()
            .map(|(k, h)| h.iter().map(|v| version_bytes(k, v)).sum::<u64>())
            .sum()
    }

    /// Writes what the last applied writes left pending to the values database (not durably);
    /// a no-op for values in memory. Views taken after it see every write.
    pub fn commit(&mut self) -> Result<(), MvccError> {
        self.values.commit()
    }

    /// The compaction sequence this store (or view) has reached; see [`Store::release_deletes`].
    pub fn compaction_mark(&self) -> u64 {
        self.values.compaction_mark()
    }

    /// A snapshot of a view whose [`Store::compaction_mark`] was `mark` is durable: the values
    /// those compactions removed are deleted at the next commit.
    pub fn release_deletes(&mut self, mark: u64) {
        self.values.release_deletes(mark)
    }

    /// Deletes stored values this store does not reference, up to its revision: what a crash or
    /// a snapshot install left behind. Returns how many went. Run on a view, off the Raft
    /// thread: the live store only ever adds revisions above the view's.
    pub fn sweep_unreferenced(&self) -> Result<u64, MvccError> {
        if self.values.disk().is_none() {
            return Ok(0);
        }
        self.values.sweep(&self.stored_revisions(), self.revision)
    }

    /// Checks that the values database agrees with the index (a database received from a peer,
    /// its bytes already vouched for by a checksum); returns how many values were looked at.
    /// With at most `most` stored versions: every one is there, at its length (one ordered
    /// scan). With more: the database holds at least as many values as the index names, and the
    /// newest quarter of `most` and an even spread of the rest are there at their lengths. Reading
    /// every value of a gigabyte-sized database would take as long as receiving it, most of it to
    /// bring the file into memory; a value missing all the same fails the read that wants it,
    /// with an error, never with another value.
    pub fn check_stored_values(&self, most: usize) -> Result<u64, MvccError> {
        let Some(disk) = self.values.disk() else {
            return Ok(0);
        };
        let versions = self.stored_versions();
        if versions.len() <= most {
            return self.check_scan(&versions);
        }
        let held = disk.count()?;
        if held < versions.len() as u64 {
            return Err(MvccError::Storage(format!(
                "the values database holds {held} values where the index names {}",
                versions.len()
            )));
        }
        let newest = most / 4;
        let (older, last) = versions.split_at(versions.len() - newest);
        let mut n = self.check_scan(last)?;
        let spread = most - newest;
        for (k, len) in older
            .iter()
            .step_by(older.len().div_ceil(spread.max(1)).max(1))
        {
            if disk.get(k)?.len() != *len as usize {
                return Err(wrong_length(k));
            }
            n += 1;
        }
        Ok(n)
    }

    /// Checks, in one ordered scan, that every one of `versions` (sorted) is stored at its
    /// length.
    fn check_scan(&self, versions: &[(RevKey, u32)]) -> Result<u64, MvccError> {
        let keys: Vec<RevKey> = versions.iter().map(|(k, _)| *k).collect();
        let mut next = versions.iter();
        let mut n = 0u64;
        self.values.scan(&keys, |k, v| {
            match next.next() {
                Some((want, len)) if want == k && *len as usize == v.len() => {}
                _ => return Err(wrong_length(k)),
            }
            n += 1;
            Ok(())
        })?;
        Ok(n)
    }

    /// The revisions of every version whose value is stored on disk, sorted, with their lengths.
    pub(crate) fn stored_versions(&self) -> Vec<(RevKey, u32)> {
        let mut out: Vec<(RevKey, u32)> = self
            .keys
            .values()
            .flat_map(|h| h.iter())
            .filter_map(|v| match &v.data {
                Some(KeyData {
                    value: Value::Stored(len),
                    ..
                }) => Some((rev_key(v.main, v.sub), *len)),
                _ => None,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// The revisions of every version whose value is stored on disk, sorted.
    pub(crate) fn stored_revisions(&self) -> Vec<RevKey> {
        self.stored_versions().into_iter().map(|(k, _)| k).collect()
    }

    /// Live key-value of `key` at the current revision.
    pub(crate) fn current(&self, key: &[u8]) -> Result<Option<PbKeyValue>, MvccError> {
        match self.keys.get(key).and_then(|h| h.last()) {
            Some(v) => v.to_kv(key, &self.values),
            None => Ok(None),
        }
    }

    /// True when `key` is live at the current revision (no value read).
    pub(crate) fn is_live(&self, key: &[u8]) -> bool {
        self.keys
            .get(key)
            .and_then(|h| h.last())
            .is_some_and(|v| v.data.is_some())
    }

    /// Writes a put at revision `main`/`sub`; returns the event.
    pub(crate) fn write_put(
        &mut self,
        req: &PbPutRequest,
        main: i64,
        sub: i64,
    ) -> Result<PbEvent, MvccError> {
        let prev = self.current(&req.key)?;
        let value = match (&prev, req.ignore_value) {
            (Some(p), true) => Bytes::from(p.value.clone()),
            _ => Bytes::from(req.value.clone()),
        };
        let lease = match (&prev, req.ignore_lease) {
            (Some(p), true) => p.lease,
            _ => req.lease,
        };
        let (create_revision, version) = match &prev {
            Some(p) => (p.create_revision, p.version + 1),
            None => (main, 1),
        };
        let kv = PbKeyValue {
            key: req.key.clone(),
            create_revision,
            mod_revision: main,
            version,
            value: value.to_vec(),
            lease,
        };
        let v = Version {
            main,
            sub,
            data: Some(KeyData {
                create_revision,
                version,
                value: self.values.store(main, sub, value),
                lease,
            }),
        };
        self.size_bytes += version_bytes(&req.key, &v);
        self.value_bytes += kv.value.len() as u64;
        // A new key's history starts with room for one version, not Vec's four: most keys of a
        // large key space have one (compaction leaves one) and the index is most of a member's
        // memory.
        self.keys
            .entry(req.key.clone())
            .or_insert_with(|| Vec::with_capacity(1))
            .push(v);
        Ok(PbEvent {
            r#type: event_type::PUT,
            kv: Some(kv),
            prev_kv: prev,
        })
    }

    /// Writes tombstones for every live key in the range at `main`, subs from `sub`; returns
    /// the deleted key-values and events.
    pub(crate) fn write_delete(
        &mut self,
        key: &[u8],
        range_end: &[u8],
        main: i64,
        sub: &mut i64,
    ) -> Result<(Vec<PbKeyValue>, Vec<PbEvent>), MvccError> {
        let b = bounds(key, range_end);
        if empty_bounds(&b) {
            return Ok((vec![], vec![]));
        }
        let mut live = Vec::new();
        for (k, h) in self.keys.range::<_, [u8]>(b) {
            if let Some(kv) = h.last().map(|v| v.to_kv(k, &self.values)).transpose()? {
                live.extend(kv);
            }
        }
        let mut events = Vec::with_capacity(live.len());
        for kv in &live {
            if let Some(h) = self.keys.get_mut(&kv.key) {
                self.size_bytes += kv.key.len() as u64 + VERSION_OVERHEAD_BYTES;
                h.push(Version {
                    main,
                    sub: *sub,
                    data: None,
                });
            }
            *sub += 1;
            events.push(PbEvent {
                r#type: event_type::DELETE,
                kv: Some(PbKeyValue {
                    key: kv.key.clone(),
                    mod_revision: main,
                    ..Default::default()
                }),
                prev_kv: Some(kv.clone()),
            });
        }
        Ok((live, events))
    }

    /// etcd Put.
    pub fn put(&mut self, req: &PbPutRequest) -> Result<Applied<PbPutResponse>, MvccError> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        if (req.ignore_value || req.ignore_lease) && !self.is_live(&req.key) {
            return Err(MvccError::KeyNotFound);
        }
        let main = self.revision + 1;
        let ev = self.write_put(req, main, 0)?;
        self.revision = main;
        Ok(Applied {
            response: PbPutResponse {
                header: header(self.revision),
                prev_kv: if req.prev_kv {
                    ev.prev_kv.clone()
                } else {
                    None
                },
            },
            events: vec![ev],
        })
    }

    /// etcd DeleteRange.
    pub fn delete_range(
        &mut self,
        req: &PbDeleteRequest,
    ) -> Result<Applied<PbDeleteResponse>, MvccError> {
        if req.key.is_empty() {
            return Err(MvccError::EmptyKey);
        }
        let main = self.revision + 1;
        let mut sub = 0;
        let (deleted, events) = self.write_delete(&req.key, &req.range_end, main, &mut sub)?;
        if !deleted.is_empty() {
            self.revision = main;
        }
        Ok(Applied {
            response: PbDeleteResponse {
                header: header(self.revision),
                deleted: deleted.len() as i64,
                prev_kvs: if req.prev_kv { deleted } else { vec![] },
            },
            events,
        })
    }

    /// etcd Compact: forgets history no longer visible at `revision`.
    pub fn compact(&mut self, revision: i64) -> Result<PbCompactionResponse, MvccError> {
        if revision <= self.compacted {
            return Err(MvccError::Compacted);
        }
        if revision > self.revision {
            return Err(MvccError::FutureRevision);
        }
        // Keep the newest version visible at `revision` (unless it is a tombstone) and later.
        let keep_from = |h: &[Version]| match h.iter().rposition(|v| v.main <= revision) {
            Some(i) if h[i].data.is_some() => i,
            Some(i) => i + 1,
            None => 0,
        };
        // Only histories that lose versions are touched, so nodes shared with a snapshot being
        // written are copied only where something changes.
        let touched: Vec<Vec<u8>> = self
            .keys
            .iter()
            .filter(|(_, h)| keep_from(h) > 0)
            .map(|(k, _)| k.clone())
            .collect();
        let mut freed = 0;
        let mut freed_values = 0;
        let mut gone = Vec::new();
        for k in touched {
            let Some(h) = self.keys.get_mut(&k) else {
                continue;
            };
            let n = keep_from(h);
            for v in h.drain(..n) {
                freed += version_bytes(&k, &v);
                freed_values += v.data.as_ref().map_or(0, |d| d.value.len() as u64);
                if matches!(
                    v.data,
                    Some(KeyData {
                        value: Value::Stored(_),
                        ..
                    })
                ) {
                    gone.push(rev_key(v.main, v.sub));
                }
            }
            if h.is_empty() {
                self.keys.remove(&k);
            } else if h.capacity() > 2 * h.len() {
                // A key written many times and compacted to one version keeps room for one.
                h.shrink_to_fit();
            }
        }
        self.values.compacted(gone);
        self.size_bytes = self.size_bytes.saturating_sub(freed);
        self.value_bytes = self.value_bytes.saturating_sub(freed_values);
        self.compacted = revision;
        Ok(PbCompactionResponse {
            header: header(self.revision),
        })
    }

    /// Events of every write to keys in `[key, range_end)` (etcd's range conventions) at revisions
    /// `from..=to`, in revision order, each with the key's previous version as `prev_kv`. Fails
    /// with `Compacted` when `from` is older than the last compaction.
    pub fn events(
        &self,
        key: &[u8],
        range_end: &[u8],
        from: i64,
        to: i64,
    ) -> Result<Vec<PbEvent>, MvccError> {
        if from < self.compacted {
            return Err(MvccError::Compacted);
        }
        let b = bounds(key, range_end);
        if empty_bounds(&b) || from > to {
            return Ok(vec![]);
        }
        let mut out: Vec<(i64, i64, PbEvent)> = Vec::new();
        for (k, h) in self.keys.range::<_, [u8]>(b) {
            // Versions are in revision order: skip to the first one at or after `from`.
            let start = h.partition_point(|v| v.main < from);
            for i in start..h.len() {
                let v = &h[i];
                if v.main > to {
                    break;
                }
                let prev_kv = match i.checked_sub(1) {
                    Some(p) => h[p].to_kv(k, &self.values)?,
                    None => None,
                };
                let ev = match v.to_kv(k, &self.values)? {
                    Some(kv) => PbEvent {
                        r#type: event_type::PUT,
                        kv: Some(kv),
                        prev_kv,
                    },
                    None => PbEvent {
                        r#type: event_type::DELETE,
                        kv: Some(PbKeyValue {
                            key: k.clone(),
                            mod_revision: v.main,
                            ..Default::default()
                        }),
                        prev_kv,
                    },
                };
                out.push((v.main, v.sub, ev));
            }
        }
        out.sort_by_key(|(main, sub, _)| (*main, *sub));
        Ok(out.into_iter().map(|(_, _, e)| e).collect())
    }

    /// Feeds every version at or below `revision` (after the last compaction) to `f` in key
    /// and revision order: what a hash of the key space covers, so members holding the same
    /// history hash alike (etcd's HashKV).
    pub fn visit_versions(
        &self,
        revision: i64,
        mut f: impl FnMut(&[u8], i64, i64, Option<&[u8]>),
    ) -> Result<(), MvccError> {
        for (k, h) in &self.keys {
            for v in h.iter().take_while(|v| v.main <= revision) {
                match &v.data {
                    Some(d) => {
                        let value = self.values.load(v.main, v.sub, &d.value)?;
                        f(k, v.main, v.sub, Some(&value));
                    }
                    None => f(k, v.main, v.sub, None),
                }
            }
        }
        Ok(())
    }

    /// Sets the size counter after a decode.
    pub(crate) fn recount(&mut self) {
        self.size_bytes = self.count_size_bytes();
        self.value_bytes = self
            .keys
            .values()
            .flat_map(|h| h.iter())
            .filter_map(|v| v.data.as_ref())
            .map(|d| d.value.len() as u64)
            .sum();
    }
}

/// A stored value that is not the length the index gives.
fn wrong_length(k: &RevKey) -> MvccError {
    MvccError::Storage(format!(
        "the value of revision {}/{} has the wrong length",
        i64::from_be_bytes(k[..8].try_into().unwrap_or_default()),
        i64::from_be_bytes(k[8..].try_into().unwrap_or_default()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbDeleteRequest, PbPutRequest};

    /// A key's history holds room for the versions it has, not Vec's default four: put, read
    /// back from a snapshot, and compacted.
    #[test]
    fn histories_hold_no_unused_room() {
        let mut s = Store::new();
        let put = |s: &mut Store, k: &str| {
            let req = PbPutRequest {
                key: k.as_bytes().to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            };
            s.put(&req).unwrap();
        };
        put(&mut s, "one");
        for _ in 0..9 {
            put(&mut s, "many");
        }
        let room = |s: &Store, k: &str| s.keys.get(k.as_bytes()).map(|h| (h.len(), h.capacity()));
        assert_eq!(room(&s, "one"), Some((1, 1)));
        let r = Store::from_snapshot(&s.to_snapshot().unwrap()).unwrap();
        assert_eq!(room(&r, "one"), Some((1, 1)));
        assert_eq!(room(&r, "many"), Some((9, 9)));
        s.compact(s.revision).unwrap();
        assert_eq!(room(&s, "many"), Some((1, 1)));
    }

    /// Every stored version is checked while they are few; past `most`, a count of the values,
    /// the newest ones and a spread of the rest: each kind of damage they cover is refused.
    #[test]
    fn a_values_database_that_lacks_what_the_index_names_is_refused() {
        let mut s = Store::on_disk(DiskValues::in_memory().unwrap());
        for i in 0..300usize {
            let req = PbPutRequest {
                key: format!("k{i:03}").into_bytes(),
                value: vec![b'v'; 10 + i % 50],
                ..Default::default()
            };
            s.put(&req).unwrap();
        }
        s.commit().unwrap();
        assert_eq!(s.check_stored_values(1000).unwrap(), 300);
        let sampled = s.check_stored_values(40).unwrap();
        assert!((30..=40).contains(&sampled), "{sampled}");
        let versions = s.stored_versions();
        let change = |s: &mut Store, put: &[(RevKey, usize)], delete: &[RevKey]| {
            let Values::Disk(d) = &mut s.values else {
                unreachable!()
            };
            for (k, len) in put {
                d.put(*k, Bytes::from(vec![b'v'; *len]));
            }
            d.ready.extend_from_slice(delete);
            d.commit().unwrap();
        };
        let (first, first_len) = (versions[0].0, versions[0].1 as usize);
        let newest = versions[299].0;
        // A value no version names keeps the count up while one the spread reads goes.
        let extra = rev_key(10_000, 0);
        change(&mut s, &[(extra, 5)], &[first]);
        let check = |s: &Store, most| s.check_stored_values(most).map_err(|e| e.to_string());
        assert!(check(&s, 40).unwrap_err().contains("missing"));
        assert!(check(&s, 1000).is_err());
        change(&mut s, &[(first, first_len + 1)], &[]);
        assert!(check(&s, 40).unwrap_err().contains("wrong length"));
        change(&mut s, &[(first, first_len)], &[newest]);
        assert!(check(&s, 40).unwrap_err().contains("missing"));
        change(&mut s, &[], &[extra]);
        assert!(check(&s, 40).unwrap_err().contains("holds 299 values"));
    }

    #[test]
    fn the_kept_size_matches_a_recount_through_writes_deletes_compaction_and_snapshots() {
        let mut s = Store::new();
        for i in 0..50u32 {
            let req = PbPutRequest {
                key: format!("k{}", i % 7).into_bytes(),
                value: vec![b'v'; (i % 5) as usize * 10],
                ..Default::default()
            };
            s.put(&req).unwrap();
            if i % 9 == 0 {
                s.delete_range(&PbDeleteRequest {
                    key: b"k3".to_vec(),
                    ..Default::default()
                })
                .unwrap();
            }
            assert_eq!(s.approximate_size_bytes(), s.count_size_bytes());
        }
        s.compact(30).unwrap();
        assert_eq!(s.approximate_size_bytes(), s.count_size_bytes());
        let mut recounted = s.clone();
        recounted.recount();
        assert_eq!(recounted.value_bytes, s.value_bytes);
        assert!(s.value_bytes > 0);
        let r = Store::from_snapshot(&s.to_snapshot().unwrap()).unwrap();
        assert_eq!(r.approximate_size_bytes(), s.approximate_size_bytes());
        assert!(r.approximate_size_bytes() > 0);
    }
}
