//! A MetaStore member: Raft (raft-rs) over a raft-engine log, an etcd-compatible MVCC state
//! machine, the etcd v3 KV, Watch, Lease, Cluster and Maintenance APIs over tonic, leader read
//! leases, and Prometheus metrics.
//!
//! The wings: `api` (the gRPC services and their shared support: errors, forwarding, observing,
//! quota), `consensus` (the Raft loop, log, snapshots, bootstrap, peer transport), `replicated`
//! (commands, the state machine, members and membership changes), `read_lease` (when a read may
//! skip ReadIndex, and the clocks it trusts). `node` is what the wings share at run time, `server`
//! wires a member together, `config` turns flags into a validated configuration, `tls` secures
//! the listeners and the connections a member makes.

// raft-rs's protobuf-2 messages are built field by field; that is how their API is meant to be used.
#![allow(clippy::field_reassign_with_default)]

pub mod api;
pub mod auth;
pub mod auto_compaction;
pub mod backup;
pub mod compactor;
pub mod config;
pub mod consensus;
pub mod http;
pub mod metrics;
pub mod node;
pub mod raft_context;
pub mod read_lease;
pub mod replicated;
pub mod server;
pub mod tls;

/// Generated code of the operator's admin API (`proto/admin.proto`).
#[allow(missing_docs, clippy::all)]
pub mod admin_proto {
    tonic::include_proto!("metastore.admin");
}

/// Generated code of the member-to-member protocol (`proto/peer.proto`).
#[allow(missing_docs, clippy::all)]
pub mod peer_proto {
    tonic::include_proto!("metastore.peer");
}

/// Generated code of etcd's Auth service (`proto/etcd_auth.proto`, copied from etcd's API).
#[allow(missing_docs, clippy::all)]
pub mod etcd_auth_proto {
    /// The service and its messages.
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    /// Users, roles and permissions as etcd encodes them.
    pub mod authpb {
        tonic::include_proto!("authpb");
    }
}
