//! The admin gRPC service the operator uses: push the expected membership size (a hint that can
//! only make lease reads more careful), read the lease status, and recover a cluster that lost
//! quorum (force a new cluster on a survivor).

use tonic::{Request, Response, Status};

use crate::admin_proto::admin_server::Admin;
use crate::admin_proto::{
    ForceNewClusterRequest, ForceNewClusterResponse, LeaseStatusRequest, LeaseStatusResponse,
    SetMembershipPolicyRequest, SetMembershipPolicyResponse, VersionRequest, VersionResponse,
};
use crate::api::status::node_status;
use crate::node::{LoopMsg, NodeHandle};
use crate::read_lease::policy::{HintOutcome, MAX_GENERATION_STEP};

/// The admin service of one member.
pub struct AdminService {
    node: NodeHandle,
}

impl AdminService {
    /// Serves admin requests through `node`.
    pub fn new(node: NodeHandle) -> Self {
        AdminService { node }
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn set_membership_policy(
        &self,
        req: Request<SetMembershipPolicyRequest>,
    ) -> Result<Response<SetMembershipPolicyResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let r = req.into_inner();
        if r.expected_voters == 0 {
            return Err(Status::invalid_argument(
                "expected_voters must be at least 1",
            ));
        }
        let reply = self
            .node
            .ask(|reply| LoopMsg::SetPolicy {
                expected_voters: r.expected_voters,
                generation: r.generation,
                reply,
            })
            .await
            .map_err(|e| node_status(&e))?;
        let outcome = match reply.outcome {
            HintOutcome::Applied => "applied",
            HintOutcome::Unchanged => "unchanged",
            HintOutcome::Stale => "stale",
            HintOutcome::TooFarAhead => {
                return Err(Status::invalid_argument(format!(
                "generation {} is more than {MAX_GENERATION_STEP} ahead of the one in force ({})",
                r.generation, reply.view.generation
            )))
            }
        };
        let v = reply.view;
        Ok(Response::new(SetMembershipPolicyResponse {
            outcome: outcome.into(),
            expected_voters: v.expected_voters,
            generation: v.generation,
            enabled: v.policy_enabled,
            reason: v.reason,
        }))
    }

    async fn lease_status(
        &self,
        _req: Request<LeaseStatusRequest>,
    ) -> Result<Response<LeaseStatusResponse>, Status> {
        let r = self
            .node
            .ask(|reply| LoopMsg::ReadLeaseStatus { reply })
            .await
            .map_err(|e| node_status(&e))?;
        Ok(Response::new(LeaseStatusResponse {
            enabled: r.view.policy_enabled,
            reason: r.view.reason,
            valid: r.view.valid,
            remaining_ms: r.view.remaining.as_millis() as u64,
            voters: r.status.voters,
            learners: r.status.learners,
            expected_voters: r.view.expected_voters,
            generation: r.view.generation,
            term: r.status.term,
            leader: r.status.leader_id,
            applied_index: r.applied,
            member_id: self.node.shared.member_id(),
            lease_duration_ms: self.node.shared.config.read_lease.duration.as_millis() as u64,
        }))
    }

    async fn force_new_cluster(
        &self,
        req: Request<ForceNewClusterRequest>,
    ) -> Result<Response<ForceNewClusterResponse>, Status> {
        crate::api::credentials::require_admin(&self.node, &req).await?;
        let sh = &self.node.shared;
        let me = sh.member_id();
        let r = req.into_inner();
        if r.member_id != me {
            return Err(Status::failed_precondition(format!(
                "this is member {me:x}, not {:x}",
                r.member_id
            )));
        }
        let st = sh.status.read().clone();
        if st.leader_id != 0 {
            return Err(Status::failed_precondition(format!(
                "the cluster has a leader ({:x}): it has quorum, nothing to recover",
                st.leader_id
            )));
        }
        if !st.voters.contains(&me) {
            return Err(Status::failed_precondition(
                "this member is not a voter; recover from a voter",
            ));
        }
        let marker = crate::consensus::bootstrap::force_new_cluster_marker(&sh.config.data_dir);
        crate::consensus::bootstrap::write_durably(&marker, b"requested through the admin API")
            .map_err(|e| Status::internal(e.to_string()))?;
        tracing::warn!(
            "force-new-cluster requested: restarting as the only voter with every entry of the log"
        );
        // Answer first, then stop as on SIGTERM; the supervisor (kubelet) starts it again.
        let shared = self.node.shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let _ = shared.restart.send(true);
        });
        Ok(Response::new(ForceNewClusterResponse {
            commit_index: st.commit_index,
        }))
    }

    async fn version(
        &self,
        _req: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let sh = &self.node.shared;
        Ok(Response::new(VersionResponse {
            member_version: crate::replicated::version::member_version().to_string(),
            cluster_version: sh.state.read().cluster_version().to_string(),
            member_id: sh.member_id(),
        }))
    }
}
