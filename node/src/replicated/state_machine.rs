//! The replicated state of a member: the MVCC key space plus the cluster's member list.
//! Everything here is deterministic: every member applying the same entries ends identical.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{ErrorKind, Read, Write};

use metastore_mvcc::{Store, ValuesIn};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthError, AuthState, Caller};
use crate::replicated::command::{ApplyResult, Command, CommandResponse};
use crate::replicated::member::Member;
use crate::replicated::membership::MemberChange;
use crate::replicated::version::{Version, FIRST};
use metastore_mvcc::MvccError;

/// A lease as replicated: its granted TTL and the keys attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct KeyLeaseRecord {
    /// Granted TTL in seconds.
    pub ttl: i64,
    /// Keys whose current version is attached to the lease.
    #[serde(deserialize_with = "metastore_mvcc::persist::ord_set")]
    pub keys: imbl::OrdSet<Vec<u8>>,
}

/// etcd TTL leases by id. A persistent map (like the key space), so cloning the state for a
/// snapshot is O(1); it serializes exactly as a `BTreeMap` would.
pub type LeaseTable = imbl::OrdMap<i64, KeyLeaseRecord>;

/// Every lease id named by a put in a txn, in either branch, at any depth.
pub fn txn_leases(t: &etcd_client::proto::PbTxnRequest, out: &mut Vec<i64>) {
    use etcd_client::proto::PbTxnOpRequest as Op;
    for op in t.success.iter().chain(t.failure.iter()) {
        match &op.request {
            Some(Op::RequestPut(p)) if p.lease != 0 => out.push(p.lease),
            Some(Op::RequestTxn(inner)) => txn_leases(inner, out),
            _ => {}
        }
    }
}

/// How a txn that writes nothing may be read (etcd's `isTxnReadonly` / `isTxnSerializable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnReads {
    /// It puts or deletes something: it goes through the log.
    Writes,
    /// Only ranges, at least one linearizable: a read barrier, then local evaluation.
    Linearizable,
    /// Only serializable ranges (or none): local evaluation.
    Serializable,
}

/// Whether a txn writes, and if not how its reads may be served: serializable only when it has
/// operations and every one is a serializable range (as etcd decides; a txn of compares alone,
/// which etcd would also serve locally, is linearizable here), else linearizable.
pub fn txn_reads(t: &etcd_client::proto::PbTxnRequest) -> TxnReads {
    use etcd_client::proto::PbTxnOpRequest as Op;
    let mut kind = TxnReads::Serializable;
    let mut ops = 0;
    for op in t.success.iter().chain(t.failure.iter()) {
        ops += 1;
        match &op.request {
            Some(Op::RequestRange(r)) if r.serializable => {}
            Some(Op::RequestRange(_)) | None => kind = TxnReads::Linearizable,
            Some(Op::RequestTxn(inner)) => match txn_reads(inner) {
                TxnReads::Writes => return TxnReads::Writes,
                _ => kind = TxnReads::Linearizable,
            },
            Some(Op::RequestPut(_)) | Some(Op::RequestDeleteRange(_)) => return TxnReads::Writes,
        }
    }
    if ops == 0 {
        TxnReads::Linearizable
    } else {
        kind
    }
}

/// True when a txn puts anything (in either branch, at any depth).
pub fn txn_has_put(t: &etcd_client::proto::PbTxnRequest) -> bool {
    use etcd_client::proto::PbTxnOpRequest as Op;
    t.success
        .iter()
        .chain(t.failure.iter())
        .any(|op| match &op.request {
            Some(Op::RequestPut(_)) => true,
            Some(Op::RequestTxn(inner)) => txn_has_put(inner),
            _ => false,
        })
}

/// The replicated state machine.
#[derive(Debug, Clone)]
pub struct StateMachine {
    /// The MVCC key space.
    pub store: Store,
    /// Cluster id (fixed at bootstrap).
    pub cluster_id: u64,
    /// Members by id.
    pub members: BTreeMap<u64, Member>,
    /// Ids removed for good (never accepted again).
    pub removed: BTreeSet<u64>,
    /// Events of the writes applied since the Raft loop last took them for watchers (not
    /// replicated: rebuilt by applying).
    pub events: Vec<etcd_client::proto::PbEvent>,
    /// etcd TTL leases (key leases) by id.
    pub leases: LeaseTable,
    /// Active alarms: (member id, alarm type).
    pub alarms: BTreeSet<(u64, i32)>,
    /// Which proposal sequence numbers were applied from each member, lately (see
    /// `raft_context::ProposalContext`): a proposal at or below the last one is a duplicate or
    /// was overtaken, and is not applied.
    pub proposers: BTreeMap<u64, ProposalWindow>,
    /// The cluster version set through Raft (None until the first `ClusterVersion` entry: the
    /// first release's clusters had none).
    pub cluster_version: Option<Version>,
    /// Users, roles and permissions, and whether requests are checked.
    pub auth: AuthState,
}

/// The proposals applied from one member: the last sequence number, and which of the 64 below
/// it were applied (bit `i`: sequence `last − 1 − i`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProposalWindow {
    /// Highest sequence applied.
    pub last: u64,
    /// Applied sequences just below it.
    pub applied_below: u64,
}

/// What to do with a committed proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalAdmission {
    /// New: apply it.
    Apply,
    /// A copy of one already applied (or too old to tell): skip it, and do not answer its
    /// proposer, whose request may well have taken effect.
    Duplicate,
    /// Never applied, and a newer proposal from the same member was: skip it; the proposer may
    /// retry.
    Overtaken,
}

/// etcd's `AlarmType.NOSPACE`.
pub const ALARM_NOSPACE: i32 = 1;

/// What a snapshot holds after the key space, in the order written. The body is the key space
/// as a length-prefixed blob (bincode's encoding of a byte vector, so the layout is that of the
/// first format, which held the serialized key space in a `Vec<u8>`), then these fields, then
/// the proposal windows (absent in snapshots of the first format). The length prefix's top bit
/// ([`VALUES_IN_STORE`]) marks a key space whose values are in the member's values database.
#[derive(Serialize)]
struct SnapshotTailRef<'a> {
    cluster_id: u64,
    members: &'a BTreeMap<u64, Member>,
    removed: &'a BTreeSet<u64>,
    leases: &'a LeaseTable,
    alarms: &'a BTreeSet<(u64, i32)>,
    proposers: &'a BTreeMap<u64, ProposalWindow>,
    cluster_version: Option<Version>,
    auth: &'a AuthState,
}

/// [`SnapshotTailRef`] read back, without the proposal windows.
#[derive(Deserialize)]
struct SnapshotTail {
    cluster_id: u64,
    members: BTreeMap<u64, Member>,
    removed: BTreeSet<u64>,
    #[serde(deserialize_with = "metastore_mvcc::persist::ord_map")]
    leases: LeaseTable,
    alarms: BTreeSet<(u64, i32)>,
}

/// A field later formats appended to a snapshot: None when the snapshot ends before it.
fn optional_field<T: serde::de::DeserializeOwned>(
    r: impl Read,
    limit: u64,
) -> Result<Option<T>, SnapshotError> {
    use bincode::Options as _;
    match metastore_mvcc::persist::options(limit).deserialize_from(r) {
        Ok(v) => Ok(Some(v)),
        Err(e) => match *e {
            bincode::ErrorKind::Io(ref io) if io.kind() == ErrorKind::UnexpectedEof => Ok(None),
            _ => Err(SnapshotError(e.to_string())),
        },
    }
}

/// The length prefix's flag for a key space encoded with [`ValuesIn::Store`].
const VALUES_IN_STORE: u64 = 1 << 63;

/// A snapshot that could not be written or read.
#[derive(Debug, thiserror::Error)]
#[error("state machine snapshot: {0}")]
pub struct SnapshotError(String);

impl StateMachine {
    /// The state of a freshly bootstrapped cluster, values kept in memory.
    pub fn bootstrap(cluster_id: u64, members: BTreeMap<u64, Member>) -> Self {
        Self::bootstrap_in(Store::new(), cluster_id, members)
    }

    /// The state of a freshly bootstrapped cluster over `store` (empty).
    pub fn bootstrap_in(store: Store, cluster_id: u64, members: BTreeMap<u64, Member>) -> Self {
        StateMachine {
            store,
            cluster_id,
            members,
            removed: BTreeSet::new(),
            events: Vec::new(),
            leases: LeaseTable::new(),
            alarms: BTreeSet::new(),
            proposers: BTreeMap::new(),
            cluster_version: None,
            auth: AuthState::default(),
        }
    }

    /// Bytes held for one lease (its record and its place in the table).
    pub const LEASE_BYTES: u64 = 64;

    /// What the member holds for the replicated state, as the quota counts it: every version of
    /// every key (key, value, overhead) and every lease.
    pub fn held_bytes(&self) -> u64 {
        self.store.approximate_size_bytes() + self.leases.len() as u64 * Self::LEASE_BYTES
    }

    /// True while the NOSPACE alarm is active: writes that add data are refused.
    pub fn no_space(&self) -> bool {
        self.alarms.iter().any(|(_, a)| *a == ALARM_NOSPACE)
    }

    /// Applies one command.
    pub fn apply(&mut self, cmd: Command) -> ApplyResult {
        Ok(match cmd {
            Command::AsCaller { caller, inner } => {
                self.permit(&caller, &inner)?;
                return self.apply(*inner);
            }
            Command::Auth { caller, change } => {
                let effect = self.auth.apply(&caller, &change)?;
                CommandResponse::Auth {
                    revision: self.auth.revision,
                    effect,
                    token: None,
                }
            }
            Command::Put(_) | Command::LeaseGrant(_) if self.no_space() => {
                return Err(MvccError::NoSpace.into())
            }
            Command::Txn(r) if self.no_space() && txn_has_put(&r) => {
                return Err(MvccError::NoSpace.into())
            }
            Command::Alarm(r) => {
                // As etcd: the response names the alarm activated or deactivated.
                let key = (r.member_id, r.alarm);
                let changed = match r.action {
                    1 if r.alarm != 0 => {
                        self.alarms.insert(key);
                        true
                    }
                    2 => self.alarms.remove(&key),
                    _ => false,
                };
                CommandResponse::Alarm(etcd_client::proto::PbAlarmResponse {
                    header: None,
                    alarms: changed
                        .then_some(etcd_client::proto::PbAlarmMember {
                            member_id: r.member_id,
                            alarm: r.alarm,
                        })
                        .into_iter()
                        .collect(),
                })
            }
            Command::Put(r) => {
                if r.lease != 0 && !self.leases.contains_key(&r.lease) {
                    return Err(MvccError::LeaseNotFound.into());
                }
                let a = self.store.put(&r)?;
                self.record(a.events);
                CommandResponse::Put(a.response)
            }
            Command::DeleteRange(r) => {
                let a = self.store.delete_range(&r)?;
                self.record(a.events);
                CommandResponse::DeleteRange(a.response)
            }
            Command::Txn(r) => {
                let mut ids = Vec::new();
                txn_leases(&r, &mut ids);
                if ids.iter().any(|id| !self.leases.contains_key(id)) {
                    return Err(MvccError::LeaseNotFound.into());
                }
                let a = self.store.txn(&r)?;
                self.record(a.events);
                CommandResponse::Txn(a.response)
            }
            Command::LeaseGrant(r) => {
                if self.leases.contains_key(&r.id) {
                    return Err(MvccError::LeaseExists.into());
                }
                self.leases.insert(
                    r.id,
                    KeyLeaseRecord {
                        ttl: r.ttl,
                        keys: imbl::OrdSet::new(),
                    },
                );
                CommandResponse::LeaseGrant(etcd_client::proto::PbLeaseGrantResponse {
                    header: None,
                    id: r.id,
                    ttl: r.ttl,
                    error: String::new(),
                })
            }
            Command::LeaseRevoke(r) => {
                let keys = self
                    .leases
                    .get(&r.id)
                    .ok_or(MvccError::LeaseNotFound)?
                    .keys
                    .clone();
                if !keys.is_empty() {
                    // Every attached key goes in one revision; the lease goes only if that works.
                    use etcd_client::proto::{PbDeleteRequest, PbTxnOpRequest, PbTxnRequestOp};
                    let txn = etcd_client::proto::PbTxnRequest {
                        success: keys
                            .iter()
                            .map(|k| PbTxnRequestOp {
                                request: Some(PbTxnOpRequest::RequestDeleteRange(
                                    PbDeleteRequest {
                                        key: k.clone(),
                                        ..Default::default()
                                    },
                                )),
                            })
                            .collect(),
                        ..Default::default()
                    };
                    let a = self.store.txn(&txn)?;
                    self.record(a.events);
                }
                self.leases.remove(&r.id);
                CommandResponse::LeaseRevoke(etcd_client::proto::PbLeaseRevokeResponse {
                    header: None,
                })
            }
            Command::Compact(r) => CommandResponse::Compact(self.store.compact(r.revision)?),
            Command::Member(c) => {
                self.apply_member_change(&c);
                CommandResponse::Members(self.members.values().cloned().collect())
            }
            Command::ClusterVersion(v) => {
                // Never lowered: a late or repeated entry changes nothing.
                let v = v.max(self.cluster_version());
                self.cluster_version = Some(v);
                CommandResponse::ClusterVersion(v)
            }
        })
    }

    /// With auth enabled, whether `caller` may make the client request `cmd` (as etcd's
    /// `authApplierV3`): checked where the request enters the log, against the auth state of
    /// that point, the same on every member.
    fn permit(&self, caller: &Caller, cmd: &Command) -> Result<(), AuthError> {
        let auth = &self.auth;
        if !auth.enabled {
            return Ok(());
        }
        let lease_keys = |id: i64| {
            self.leases
                .get(&id)
                .map(|l| l.keys.iter())
                .into_iter()
                .flatten()
        };
        match cmd {
            Command::Put(r) => auth.check_put(caller, r, lease_keys),
            Command::DeleteRange(r) => auth.check_delete(caller, r),
            Command::Txn(t) => auth.check_txn(caller, t, &lease_keys),
            Command::LeaseRevoke(r) => {
                auth.check_user(caller)?;
                auth.check_lease_revoke(caller, lease_keys(r.id))
            }
            Command::LeaseGrant(_) => auth.check_user(caller),
            // Compaction, alarms and the rest are an admin's (etcd 3.5.28 on).
            _ => auth.check_admin(caller),
        }
    }

    /// The version the cluster runs: what every member supports ([`FIRST`] until one was set).
    pub fn cluster_version(&self) -> Version {
        self.cluster_version.unwrap_or(FIRST)
    }

    /// Keeps the lease → keys index in step with the writes, and queues the events for watchers.
    fn record(&mut self, events: Vec<etcd_client::proto::PbEvent>) {
        for e in &events {
            if let Some(prev) = &e.prev_kv {
                if prev.lease != 0 {
                    if let Some(l) = self.leases.get_mut(&prev.lease) {
                        l.keys.remove(&prev.key);
                    }
                }
            }
            if let Some(kv) = &e.kv {
                if e.r#type == metastore_mvcc::consts::event_type::PUT && kv.lease != 0 {
                    if let Some(l) = self.leases.get_mut(&kv.lease) {
                        l.keys.insert(kv.key.clone());
                    }
                }
            }
        }
        self.events.extend(events);
    }

    /// Applies a membership change to the member list (deterministic; a change that no longer
    /// fits is skipped and logged).
    pub fn apply_member_change(&mut self, c: &MemberChange) {
        if !crate::replicated::membership::apply(c, &mut self.members, &mut self.removed) {
            tracing::warn!(?c, "membership change no longer applies; skipped");
        }
    }

    /// Decides whether the proposal `seq` of `member` is applied (see [`ProposalAdmission`]).
    /// Sequence 0 (entries of earlier versions) is always applied.
    pub fn admit_proposal(&mut self, member: u64, seq: u64) -> ProposalAdmission {
        if seq == 0 {
            return ProposalAdmission::Apply;
        }
        let w = self.proposers.entry(member).or_default();
        if seq > w.last {
            let d = seq - w.last;
            let shifted = w.applied_below.checked_shl(d as u32).unwrap_or(0);
            // The previous last (if any) was applied: it sits d − 1 below the new one.
            let previous = match (w.last, 1u64.checked_shl(d as u32 - 1)) {
                (0, _) | (_, None) => 0,
                (_, Some(bit)) => bit,
            };
            w.applied_below = shifted | previous;
            w.last = seq;
            return ProposalAdmission::Apply;
        }
        let below = w.last - seq;
        if below == 0 {
            return ProposalAdmission::Duplicate;
        }
        match 1u64.checked_shl(below as u32 - 1) {
            Some(bit) if w.applied_below & bit == 0 => ProposalAdmission::Overtaken,
            _ => ProposalAdmission::Duplicate,
        }
    }

    /// Serializes the whole state for a Raft snapshot into `w`, as a stream: nothing is built
    /// in memory (the key space's size is counted in a first pass to prefix it). With
    /// [`ValuesIn::Store`] the values stay in this member's values database (its own snapshots);
    /// anything another member or a client reads carries them ([`ValuesIn::Body`]).
    pub fn write_snapshot(&self, mut w: impl Write, values: ValuesIn) -> Result<(), SnapshotError> {
        let err = |e: bincode::Error| SnapshotError(e.to_string());
        let values = self.placement(values);
        let mut prefix = self.store.encoded_len(values);
        if values == ValuesIn::Store {
            prefix |= VALUES_IN_STORE;
        }
        w.write_all(&prefix.to_le_bytes())
            .map_err(|e| SnapshotError(e.to_string()))?;
        self.store
            .encode(&mut w, values)
            .map_err(|e| SnapshotError(e.to_string()))?;
        bincode::serialize_into(&mut w, &self.snapshot_tail()).map_err(err)?;
        w.flush().map_err(|e| SnapshotError(e.to_string()))
    }

    /// True when a snapshot body starting with `prefix` keeps its values in the writer's values
    /// database ([`ValuesIn::Store`]).
    pub fn values_in_store(prefix: [u8; 8]) -> bool {
        u64::from_le_bytes(prefix) & VALUES_IN_STORE != 0
    }

    /// The key space's length a snapshot body starting with `prefix` declares.
    pub fn key_space_len(prefix: [u8; 8]) -> u64 {
        u64::from_le_bytes(prefix) & !VALUES_IN_STORE
    }

    /// What `values` means for this state: values in memory are always in the body.
    fn placement(&self, values: ValuesIn) -> ValuesIn {
        if self.store.disk_values().is_none() {
            ValuesIn::Body
        } else {
            values
        }
    }

    /// The length of [`Self::write_snapshot`]'s output, counted without encoding anything.
    pub fn snapshot_len(&self, values: ValuesIn) -> Result<u64, SnapshotError> {
        let err = |e: bincode::Error| SnapshotError(e.to_string());
        let tail = bincode::serialized_size(&self.snapshot_tail()).map_err(err)?;
        Ok(8 + self.store.encoded_len(self.placement(values)) + tail)
    }

    fn snapshot_tail(&self) -> SnapshotTailRef<'_> {
        SnapshotTailRef {
            cluster_id: self.cluster_id,
            members: &self.members,
            removed: &self.removed,
            leases: &self.leases,
            alarms: &self.alarms,
            proposers: &self.proposers,
            cluster_version: self.cluster_version,
            auth: &self.auth,
        }
    }

    /// Rebuilds the state from a snapshot body of `len` bytes read as a stream
    /// ([`Self::write_snapshot`]'s output, or a snapshot of the first format) into `store`, an
    /// empty key space whose values go where the rebuilt one's should. No length inside the
    /// body is trusted beyond `len`.
    pub fn read_snapshot(mut r: impl Read, len: u64, store: Store) -> Result<Self, SnapshotError> {
        use bincode::Options as _;
        let err = |e: bincode::Error| SnapshotError(e.to_string());
        let mut prefix = [0u8; 8];
        r.read_exact(&mut prefix)
            .map_err(|e| SnapshotError(format!("key space length: {e}")))?;
        let prefix = u64::from_le_bytes(prefix);
        let values = if prefix & VALUES_IN_STORE != 0 {
            ValuesIn::Store
        } else {
            ValuesIn::Body
        };
        let store_len = prefix & !VALUES_IN_STORE;
        let rest = len.saturating_sub(8);
        if store_len > rest {
            return Err(SnapshotError(format!(
                "key space of {store_len} bytes in a body of {len}"
            )));
        }
        let mut store_bytes = (&mut r).take(store_len);
        let store = Store::decode(&mut store_bytes, store_len, values, store)
            .map_err(|e| SnapshotError(e.to_string()))?;
        if store_bytes.limit() != 0 {
            return Err(SnapshotError(format!(
                "key space shorter than its length prefix by {} bytes",
                store_bytes.limit()
            )));
        }
        let opts = metastore_mvcc::persist::options(rest - store_len);
        let tail: SnapshotTail = opts.deserialize_from(&mut r).map_err(err)?;
        // Snapshots of the first format end here; those of the first release, after the
        // proposal windows.
        let proposers = optional_field(&mut r, rest - store_len)?.unwrap_or_default();
        let cluster_version = optional_field(&mut r, rest - store_len)?.flatten();
        let auth = optional_field(&mut r, rest - store_len)?.unwrap_or_default();
        Ok(StateMachine {
            store,
            cluster_id: tail.cluster_id,
            members: tail.members,
            removed: tail.removed,
            events: Vec::new(),
            leases: tail.leases,
            alarms: tail.alarms,
            proposers,
            cluster_version,
            auth,
        })
    }

    /// [`Self::write_snapshot`] into memory, values included (tests).
    pub fn to_snapshot(&self) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::new();
        self.write_snapshot(&mut out, ValuesIn::Body)?;
        Ok(out)
    }

    /// [`Self::read_snapshot`] from memory, values kept in memory (tests).
    pub fn from_snapshot(data: &[u8]) -> Result<Self, SnapshotError> {
        Self::read_snapshot(data, data.len() as u64, Store::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etcd_client::proto::{PbPutRequest, PbRangeRequest};

    #[test]
    fn proposals_apply_once_and_overtaken_ones_are_told_apart_from_duplicates() {
        use ProposalAdmission::*;
        let mut sm = StateMachine::bootstrap(42, BTreeMap::new());
        assert_eq!(sm.admit_proposal(7, 10), Apply);
        assert_eq!(sm.admit_proposal(7, 10), Duplicate);
        // 12 overtakes 11: 11 never took effect, 10 did.
        assert_eq!(sm.admit_proposal(7, 12), Apply);
        assert_eq!(sm.admit_proposal(7, 11), Overtaken);
        assert_eq!(sm.admit_proposal(7, 10), Duplicate);
        assert_eq!(sm.admit_proposal(7, 11), Overtaken);
        // Another member's sequence is its own.
        assert_eq!(sm.admit_proposal(8, 11), Apply);
        // A jump past the window forgets what was below: too old to tell is a duplicate.
        assert_eq!(sm.admit_proposal(7, 12 + 100), Apply);
        assert_eq!(sm.admit_proposal(7, 12), Duplicate);
        assert_eq!(sm.admit_proposal(7, 111), Overtaken);
        assert_eq!(
            sm.admit_proposal(7, 0),
            Apply,
            "entries of earlier versions"
        );
        // The window survives a snapshot.
        let back = StateMachine::from_snapshot(&sm.to_snapshot().unwrap()).unwrap();
        assert_eq!(back.proposers, sm.proposers);
    }

    #[test]
    fn snapshot_round_trip_keeps_keys_and_members() {
        let mut members = BTreeMap::new();
        members.insert(
            7,
            Member {
                id: 7,
                name: "a".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: vec![],
                is_learner: false,
            },
        );
        let mut sm = StateMachine::bootstrap(42, members);
        sm.apply(Command::Put(PbPutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .unwrap();
        let back = StateMachine::from_snapshot(&sm.to_snapshot().unwrap()).unwrap();
        assert_eq!(back.cluster_version, None);
        sm.apply(Command::ClusterVersion(Version::new(0, 2, 0)))
            .unwrap();
        // Never lowered.
        sm.apply(Command::ClusterVersion(FIRST)).unwrap();
        assert_eq!(sm.cluster_version(), Version::new(0, 2, 0));
        let back = StateMachine::from_snapshot(&sm.to_snapshot().unwrap()).unwrap();
        assert_eq!(back.cluster_version(), Version::new(0, 2, 0));
        assert_eq!(back.cluster_id, 42);
        assert_eq!(back.members, sm.members);
        let got = back
            .store
            .range(&PbRangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(got.kvs[0].value, b"v".to_vec());
        assert!(StateMachine::from_snapshot(b"garbage").is_err());
    }

    #[test]
    fn read_only_txns_are_told_apart_from_writing_ones() {
        use etcd_client::proto::{
            PbDeleteRequest, PbTxnOpRequest as Op, PbTxnRequest, PbTxnRequestOp,
        };
        let op = |o: Op| PbTxnRequestOp { request: Some(o) };
        let range = |serializable| {
            op(Op::RequestRange(PbRangeRequest {
                key: b"k".to_vec(),
                serializable,
                ..Default::default()
            }))
        };
        let txn = |success: Vec<PbTxnRequestOp>, failure: Vec<PbTxnRequestOp>| PbTxnRequest {
            success,
            failure,
            ..Default::default()
        };
        assert_eq!(txn_reads(&txn(vec![], vec![])), TxnReads::Linearizable);
        assert_eq!(
            txn_reads(&txn(vec![range(true)], vec![range(true)])),
            TxnReads::Serializable
        );
        assert_eq!(
            txn_reads(&txn(vec![range(true)], vec![range(false)])),
            TxnReads::Linearizable
        );
        let nested_read = op(Op::RequestTxn(txn(vec![range(true)], vec![])));
        assert_eq!(
            txn_reads(&txn(vec![nested_read], vec![])),
            TxnReads::Linearizable
        );
        let del = op(Op::RequestDeleteRange(PbDeleteRequest::default()));
        let nested_write = op(Op::RequestTxn(txn(vec![], vec![del])));
        assert_eq!(
            txn_reads(&txn(vec![range(true)], vec![nested_write])),
            TxnReads::Writes
        );
        let put = op(Op::RequestPut(PbPutRequest::default()));
        assert_eq!(txn_reads(&txn(vec![], vec![put])), TxnReads::Writes);
    }

    #[test]
    fn damaged_or_hostile_snapshots_are_refused_without_panicking() {
        let mut sm = StateMachine::bootstrap(1, BTreeMap::new());
        sm.apply(Command::Put(PbPutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }))
        .unwrap();
        let good = sm.to_snapshot().unwrap();
        assert_eq!(sm.snapshot_len(ValuesIn::Body).unwrap(), good.len() as u64);
        assert_eq!(StateMachine::from_snapshot(&good).unwrap().store, sm.store);
        // Lengths that claim more than there is: refused, nothing preallocated.
        for bad in [
            b"nonsense".to_vec(),
            b"nonsensenonsensenonsense".to_vec(),
            [&8u64.to_le_bytes()[..], &u64::MAX.to_le_bytes()[..]].concat(),
            [&good[..8], &u64::MAX.to_le_bytes()[..], &good[16..]].concat(),
            good[..good.len() / 2].to_vec(),
        ] {
            assert!(StateMachine::from_snapshot(&bad).is_err(), "{bad:?}");
        }
        // Every truncation of a good snapshot is refused too (or, at the very end, read as a
        // snapshot of the first format, which has no proposal windows).
        for cut in 0..good.len() {
            let _ = StateMachine::from_snapshot(&good[..cut]);
        }
    }
}
