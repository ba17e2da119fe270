//! etcd 3.5 semantics of the key space, rule by rule.

use etcd_client::proto::{
    PbCompare, PbDeleteRequest, PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest,
    PbTxnOpResponse, PbTxnRequest, PbTxnRequestOp,
};
use metastore_mvcc::consts::{compare_result, event_type, sort_order, sort_target};
use metastore_mvcc::{validate_txn, MvccError, Store};

fn put(s: &mut Store, k: &str, v: &str) -> i64 {
    s.put(&PbPutRequest {
        key: k.into(),
        value: v.into(),
        ..Default::default()
    })
    .unwrap()
    .response
    .header
    .unwrap()
    .revision
}

fn range(k: &str, end: &str) -> PbRangeRequest {
    PbRangeRequest {
        key: k.into(),
        range_end: end.into(),
        ..Default::default()
    }
}

fn keys(s: &Store, r: &PbRangeRequest) -> Vec<String> {
    s.range(r)
        .unwrap()
        .kvs
        .iter()
        .map(|kv| String::from_utf8(kv.key.clone()).unwrap())
        .collect()
}

fn get(s: &Store, k: &str) -> Option<etcd_client::proto::PbKeyValue> {
    s.range(&range(k, "")).unwrap().kvs.into_iter().next()
}

fn op_put(k: &str, v: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
            key: k.into(),
            value: v.into(),
            ..Default::default()
        })),
    }
}

fn op_del(k: &str, end: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestDeleteRange(PbDeleteRequest {
            key: k.into(),
            range_end: end.into(),
            ..Default::default()
        })),
    }
}

fn op_get(k: &str) -> PbTxnRequestOp {
    PbTxnRequestOp {
        request: Some(PbTxnOpRequest::RequestRange(range(k, ""))),
    }
}

fn cmp(k: &str, result: i32, target: PbTargetUnion) -> PbCompare {
    let t = match &target {
        PbTargetUnion::Version(_) => 0,
        PbTargetUnion::CreateRevision(_) => 1,
        PbTargetUnion::ModRevision(_) => 2,
        PbTargetUnion::Value(_) => 3,
        PbTargetUnion::Lease(_) => 4,
    };
    PbCompare {
        key: k.into(),
        result,
        target: t,
        target_union: Some(target),
        ..Default::default()
    }
}

#[test]
fn revisions_versions_and_generations() {
    let mut s = Store::new();
    assert_eq!(s.current_revision(), 1);
    assert_eq!(put(&mut s, "a", "1"), 2);
    assert_eq!(put(&mut s, "a", "2"), 3);
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
    let d = s
        .delete_range(&PbDeleteRequest {
            key: "a".into(),
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(d.response.deleted, 1);
    assert_eq!(d.response.prev_kvs[0].value, b"2");
    assert_eq!(d.response.header.unwrap().revision, 4);
    assert_eq!(d.events[0].r#type, event_type::DELETE);
    assert_eq!(d.events[0].kv.as_ref().unwrap().mod_revision, 4);
    assert!(get(&s, "a").is_none());
    // A delete that matches nothing does not bump the revision.
    let d = s
        .delete_range(&PbDeleteRequest {
            key: "zz".into(),
            ..Default::default()
        })
        .unwrap();
    assert_eq!((d.response.deleted, s.current_revision()), (0, 4));
    // A new generation starts over.
    assert_eq!(put(&mut s, "a", "3"), 5);
    let kv = get(&s, "a").unwrap();
    assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (5, 5, 1));
    // History is readable at old revisions.
    let old = s
        .range(&PbRangeRequest {
            key: "a".into(),
            revision: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(old.kvs[0].value, b"1");
    assert_eq!(
        old.header.unwrap().revision,
        5,
        "header carries the current revision"
    );
    let gone = s
        .range(&PbRangeRequest {
            key: "a".into(),
            revision: 4,
            ..Default::default()
        })
        .unwrap();
    assert!(gone.kvs.is_empty());
    assert_eq!(s.key_count(), 1);
}

#[test]
fn put_options_prev_kv_ignore_value_ignore_lease_and_events() {
    let mut s = Store::new();
    let r = s
        .put(&PbPutRequest {
            key: "k".into(),
            value: "v1".into(),
            lease: 7,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert!(r.response.prev_kv.is_none());
    assert_eq!(r.events[0].r#type, event_type::PUT);
    assert!(r.events[0].prev_kv.is_none());
    let r = s
        .put(&PbPutRequest {
            key: "k".into(),
            ignore_value: true,
            prev_kv: true,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(r.response.prev_kv.unwrap().value, b"v1");
    assert_eq!(r.events[0].prev_kv.as_ref().unwrap().value, b"v1");
    let kv = get(&s, "k").unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.lease),
        (&b"v1"[..], 0),
        "ignore_value keeps the value, lease reset to 0"
    );
    s.put(&PbPutRequest {
        key: "k".into(),
        value: "v2".into(),
        lease: 9,
        ..Default::default()
    })
    .unwrap();
    s.put(&PbPutRequest {
        key: "k".into(),
        value: "v3".into(),
        ignore_lease: true,
        ..Default::default()
    })
    .unwrap();
    assert_eq!(get(&s, "k").unwrap().lease, 9);
    let before = s.current_revision();
    for req in [
        PbPutRequest {
            key: "missing".into(),
            ignore_value: true,
            ..Default::default()
        },
        PbPutRequest {
            key: "missing".into(),
            ignore_lease: true,
            ..Default::default()
        },
    ] {
        assert_eq!(s.put(&req).unwrap_err(), MvccError::KeyNotFound);
    }
    assert_eq!(
        s.put(&PbPutRequest::default()).unwrap_err(),
        MvccError::EmptyKey
    );
    assert_eq!(s.current_revision(), before, "failed puts change nothing");
}

#[test]
fn range_bounds_prefix_from_key_and_all_keys() {
    let mut s = Store::new();
    for k in ["a", "b", "b/1", "b/2", "c", "\u{1}x"] {
        put(&mut s, k, "v");
    }
    assert_eq!(keys(&s, &range("b", "")), vec!["b"]);
    assert_eq!(keys(&s, &range("b/", "b0")), vec!["b/1", "b/2"]);
    assert_eq!(keys(&s, &range("b", "\0")), vec!["b", "b/1", "b/2", "c"]);
    assert_eq!(keys(&s, &range("\0", "\0")).len(), 6);
    assert!(
        keys(&s, &range("c", "a")).is_empty(),
        "inverted range is empty"
    );
    assert!(keys(&s, &range("nope", "")).is_empty());
    assert_eq!(s.range(&range("", "")).unwrap_err(), MvccError::EmptyKey);
}

#[test]
fn limit_more_count_keys_only_count_only() {
    let mut s = Store::new();
    for i in 0..5 {
        put(&mut s, &format!("k{i}"), &format!("v{i}"));
    }
    let mut r = range("k", "l");
    r.limit = 2;
    let resp = s.range(&r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more, resp.count), (2, true, 5));
    r.limit = 5;
    let resp = s.range(&r).unwrap();
    assert_eq!((resp.kvs.len(), resp.more), (5, false));
    r.limit = 0;
    r.keys_only = true;
    let resp = s.range(&r).unwrap();
    assert!(resp
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && !kv.key.is_empty()));
    r.keys_only = false;
    r.count_only = true;
    let resp = s.range(&r).unwrap();
    assert_eq!((resp.kvs.len(), resp.count), (0, 5));
}

#[test]
fn sorting_by_every_target_and_order() {
    let mut s = Store::new();
    put(&mut s, "a", "3"); // rev 2
    put(&mut s, "b", "1"); // rev 3
    put(&mut s, "c", "2"); // rev 4
    put(&mut s, "b", "9"); // rev 5, b version 2
    let sorted = |target: i32, order: i32| {
        let mut r = range("a", "z");
        r.sort_target = target;
        r.sort_order = order;
        keys(&s, &r).join("")
    };
    assert_eq!(sorted(sort_target::KEY, sort_order::NONE), "abc");
    assert_eq!(sorted(sort_target::KEY, sort_order::ASCEND), "abc");
    assert_eq!(sorted(sort_target::KEY, sort_order::DESCEND), "cba");
    assert_eq!(sorted(sort_target::VALUE, sort_order::ASCEND), "cab");
    assert_eq!(
        sorted(sort_target::VALUE, sort_order::NONE),
        "cab",
        "non-key target defaults to ascending"
    );
    assert_eq!(sorted(sort_target::VALUE, sort_order::DESCEND), "bac");
    assert_eq!(sorted(sort_target::MOD, sort_order::DESCEND), "bca");
    assert_eq!(sorted(sort_target::CREATE, sort_order::DESCEND), "cba");
    assert_eq!(&sorted(sort_target::VERSION, sort_order::DESCEND)[..1], "b");
    // Sort then limit: the limit applies after sorting.
    let mut r = range("a", "z");
    r.sort_target = sort_target::MOD;
    r.sort_order = sort_order::DESCEND;
    r.limit = 1;
    let resp = s.range(&r).unwrap();
    assert_eq!((resp.kvs[0].key.as_slice(), resp.more), (&b"b"[..], true));
}

#[test]
fn mod_and_create_revision_filters() {
    let mut s = Store::new();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "c", "1"); // 4
    put(&mut s, "a", "2"); // 5
    let with = |f: &dyn Fn(&mut PbRangeRequest)| {
        let mut r = range("a", "z");
        f(&mut r);
        keys(&s, &r).join("")
    };
    assert_eq!(with(&|r| r.min_mod_revision = 4), "ac");
    assert_eq!(with(&|r| r.max_mod_revision = 4), "bc");
    assert_eq!(with(&|r| r.min_create_revision = 3), "bc");
    assert_eq!(with(&|r| r.max_create_revision = 3), "ab");
    let mut r = range("a", "z");
    r.min_mod_revision = 4;
    r.limit = 1;
    let resp = s.range(&r).unwrap();
    assert_eq!(
        (keys(&s, &r).join(""), resp.more, resp.count),
        ("a".to_string(), true, 3)
    );
}

#[test]
fn revision_errors_and_compaction_boundary() {
    let mut s = Store::new();
    for i in 0..10 {
        put(&mut s, "k", &format!("v{i}")); // revs 2..=11
    }
    put(&mut s, "other", "x"); // 12
    s.delete_range(&PbDeleteRequest {
        key: "other".into(),
        ..Default::default()
    })
    .unwrap(); // 13
    let at = |s: &Store, rev: i64| {
        s.range(&PbRangeRequest {
            key: "\0".into(),
            range_end: "\0".into(),
            revision: rev,
            ..Default::default()
        })
    };
    assert_eq!(at(&s, 14).unwrap_err(), MvccError::FutureRevision);
    let before: Vec<_> = (6..=13).map(|r| at(&s, r).unwrap().kvs).collect();
    let size_before = s.approximate_size_bytes();

    assert_eq!(s.compact(14).unwrap_err(), MvccError::FutureRevision);
    s.compact(6).unwrap();
    assert_eq!(s.compacted_revision(), 6);
    assert!(s.approximate_size_bytes() < size_before);
    assert_eq!(at(&s, 5).unwrap_err(), MvccError::Compacted);
    let after: Vec<_> = (6..=13).map(|r| at(&s, r).unwrap().kvs).collect();
    assert_eq!(
        before, after,
        "reads at or after the compaction point are unchanged"
    );
    assert_eq!(s.compact(6).unwrap_err(), MvccError::Compacted);
    assert_eq!(s.compact(3).unwrap_err(), MvccError::Compacted);
    // Compacting past a delete drops the key entirely.
    s.compact(13).unwrap();
    assert_eq!(s.key_count(), 1);
    assert!(at(&s, 13).unwrap().kvs.iter().all(|kv| kv.key == b"k"));
    assert_eq!(
        get(&s, "k").unwrap().version,
        10,
        "version survives compaction"
    );
}

#[test]
fn txn_compares_on_every_target_including_missing_keys() {
    let mut s = Store::new();
    put(&mut s, "k", "b"); // rev 2
    let run = |s: &mut Store, c: PbCompare| {
        s.txn(&PbTxnRequest {
            compare: vec![c],
            ..Default::default()
        })
        .unwrap()
        .response
        .succeeded
    };
    use compare_result::*;
    assert!(run(
        &mut s,
        cmp("k", EQUAL, PbTargetUnion::Value("b".into()))
    ));
    assert!(run(
        &mut s,
        cmp("k", GREATER, PbTargetUnion::Value("a".into()))
    ));
    assert!(run(
        &mut s,
        cmp("k", LESS, PbTargetUnion::Value("c".into()))
    ));
    assert!(run(
        &mut s,
        cmp("k", NOT_EQUAL, PbTargetUnion::Value("x".into()))
    ));
    assert!(run(&mut s, cmp("k", EQUAL, PbTargetUnion::Version(1))));
    assert!(run(
        &mut s,
        cmp("k", EQUAL, PbTargetUnion::CreateRevision(2))
    ));
    assert!(run(
        &mut s,
        cmp("k", GREATER, PbTargetUnion::ModRevision(1))
    ));
    assert!(run(&mut s, cmp("k", EQUAL, PbTargetUnion::Lease(0))));
    assert!(!run(&mut s, cmp("k", LESS, PbTargetUnion::Version(1))));
    // Missing key: zero version/revisions, but a value compare always fails.
    assert!(run(
        &mut s,
        cmp("missing", EQUAL, PbTargetUnion::Version(0))
    ));
    assert!(run(
        &mut s,
        cmp("missing", EQUAL, PbTargetUnion::CreateRevision(0))
    ));
    assert!(!run(
        &mut s,
        cmp("missing", EQUAL, PbTargetUnion::Value(vec![]))
    ));
    assert!(!run(
        &mut s,
        cmp("missing", NOT_EQUAL, PbTargetUnion::Value("x".into()))
    ));
    // Range compares need every key to match.
    put(&mut s, "k2", "b");
    let mut c = cmp("k", EQUAL, PbTargetUnion::Value("b".into()));
    c.range_end = "l".into();
    assert!(run(&mut s, c.clone()));
    put(&mut s, "k3", "z");
    assert!(!run(&mut s, c));
    assert_eq!(s.current_revision(), 4, "compare-only txns write nothing");
}

#[test]
fn txn_branches_share_one_revision_and_see_their_own_writes() {
    let mut s = Store::new();
    put(&mut s, "gone", "x"); // 2
    let t = PbTxnRequest {
        compare: vec![cmp(
            "flag",
            compare_result::EQUAL,
            PbTargetUnion::Version(0),
        )],
        success: vec![
            op_put("a", "1"),
            op_put("b", "2"),
            op_del("gone", ""),
            op_get("a"),
        ],
        failure: vec![op_put("never", "x")],
    };
    let r = s.txn(&t).unwrap();
    assert!(r.response.succeeded);
    assert_eq!(s.current_revision(), 3);
    assert_eq!(r.response.header.as_ref().unwrap().revision, 3);
    assert_eq!(r.events.len(), 3);
    assert!(r
        .events
        .iter()
        .all(|e| e.kv.as_ref().unwrap().mod_revision == 3));
    match &r.response.responses[3].response {
        Some(PbTxnOpResponse::ResponseRange(rr)) => assert_eq!(rr.kvs[0].value, b"1"),
        other => panic!("unexpected {other:?}"),
    }
    match &r.response.responses[2].response {
        Some(PbTxnOpResponse::ResponseDeleteRange(d)) => assert_eq!(d.deleted, 1),
        other => panic!("unexpected {other:?}"),
    }
    assert!(get(&s, "never").is_none());
    // Failure branch.
    put(&mut s, "flag", "set");
    let r = s.txn(&t).unwrap();
    assert!(!r.response.succeeded);
    assert_eq!(get(&s, "never").unwrap().value, b"x");
    // A read-only txn does not bump the revision.
    let rev = s.current_revision();
    s.txn(&PbTxnRequest {
        success: vec![op_get("a")],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(s.current_revision(), rev);
}

#[test]
fn nested_txn_and_atomicity_on_error() {
    let mut s = Store::new();
    put(&mut s, "x", "1");
    let inner = PbTxnRequest {
        compare: vec![cmp(
            "x",
            compare_result::EQUAL,
            PbTargetUnion::Value("1".into()),
        )],
        success: vec![op_put("inner", "yes")],
        failure: vec![op_put("inner", "no")],
    };
    let outer = PbTxnRequest {
        success: vec![
            op_put("outer", "1"),
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestTxn(inner)),
            },
        ],
        ..Default::default()
    };
    let r = s.txn(&outer).unwrap();
    assert_eq!(get(&s, "inner").unwrap().value, b"yes");
    assert_eq!(
        get(&s, "inner").unwrap().mod_revision,
        get(&s, "outer").unwrap().mod_revision
    );
    match &r.response.responses[1].response {
        Some(PbTxnOpResponse::ResponseTxn(t)) => assert!(t.succeeded),
        other => panic!("unexpected {other:?}"),
    }
    // An op that fails (ignore_value on a missing key) fails the whole txn, changing nothing.
    let before = s.clone();
    let bad = PbTxnRequest {
        success: vec![
            op_put("first", "1"),
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestPut(PbPutRequest {
                    key: "missing".into(),
                    ignore_value: true,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(&bad).unwrap_err(), MvccError::KeyNotFound);
    assert_eq!(s, before);
    let future = PbTxnRequest {
        success: vec![
            op_put("first", "1"),
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestRange(PbRangeRequest {
                    key: "x".into(),
                    revision: 999,
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(s.txn(&future).unwrap_err(), MvccError::FutureRevision);
    assert_eq!(s, before);
}

#[test]
fn txn_validation_limits_and_duplicates() {
    let many = |n: usize| PbTxnRequest {
        success: (0..n).map(|i| op_put(&format!("k{i}"), "v")).collect(),
        ..Default::default()
    };
    assert!(validate_txn(&many(128), 128).is_ok());
    assert_eq!(
        validate_txn(&many(129), 128).unwrap_err(),
        MvccError::TooManyOps
    );
    let cmps = PbTxnRequest {
        compare: (0..3)
            .map(|_| cmp("a", 0, PbTargetUnion::Version(0)))
            .collect(),
        ..Default::default()
    };
    assert_eq!(validate_txn(&cmps, 2).unwrap_err(), MvccError::TooManyOps);
    let dup = PbTxnRequest {
        success: vec![op_put("a", "1"), op_put("a", "2")],
        ..Default::default()
    };
    assert_eq!(
        validate_txn(&dup, 128).unwrap_err(),
        MvccError::DuplicateKey
    );
    let put_in_deleted = PbTxnRequest {
        success: vec![op_del("a", "c"), op_put("b", "2")],
        ..Default::default()
    };
    assert_eq!(
        validate_txn(&put_in_deleted, 128).unwrap_err(),
        MvccError::DuplicateKey
    );
    let nested_dup = PbTxnRequest {
        success: vec![
            op_put("a", "1"),
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestTxn(PbTxnRequest {
                    success: vec![op_put("a", "2")],
                    ..Default::default()
                })),
            },
        ],
        ..Default::default()
    };
    assert_eq!(
        validate_txn(&nested_dup, 128).unwrap_err(),
        MvccError::DuplicateKey
    );
    // The same key in the two different branches is fine.
    let both = PbTxnRequest {
        success: vec![op_put("a", "1")],
        failure: vec![op_put("a", "2")],
        ..Default::default()
    };
    assert!(validate_txn(&both, 128).is_ok());
    let empty = PbTxnRequest {
        success: vec![op_put("", "1")],
        ..Default::default()
    };
    assert_eq!(validate_txn(&empty, 128).unwrap_err(), MvccError::EmptyKey);
}

#[test]
fn snapshot_round_trip_is_identical() {
    let mut s = Store::new();
    for i in 0..100 {
        put(&mut s, &format!("k{}", i % 7), &format!("v{i}"));
    }
    s.compact(50).unwrap();
    let back = Store::from_snapshot(&s.to_snapshot().unwrap()).unwrap();
    assert_eq!(back, s);
    assert!(matches!(
        Store::from_snapshot(b"nonsense"),
        Err(MvccError::Snapshot(_))
    ));
}

#[test]
fn error_messages_are_etcds() {
    assert_eq!(
        MvccError::Compacted.etcd_message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    assert_eq!(
        MvccError::FutureRevision.etcd_message(),
        "etcdserver: mvcc: required revision is a future revision"
    );
    assert_eq!(
        MvccError::TooManyOps.etcd_message(),
        "etcdserver: too many operations in txn request"
    );
}

#[test]
fn history_events_match_what_the_writes_produced() {
    use etcd_client::proto::{PbDeleteRequest, PbPutRequest};
    let mut s = metastore_mvcc::Store::new();
    let mut produced = Vec::new();
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2")] {
        let r = s
            .put(&PbPutRequest {
                key: k.into(),
                value: v.into(),
                ..Default::default()
            })
            .unwrap();
        produced.extend(r.events);
    }
    let d = s
        .delete_range(&PbDeleteRequest {
            key: b"a".to_vec(),
            range_end: b"c".to_vec(),
            ..Default::default()
        })
        .unwrap();
    produced.extend(d.events);
    // Everything, from the first write on, with prev_kv, in revision order.
    let all = s.events(b"\0", b"\0", 2, s.current_revision()).unwrap();
    assert_eq!(all, produced);
    // One key, a window of revisions.
    let a = s.events(b"a", b"", 3, 5).unwrap();
    let revs: Vec<i64> = a
        .iter()
        .map(|e| e.kv.as_ref().unwrap().mod_revision)
        .collect();
    assert_eq!(revs, [4, 5]);
    assert_eq!(a[0].prev_kv.as_ref().unwrap().value, b"1");
    assert_eq!(a[1].r#type, 1, "DELETE");
    // Compacted history is refused.
    s.compact(4).unwrap();
    assert!(s.events(b"a", b"", 3, 5).is_err());
    assert_eq!(s.events(b"a", b"", 5, 5).unwrap().len(), 1);
}

#[test]
fn key_order_ranges_agree_with_the_general_path() {
    // Ranges with no revision filter in key order take a path that copies only what it returns;
    // a filter that keeps everything sends the same request down the general path. Both must
    // give the same answer at every revision, for every combination of limit and flags.
    let mut s = Store::new();
    let mut revs = vec![];
    for i in 0..40u32 {
        let k = format!("k{:02}", (i * 7) % 23);
        revs.push(put(&mut s, &k, &format!("v{i}")));
        if i % 5 == 4 {
            let del = PbDeleteRequest {
                key: format!("k{:02}", (i * 3) % 23).into(),
                ..Default::default()
            };
            s.delete_range(&del).unwrap();
        }
    }
    for &rev in revs.iter().step_by(3).chain([0].iter()) {
        for (key, end) in [
            ("k", "l"),
            ("k05", "k15"),
            ("k07", ""),
            ("a", "\0"),
            ("z", "a"),
        ] {
            for limit in [0, 1, 3, 100] {
                for (keys_only, count_only) in [(false, false), (true, false), (false, true)] {
                    for order in [sort_order::NONE, sort_order::ASCEND] {
                        let fast = PbRangeRequest {
                            revision: rev,
                            limit,
                            keys_only,
                            count_only,
                            sort_order: order,
                            sort_target: sort_target::KEY,
                            ..range(key, end)
                        };
                        let general = PbRangeRequest {
                            max_mod_revision: i64::MAX,
                            ..fast.clone()
                        };
                        assert_eq!(
                            s.range(&fast),
                            s.range(&general),
                            "{key}..{end} at {rev}, limit {limit}, keys_only {keys_only}, count_only {count_only}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_range_past_the_response_limit_is_refused_while_it_is_built_and_a_txn_before_it_writes() {
    let mut s = Store::new();
    for i in 0..100 {
        put(&mut s, &format!("k{i:03}"), &"v".repeat(100));
    }
    // 100 key-values of ~144 bytes each: 14 KB.
    s.set_max_response_bytes(5000);
    let all = range("k", "l");
    assert!(matches!(
        s.range(&all),
        Err(MvccError::ResponseTooLarge(5000))
    ));
    // Sorted or filtered ranges too.
    let sorted = PbRangeRequest {
        sort_target: sort_target::MOD,
        sort_order: sort_order::DESCEND,
        ..range("k", "l")
    };
    assert!(matches!(
        s.range(&sorted),
        Err(MvccError::ResponseTooLarge(_))
    ));
    // What fits is answered: a page, keys only, a count.
    let page = PbRangeRequest {
        limit: 10,
        ..range("k", "l")
    };
    assert_eq!(s.range(&page).unwrap().kvs.len(), 10);
    // A sorted range reads every key-value before it sorts: its limit does not shrink that.
    assert!(matches!(
        s.range(&PbRangeRequest {
            limit: 10,
            ..sorted
        }),
        Err(MvccError::ResponseTooLarge(_))
    ));
    let keys_only = PbRangeRequest {
        keys_only: true,
        ..range("k", "l")
    };
    assert_eq!(s.range(&keys_only).unwrap().kvs.len(), 100);
    let count = PbRangeRequest {
        count_only: true,
        ..range("k", "l")
    };
    assert_eq!(s.range(&count).unwrap().count, 100);
    // A txn that would write and then read too much is refused whole: nothing written.
    let before = s.current_revision();
    let txn = PbTxnRequest {
        success: vec![
            op_put("new", "x"),
            PbTxnRequestOp {
                request: Some(PbTxnOpRequest::RequestRange(range("k", "l"))),
            },
        ],
        ..Default::default()
    };
    assert!(matches!(s.txn(&txn), Err(MvccError::ResponseTooLarge(_))));
    assert_eq!(s.current_revision(), before);
    assert!(get(&s, "new").is_none());
}
