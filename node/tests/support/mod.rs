//! What the testkit cannot know: where Cargo put the `metastore-node` binary for this package's
//! integration tests (pass it to `metastore_testkit::Cluster`).

/// Path of the `metastore-node` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_metastore-node");

pub mod etcd;
