//! The etcd v3 Maintenance service: Status, MoveLeader, Hash and HashKV (members holding the same
//! history hash alike), Snapshot (a consistent copy of the state, framed as etcdctl expects:
//! 512-byte aligned with a SHA-256 trailer), Defragment (accepted: the in-memory store has nothing
//! to defragment), Alarm (NOSPACE raised when `--quota-backend-bytes` is exhausted; GET, ACTIVATE,
//! DEACTIVATE). Downgrade answers Unimplemented with a clear message.

use std::io;
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

use crate::api::observe::observed;
use crate::api::status::{mvcc_status, node_status, propose_status, unexpected_response};
use crate::backup::format::{framed_len, SnapshotFramer};
use crate::node::{LoopMsg, NodeError, NodeHandle};
use crate::replicated::command::{Command, CommandResponse};

/// The etcd version whose API this member serves as etcd does (what `etcdctl endpoint status`
/// shows). 3.5.13 is the first 3.5 release whose watch progress notifications this member
/// matches (sent only when every watcher of the stream is synced, in order with its events);
/// kube-apiserver reads this version to decide whether to serve consistent lists from its
/// watch cache.
pub const ETCD_API_VERSION: &str = "3.5.13";

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
}

/// Bytes per Snapshot message.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// Hash of the key space `store` at `revision` (0 = current): (hash, compact revision, revision).
fn hash_kv_at(store: &metastore_mvcc::Store, revision: i64) -> (Result<u32, Status>, i64, i64) {
    let rev = if revision > 0 {
        revision
    } else {
        store.current_revision()
    };
    let compacted = store.compacted_revision();
    if rev > store.current_revision() {
        return (
            Err(mvcc_status(&metastore_mvcc::MvccError::FutureRevision)),
            compacted,
            rev,
        );
    }
    if revision > 0 && rev < compacted {
        return (
            Err(mvcc_status(&metastore_mvcc::MvccError::Compacted)),
            compacted,
            rev,
        );
    }
    (
        crate::replicated::kv_hash::kv_hash(store, rev).map_err(|e| mvcc_status(&e)),
        compacted,
        rev,
    )
}

impl MaintenanceService {
    /// [`hash_kv_at`] on a view of the key space taken now (O(1)), computed off the async
    /// workers and without holding the state lock the apply path needs.
    async fn hash_kv_now(&self, revision: i64) -> (Result<u32, Status>, i64, i64) {
        let store = self.node.shared.state.read().store.clone();
        tokio::task::spawn_blocking(move || hash_kv_at(&store, revision))
            .await
            .unwrap_or_else(|e| (Err(Status::internal(format!("hash: {e}"))), 0, 0))
    }
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!(
        "metastore: Maintenance.{what} is not supported yet"
    ))
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<PbSnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl PbMaintenanceService for MaintenanceService {
    async fn alarm(
        &self,
        req: Request<PbAlarmRequest>,
    ) -> Result<Response<PbAlarmResponse>, Status> {
        // Raising or clearing an alarm is an admin's (the certificate policy here, auth's
        // root role when applied); listing them, any user's.
        let caller = if req.get_ref().action != 0 {
            crate::api::admin_access::require_admin(&self.node.shared, &req)?;
            crate::api::credentials::caller_of(&self.node, &req).await?
        } else {
            crate::api::credentials::require_user(&self.node, &req).await?
        };
        let r = req.into_inner();
        observed(&self.node.shared.metrics, "Alarm", async {
            if r.action == 0 {
                // GET: the alarms in force (filtered by member and type when given). etcd serves
                // it through Raft, so it is linearizable: an alarm a member has just raised is
                // listed by every member asked afterwards.
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(|e| node_status(&e))?;
                let alarms = self
                    .node
                    .shared
                    .state
                    .read()
                    .alarms
                    .iter()
                    .filter(|(m, a)| {
                        (r.member_id == 0 || *m == r.member_id) && (r.alarm == 0 || *a == r.alarm)
                    })
                    .map(|(m, a)| etcd_client::proto::PbAlarmMember {
                        member_id: *m,
                        alarm: *a,
                    })
                    .collect();
                return Ok(PbAlarmResponse {
                    header: self.header(),
                    alarms,
                });
            }
            match self.node.propose_as(caller, Command::Alarm(r)).await {
                Ok(CommandResponse::Alarm(mut a)) => {
                    a.header = self.header();
                    Ok(a)
                }
                Ok(_) => Err(unexpected_response()),
                Err(e) => Err(propose_status(&e)),
            }
        })
        .await
    }

    async fn status(
        &self,
        req: Request<PbStatusRequest>,
    ) -> Result<Response<PbStatusResponse>, Status> {
        crate::api::credentials::require_user(&self.node, &req).await?;
        let sh = &self.node.shared;
        let me = sh.member_id();
        let status = sh.status.read().clone();
        let size = sh.state.read().held_bytes() as i64;
        let applied = *sh.applied.borrow();
        let r = Ok(PbStatusResponse {
            header: self.header(),
            version: ETCD_API_VERSION.to_string(),
            db_size: size,
            leader: status.leader_id,
            raft_index: status.commit_index,
            raft_term: status.term,
            raft_applied_index: applied,
            errors: sh
                .state
                .read()
                .alarms
                .iter()
                .map(|(m, a)| {
                    let kind = if *a == crate::replicated::state_machine::ALARM_NOSPACE {
                        "NOSPACE"
                    } else {
                        "CORRUPT"
                    };
                    format!("memberID:{m} alarm:{kind} ")
                })
                .collect(),
            db_size_in_use: size,
            is_learner: status.learners.contains(&me),
            ..Default::default()
        });
        observed(&self.node.shared.metrics, "Status", async { r }).await
    }

    async fn defragment(
        &self,
        req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let r = Ok(PbDefragmentResponse {
            header: self.header(),
        });
        observed(&self.node.shared.metrics, "Defragment", async { r }).await
    }

    async fn hash(&self, req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let (hash, _, _) = self.hash_kv_now(0).await;
        let r = hash.map(|hash| PbHashResponse {
            header: self.header(),
            hash,
        });
        observed(&self.node.shared.metrics, "Hash", async { r }).await
    }

    async fn hash_kv(
        &self,
        req: Request<PbHashKvRequest>,
    ) -> Result<Response<PbHashKvResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let (hash, compacted, revision) = self.hash_kv_now(req.into_inner().revision).await;
        let r = hash.map(|hash| PbHashKvResponse {
            header: self.header(),
            hash,
            compact_revision: compacted,
            hash_revision: revision,
        });
        observed(&self.node.shared.metrics, "HashKV", async { r }).await
    }

    type SnapshotStream = SnapshotStream;

    async fn snapshot(
        &self,
        req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        // A view of the state now (O(1)), measured (the framing starts with its length) and then
        // serialized into the stream on a blocking thread.
        let view = self.node.shared.state.read().clone();
        let header = self.header();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<PbSnapshotResponse, Status>>(4);
        tokio::task::spawn_blocking(move || {
            let streamed = (|| -> Result<(), String> {
                let state_len = view
                    .snapshot_len(metastore_mvcc::ValuesIn::Body)
                    .map_err(|e| e.to_string())?;
                let mut left = framed_len(state_len);
                let send = |blob: Vec<u8>| {
                    left -= blob.len() as u64;
                    tx.blocking_send(Ok(PbSnapshotResponse {
                        header,
                        remaining_bytes: left,
                        blob,
                        version: ETCD_API_VERSION.to_string(),
                    }))
                    .map_err(|_| io::Error::other("the client went away"))
                };
                let mut framer = SnapshotFramer::new(state_len, SNAPSHOT_CHUNK, send)
                    .map_err(|e| e.to_string())?;
                view.write_snapshot(&mut framer, metastore_mvcc::ValuesIn::Body)
                    .map_err(|e| e.to_string())?;
                framer.finish().map_err(|e| e.to_string())
            })();
            if let Err(e) = streamed {
                let _ = tx.blocking_send(Err(Status::internal(format!("snapshot: {e}"))));
            }
        });
        let stream: SnapshotStream = Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx));
        observed(&self.node.shared.metrics, "Snapshot", async { Ok(stream) }).await
    }

    /// Transfers leadership to `target_id` (a voter) and waits until it leads; the old leader's
    /// lease is suspended for the transfer (see docs/lease-reads.md).
    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let target = req.into_inner().target_id;
        observed(&self.node.shared.metrics, "MoveLeader", async {
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
        })
        .await
    }

    async fn downgrade(
        &self,
        req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        Err(unimplemented("Downgrade"))
    }
}
