//! HTTP endpoints on the metrics address: `/metrics`, `/health` (etcd's shape), `/livez`, `/readyz`.
//! They answer from the moment the listener is bound: while the data dir is still loading
//! (a large snapshot takes seconds), `/livez` says alive and the rest say "starting".

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::node::Shared;

/// The member the endpoints report on, once its data dir is open.
pub type Member = Arc<std::sync::OnceLock<Arc<Shared>>>;

/// The router serving the member's HTTP endpoints.
pub fn router(member: Member) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(member)
}

const STARTING: (StatusCode, &str) = (StatusCode::SERVICE_UNAVAILABLE, "starting\n");

async fn metrics(State(m): State<Member>) -> String {
    m.get().map(|s| s.metrics.render()).unwrap_or_default()
}

/// etcd's `/health`: `{"health":"true"}` when a leader is known.
async fn health(State(m): State<Member>) -> (StatusCode, String) {
    let Some(s) = m.get() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"STARTING"}"#.into(),
        );
    };
    if s.has_leader() && !s.stopping.load(Ordering::Relaxed) {
        (StatusCode::OK, r#"{"health":"true","reason":""}"#.into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"health":"false","reason":"RAFT NO LEADER"}"#.into(),
        )
    }
}

/// Alive while the data dir loads, then while the Raft loop keeps going round.
async fn livez(State(m): State<Member>) -> (StatusCode, &'static str) {
    let Some(s) = m.get() else {
        return (StatusCode::OK, "ok (starting)\n");
    };
    if s.loop_alive() {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "raft loop stalled\n")
    }
}

/// Most committed entries a member may have left to apply and count as ready: one restarted a
/// moment ago replays what it missed first, and requests sent to it meanwhile would wait.
pub const READY_APPLY_LAG: u64 = 1000;

/// Ready to serve clients promptly: a leader is known, the member is not stopping, and it has
/// applied (nearly) everything committed.
async fn readyz(State(m): State<Member>) -> (StatusCode, &'static str) {
    let Some(s) = m.get() else {
        return STARTING;
    };
    let behind = s
        .status
        .read()
        .commit_index
        .saturating_sub(*s.applied.borrow());
    if s.stopping.load(Ordering::Relaxed) {
        (StatusCode::SERVICE_UNAVAILABLE, "stopping\n")
    } else if !s.has_leader() {
        (StatusCode::SERVICE_UNAVAILABLE, "no leader\n")
    } else if behind > READY_APPLY_LAG {
        (StatusCode::SERVICE_UNAVAILABLE, "catching up\n")
    } else {
        (StatusCode::OK, "ok\n")
    }
}
