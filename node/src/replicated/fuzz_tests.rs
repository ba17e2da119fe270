//! Property tests of everything a member decodes or applies from the network (issue 17): log
//! entries (client requests as proposed, and arbitrary bytes), snapshots (valid, mangled,
//! truncated), Raft contexts, membership changes and raw peer messages. None may panic, whatever
//! a client or a peer sends: an entry that panicked `apply` would crash every member on every
//! restart. Bounded: `PROPTEST_CASES` cases per property (256 by default).

use std::collections::BTreeMap;

use etcd_client::proto::{
    PbAlarmRequest, PbCompactionRequest, PbCompare, PbDeleteRequest, PbLeaseGrantRequest,
    PbLeaseRevokeRequest, PbPutRequest, PbRangeRequest, PbTargetUnion, PbTxnOpRequest,
    PbTxnRequest, PbTxnRequestOp,
};
use proptest::collection::vec;
use proptest::prelude::*;

use crate::raft_context::{ProposalContext, ReadIndexContext};
use crate::replicated::command::Command;
use crate::replicated::member::Member;
use crate::replicated::membership::MemberChange;
use crate::replicated::state_machine::StateMachine;

/// Keys that collide often, with the edge cases etcd gives meaning to ("" and "\0").
fn key() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        Just(vec![]),
        Just(vec![0]),
        Just(b"a".to_vec()),
        Just(b"b".to_vec()),
        Just(vec![0xff]),
        vec(any::<u8>(), 0..4),
    ]
    .boxed()
}

/// Revisions, limits, TTLs and ids: the boundaries and a few small values.
fn int() -> BoxedStrategy<i64> {
    prop_oneof![
        Just(i64::MIN),
        Just(-1i64),
        Just(0i64),
        Just(1i64),
        Just(i64::MAX),
        -3i64..40,
    ]
    .boxed()
}

/// Enum fields sent as integers: in range, out of range, negative.
fn enum_value() -> BoxedStrategy<i32> {
    prop_oneof![Just(-1), 0..6, Just(i32::MAX)].boxed()
}

fn range() -> BoxedStrategy<PbRangeRequest> {
    (
        (key(), key(), int(), int(), enum_value(), enum_value()),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        (int(), int(), int(), int()),
    )
        .prop_map(
            |(
                (key, range_end, limit, revision, sort_order, sort_target),
                (serializable, keys_only, count_only),
                (min_mod_revision, max_mod_revision, min_create_revision, max_create_revision),
            )| PbRangeRequest {
                key,
                range_end,
                limit,
                revision,
                sort_order,
                sort_target,
                serializable,
                keys_only,
                count_only,
                min_mod_revision,
                max_mod_revision,
                min_create_revision,
                max_create_revision,
            },
        )
        .boxed()
}

fn put() -> BoxedStrategy<PbPutRequest> {
    (
        key(),
        vec(any::<u8>(), 0..8),
        int(),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(
            |(key, value, lease, prev_kv, ignore_value, ignore_lease)| PbPutRequest {
                key,
                value,
                lease,
                prev_kv,
                ignore_value,
                ignore_lease,
            },
        )
        .boxed()
}

fn delete() -> BoxedStrategy<PbDeleteRequest> {
    (key(), key(), any::<bool>())
        .prop_map(|(key, range_end, prev_kv)| PbDeleteRequest {
            key,
            range_end,
            prev_kv,
        })
        .boxed()
}

fn compare() -> BoxedStrategy<PbCompare> {
    let target = prop_oneof![
        Just(None),
        int().prop_map(|v| Some(PbTargetUnion::Version(v))),
        int().prop_map(|v| Some(PbTargetUnion::CreateRevision(v))),
        int().prop_map(|v| Some(PbTargetUnion::ModRevision(v))),
        vec(any::<u8>(), 0..3).prop_map(|v| Some(PbTargetUnion::Value(v))),
        int().prop_map(|v| Some(PbTargetUnion::Lease(v))),
    ];
    (enum_value(), enum_value(), key(), key(), target)
        .prop_map(|(result, target, key, range_end, target_union)| PbCompare {
            result,
            target,
            key,
            range_end,
            target_union,
        })
        .boxed()
}

/// Txns nested up to three deep, with every kind of operation and none.
fn txn() -> BoxedStrategy<PbTxnRequest> {
    let leaf = Just(PbTxnRequest::default());
    leaf.prop_recursive(3, 24, 6, |inner| {
        let op = prop_oneof![
            Just(None),
            range().prop_map(|r| Some(PbTxnOpRequest::RequestRange(r))),
            put().prop_map(|r| Some(PbTxnOpRequest::RequestPut(r))),
            delete().prop_map(|r| Some(PbTxnOpRequest::RequestDeleteRange(r))),
            inner.prop_map(|t| Some(PbTxnOpRequest::RequestTxn(t))),
        ]
        .prop_map(|request| PbTxnRequestOp { request });
        (vec(compare(), 0..3), vec(op.clone(), 0..4), vec(op, 0..3)).prop_map(
            |(compare, success, failure)| PbTxnRequest {
                compare,
                success,
                failure,
            },
        )
    })
    .boxed()
}

fn command() -> BoxedStrategy<Command> {
    prop_oneof![
        4 => put().prop_map(Command::Put),
        2 => delete().prop_map(Command::DeleteRange),
        3 => txn().prop_map(Command::Txn),
        1 => (int(), any::<bool>())
            .prop_map(|(revision, physical)| Command::Compact(PbCompactionRequest { revision, physical })),
        1 => (int(), int()).prop_map(|(ttl, id)| Command::LeaseGrant(PbLeaseGrantRequest { ttl, id })),
        1 => int().prop_map(|id| Command::LeaseRevoke(PbLeaseRevokeRequest { id })),
        1 => (enum_value(), any::<u64>(), enum_value()).prop_map(|(action, member_id, alarm)| {
            Command::Alarm(PbAlarmRequest { action, member_id, alarm })
        }),
    ]
    .boxed()
}

fn state() -> StateMachine {
    let mut members = BTreeMap::new();
    members.insert(
        7,
        Member {
            id: 7,
            name: "a".into(),
            peer_urls: vec!["http://127.0.0.1:2380".into()],
            client_urls: vec!["http://127.0.0.1:2379".into()],
            is_learner: false,
        },
    );
    StateMachine::bootstrap(42, members)
}

/// Every key at the current revision, as a client would list them.
fn everything(sm: &StateMachine) -> Vec<(Vec<u8>, Vec<u8>, i64)> {
    let all = PbRangeRequest {
        key: vec![0],
        range_end: vec![0],
        ..Default::default()
    };
    sm.store
        .range(&all)
        .map(|r| {
            r.kvs
                .into_iter()
                .map(|kv| (kv.key, kv.value, kv.mod_revision))
                .collect()
        })
        .unwrap_or_default()
}

proptest! {
    /// Any sequence of requests applies without a panic (errors are answers), the revision never
    /// goes back, every range answers, and a snapshot of the result restores the same keys.
    #[test]
    fn any_requests_apply_and_snapshot_round_trip(
        cmds in vec(command(), 1..24),
        reads in vec(range(), 0..6),
    ) {
        let mut sm = state();
        let mut revision = sm.store.current_revision();
        for cmd in cmds {
            let encoded = cmd.encode();
            let decoded = Command::decode(&encoded);
            prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
            let _ = sm.apply(cmd);
            let now = sm.store.current_revision();
            prop_assert!(now >= revision);
            revision = now;
        }
        for r in &reads {
            let _ = sm.store.range(r);
        }
        let snapshot = sm.to_snapshot();
        prop_assert!(snapshot.is_ok());
        let back = StateMachine::from_snapshot(&snapshot.unwrap_or_default());
        prop_assert!(back.is_ok(), "{:?}", back.err());
        if let Ok(back) = back {
            prop_assert_eq!(everything(&back), everything(&sm));
            prop_assert_eq!(back.store.current_revision(), sm.store.current_revision());
        }
    }

    /// Arbitrary entry data, and valid entries with bytes flipped, cut or appended, decode to an
    /// error or to a command that applies without a panic.
    #[test]
    fn mangled_entries_decode_or_fail_cleanly(
        cmd in command(),
        noise in vec(any::<u8>(), 0..64),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut sm = state();
        let _ = sm.apply(Command::Put(PbPutRequest { key: b"a".to_vec(), value: b"1".to_vec(), ..Default::default() }));
        let mut bytes = cmd.encode();
        for (at, b) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        for data in [bytes, noise] {
            if let Ok(c) = Command::decode(&data) {
                let _ = sm.apply(c);
            }
        }
        let _ = everything(&sm);
    }

    /// A snapshot with bytes flipped, cut short or extended restores or fails with an error.
    #[test]
    fn mangled_snapshots_restore_or_fail_cleanly(
        cmds in vec(command(), 1..8),
        flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        tail in vec(any::<u8>(), 0..16),
    ) {
        let mut sm = state();
        for c in cmds {
            let _ = sm.apply(c);
        }
        let mut bytes = sm.to_snapshot().unwrap_or_default();
        for (at, b) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= b;
        }
        let mut cut_short = bytes.clone();
        cut_short.truncate(cut.index(bytes.len()));
        bytes.extend_from_slice(&tail);
        for data in [bytes, cut_short] {
            if let Ok(back) = StateMachine::from_snapshot(&data) {
                let _ = everything(&back);
            }
        }
    }

    /// Raft contexts and membership records from arbitrary bytes.
    #[test]
    fn contexts_and_membership_records_decode_or_fail_cleanly(bytes in vec(any::<u8>(), 0..64)) {
        let _ = ProposalContext::decode(&bytes);
        let _ = ReadIndexContext::decode(&bytes);
        let _ = MemberChange::decode(&bytes);
    }

    /// Raw peer-message bytes parse or fail, and what parses goes through the transport check.
    #[test]
    fn raw_peer_messages_parse_or_fail_cleanly(bytes in vec(any::<u8>(), 0..96)) {
        use protobuf::Message as _;
        if let Ok(m) = raft::eraftpb::Message::parse_from_bytes(&bytes) {
            let members = state().members;
            let _ = crate::consensus::message_guard::check_sender(
                &m,
                1,
                &members,
                &crate::consensus::message_guard::Identity::Unproven,
            );
        }
    }
}

/// The most deeply nested txn the entry decoder admits applies on a 2 MiB stack (the Raft
/// thread's and a tokio worker's), in a debug build; one level deeper is refused by the decoder
/// (prost's recursion limit), so no client can make apply overflow a member's stack.
#[test]
fn the_deepest_decodable_txn_applies_on_a_small_stack() {
    let nested = |depth: usize| {
        let mut t = PbTxnRequest::default();
        for _ in 0..depth {
            t = PbTxnRequest {
                compare: vec![],
                success: vec![PbTxnRequestOp {
                    request: Some(PbTxnOpRequest::RequestTxn(t)),
                }],
                failure: vec![],
            };
        }
        Command::Txn(t).encode()
    };
    let deepest = (1..200)
        .take_while(|d| Command::decode(&nested(*d)).is_ok())
        .last()
        .unwrap_or(0);
    assert!((10..200).contains(&deepest), "{deepest}");
    let bytes = nested(deepest);
    let applied = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let c = Command::decode(&bytes).map_err(|e| e.to_string())?;
            state().apply(c).map(|_| ()).map_err(|e| e.to_string())
        })
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(applied, Ok(()));
}
