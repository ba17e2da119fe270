//! The one request-observing function: every etcd service's handler runs through it, so every
//! call is counted in `metastore_grpc_requests_total` by method and gRPC code the same way.

use std::future::Future;

use tonic::{Response, Status};

use crate::metrics::Metrics;

/// Runs a unary handler (or a stream's set-up) and counts its outcome.
pub async fn observed<T>(
    metrics: &Metrics,
    method: &str,
    handler: impl Future<Output = Result<T, Status>>,
) -> Result<Response<T>, Status> {
    let r = handler.await;
    metrics.observed(method, r)
}
