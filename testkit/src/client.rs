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

/// An etcd-client connection that reports failure instead of panicking.
pub async fn try_client(endpoint: &str) -> Result<etcd_client::Client, etcd_client::Error> {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(1))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([endpoint], Some(opts)).await
}
