//! The key space with its values in a database behaves exactly like the one with values in
//! memory, views keep reading what they pinned, compacted values outlive the snapshots that
//! reference them, and nothing a damaged snapshot claims is trusted.

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest,
    PbTxnRequest, PbTxnRequestOp,
};
use metastore_mvcc::{DiskValues, MvccError, Store, ValuesIn};

fn put(s: &mut Store, k: &str, v: &str) {
    s.put(&PbPutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .unwrap();
}

fn all(s: &Store, rev: i64) -> Vec<(String, String, i64)> {
    s.range(&PbRangeRequest {
        key: vec![0],
        range_end: vec![0],
        revision: rev,
        ..Default::default()
    })
    .unwrap()
    .kvs
    .into_iter()
    .map(|kv| {
        (
            String::from_utf8(kv.key).unwrap(),
            String::from_utf8(kv.value).unwrap(),
            kv.mod_revision,
        )
    })
    .collect()
}

/// The same writes, through puts, a txn with a value compare, deletes and a compaction.
fn workload(s: &mut Store) {
    for i in 0..40 {
        put(s, &format!("k{}", i % 9), &format!("v{i}"));
    }
    let txn = PbTxnRequest {
        compare: vec![PbCompare {
            key: b"k3".to_vec(),
            target_union: Some(PbTargetUnion::Value(b"v39".to_vec())),
            ..Default::default()
        }],
        success: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                key: b"k3".to_vec(),
                ignore_value: true,
                ..Default::default()
            })),
        }],
        failure: vec![PbTxnRequestOp {
            request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
                key: b"k3".to_vec(),
                ..Default::default()
            })),
        }],
    };
    s.txn(&txn).unwrap();
    s.delete_range(&PbDeleteRequest {
        key: b"k5".to_vec(),
        range_end: b"k7".to_vec(),
        prev_kv: true,
    })
    .unwrap();
    s.commit().unwrap();
    s.compact(30).unwrap();
    put(s, "k0", "after");
    s.commit().unwrap();
}

fn on_disk() -> Store {
    Store::on_disk(DiskValues::in_memory().unwrap())
}

#[test]
fn values_on_disk_answer_like_values_in_memory() {
    let mut mem = Store::new();
    let mut disk = on_disk();
    workload(&mut mem);
    workload(&mut disk);
    for rev in [0, 30, 40, 43] {
        assert_eq!(all(&mem, rev), all(&disk, rev), "at revision {rev}");
    }
    assert_eq!(
        mem.events(b"k", b"l", 30, 50).unwrap(),
        disk.events(b"k", b"l", 30, 50).unwrap()
    );
    let mut hm = Vec::new();
    mem.visit_versions(50, |k, m, s, v| {
        hm.push((k.to_vec(), m, s, v.map(<[u8]>::to_vec)))
    })
    .unwrap();
    let mut hd = Vec::new();
    disk.visit_versions(50, |k, m, s, v| {
        hd.push((k.to_vec(), m, s, v.map(<[u8]>::to_vec)))
    })
    .unwrap();
    assert_eq!(hm, hd);
    // Encodings with values carry the same bytes, wherever the values were.
    assert_eq!(mem.to_snapshot().unwrap(), disk.to_snapshot().unwrap());
    assert_eq!(
        disk.encoded_len(ValuesIn::Body),
        disk.to_snapshot().unwrap().len() as u64
    );
}

#[test]
fn a_reference_snapshot_reads_back_through_the_database_that_holds_its_values() {
    let mut disk = on_disk();
    workload(&mut disk);
    // The last value is longer than what follows its length in the encoding.
    put(&mut disk, "zz", &"x".repeat(100));
    disk.commit().unwrap();
    let mut local = Vec::new();
    disk.encode(&mut local, ValuesIn::Store).unwrap();
    assert_eq!(local.len() as u64, disk.encoded_len(ValuesIn::Store));
    assert!((local.len() as u64) < disk.encoded_len(ValuesIn::Body));
    let fresh = disk.disk_values().unwrap().fresh_handle().unwrap();
    let back = Store::decode(
        &local[..],
        local.len() as u64,
        ValuesIn::Store,
        Store::on_disk(fresh),
    )
    .unwrap();
    assert_eq!(back, disk);
    assert_eq!(all(&back, 0), all(&disk, 0));
    assert_eq!(back.approximate_size_bytes(), disk.approximate_size_bytes());
    // Without a database it cannot be read.
    assert!(matches!(
        Store::decode(
            &local[..],
            local.len() as u64,
            ValuesIn::Store,
            Store::new()
        ),
        Err(MvccError::Snapshot(_))
    ));
}

#[test]
fn compacted_values_stay_until_a_later_snapshot_is_durable_and_views_keep_theirs() {
    let mut s = on_disk();
    for i in 0..10 {
        put(&mut s, "k", &format!("v{i}"));
    }
    s.commit().unwrap();
    // A snapshot taken before the compaction references every version.
    let before = s.clone();
    let mut before_enc = Vec::new();
    before.encode(&mut before_enc, ValuesIn::Store).unwrap();
    let read_before = || {
        let h = s_values(&before);
        Store::decode(
            &before_enc[..],
            before_enc.len() as u64,
            ValuesIn::Store,
            Store::on_disk(h),
        )
        .and_then(|st| st.to_snapshot())
    };

    s.compact(8).unwrap();
    s.commit().unwrap();
    assert!(read_before().is_ok(), "deletes wait for a durable snapshot");
    // A view from before the compaction, taken as a snapshot job would.
    let mark = s.compaction_mark();
    s.disk_values().unwrap().sync().unwrap();
    s.release_deletes(mark);
    s.commit().unwrap();
    // The old view still reads what it pinned.
    assert_eq!(all(&before, 3), vec![("k".into(), "v1".into(), 3)]);
    // A fresh read of the old snapshot finds the compacted values gone.
    assert!(matches!(read_before(), Err(MvccError::Storage(_))));
    assert_eq!(all(&s, 0), vec![("k".into(), "v9".into(), 11)]);
}

fn s_values(s: &Store) -> DiskValues {
    s.disk_values().unwrap().fresh_handle().unwrap()
}

#[test]
fn a_sweep_removes_what_no_version_references() {
    let mut s = on_disk();
    for i in 0..20 {
        put(&mut s, &format!("k{i}"), "v");
    }
    s.commit().unwrap();
    // A newer, smaller state decoded into the same database (as a snapshot install does).
    let mut small = Store::new();
    for _ in 0..25 {
        put(&mut small, "k0", "v");
    }
    small.compact(26).unwrap();
    let bytes = small.to_snapshot().unwrap();
    let installed = Store::decode(
        &bytes[..],
        bytes.len() as u64,
        ValuesIn::Body,
        Store::on_disk(s_values(&s)),
    )
    .unwrap();
    assert_eq!(
        installed.sweep_unreferenced().unwrap(),
        20,
        "revisions 2..=21"
    );
    assert_eq!(installed.sweep_unreferenced().unwrap(), 0);
    assert_eq!(all(&installed, 0), vec![("k0".into(), "v".into(), 26)]);
}

#[test]
fn damaged_encodings_are_refused_in_both_forms() {
    let mut s = on_disk();
    workload(&mut s);
    let body = s.to_snapshot().unwrap();
    let mut local = Vec::new();
    s.encode(&mut local, ValuesIn::Store).unwrap();
    // Decoded into a fresh handle on the same database.
    let decode = |bytes: &[u8], form| {
        Store::decode(
            bytes,
            bytes.len() as u64,
            form,
            Store::on_disk(s_values(&s)),
        )
    };
    for (form, bytes) in [(ValuesIn::Body, &body), (ValuesIn::Store, &local)] {
        for cut in 0..bytes.len() {
            assert!(
                decode(&bytes[..cut], form).is_err(),
                "{form:?} cut at {cut}"
            );
        }
        // A count or length claiming more than there is: refused, nothing preallocated.
        let mut huge = bytes.clone();
        huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(decode(&huge, form).is_err());
        let mut long_key = bytes.clone();
        long_key[8..16].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(decode(&long_key, form).is_err());
    }
}

#[test]
fn a_values_section_of_many_batches_and_empty_values_arrives_whole() {
    // More than one batch by bytes (4 MiB) and by count (64 Ki), empty values among them.
    let mut sent = on_disk();
    for i in 0..70_000u32 {
        let value = if i % 2 == 0 {
            String::new()
        } else {
            "v".repeat(i as usize % 300)
        };
        put(&mut sent, &format!("k{:06}", i % 50_000), &value);
    }
    sent.commit().unwrap();
    let mut body = Vec::new();
    sent.encode(&mut body, ValuesIn::Store).unwrap();
    let index_len = body.len();
    sent.encode_values(&mut body).unwrap();
    let mut back = Store::decode(
        &body[..index_len],
        index_len as u64,
        ValuesIn::Store,
        on_disk(),
    )
    .unwrap();
    let rest = &body[index_len..];
    back.decode_values(rest, rest.len() as u64).unwrap();
    assert_eq!(all(&back, 0), all(&sent, 0));
    assert_eq!(all(&back, 30_000), all(&sent, 30_000));
    // Cut short in a later batch: refused, with the earlier batches already written.
    let mut cut = Store::decode(
        &body[..index_len],
        index_len as u64,
        ValuesIn::Store,
        on_disk(),
    )
    .unwrap();
    let short = &rest[..rest.len() - 10];
    assert!(cut.decode_values(short, short.len() as u64).is_err());
}
