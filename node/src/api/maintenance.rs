//! The etcd v3 Maintenance service: Status, MoveLeader, Hash and HashKV (members holding the same
//! history hash alike), Snapshot (a consistent copy of the state, framed as etcdctl expects:
//! 512-byte aligned with a SHA-256 trailer), Defragment (accepted: the in-memory store has nothing
//! to defragment), Alarm (NOSPACE raised when `--quota-backend-bytes` is exhausted; GET, ACTIVATE,
//! DEACTIVATE). Downgrade answers Unimplemented with a clear message.

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
use crate::node::{LoopMsg, NodeError, NodeHandle};
use crate::replicated::command::{Command, CommandResponse};

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
}

/// Bytes per Snapshot message.
const SNAPSHOT_CHUNK: usize = 32 * 1024;

/// The snapshot as etcdctl expects a database stream: length-prefixed state, zero padding to a
/// multiple of 512 bytes, then the SHA-256 of all that (etcdctl checks `size % 512 == 32`).
pub fn frame_snapshot(state: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut out = Vec::with_capacity(state.len() + 1024);
    out.extend_from_slice(b"METASTORE-SNAPSHOT-1\0\0\0\0");
    out.extend_from_slice(&(state.len() as u64).to_be_bytes());
    out.extend_from_slice(state);
    let padded = out.len().div_ceil(512) * 512;
    out.resize(padded, 0);
    let digest = Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

impl MaintenanceService {
    /// Hash of the key space at `revision` (0 = current): (hash, compact revision, revision).
    fn hash_kv_at(&self, revision: i64) -> (Result<u32, Status>, i64, i64) {
        use sha1::{Digest, Sha1};
        let sm = self.node.shared.state.read();
        let store = &sm.store;
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
        let mut h = Sha1::new();
        store.visit_versions(rev, |k, main, sub, v| {
            h.update((k.len() as u64).to_be_bytes());
            h.update(k);
            h.update(main.to_be_bytes());
            h.update(sub.to_be_bytes());
            match v {
                Some(v) => {
                    h.update([1]);
                    h.update((v.len() as u64).to_be_bytes());
                    h.update(v);
                }
                None => h.update([0]),
            }
        });
        let d = h.finalize();
        (
            Ok(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
            compacted,
            rev,
        )
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
            match self.node.propose(Command::Alarm(r)).await {
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
        _req: Request<PbDefragmentRequest>,
    ) -> Result<Response<PbDefragmentResponse>, Status> {
        let r = Ok(PbDefragmentResponse {
            header: self.header(),
        });
        observed(&self.node.shared.metrics, "Defragment", async { r }).await
    }

    async fn hash(&self, _req: Request<PbHashRequest>) -> Result<Response<PbHashResponse>, Status> {
        let (hash, _, _) = self.hash_kv_at(0);
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
        let (hash, compacted, revision) = self.hash_kv_at(req.into_inner().revision);
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
        _req: Request<PbSnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let bytes = {
            let sm = self.node.shared.state.read();
            sm.to_snapshot()
                .map_err(|e| Status::internal(format!("snapshot: {e}")))?
        };
        let framed = frame_snapshot(&bytes);
        let header = self.header();
        let total = framed.len();
        let chunks: Vec<Result<PbSnapshotResponse, Status>> = framed
            .chunks(SNAPSHOT_CHUNK)
            .enumerate()
            .map(|(i, c)| {
                Ok(PbSnapshotResponse {
                    header,
                    remaining_bytes: (total - (i * SNAPSHOT_CHUNK + c.len())) as u64,
                    blob: c.to_vec(),
                    version: ETCD_API_VERSION.to_string(),
                })
            })
            .collect();
        let stream: SnapshotStream = Box::pin(tokio_stream::iter(chunks));
        observed(&self.node.shared.metrics, "Snapshot", async { Ok(stream) }).await
    }

    /// Transfers leadership to `target_id` (a voter) and waits until it leads; the old leader's
    /// lease is suspended for the transfer (see docs/lease-reads.md).
    async fn move_leader(
        &self,
        req: Request<PbMoveLeaderRequest>,
    ) -> Result<Response<PbMoveLeaderResponse>, Status> {
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
        _req: Request<PbDowngradeRequest>,
    ) -> Result<Response<PbDowngradeResponse>, Status> {
        Err(unimplemented("Downgrade"))
    }
}
