//! The etcd v3 Cluster service: MemberList on any member; MemberAdd, MemberRemove, MemberUpdate
//! and MemberPromote checked and proposed by the leader (other members forward them to it, as
//! etcd does), answered once the change is applied.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use etcd_client::proto::{
    PbClusterService, PbMember, PbMemberAddRequest, PbMemberAddResponse, PbMemberListRequest,
    PbMemberListResponse, PbMemberPromoteRequest, PbMemberPromoteResponse, PbMemberRemoveRequest,
    PbMemberRemoveResponse, PbMemberUpdateRequest, PbMemberUpdateResponse, PbResponseHeader,
};
use tonic::{Request, Response, Status};

use crate::api::credentials::OnBehalf;
use crate::api::forward::{self, NO_LEADER_PAUSE};
use crate::api::observe::observed;
use crate::api::status::{membership_status, node_status};
use crate::node::{NodeError, NodeHandle};
use crate::replicated::member::{new_member_id, valid_peer_urls, Member};
use crate::replicated::membership::{MemberChange, MembershipError};

/// The Cluster service of one member.
pub struct ClusterService {
    node: NodeHandle,
}

/// etcd's wire shape of a member.
pub fn pb_member(m: &Member) -> PbMember {
    PbMember {
        id: m.id,
        name: m.name.clone(),
        peer_ur_ls: m.peer_urls.clone(),
        client_ur_ls: m.client_urls.clone(),
        is_learner: m.is_learner,
    }
}

impl ClusterService {
    /// Serves the Cluster API through `node`.
    pub fn new(node: NodeHandle) -> Self {
        ClusterService { node }
    }

    /// etcd's Cluster responses carry no revision.
    fn header(&self) -> Option<PbResponseHeader> {
        Some(PbResponseHeader {
            revision: 0,
            ..self.node.shared.header(None)
        })
    }

    /// Runs `change` on the leader: here when this member leads (answered by `answer` with the
    /// response header and the member list after the change), else by forwarding `req` to the
    /// leader's client URL and returning its answer as is.
    async fn on_leader<Req, Resp>(
        &self,
        change: MemberChange,
        method: &'static str,
        req: Req,
        behalf: &OnBehalf,
        answer: impl FnOnce(Option<PbResponseHeader>, Vec<PbMember>) -> Resp,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let deadline = Instant::now() + self.node.shared.config.request_timeout;
        loop {
            match self.node.change_membership(change.clone()).await {
                Ok(members) => return Ok(answer(self.header(), Self::members(&members))),
                Err(NodeError::NotLeader) => {}
                Err(e) => return Err(node_status(&e)),
            }
            if let Some(url) = self.node.shared.leader_client_url() {
                return forward::unary(&self.node.shared, &url, method, req, behalf).await;
            }
            if Instant::now() + NO_LEADER_PAUSE >= deadline {
                return Err(node_status(&NodeError::NoLeader));
            }
            tokio::time::sleep(NO_LEADER_PAUSE).await;
        }
    }

    fn members(list: &[Member]) -> Vec<PbMember> {
        list.iter().map(pb_member).collect()
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[tonic::async_trait]
impl PbClusterService for ClusterService {
    async fn member_add(
        &self,
        req: Request<PbMemberAddRequest>,
    ) -> Result<Response<PbMemberAddResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let behalf = OnBehalf::of(&self.node, &req);
        let req = req.into_inner();
        observed(&self.node.shared.metrics, "MemberAdd", async {
            if !valid_peer_urls(&req.peer_ur_ls) {
                return Err(membership_status(&MembershipError::BadUrls));
            }
            let sh = &self.node.shared;
            let mut id = new_member_id(&req.peer_ur_ls, &sh.config.cluster_token, now_secs());
            {
                // Never reuse an id, even one removed long ago.
                let sm = sh.state.read();
                while id == 0 || sm.members.contains_key(&id) || sm.removed.contains(&id) {
                    id = id.wrapping_add(1);
                }
            }
            let member = Member {
                id,
                name: String::new(),
                peer_urls: req.peer_ur_ls.clone(),
                client_urls: vec![],
                is_learner: req.is_learner,
            };
            self.on_leader(
                MemberChange::Add(member.clone()),
                "/etcdserverpb.Cluster/MemberAdd",
                req,
                &behalf,
                |header, members| PbMemberAddResponse {
                    header,
                    member: Some(pb_member(&member)),
                    members,
                },
            )
            .await
        })
        .await
    }

    async fn member_remove(
        &self,
        req: Request<PbMemberRemoveRequest>,
    ) -> Result<Response<PbMemberRemoveResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let behalf = OnBehalf::of(&self.node, &req);
        let req = req.into_inner();
        observed(&self.node.shared.metrics, "MemberRemove", async {
            self.on_leader(
                MemberChange::Remove(req.id),
                "/etcdserverpb.Cluster/MemberRemove",
                req,
                &behalf,
                |header, members| PbMemberRemoveResponse { header, members },
            )
            .await
        })
        .await
    }

    async fn member_update(
        &self,
        req: Request<PbMemberUpdateRequest>,
    ) -> Result<Response<PbMemberUpdateResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let behalf = OnBehalf::of(&self.node, &req);
        let req = req.into_inner();
        observed(&self.node.shared.metrics, "MemberUpdate", async {
            if !valid_peer_urls(&req.peer_ur_ls) {
                return Err(membership_status(&MembershipError::BadUrls));
            }
            let change = MemberChange::UpdatePeerUrls {
                id: req.id,
                peer_urls: req.peer_ur_ls.clone(),
            };
            self.on_leader(
                change,
                "/etcdserverpb.Cluster/MemberUpdate",
                req,
                &behalf,
                |header, members| PbMemberUpdateResponse { header, members },
            )
            .await
        })
        .await
    }

    async fn member_list(
        &self,
        req: Request<PbMemberListRequest>,
    ) -> Result<Response<PbMemberListResponse>, Status> {
        crate::api::credentials::require_user(&self.node, &req).await?;
        let req = req.into_inner();
        observed(&self.node.shared.metrics, "MemberList", async {
            if req.linearizable {
                self.node
                    .linearizable_barrier()
                    .await
                    .map_err(|e| node_status(&e))?;
            }
            let members: Vec<Member> = self
                .node
                .shared
                .state
                .read()
                .members
                .values()
                .cloned()
                .collect();
            Ok(PbMemberListResponse {
                header: self.header(),
                members: Self::members(&members),
            })
        })
        .await
    }

    async fn member_promote(
        &self,
        req: Request<PbMemberPromoteRequest>,
    ) -> Result<Response<PbMemberPromoteResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let behalf = OnBehalf::of(&self.node, &req);
        let req = req.into_inner();
        observed(&self.node.shared.metrics, "MemberPromote", async {
            self.on_leader(
                MemberChange::Promote(req.id),
                "/etcdserverpb.Cluster/MemberPromote",
                req,
                &behalf,
                |header, members| PbMemberPromoteResponse { header, members },
            )
            .await
        })
        .await
    }
}
