//! The replicated commands carried in Raft entries and their results.
//!
//! An entry's data is one tag byte followed by the prost encoding of the etcd request, so the log
//! holds exactly what clients sent and needs no schema of its own.
//!
//! Each kind has the version that introduced it: a member reads only the kinds its version
//! knows (any other stops it, rather than being skipped while the others apply it), and a kind
//! is proposed only once the cluster version says every member knows it.

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbCompactionRequest, PbCompactionResponse, PbDeleteRequest,
    PbDeleteResponse, PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseRevokeRequest,
    PbLeaseRevokeResponse, PbPutRequest, PbPutResponse, PbTxnRequest, PbTxnResponse,
};
use metastore_mvcc::MvccError;
use prost::Message;

use crate::auth::state::AuthApplied;
use crate::auth::{AuthChange, AuthError, Caller};
use crate::replicated::member::Member;
use crate::replicated::membership::MemberChange;
use crate::replicated::version::{member_version, Version, FIRST};

const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_MEMBER: u8 = 5;
const TAG_LEASE_GRANT: u8 = 6;
const TAG_LEASE_REVOKE: u8 = 7;
const TAG_ALARM: u8 = 8;
const TAG_CLUSTER_VERSION: u8 = 9;
const TAG_AUTH: u8 = 10;
const TAG_AS_CALLER: u8 = 11;

/// The version that introduced the cluster-version entry.
pub const CLUSTER_VERSION_SINCE: Version = Version::new(0, 2, 0);

/// The version that introduced the auth entries (auth changes, and client requests carrying
/// who made them).
pub const AUTH_SINCE: Version = Version::new(0, 2, 0);

/// The version that introduced the entry kind `tag`, or None for a tag no version has used.
fn introduced(tag: u8) -> Option<Version> {
    match tag {
        TAG_PUT..=TAG_ALARM => Some(FIRST),
        TAG_CLUSTER_VERSION => Some(CLUSTER_VERSION_SINCE),
        TAG_AUTH | TAG_AS_CALLER => Some(AUTH_SINCE),
        _ => None,
    }
}

/// A state-machine command proposed through Raft.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// etcd Put.
    Put(PbPutRequest),
    /// etcd DeleteRange.
    DeleteRange(PbDeleteRequest),
    /// etcd Txn (with at least one write, or any txn proposed for ordering).
    Txn(PbTxnRequest),
    /// etcd Compact.
    Compact(PbCompactionRequest),
    /// A membership metadata change that is not a Raft configuration change (peer URL update,
    /// attribute publish).
    Member(MemberChange),
    /// etcd LeaseGrant (id and TTL already chosen by the proposer).
    LeaseGrant(PbLeaseGrantRequest),
    /// etcd LeaseRevoke (from a client, or the leader on expiry): deletes the attached keys.
    LeaseRevoke(PbLeaseRevokeRequest),
    /// etcd Alarm activate/deactivate (NOSPACE when the quota is exhausted).
    Alarm(PbAlarmRequest),
    /// The cluster version the leader decided (the lowest every member runs).
    ClusterVersion(Version),
    /// A change of users, roles or permissions, checked against `caller` when applied.
    Auth {
        /// Who asked.
        caller: Caller,
        /// The change.
        change: AuthChange,
    },
    /// A client's key-space request with who made it: with auth enabled when it applies, the
    /// caller's permissions are checked then (commands without one are the members' own).
    AsCaller {
        /// Who asked.
        caller: Caller,
        /// The request (never another `AsCaller` or `Auth`).
        inner: Box<Command>,
    },
}

/// The data of an entry could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A kind this member's version does not know: written by a newer version.
    #[error("entry kind {tag} is unknown to MetaStore {member} (written by a newer version{since}): this member must be upgraded")]
    UnknownKind {
        /// The entry's kind.
        tag: u8,
        /// This member's version.
        member: Version,
        /// The version that introduced the kind, when this build knows it.
        since: String,
    },
    /// A known kind whose body does not decode.
    #[error("undecodable command: {0}")]
    Malformed(String),
}

impl Command {
    /// Encodes the command for an entry's data.
    pub fn encode(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Command::Put(r) => (TAG_PUT, r.encode_to_vec()),
            Command::DeleteRange(r) => (TAG_DELETE_RANGE, r.encode_to_vec()),
            Command::Txn(r) => (TAG_TXN, r.encode_to_vec()),
            Command::Compact(r) => (TAG_COMPACT, r.encode_to_vec()),
            Command::Member(c) => (TAG_MEMBER, c.encode()),
            Command::LeaseGrant(r) => (TAG_LEASE_GRANT, r.encode_to_vec()),
            Command::LeaseRevoke(r) => (TAG_LEASE_REVOKE, r.encode_to_vec()),
            Command::Alarm(r) => (TAG_ALARM, r.encode_to_vec()),
            // Plain data into a Vec: cannot fail.
            Command::ClusterVersion(v) => (
                TAG_CLUSTER_VERSION,
                bincode::serialize(v).unwrap_or_default(),
            ),
            Command::Auth { caller, change } => (
                TAG_AUTH,
                bincode::serialize(&(caller, change)).unwrap_or_default(),
            ),
            Command::AsCaller { caller, inner } => {
                // The caller length-prefixed, then the request as its own entry would hold it.
                let head = bincode::serialize(caller).unwrap_or_default();
                let mut body = Vec::with_capacity(4 + head.len() + 64);
                body.extend_from_slice(&(head.len() as u32).to_le_bytes());
                body.extend_from_slice(&head);
                body.extend_from_slice(&inner.encode());
                (TAG_AS_CALLER, body)
            }
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// The version that introduced this command's kind.
    pub fn introduced(&self) -> Version {
        match self {
            Command::ClusterVersion(_) => CLUSTER_VERSION_SINCE,
            Command::Auth { .. } | Command::AsCaller { .. } => AUTH_SINCE,
            _ => FIRST,
        }
    }

    /// The request itself, without the caller a client's request carries.
    pub fn request(&self) -> &Command {
        match self {
            Command::AsCaller { inner, .. } => inner,
            other => other,
        }
    }

    /// `self` as a client's request made by `caller`, where the cluster can read that
    /// (else as it is: before auth entries exist, there is no auth to check).
    pub fn from_caller(self, caller: Caller, cluster: Version) -> Command {
        if cluster >= AUTH_SINCE {
            Command::AsCaller {
                caller,
                inner: Box::new(self),
            }
        } else {
            self
        }
    }

    /// Decodes an entry's data as this member's version reads it.
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        Self::decode_as(data, member_version())
    }

    /// Decodes an entry's data as a member of version `member` reads it: kinds introduced
    /// after `member` are unknown to it.
    pub fn decode_as(data: &[u8], member: Version) -> Result<Command, DecodeError> {
        let (tag, body) = data
            .split_first()
            .ok_or_else(|| DecodeError::Malformed("empty".into()))?;
        match introduced(*tag) {
            Some(v) if v <= member => {}
            known => {
                return Err(DecodeError::UnknownKind {
                    tag: *tag,
                    member,
                    since: known.map_or(String::new(), |v| format!(", {v}")),
                })
            }
        }
        let err = |e: prost::DecodeError| DecodeError::Malformed(e.to_string());
        Ok(match *tag {
            TAG_PUT => Command::Put(PbPutRequest::decode(body).map_err(err)?),
            TAG_DELETE_RANGE => Command::DeleteRange(PbDeleteRequest::decode(body).map_err(err)?),
            TAG_TXN => Command::Txn(PbTxnRequest::decode(body).map_err(err)?),
            TAG_COMPACT => Command::Compact(PbCompactionRequest::decode(body).map_err(err)?),
            TAG_MEMBER => {
                Command::Member(MemberChange::decode(body).map_err(DecodeError::Malformed)?)
            }
            TAG_CLUSTER_VERSION => Command::ClusterVersion(
                bincode::deserialize(body).map_err(|e| DecodeError::Malformed(e.to_string()))?,
            ),
            TAG_LEASE_GRANT => Command::LeaseGrant(PbLeaseGrantRequest::decode(body).map_err(err)?),
            TAG_ALARM => Command::Alarm(PbAlarmRequest::decode(body).map_err(err)?),
            TAG_LEASE_REVOKE => {
                Command::LeaseRevoke(PbLeaseRevokeRequest::decode(body).map_err(err)?)
            }
            TAG_AUTH => {
                let (caller, change) = bincode::deserialize(body)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                Command::Auth { caller, change }
            }
            TAG_AS_CALLER => {
                let short = || DecodeError::Malformed("caller header cut short".into());
                let (len, rest) = body.split_first_chunk::<4>().ok_or_else(short)?;
                let len = u32::from_le_bytes(*len) as usize;
                if rest.len() < len {
                    return Err(short());
                }
                let (head, inner) = rest.split_at(len);
                let caller = bincode::deserialize(head)
                    .map_err(|e| DecodeError::Malformed(e.to_string()))?;
                // Checked before decoding, so no entry can nest headers to any depth.
                if matches!(inner.first(), Some(&(TAG_AS_CALLER | TAG_AUTH))) {
                    return Err(DecodeError::Malformed("nested caller header".into()));
                }
                let inner = Self::decode_as(inner, member)?;
                Command::AsCaller {
                    caller,
                    inner: Box::new(inner),
                }
            }
            t => return Err(DecodeError::Malformed(format!("unknown tag {t}"))),
        })
    }
}

/// The response of an applied command.
#[derive(Debug, Clone)]
pub enum CommandResponse {
    /// Result of a Put.
    Put(PbPutResponse),
    /// Result of a DeleteRange.
    DeleteRange(PbDeleteResponse),
    /// Result of a Txn.
    Txn(PbTxnResponse),
    /// Result of a Compact.
    Compact(PbCompactionResponse),
    /// The member list after a membership change.
    Members(Vec<Member>),
    /// Result of a LeaseGrant.
    LeaseGrant(PbLeaseGrantResponse),
    /// Result of a LeaseRevoke.
    LeaseRevoke(PbLeaseRevokeResponse),
    /// The alarms in force after an Alarm request.
    Alarm(PbAlarmResponse),
    /// The cluster version after a ClusterVersion entry.
    ClusterVersion(Version),
    /// An auth change applied.
    Auth {
        /// The auth revision after it.
        revision: u64,
        /// What it means for tokens.
        effect: AuthApplied,
        /// The simple token an Authenticate issued (set by the Raft loop, which knows the
        /// entry's index).
        token: Option<String>,
    },
}

/// Why an applied command was rejected (the same on every member).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApplyError {
    /// By the key space.
    #[error(transparent)]
    Mvcc(#[from] MvccError),
    /// By auth: the caller may not, or the change breaks auth's rules.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// What applying a command produced: a response or a deterministic error (the same on every member).
pub type ApplyResult = Result<CommandResponse, ApplyError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_every_kind() {
        let cmds = vec![
            Command::Put(PbPutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: true,
                ..Default::default()
            }),
            Command::DeleteRange(PbDeleteRequest {
                key: b"a".to_vec(),
                range_end: b"z".to_vec(),
                ..Default::default()
            }),
            Command::Txn(PbTxnRequest::default()),
            Command::Compact(PbCompactionRequest {
                revision: 7,
                physical: true,
            }),
            Command::Member(MemberChange::Promote(3)),
            Command::LeaseGrant(PbLeaseGrantRequest { id: 7, ttl: 10 }),
            Command::LeaseRevoke(PbLeaseRevokeRequest { id: 7 }),
            Command::Alarm(PbAlarmRequest {
                action: 1,
                member_id: 3,
                alarm: 1,
            }),
            Command::ClusterVersion(Version::new(0, 2, 0)),
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        assert!(matches!(
            Command::decode(&[]),
            Err(DecodeError::Malformed(_))
        ));
        assert!(matches!(
            Command::decode(&[99, 1]),
            Err(DecodeError::UnknownKind { tag: 99, .. })
        ));
    }

    #[test]
    fn a_member_reads_only_the_kinds_its_version_knows() {
        let cv = Command::ClusterVersion(Version::new(0, 2, 0)).encode();
        let old = Version::new(0, 1, 4);
        let e = Command::decode_as(&cv, old).unwrap_err();
        assert!(matches!(e, DecodeError::UnknownKind { tag: 9, .. }));
        assert_eq!(
            e.to_string(),
            "entry kind 9 is unknown to MetaStore 0.1.4 (written by a newer version, 0.2.0): this member must be upgraded"
        );
        let put = Command::Put(PbPutRequest::default()).encode();
        assert!(Command::decode_as(&put, old).is_ok());
        assert!(Command::decode_as(&cv, CLUSTER_VERSION_SINCE).is_ok());
    }
}
