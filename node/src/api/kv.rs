//! The etcd v3 KV service: validation, etcd-shaped errors, reads through the read path and writes
//! through Raft.

use std::future::Future;

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbResponseHeader, PbTxnRequest, PbTxnResponse,
};
use metastore_mvcc::MvccError;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::node::{NodeError, NodeHandle, ProposeError};
use crate::replicated::command::{Command, CommandResponse};

/// etcd's message for a request over `--max-request-bytes`.
pub const ERR_REQUEST_TOO_LARGE: &str = "etcdserver: request is too large";

/// Maps a state-machine error to etcd's gRPC status.
pub fn mvcc_status(e: &MvccError) -> Status {
    let msg = e.etcd_message();
    match e {
        MvccError::Compacted | MvccError::FutureRevision => Status::out_of_range(msg),
        MvccError::LeaseNotFound => Status::not_found(msg),
        MvccError::NoSpace => Status::resource_exhausted(msg),
        MvccError::LeaseExists => Status::failed_precondition(msg),
        MvccError::Snapshot(_) => Status::internal(msg),
        _ => Status::invalid_argument(msg),
    }
}

/// See [`KvService::check_quota`]; shared with the Lease service.
pub async fn check_quota(node: &NodeHandle, adds: usize) -> Result<(), Status> {
    let quota = node.shared.config.quota_backend_bytes;
    let size = node.shared.state.read().store.approximate_size_bytes();
    if size + adds as u64 <= quota {
        return Ok(());
    }
    let alarm = Command::Alarm(etcd_client::proto::PbAlarmRequest {
        action: 1,
        member_id: node.shared.member_id(),
        alarm: crate::replicated::state_machine::ALARM_NOSPACE,
    });
    if let Err(e) = node.propose(alarm).await {
        tracing::warn!("cannot raise the NOSPACE alarm: {e}");
    }
    Err(mvcc_status(&MvccError::NoSpace))
}

/// Maps a Raft-side failure to etcd's gRPC status.
pub fn node_status(e: &NodeError) -> Status {
    e.status()
}

fn propose_status(e: &ProposeError) -> Status {
    match e {
        ProposeError::Node(n) => node_status(n),
        ProposeError::Apply(m) => mvcc_status(m),
    }
}

/// The KV service of one member.
pub struct KvService {
    node: NodeHandle,
}

impl KvService {
    /// Serves KV requests through `node`.
    pub fn new(node: NodeHandle) -> Self {
        KvService { node }
    }

    /// Runs a handler and counts its outcome by method and code.
    async fn observed<T>(
        &self,
        method: &str,
        f: impl Future<Output = Result<T, Status>>,
    ) -> Result<Response<T>, Status> {
        let r = f.await;
        self.node.shared.metrics.observed(method, r)
    }

    fn header(&self, revision: i64) -> Option<PbResponseHeader> {
        Some(self.node.shared.header(Some(revision)))
    }

    fn check_size(&self, m: &impl Message) -> Result<(), Status> {
        if m.encoded_len() > self.node.shared.config.max_request_bytes {
            return Err(Status::invalid_argument(ERR_REQUEST_TOO_LARGE));
        }
        Ok(())
    }

    async fn propose(&self, cmd: Command) -> Result<CommandResponse, Status> {
        self.node.propose(cmd).await.map_err(|e| propose_status(&e))
    }

    /// Refuses a write that would take the store past `--quota-backend-bytes`, raising the
    /// NOSPACE alarm through Raft (as etcd does) so every member refuses writes until space is
    /// freed (compaction) and the alarm is disarmed.
    async fn check_quota(&self, adds: usize) -> Result<(), Status> {
        check_quota(&self.node, adds).await
    }

    /// Serves a range: serializable ones locally, linearizable ones after the read barrier.
    async fn do_range(&self, r: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        if r.key.is_empty() {
            return Err(mvcc_status(&MvccError::EmptyKey));
        }
        self.node
            .read_barrier(r.serializable)
            .await
            .map_err(|e| node_status(&e))?;
        let mut resp = self
            .node
            .shared
            .state
            .read()
            .store
            .range(&r)
            .map_err(|e| mvcc_status(&e))?;
        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
        resp.header = self.header(rev);
        Ok(resp)
    }
}

fn unexpected() -> Status {
    Status::internal("applied command returned a response of another kind")
}

fn revision_of(h: &Option<PbResponseHeader>) -> i64 {
    h.as_ref().map(|h| h.revision).unwrap_or_default()
}

#[tonic::async_trait]
impl PbKvService for KvService {
    async fn range(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<PbRangeResponse>, Status> {
        self.observed("Range", self.do_range(req.into_inner()))
            .await
    }

    type RangeStreamStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<PbRangeStreamResponse, Status>>>;

    async fn range_stream(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let resp = self
            .observed("RangeStream", self.do_range(req.into_inner()))
            .await?;
        let item = PbRangeStreamResponse {
            range_response: Some(resp.into_inner()),
        };
        Ok(Response::new(tokio_stream::iter(vec![Ok(item)])))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        let r = req.into_inner();
        self.observed("Put", async {
            if r.key.is_empty() {
                return Err(mvcc_status(&MvccError::EmptyKey));
            }
            self.check_size(&r)?;
            // etcd's checkPutRequest.
            if r.ignore_value && !r.value.is_empty() {
                return Err(Status::invalid_argument("etcdserver: value is provided"));
            }
            if r.ignore_lease && r.lease != 0 {
                return Err(Status::invalid_argument("etcdserver: lease is provided"));
            }
            self.check_quota(r.key.len() + r.value.len()).await?;
            match self.propose(Command::Put(r)).await? {
                CommandResponse::Put(mut p) => {
                    p.header = self.header(revision_of(&p.header));
                    Ok(p)
                }
                _ => Err(unexpected()),
            }
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        let r = req.into_inner();
        self.observed("DeleteRange", async {
            if r.key.is_empty() {
                return Err(mvcc_status(&MvccError::EmptyKey));
            }
            self.check_size(&r)?;
            match self.propose(Command::DeleteRange(r)).await? {
                CommandResponse::DeleteRange(mut d) => {
                    d.header = self.header(revision_of(&d.header));
                    Ok(d)
                }
                _ => Err(unexpected()),
            }
        })
        .await
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        let r = req.into_inner();
        self.observed("Txn", async {
            metastore_mvcc::validate_txn(&r, self.node.shared.config.max_txn_ops)
                .map_err(|e| mvcc_status(&e))?;
            self.check_size(&r)?;
            if crate::replicated::state_machine::txn_has_put(&r) {
                self.check_quota(r.encoded_len()).await?;
            }
            match self.propose(Command::Txn(r)).await? {
                CommandResponse::Txn(mut t) => {
                    t.header = self.header(revision_of(&t.header));
                    Ok(t)
                }
                _ => Err(unexpected()),
            }
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        let r = req.into_inner();
        self.observed("Compact", async {
            match self.propose(Command::Compact(r)).await? {
                CommandResponse::Compact(mut c) => {
                    c.header = self.header(revision_of(&c.header));
                    Ok(c)
                }
                _ => Err(unexpected()),
            }
        })
        .await
    }
}
