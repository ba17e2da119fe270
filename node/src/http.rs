//! HTTP endpoints on the metrics address: `/metrics`, `/health` (etcd's shape), `/livez`, `/readyz`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::node::Shared;

/// The router serving the member's HTTP endpoints.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> String {
    s.metrics.render()
}

/// etcd's `/health`: `{"health":"true"}` when a leader is known.
async fn health(State(s): State<Arc<Shared>>) -> (StatusCode, String) {
    if s.has_leader() && !s.stopping.load(Ordering::Relaxed) {
        (StatusCode::OK, r#"{"health":"true","reason":""}"#.into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#.into(),
        )
    }
}

/// Alive while the Raft loop keeps going round.
async fn livez(State(s): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if s.loop_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "raft loop stalled\n")
    }
}

/// Ready to serve clients: a leader is known and the member is not stopping.
async fn readyz(State(s): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if s.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else if !s.has_leader() {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
