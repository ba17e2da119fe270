//! The etcd v3 Maintenance service: Status and MoveLeader. Alarm, Defragment, Hash, HashKV,
//! Snapshot and Downgrade answer Unimplemented with a clear message until they are built.

use std::pin::Pin;
use std::time::{Duration, Instant};

use etcd_client::proto::{
    PbAlarmRequest, PbAlarmResponse, PbDefragmentRequest, PbDefragmentResponse, PbDowngradeRequest,
    PbDowngradeResponse, PbHashKvRequest, PbHashKvResponse, PbHashRequest, PbHashResponse,
    PbMaintenanceService, PbMoveLeaderRequest, PbMoveLeaderResponse, PbResponseHeader,
    PbSnapshotRequest, PbSnapshotResponse, PbStatusRequest, PbStatusResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::kv_service::node_status;
use crate::node::{LoopMsg, NodeError, NodeHandle};

/// The etcd API version this member speaks (what `etcdctl endpoint status` shows).
pub const ETCD_API_VERSION: &str = "3.5.0";

/// etcd's message when a leader transfer does not finish in time.
pub const ERR_LEADER_TRANSFER_TIMEOUT: &str =
    "etcdserver: request timed out, leader transfer took too long";

/// The Maintenance service of one member.
pub struct MaintenanceService {
    node: NodeHandle,
}

impl MaintenanceService {
    /// Serves Maintenance requests through `node`.
    pub fn new(node: NodeHandle) -> Self {
        MaintenanceService { node }
    }

    fn header(&self) -> Option<PbResponseHeader> {
        Some(self.node.shared.header(None))
    }

    fn observe<T>(&self, method: &str, r: Result<T, Status>) -> Result<Response<T>, Status> {
        self.node.shared.metrics.observed(method, r)
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "metastore: Maintenance.{what} is not supported yet (Status and MoveLeader are)"
    ))
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        _req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        Err(unimplemented("Alarm"))
    }

    async fn status(
        &self,
        _req: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        let sh = &self.node.shared;
        let me = sh.member_id();
        let status = sh.status.read().clone();
        let size = sh.state.read().store.approximate_size_bytes() as i64;
        let applied = *sh.applied.borrow();
        let r = Ok(PbStatusResponse {
            header: self.header(),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: status.leader_id,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: applied,
            errors: vec![],
            db_size_in_use: size,
            is_learner: status.learners.contains(&me),
            ..Default::default()
        });
        self.observe("Status", r)
    }

    async fn defragment(
        &self,
        _req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        Err(unimplemented("Defragment"))
    }

    async fn hash(&self, _req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        Err(unimplemented("Hash"))
    }

    async fn hash_kv(
        &self,
        _req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        Err(unimplemented("HashKV"))
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        _req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Err(unimplemented("Snapshot"))
    }

    /// Transfers leadership to `target_id` (a voter) and waits until it leads; the old leader's
    /// lease is suspended for the transfer (see docs/lease-reads.md).
    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let r = async {
            self.node
                .ask(|reply| LoopMsg::TransferLeader { target, reply })
                .await
                .map_err(|e| node_status(&e))?
                .map_err(|e| node_status(&e))?;
            let sh = &self.node.shared;
            let deadline = Instant::now() + sh.config.request_timeout;
            loop {
                if sh.status.read().leader_id == target {
                    return Ok(PbMoveLeaderResponse {
                        header: self.header(),
                    });
                }
                if Instant::now() >= deadline {
                    return Err(Status::unavailable(ERR_LEADER_TRANSFER_TIMEOUT));
                }
                if sh.stopping.load(std::sync::atomic::Ordering::Relaxed) {
                    return Err(node_status(&NodeError::Stopped));
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        .await;
        self.observe("MoveLeader", r)
    }

    async fn downgrade(
        &self,
        _req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
