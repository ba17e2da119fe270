//! Forwarding to the leader, for requests only the leader can serve (membership changes, key-lease
//! renewals and TTLs), as etcd does: find the leader's published client URL, then send the
//! request there and hand its answer back as is.

use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Request, Status};

use crate::api::credentials::OnBehalf;
use crate::api::status::node_status;
use crate::node::{NodeError, Shared};

/// Pause between looks for a leader while none is known (or it has not published its URL yet).
pub const NO_LEADER_PAUSE: Duration = Duration::from_millis(50);

/// How long connecting to the leader may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

fn unreachable(url: &str, e: &dyn std::fmt::Display) -> Status {
    Status::unavailable(format!("etcdserver: cannot reach the leader at {url}: {e}"))
}

/// The leader's client URL. Right after an election (or a start) the leader may not have
/// published it yet: wait for it, within the request timeout.
pub async fn leader_url(shared: &Shared) -> Result<String, Status> {
    let deadline = Instant::now() + shared.config.request_timeout;
    loop {
        match shared.leader_client_url() {
            Some(u) => return Ok(u),
            None if Instant::now() >= deadline => return Err(node_status(&NodeError::NoLeader)),
            None => tokio::time::sleep(NO_LEADER_PAUSE).await,
        }
    }
}

/// The TLS a member dials another's client URL with: its own client certificate
/// (`--cert-file`) and `--trusted-ca-file` as roots, for https:// URLs.
fn client_tls(
    shared: &Shared,
    url: &str,
) -> Result<Option<tonic::transport::ClientTlsConfig>, Status> {
    crate::tls::client_tls_for(shared.config.client_tls.as_ref(), url)
        .map_err(|e| Status::internal(format!("client TLS files: {e}")))
}

/// Sends a unary etcd request (`method` is its gRPC path) to the member at `url` and returns
/// its answer as is.
pub async fn unary<Req, Resp>(
    shared: &Shared,
    url: &str,
    method: &'static str,
    req: Req,
    on_behalf: &OnBehalf,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| unreachable(url, &e))?
        .connect_timeout(CONNECT_TIMEOUT);
    if let Some(tls) = client_tls(shared, url)? {
        endpoint = endpoint.tls_config(tls).map_err(|e| unreachable(url, &e))?;
    }
    let channel = endpoint.connect().await.map_err(|e| unreachable(url, &e))?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.map_err(|e| unreachable(url, &e))?;
    let path = PathAndQuery::from_static(method);
    let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
    let mut req = Request::new(req);
    on_behalf.apply(req.metadata_mut());
    Ok(grpc.unary(req, path, codec).await?.into_inner())
}

/// An etcd client connected to the leader, for the streams that must be forwarded
/// (key-lease keep-alives).
pub async fn leader_client(shared: &Shared) -> Result<etcd_client::Client, Status> {
    let url = leader_url(shared).await?;
    let mut opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(shared.config.request_timeout);
    if let Some(tls) = client_tls(shared, &url)? {
        opts = opts.with_tls(tls);
    }
    etcd_client::Client::connect([url.as_str()], Some(opts))
        .await
        .map_err(|e| unreachable(&url, &e))
}
