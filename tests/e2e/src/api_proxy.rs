//! The `kubernetes` Service for pods: its ClusterIP (10.0.0.1:443, which the kubelet gives pods
//! as `KUBERNETES_SERVICE_HOST`/`_PORT`, the in-cluster configuration) forwarded to the API
//! server, as kube-proxy would. The address is the suite's own (on its namespace's loopback, see
//! `scripts/e2e-node.sh`); the bytes pass through untouched, so TLS is end to end.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};

/// The `kubernetes` Service's ClusterIP and port.
pub const SERVICE: &str = "10.0.0.1:443";

/// Forwards connections to `listen` to `target` until dropped.
pub struct ApiProxy {
    task: tokio::task::JoinHandle<()>,
}

impl ApiProxy {
    /// Listens on `listen` and forwards every connection to `target`.
    pub async fn start(listen: &str, target: SocketAddr) -> anyhow::Result<ApiProxy> {
        let l = TcpListener::bind(listen).await?;
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Ok(ApiProxy { task })
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
