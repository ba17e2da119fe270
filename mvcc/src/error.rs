//! Errors of the key space, with etcd's exact gRPC messages.

/// Why a request was refused by the key space. Deterministic: every member refuses alike.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    /// The requested revision was compacted away.
    #[error("mvcc: required revision has been compacted")]
    Compacted,
    /// The requested revision is newer than the store.
    #[error("mvcc: required revision is a future revision")]
    FutureRevision,
    /// `ignore_value`/`ignore_lease` on a key that does not exist.
    #[error("key not found")]
    KeyNotFound,
    /// More compares or operations than allowed in one txn.
    #[error("too many operations in txn request")]
    TooManyOps,
    /// The same key written twice in one txn branch.
    #[error("duplicate key given in txn request")]
    DuplicateKey,
    /// An empty key.
    #[error("key is not provided")]
    EmptyKey,
    /// A put names a lease that does not exist.
    #[error("requested lease not found")]
    LeaseNotFound,
    /// LeaseGrant with an id already in use.
    #[error("lease already exists")]
    LeaseExists,
    /// The space quota is exhausted (NOSPACE alarm active).
    #[error("mvcc: database space exceeded")]
    NoSpace,
    /// A snapshot did not encode or decode.
    #[error("snapshot: {0}")]
    Snapshot(String),
    /// A Range would build a response larger than this many bytes (etcd's gRPC send limit).
    #[error("grpc: trying to send message larger than max ({0} bytes)")]
    ResponseTooLarge(u64),
    /// The values database failed (I/O, damage): not a client's doing.
    #[error("values database: {0}")]
    Storage(String),
}

impl MvccError {
    /// The message etcd puts in its gRPC status for this error.
    pub fn etcd_message(&self) -> &'static str {
        match self {
            MvccError::Compacted => "etcdserver: mvcc: required revision has been compacted",
            MvccError::FutureRevision => "etcdserver: mvcc: required revision is a future revision",
            MvccError::KeyNotFound => "etcdserver: key not found",
            MvccError::TooManyOps => "etcdserver: too many operations in txn request",
            MvccError::DuplicateKey => "etcdserver: duplicate key given in txn request",
            MvccError::EmptyKey => "etcdserver: key is not provided",
            MvccError::LeaseNotFound => "etcdserver: requested lease not found",
            MvccError::LeaseExists => "etcdserver: lease already exists",
            MvccError::NoSpace => "etcdserver: mvcc: database space exceeded",
            MvccError::Snapshot(_) => "etcdserver: corrupt snapshot",
            MvccError::Storage(_) => "etcdserver: storage error",
            MvccError::ResponseTooLarge(_) => "grpc: trying to send message larger than max",
        }
    }
}
