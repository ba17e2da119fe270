//! The node's errors as etcd's gRPC statuses, in one place, so every service answers the same
//! failure with the same code and message (clients branch on both).

use metastore_mvcc::MvccError;
use tonic::Status;

use crate::auth::AuthError;
use crate::node::{NodeError, ProposeError};
use crate::replicated::command::ApplyError;
use crate::replicated::membership::MembershipError;

/// etcd's message for a request over `--max-request-bytes`.
pub const ERR_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";

/// A state-machine error.
pub fn mvcc_status(e: &MvccError) -> Status {
    let msg = e.etcd_message();
    match e {
        MvccError::Compacted | MvccError::FutureRevision => Status::out_of_range(msg),
        MvccError::LeaseNotFound => Status::not_found(msg),
        MvccError::NoSpace => Status::resource_exhausted(msg),
        MvccError::ResponseTooLarge(limit) => Status::resource_exhausted(format!(
            "{msg} (more than {limit} bytes); narrow the range or set a limit"
        )),
        MvccError::LeaseExists => Status::failed_precondition(msg),
        MvccError::Snapshot(_) | MvccError::Storage(_) => Status::internal(msg),
        _ => Status::invalid_argument(msg),
    }
}

/// A Raft-side failure.
pub fn node_status(e: &NodeError) -> Status {
    match e {
        NodeError::NotLeader | NodeError::BadLeaderTransferee | NodeError::NotYetSupported(_) => {
            Status::failed_precondition(e.to_string())
        }
        NodeError::Membership(m) => membership_status(m),
        NodeError::KeyLeaseNotFound => Status::not_found(e.to_string()),
        NodeError::TooManyRequests => Status::resource_exhausted(e.to_string()),
        _ => Status::unavailable(e.to_string()),
    }
}

/// A refused membership request.
pub fn membership_status(e: &MembershipError) -> Status {
    let msg = e.to_string();
    match e {
        MembershipError::NotFound => Status::not_found(msg),
        MembershipError::BadUrls => Status::invalid_argument(msg),
        MembershipError::Unhealthy | MembershipError::InProgress => Status::unavailable(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// An auth failure, with the code etcd's clients branch on (a token refused is
/// `Unauthenticated`, which makes them authenticate again).
pub fn auth_status(e: &AuthError) -> Status {
    let msg = e.to_string();
    match e {
        AuthError::PermissionDenied => Status::permission_denied(msg),
        AuthError::InvalidAuthToken => Status::unauthenticated(msg),
        AuthError::UserEmpty
        | AuthError::RoleEmpty
        | AuthError::AuthFailed
        | AuthError::PermissionNotGiven
        | AuthError::InvalidAuthMgmt
        | AuthError::AuthOldRevision => Status::invalid_argument(msg),
        AuthError::NoPasswordUser => Status::unknown(msg),
        _ => Status::failed_precondition(msg),
    }
}

/// A command the state machine rejected.
pub fn apply_status(e: &ApplyError) -> Status {
    match e {
        ApplyError::Mvcc(m) => mvcc_status(m),
        ApplyError::Auth(a) => auth_status(a),
    }
}

/// A proposal that failed in Raft or when applied.
pub fn propose_status(e: &ProposeError) -> Status {
    match e {
        ProposeError::Node(n) => node_status(n),
        ProposeError::Apply(m) => apply_status(m),
    }
}

/// An applied command answered with a response of another kind (a bug, never a client error).
pub fn unexpected_response() -> Status {
    Status::internal("applied command returned a response of another kind")
}
