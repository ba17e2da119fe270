//! etcd's Auth service is out of scope: every Auth RPC answers gRPC `Unimplemented` with a clear
//! message (instead of tonic's bare "unknown service"), and nothing else changes.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::task::{Context, Poll};

use tonic::codegen::{http, Service};

/// Message of every Auth RPC.
pub const AUTH_UNSUPPORTED: &str =
    "metastore: authentication (etcd Auth API) is not supported; secure access with network policy and TLS at the edge";

/// Answers every `etcdserverpb.Auth` method with `Unimplemented`.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuthUnimplemented;

impl tonic::server::NamedService for AuthUnimplemented {
    const NAME: &'static str = "etcdserverpb.Auth";
}

impl<B> Service<http::Request<B>> for AuthUnimplemented {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: http::Request<B>) -> Self::Future {
        ready(Ok(
            tonic::Status::unimplemented(AUTH_UNSUPPORTED).into_http()
        ))
    }
}
