//! A MetaStore member: Raft (raft-rs) over a raft-engine log, an etcd-compatible MVCC state
//! machine, the etcd v3 KV, Cluster and Maintenance APIs over tonic, and Prometheus metrics.

// raft-rs's protobuf-2 messages are built field by field; that is how their API is meant to be used.
#![allow(clippy::field_reassign_with_default)]

pub mod admin_service;
pub mod auth_service;
pub mod auto_compaction;
pub mod bootstrap;
pub mod clock_guard;
pub mod cluster_service;
pub mod command;
pub mod compactor;
pub mod config;
pub mod http;
pub mod kv_service;
pub mod lease;
pub mod lease_policy;
pub mod lease_reads;
pub mod lease_service;
pub mod maintenance_service;
pub mod member;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod raft_log;
pub mod raft_logger;
pub mod raft_loop;
pub mod server;
pub mod snapshot_files;
pub mod state_machine;
pub mod transport;
pub mod watch_service;

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
