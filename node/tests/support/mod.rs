//! What the testkit cannot know: where Cargo put the `metastore-node` binary for this package's
//! integration tests (pass it to `metastore_testkit::Cluster`).

/// Path of the `metastore-node` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_metastore-node");

pub mod etcd;

/// Waits (30 s at most) until the member at `url` reports a cluster version equal to its own:
/// entries of kinds newer than the first release are written only from then on.
#[allow(dead_code)]
pub async fn wait_cluster_version(url: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut admin =
        metastore_node::admin_proto::admin_client::AdminClient::connect(url.to_string())
            .await
            .unwrap();
    loop {
        let v = admin
            .version(metastore_node::admin_proto::VersionRequest {})
            .await
            .unwrap()
            .into_inner();
        if v.cluster_version == v.member_version {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "cluster version never set: {v:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
