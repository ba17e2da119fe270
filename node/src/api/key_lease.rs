//! The etcd v3 Lease service (TTL keys). Grant and Revoke go through Raft; expiry is decided by
//! the leader, which proposes the revocation (deleting the attached keys in one revision).
//! KeepAlive and TimeToLive need the leader's clock: other members forward them to it.

use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use etcd_client::proto::{
    PbLeaseGrantRequest, PbLeaseGrantResponse, PbLeaseKeepAliveRequest, PbLeaseKeepAliveResponse,
    PbLeaseLeasesRequest, PbLeaseLeasesResponse, PbLeaseRevokeRequest, PbLeaseRevokeResponse,
    PbLeaseService, PbLeaseStatus, PbLeaseTimeToLiveRequest, PbLeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::api::credentials::caller_of;
use crate::api::forward;
use crate::api::observe::observed;
use crate::api::quota::{Quota, LEASE_GRANT_BYTES};
use crate::api::status::{node_status, propose_status, unexpected_response};
use crate::auth::Caller;
use crate::node::{LoopMsg, NodeError, NodeHandle};
use crate::replicated::command::{Command, CommandResponse};

/// Longest TTL etcd accepts (seconds).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;
/// etcd's message for a TTL over the maximum.
pub const ERR_LEASE_TTL_TOO_LARGE: &str = "etcdserver: too large lease TTL";

/// The Lease service of one member.
pub struct KeyLeaseService {
    node: NodeHandle,
    quota: Quota,
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
            quota: Quota::new(node.clone()),
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

    /// Proposes a client's request, with its caller for the permission check at apply.
    async fn propose(&self, caller: Caller, cmd: Command) -> Result<CommandResponse, Status> {
        self.node
            .propose_as(caller, cmd)
            .await
            .map_err(|e| propose_status(&e))
    }

    /// Renews `id` on the leader (here or forwarded); the granted TTL, 0 when it is gone.
    async fn renew(
        &self,
        id: i64,
        leader: &mut Option<etcd_client::Client>,
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
                if leader.is_none() {
                    *leader = Some(forward::leader_client(&self.node.shared).await?);
                }
                let Some(c) = leader.as_mut() else {
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
        observed(&self.node.shared.metrics, "LeaseGrant", async {
            let caller = caller_of(&self.node, &req).await?;
            let mut r = req.into_inner();
            if r.ttl > MAX_LEASE_TTL {
                return Err(Status::out_of_range(ERR_LEASE_TTL_TOO_LARGE));
            }
            r.ttl = r.ttl.max(self.min_ttl());
            self.quota.admit(LEASE_GRANT_BYTES).await?;
            if r.id == 0 {
                r.id = self.new_id();
            }
            match self.propose(caller, Command::LeaseGrant(r)).await? {
                CommandResponse::LeaseGrant(mut g) => {
                    g.header = Some(self.node.shared.header(None));
                    Ok(g)
                }
                _ => Err(unexpected_response()),
            }
        })
        .await
    }

    async fn lease_revoke(
        &self,
        req: Request<PbLeaseRevokeRequest>,
    ) -> Result<Response<PbLeaseRevokeResponse>, Status> {
        observed(&self.node.shared.metrics, "LeaseRevoke", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            match self.propose(caller, Command::LeaseRevoke(r)).await? {
                CommandResponse::LeaseRevoke(_) => Ok(PbLeaseRevokeResponse {
                    header: Some(self.node.shared.header(None)),
                }),
                _ => Err(unexpected_response()),
            }
        })
        .await
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
            quota: self.quota.clone(),
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
        let stream: KeepAliveStream = Box::pin(ReceiverStream::new(rx));
        observed(&self.node.shared.metrics, "LeaseKeepAlive", async {
            Ok(stream)
        })
        .await
    }

    async fn lease_time_to_live(
        &self,
        req: Request<PbLeaseTimeToLiveRequest>,
    ) -> Result<Response<PbLeaseTimeToLiveResponse>, Status> {
        let r = req.into_inner();
        observed(&self.node.shared.metrics, "LeaseTimeToLive", async {
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
                    let url = forward::leader_url(&self.node.shared).await?;
                    let t: PbLeaseTimeToLiveResponse = forward::unary(
                        &self.node.shared,
                        &url,
                        "/etcdserverpb.Lease/LeaseTimeToLive",
                        r,
                        // Lease TTLs need no permission (as etcd 3.5.1).
                        &Default::default(),
                    )
                    .await?;
                    Ok(PbLeaseTimeToLiveResponse { header, ..t })
                }
                Err(e) => Err(node_status(&e)),
            }
        })
        .await
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
        let r = Ok(PbLeaseLeasesResponse {
            header: Some(self.node.shared.header(None)),
            leases,
        });
        observed(&self.node.shared.metrics, "LeaseLeases", async { r }).await
    }
}
