//! The etcd v3 Lease service (TTL keys). Grant and Revoke go through Raft; expiry is decided by
//! the leader, which proposes the revocation (deleting the attached keys in one revision).
//! KeepAlive and TimeToLive need the leader's clock: other members forward them to it.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::kv::{mvcc_status, node_status};
use crate::node::{LoopMsg, NodeError, NodeHandle, ProposeError};
use crate::replicated::command::{Command, CommandResponse};

/// Longest TTL etcd accepts (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's message for a TTL over the maximum.
pub const ERR_LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

/// The Lease service of one member.
pub struct KeyLeaseService {
    node: NodeHandle,
    next_id: AtomicI64,
}

impl KeyLeaseService {
    /// Serves leases through `node`.
    pub fn new(node: NodeHandle) -> Self {
        // Ids differ across members and restarts: time-seeded, then counted.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(1)
            ^ ((node.shared.member_id() as i64) << 16);
        KeyLeaseService {
            node,
            next_id: AtomicI64::new(seed & i64::MAX),
        }
    }

    /// Shortest TTL granted: leases must outlive a leader election (etcd's minimum).
    fn min_ttl(&self) -> i64 {
        let et = self.node.shared.config.election_timeout;
        (et.as_secs_f64() * 1.5).ceil() as i64
    }

    fn new_id(&self) -> i64 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed) & i64::MAX;
            if id != 0 {
                return id;
            }
        }
    }

    fn observed<T>(&self, method: &str, r: Result<T, Status>) -> Result<Response<T>, Status> {
        self.node.shared.metrics.observed(method, r)
    }

    async fn propose(&self, cmd: Command) -> Result<CommandResponse, Status> {
        self.node.propose(cmd).await.map_err(|e| match e {
            ProposeError::Node(n) => node_status(&n),
            ProposeError::Apply(m) => mvcc_status(&m),
        })
    }

    async fn leader_client(&self) -> Result<etcd_client::Client, Status> {
        // Right after an election (or a start) the leader may not have published its client
        // URL yet: wait for it, within the request timeout.
        let deadline = std::time::Instant::now() + self.node.shared.config.request_timeout;
        let url = loop {
            match self.node.shared.leader_client_url() {
                Some(u) => break u,
                None if std::time::Instant::now() >= deadline => {
                    return Err(node_status(&NodeError::NoLeader))
                }
                None => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let opts = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(self.node.shared.config.request_timeout);
        etcd_client::Client::connect([url.as_str()], Some(opts))
            .await
            .map_err(|e| Status::unavailable(format!("etcdserver: cannot reach the leader: {e}")))
    }

    /// Renews `id` on the leader (here or forwarded); the granted TTL, 0 when it is gone.
    async fn renew(
        &self,
        id: i64,
        forward: &mut Option<etcd_client::Client>,
    ) -> Result<i64, Status> {
        match self
            .node
            .ask(|reply| LoopMsg::KeyLeaseKeepAlive { id, reply })
            .await
            .map_err(|e| node_status(&e))?
        {
            Ok(ttl) => Ok(ttl),
            Err(NodeError::KeyLeaseNotFound) => Ok(0),
            Err(NodeError::NotLeader) => {
                if forward.is_none() {
                    *forward = Some(self.leader_client().await?);
                }
                let Some(c) = forward.as_mut() else {
                    return Err(node_status(&NodeError::NoLeader));
                };
                // The client library reports a lease the leader no longer has as an error.
                let gone = |e: &etcd_client::Error| e.to_string().contains("lease not found");
                // The client library's first renewal is consumed by `lease_keep_alive` itself;
                // send one more and read its answer.
                let (mut keeper, mut stream) = match c.lease_keep_alive(id).await {
                    Ok(s) => s,
                    Err(e) if gone(&e) => return Ok(0),
                    Err(e) => return Err(Status::unavailable(e.to_string())),
                };
                keeper
                    .keep_alive()
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?;
                match stream.message().await {
                    Ok(Some(r)) => Ok(r.ttl()),
                    Ok(None) => Err(Status::unavailable("leader closed the keep-alive stream")),
                    Err(e) if gone(&e) => Ok(0),
                    Err(e) => Err(Status::unavailable(e.to_string())),
                }
            }
            Err(e) => Err(node_status(&e)),
        }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<PbLeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbLeaseService for KeyLeaseService {
    async fn lease_grant(
        &self,
        req: Request<PbLeaseGrantRequest>,
    ) -> Result<Response<PbLeaseGrantResponse>, Status> {
        let mut r = req.into_inner();
        let out = async {
            if r.ttl > MAX_LEASE_TTL {
                return Err(Status::out_of_range(ERR_LEASE_TTL_TOO_LARGE));
            }
            r.ttl = r.ttl.max(self.min_ttl());
            crate::api::kv::check_quota(&self.node, 64).await?;
            if r.id == 0 {
                r.id = self.new_id();
            }
            match self.propose(Command::LeaseGrant(r)).await? {
                CommandResponse::LeaseGrant(mut g) => {
                    g.header = Some(self.node.shared.header(None));
                    Ok(g)
                }
                _ => Err(Status::internal("unexpected response")),
            }
        }
        .await;
        self.observed("LeaseGrant", out)
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        let r = req.into_inner();
        let out = async {
            match self.propose(Command::LeaseRevoke(r)).await? {
                CommandResponse::LeaseRevoke(_) => Ok(PbLeaseRevokeResponse {
                    header: Some(self.node.shared.header(None)),
                }),
                _ => Err(Status::internal("unexpected response")),
            }
        }
        .await;
        self.observed("LeaseRevoke", out)
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<PbLeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let mut requests = req.into_inner();
        let (tx, rx) = mpsc::channel(64);
        let this = KeyLeaseService {
            node: self.node.clone(),
            next_id: AtomicI64::new(0),
        };
        tokio::spawn(async move {
            let mut forward = None;
            while let Some(Ok(r)) = requests.next().await {
                let resp =
                    this.renew(r.id, &mut forward)
                        .await
                        .map(|ttl| PbLeaseKeepAliveResponse {
                            header: Some(this.node.shared.header(None)),
                            id: r.id,
                            ttl,
                        });
                if resp.is_err() {
                    // The leader may have changed: dial again next time.
                    forward = None;
                }
                if tx.send(resp).await.is_err() {
                    return;
                }
            }
        });
        self.node
            .shared
            .metrics
            .observe_grpc("LeaseKeepAlive", tonic::Code::Ok);
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        let out = async {
            let header = Some(self.node.shared.header(None));
            match self
                .node
                .ask(|reply| LoopMsg::KeyLeaseTimeToLive { id: r.id, reply })
                .await
                .map_err(|e| node_status(&e))?
            {
                Ok(t) => Ok(PbLeaseTimeToLiveResponse {
                    header,
                    id: r.id,
                    ttl: t.remaining,
                    granted_ttl: t.granted,
                    keys: if r.keys { t.keys } else { vec![] },
                }),
                Err(NodeError::KeyLeaseNotFound) => Ok(PbLeaseTimeToLiveResponse {
                    header,
                    id: r.id,
                    ttl: -1,
                    ..Default::default()
                }),
                Err(NodeError::NotLeader) => {
                    let mut c = self.leader_client().await?;
                    let opts = r
                        .keys
                        .then(|| etcd_client::LeaseTimeToLiveOptions::new().with_keys());
                    let t = c
                        .lease_time_to_live(r.id, opts)
                        .await
                        .map_err(|e| Status::unavailable(e.to_string()))?;
                    Ok(PbLeaseTimeToLiveResponse {
                        header,
                        id: t.id(),
                        ttl: t.ttl(),
                        granted_ttl: t.granted_ttl(),
                        keys: t.keys().to_vec(),
                    })
                }
                Err(e) => Err(node_status(&e)),
            }
        }
        .await;
        self.observed("LeaseTimeToLive", out)
    }

    async fn lease_leases(
        &self,
        _req: Request<PbLeaseLeasesRequest>,
    ) -> Result<Response<PbLeaseLeasesResponse>, Status> {
        let leases = self
            .node
            .shared
            .state
            .read()
            .leases
            .keys()
            .map(|id| PbLeaseStatus { id: *id })
            .collect();
        self.observed(
            "LeaseLeases",
            Ok(PbLeaseLeasesResponse {
                header: Some(self.node.shared.header(None)),
                leases,
            }),
        )
    }
}
