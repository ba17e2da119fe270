//! The etcd v3 KV service: validation, etcd-shaped errors, reads through the read path and writes
//! through Raft.

use etcd_client::proto::{
    PbCompactionRequest, PbCompactionResponse, PbDeleteRequest, PbDeleteResponse, PbKvService,
    PbPutRequest, PbPutResponse, PbRangeRequest, PbRangeResponse, PbRangeStreamResponse,
    PbResponseHeader, PbTxnRequest, PbTxnResponse,
};
use metastore_mvcc::MvccError;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::api::credentials::caller_of;
use crate::api::observe::observed;
use crate::api::quota::Quota;
use crate::api::status::{
    auth_status, mvcc_status, node_status, propose_status, unexpected_response,
    ERR_REQUEST_TOO_LARGE,
};
use crate::auth::Caller;
use crate::node::NodeHandle;
use crate::replicated::command::{Command, CommandResponse};
use crate::replicated::state_machine::{txn_reads, TxnReads};

/// The KV service of one member.
pub struct KvService {
    node: NodeHandle,
    quota: Quota,
}

impl KvService {
    /// Serves KV requests through `node`.
    pub fn new(node: NodeHandle) -> Self {
        KvService {
            quota: Quota::new(node.clone()),
            node,
        }
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

    /// Proposes a client's request, with its caller for the permission check at apply.
    async fn propose(&self, caller: Caller, cmd: Command) -> Result<CommandResponse, Status> {
        self.node
            .propose_as(caller, cmd)
            .await
            .map_err(|e| propose_status(&e))
    }

    /// Serves a range: serializable ones locally, linearizable ones after the read barrier;
    /// with auth on, checked against the auth state of the same moment.
    async fn do_range(&self, caller: Caller, r: PbRangeRequest) -> Result<PbRangeResponse, Status> {
        if r.key.is_empty() {
            return Err(mvcc_status(&MvccError::EmptyKey));
        }
        self.node
            .read_barrier(r.serializable)
            .await
            .map_err(|e| node_status(&e))?;
        let mut resp = {
            let state = self.node.shared.state.read();
            state
                .auth
                .check_range(&caller, &r)
                .map_err(|e| auth_status(&e))?;
            state.store.range(&r).map_err(|e| mvcc_status(&e))?
        };
        let rev = resp.header.as_ref().map(|h| h.revision).unwrap_or_default();
        resp.header = self.header(rev);
        Ok(resp)
    }

    /// Serves a txn that writes nothing: after the read barrier (unless every range in it is
    /// serializable), evaluated on a view of the key space (O(1) to take), outside the state
    /// lock and never on the Raft thread.
    async fn read_only_txn(
        &self,
        caller: Caller,
        r: PbTxnRequest,
        serializable: bool,
    ) -> Result<PbTxnResponse, Status> {
        self.node
            .read_barrier(serializable)
            .await
            .map_err(|e| node_status(&e))?;
        let mut view = {
            let state = self.node.shared.state.read();
            // It puts nothing, so no lease's keys matter.
            let no_lease_keys = |_| std::iter::empty::<&Vec<u8>>();
            state
                .auth
                .check_txn(&caller, &r, &no_lease_keys)
                .map_err(|e| auth_status(&e))?;
            state.store.clone()
        };
        let mut t = view.txn(&r).map_err(|e| mvcc_status(&e))?.response;
        t.header = self.header(revision_of(&t.header));
        Ok(t)
    }
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
        observed(&self.node.shared.metrics, "Range", async {
            let caller = caller_of(&self.node, &req).await?;
            self.do_range(caller, req.into_inner()).await
        })
        .await
    }

    type RangeStreamStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<PbRangeStreamResponse, Status>>>;

    async fn range_stream(
        &self,
        req: Request<PbRangeRequest>,
    ) -> Result<Response<Self::RangeStreamStream>, Status> {
        let resp = observed(&self.node.shared.metrics, "RangeStream", async {
            let caller = caller_of(&self.node, &req).await?;
            self.do_range(caller, req.into_inner()).await
        })
        .await?;
        let item = PbRangeStreamResponse {
            range_response: Some(resp.into_inner()),
        };
        Ok(Response::new(tokio_stream::iter(vec![Ok(item)])))
    }

    async fn put(&self, req: Request<PbPutRequest>) -> Result<Response<PbPutResponse>, Status> {
        observed(&self.node.shared.metrics, "Put", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
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
            self.quota.admit(r.key.len() + r.value.len()).await?;
            match self.propose(caller, Command::Put(r)).await? {
                CommandResponse::Put(mut p) => {
                    p.header = self.header(revision_of(&p.header));
                    Ok(p)
                }
                _ => Err(unexpected_response()),
            }
        })
        .await
    }

    async fn delete_range(
        &self,
        req: Request<PbDeleteRequest>,
    ) -> Result<Response<PbDeleteResponse>, Status> {
        observed(&self.node.shared.metrics, "DeleteRange", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            if r.key.is_empty() {
                return Err(mvcc_status(&MvccError::EmptyKey));
            }
            self.check_size(&r)?;
            match self.propose(caller, Command::DeleteRange(r)).await? {
                CommandResponse::DeleteRange(mut d) => {
                    d.header = self.header(revision_of(&d.header));
                    Ok(d)
                }
                _ => Err(unexpected_response()),
            }
        })
        .await
    }

    async fn txn(&self, req: Request<PbTxnRequest>) -> Result<Response<PbTxnResponse>, Status> {
        observed(&self.node.shared.metrics, "Txn", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            metastore_mvcc::validate_txn(&r, self.node.shared.config.max_txn_ops)
                .map_err(|e| mvcc_status(&e))?;
            self.check_size(&r)?;
            let reads = txn_reads(&r);
            if reads != TxnReads::Writes {
                // Like etcd: a txn that writes nothing is a read, not a log entry.
                return self
                    .read_only_txn(caller, r, reads == TxnReads::Serializable)
                    .await;
            }
            if crate::replicated::state_machine::txn_has_put(&r) {
                self.quota.admit(r.encoded_len()).await?;
            }
            match self.propose(caller, Command::Txn(r)).await? {
                CommandResponse::Txn(mut t) => {
                    t.header = self.header(revision_of(&t.header));
                    Ok(t)
                }
                _ => Err(unexpected_response()),
            }
        })
        .await
    }

    async fn compact(
        &self,
        req: Request<PbCompactionRequest>,
    ) -> Result<Response<PbCompactionResponse>, Status> {
        observed(&self.node.shared.metrics, "Compact", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            match self.propose(caller, Command::Compact(r)).await? {
                CommandResponse::Compact(mut c) => {
                    c.header = self.header(revision_of(&c.header));
                    Ok(c)
                }
                _ => Err(unexpected_response()),
            }
        })
        .await
    }
}
