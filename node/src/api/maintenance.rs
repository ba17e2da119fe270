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

/// Magic at the start of a snapshot stream.
const SNAPSHOT_MAGIC: &[u8; 24] = b"METASTORE-SNAPSHOT-1\0\0\0\0";

/// The snapshot as etcdctl expects a database stream: length-prefixed state, zero padding to a
/// multiple of 512 bytes, then the SHA-256 of all that (etcdctl checks `size % 512 == 32`).
/// Produced chunk by chunk as the stream is read (hashing as it goes), so the serialized state
/// is the only whole copy held.
pub struct SnapshotFrames {
    state: Vec<u8>,
    prefix: [u8; 32],
    /// Prefix, state and padding: the bytes the digest covers.
    body_len: usize,
    pos: usize,
    chunk: usize,
    hasher: Option<sha2::Sha256>,
    digest: Option<[u8; 32]>,
}

impl SnapshotFrames {
    /// The frames of `state`, `chunk` bytes each (the last one shorter).
    pub fn new(state: Vec<u8>, chunk: usize) -> Self {
        use sha2::Digest;
        let mut prefix = [0u8; 32];
        prefix[..24].copy_from_slice(SNAPSHOT_MAGIC);
        prefix[24..].copy_from_slice(&(state.len() as u64).to_be_bytes());
        let body_len = (prefix.len() + state.len()).div_ceil(512) * 512;
        SnapshotFrames {
            state,
            prefix,
            body_len,
            pos: 0,
            chunk: chunk.max(1),
            hasher: Some(sha2::Sha256::new()),
            digest: None,
        }
    }

    /// Length of the whole stream.
    pub fn total_len(&self) -> usize {
        self.body_len + 32
    }

    /// Appends body bytes `[from, to)` (prefix, then state, then zero padding) to `out`.
    fn body(&self, from: usize, to: usize, out: &mut Vec<u8>) {
        let p = self.prefix.len();
        let s = p + self.state.len();
        if from < p {
            out.extend_from_slice(&self.prefix[from..to.min(p)]);
        }
        if to > p && from < s {
            out.extend_from_slice(&self.state[from.max(p) - p..to.min(s) - p]);
        }
        if to > s {
            out.resize(out.len() + (to - from.max(s)), 0);
        }
    }
}

impl Iterator for SnapshotFrames {
    type Item = Vec<u8>;

    fn next(&mut self) -> Option<Vec<u8>> {
        use sha2::Digest;
        let total = self.total_len();
        if self.pos >= total {
            return None;
        }
        let end = (self.pos + self.chunk).min(total);
        let mut out = Vec::with_capacity(end - self.pos);
        if self.pos < self.body_len {
            self.body(self.pos, end.min(self.body_len), &mut out);
            if let Some(h) = self.hasher.as_mut() {
                h.update(&out);
            }
        }
        if end > self.body_len {
            if self.digest.is_none() {
                let h = self.hasher.take().unwrap_or_default();
                self.digest = Some(h.finalize().into());
            }
            if let Some(d) = &self.digest {
                out.extend_from_slice(
                    &d[self.pos.max(self.body_len) - self.body_len..end - self.body_len],
                );
            }
        }
        self.pos = end;
        Some(out)
    }
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
        let header = self.header();
        let frames = SnapshotFrames::new(bytes, SNAPSHOT_CHUNK);
        let mut left = frames.total_len();
        let chunks = frames.map(move |blob| {
            left -= blob.len();
            Ok(PbSnapshotResponse {
                header,
                remaining_bytes: left as u64,
                blob,
                version: ETCD_API_VERSION.to_string(),
            })
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole stream built in one piece, as etcdctl reads it.
    fn framed(state: &[u8]) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.extend_from_slice(&(state.len() as u64).to_be_bytes());
        out.extend_from_slice(state);
        out.resize(out.len().div_ceil(512) * 512, 0);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    #[test]
    fn frames_are_the_framed_stream_cut_into_chunks() {
        for len in [0usize, 1, 479, 480, 481, 1000, 70_000] {
            let state: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
            for chunk in [1usize, 7, 32, 512, 1000, 32 * 1024] {
                let frames = SnapshotFrames::new(state.clone(), chunk);
                let total = frames.total_len();
                let parts: Vec<Vec<u8>> = frames.collect();
                assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= chunk));
                let joined = parts.concat();
                assert_eq!(joined.len(), total);
                assert_eq!(total % 512, 32, "etcdctl's size check");
                assert_eq!(joined, framed(&state), "len {len}, chunk {chunk}");
            }
        }
    }
}
