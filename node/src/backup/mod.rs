//! Backups: the snapshot file format, `metastore-node snapshot status` and `snapshot restore`
//! (a new cluster's data directory from a snapshot file, like `etcdutl`).

pub mod cli;
pub mod fetch;
pub mod format;
pub mod restore;
pub mod save;
