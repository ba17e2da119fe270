//! Shared support for MetaStore's tests (node integration tests, the end-to-end suite):
//!
//! - [`certs`]: test certificates (a CA issuing leaf certificates);
//! - [`process`]: one real `metastore-node` process ([`Member`]) and plain HTTP probes;
//! - [`cluster`]: a cluster of members on a loopback network of its own ([`Cluster`]);
//! - [`client`](mod@client): etcd-client connections with the tests' timeouts;
//! - [`etcd_cli`]: the real `etcdctl` against one endpoint;
//! - [`namespace`]: re-running a test inside private network and mount namespaces;
//! - [`load`]: continuous client load over a changing set of endpoints, recorded;
//! - [`checkers`]: linearizability checkers for the recorded histories;
//! - [`faults`]: the fault-injection suite's nemesis and client workloads.
//!
//! The testkit does not know where the `metastore-node` binary is: only an integration test of
//! the `metastore-node` package gets its path from Cargo (`env!("CARGO_BIN_EXE_metastore-node")`),
//! so callers pass it to [`Cluster::start`] / [`Cluster::create`].

#![warn(missing_docs)]

pub mod certs;
pub mod checkers;
pub mod client;
pub mod cluster;
pub mod etcd_cli;
pub mod faults;
pub mod load;
pub mod namespace;
pub mod process;
pub mod s3;

pub use client::{add_learner, client, current_revision, try_client};
pub use cluster::{loopback_net, member_args, Cluster, FAST};
pub use etcd_cli::{etcdctl, etcdctl_output};
pub use namespace::in_namespace;
pub use process::{http_get, tail, Member};

/// The `metastore-node` binary next to the running test binary (`target/<profile>/`), for tests
/// of other packages (the operator's); panics with a hint when it was not built.
pub fn node_bin() -> std::path::PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/metastore-node
    let exe = std::env::current_exe().expect("test exe");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("metastore-node"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo build -p metastore-node)",
        bin.display()
    );
    bin
}
