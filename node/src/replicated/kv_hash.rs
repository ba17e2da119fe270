//! The hash of a key space's history up to a revision (what HashKV answers): members holding the
//! same history hash alike, and a snapshot's hash can be compared with a live member's.

use metastore_mvcc::{MvccError, Store};

/// SHA-1 of every version of every key at or below `rev` (key, revision, value or tombstone),
/// first four bytes, big-endian.
pub fn kv_hash(store: &Store, rev: i64) -> Result<u32, MvccError> {
    use sha1::{Digest, Sha1};
    let mut h = Sha1::new();
    store.visit_versions(rev, |k, main, sub, v| {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k);
        h.update(main.to_be_bytes());
        h.update(sub.to_be_bytes());
        match v {
            Some(v) => {
                h.update([1]);
                h.update((v.len() as u64).to_be_bytes());
                h.update(v);
            }
            None => h.update([0]),
        }
    })?;
    let d = h.finalize();
    Ok(u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
}
