//! etcd-client connections to one endpoint, with the timeouts the tests use.

use std::time::Duration;

/// An etcd-client connection to one endpoint; panics if it cannot be made.
pub async fn client(endpoint: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(10));
    etcd_client::Client::connect([endpoint], Some(opts))
        .await
        .expect("connect")
}

/// MemberAdd of a learner at `peer_url` through `cl`; panics if it is refused.
pub async fn add_learner(
    cl: &mut etcd_client::Client,
    peer_url: &str,
) -> etcd_client::MemberAddResponse {
    cl.member_add(
        [peer_url],
        Some(etcd_client::MemberAddOptions::new().with_is_learner()),
    )
    .await
    .unwrap()
}

/// The store's current revision as `cl`'s endpoint reports it (the header of a linearizable get
/// of `key`); panics if the read fails.
pub async fn current_revision(cl: &mut etcd_client::Client, key: &str) -> i64 {
    cl.get(key, None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision()
}

/// An etcd-client connection that reports failure instead of panicking.
pub async fn try_client(endpoint: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([endpoint], Some(opts)).await
}
