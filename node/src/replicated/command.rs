//! The replicated commands carried in Raft entries and their results.
//!
//! An entry's data is one tag byte followed by the prost encoding of the etcd request, so the log
//! holds exactly what clients sent and needs no schema of its own.

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbCompactionRequest, PbCompactionResponse, PbDeleteRequest,
    PbDeleteResponse, PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseRevokeRequest,
    PbLeaseRevokeResponse, PbPutRequest, PbPutResponse, PbTxnRequest, PbTxnResponse,
};
use metastore_mvcc::MvccError;
use prost::Message;

use crate::replicated::member::Member;
use crate::replicated::membership::MemberChange;

const TAG_PUT: u8 = 1;
const TAG_DELETE_RANGE: u8 = 2;
const TAG_TXN: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_MEMBER: u8 = 5;
const TAG_LEASE_GRANT: u8 = 6;
const TAG_LEASE_REVOKE: u8 = 7;
const TAG_ALARM: u8 = 8;

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
}

/// The decoded data of an entry could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("undecodable command: {0}")]
pub struct DecodeError(String);

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
        };
        let mut out = Vec::with_capacity(body.len() + 1);
        out.push(tag);
        out.extend_from_slice(&body);
        out
    }

    /// Decodes an entry's data.
    pub fn decode(data: &[u8]) -> Result<Command, DecodeError> {
        let (tag, body) = data
            .split_first()
            .ok_or_else(|| DecodeError("empty".into()))?;
        let err = |e: prost::DecodeError| DecodeError(e.to_string());
        Ok(match *tag {
            TAG_PUT => Command::Put(PbPutRequest::decode(body).map_err(err)?),
            TAG_DELETE_RANGE => Command::DeleteRange(PbDeleteRequest::decode(body).map_err(err)?),
            TAG_TXN => Command::Txn(PbTxnRequest::decode(body).map_err(err)?),
            TAG_COMPACT => Command::Compact(PbCompactionRequest::decode(body).map_err(err)?),
            TAG_MEMBER => Command::Member(MemberChange::decode(body).map_err(DecodeError)?),
            TAG_LEASE_GRANT => Command::LeaseGrant(PbLeaseGrantRequest::decode(body).map_err(err)?),
            TAG_ALARM => Command::Alarm(PbAlarmRequest::decode(body).map_err(err)?),
            TAG_LEASE_REVOKE => {
                Command::LeaseRevoke(PbLeaseRevokeRequest::decode(body).map_err(err)?)
            }
            t => return Err(DecodeError(format!("unknown tag {t}"))),
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
}

/// What applying a command produced: a response or a deterministic error (the same on every member).
pub type ApplyResult = Result<CommandResponse, MvccError>;

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
        ];
        for c in cmds {
            assert_eq!(Command::decode(&c.encode()).unwrap(), c);
        }
        assert!(Command::decode(&[]).is_err());
        assert!(Command::decode(&[99, 1]).is_err());
    }
}
