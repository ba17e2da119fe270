//! Raft: the loop that owns the `RawNode`, its log, snapshots on disk, bootstrap and the peer transport.

pub mod bootstrap;
pub mod cluster_version;
pub mod direct_file;
pub mod key_leases;
pub mod log;
pub mod logger;
pub mod loop_env;
pub mod message_guard;
pub mod priority;
pub mod raft_loop;
pub mod read_queue;
pub mod snapshot_files;
pub mod snapshot_transfer;
pub mod transport;
