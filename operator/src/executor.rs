//! Talks to a MetaStore cluster's members: observes them (etcd MemberList and Status) and carries
//! out one planned membership step through the etcd Cluster and Maintenance APIs and the node's
//! admin API, pushing the expected voter count to every member before and after each voter
//! change so lease reads pause while the configuration moves.

use etcd_client::{Client, ConnectOptions, MemberAddOptions};

use crate::admin_proto::admin_client::AdminClient;
use crate::admin_proto::{
    LeaseStatusRequest, LeaseStatusResponse, SetMembershipPolicyRequest, VersionRequest,
    VersionResponse,
};
use crate::constants::{
    CALL_TIMEOUT, CONNECT_TIMEOUT, ETCD_LEARNER_NOT_READY, LEARNER_READY_FRACTION,
};
use crate::planner::{ObservedMember, Step};

/// A failed call to the cluster.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An etcd API call failed.
    #[error("etcd API: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// The admin API failed.
    #[error("admin API at {0}: {1}")]
    Admin(String, String),
    /// No member could be reached.
    #[error("no member reachable at {0:?}")]
    Unreachable(Vec<String>),
    /// A call took too long.
    #[error("{0} timed out")]
    Timeout(&'static str),
    /// The cluster refused the root credentials (`spec.auth`).
    #[error("authenticating as root: {0}")]
    Auth(String),
}

/// A failed admin call's code and message (the code tells a refusal from an outage).
fn status_text(e: &tonic::Status) -> String {
    format!("{:?}: {}", e.code(), e.message())
}

/// One member as observed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// What the planner needs.
    pub member: ObservedMember,
    /// Its first client URL.
    pub client_url: Option<String>,
    /// Leader it reports.
    pub leader: u64,
    /// The MetaStore version it runs (admin Version call).
    pub version: Option<String>,
}

impl ExecError {
    /// The gRPC status the cluster answered with, when it refused a call.
    fn grpc_status(&self) -> Option<&tonic::Status> {
        match self {
            ExecError::Etcd(etcd_client::Error::GRpcStatus(s)) => Some(s),
            _ => None,
        }
    }

    /// A call naming a member the cluster does not know (etcd's ErrGRPCMemberNotFound).
    fn is_member_not_found(&self) -> bool {
        self.grpc_status()
            .is_some_and(|s| s.code() == tonic::Code::NotFound)
    }

    /// MemberPromote of a learner that has not caught up with the leader yet.
    fn is_learner_not_ready(&self) -> bool {
        self.grpc_status().is_some_and(|s| {
            s.code() == tonic::Code::FailedPrecondition
                && s.message().contains(ETCD_LEARNER_NOT_READY)
        })
    }
}

/// What a look at the cluster found.
#[derive(Debug, Clone, Default)]
pub struct ClusterView {
    /// Members (None when nobody answered).
    pub members: Option<Vec<MemberView>>,
    /// The leader reported by the most members that answered (see `most_common`).
    pub leader: Option<u64>,
    /// Cluster id.
    pub cluster_id: Option<u64>,
    /// The cluster version (the lowest every member runs), as the leader reports it.
    pub cluster_version: Option<String>,
}

/// What carrying out a step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The step was done.
    Done(String),
    /// The cluster is not ready for it yet (e.g. learner still catching up); try again soon.
    NotYet(String),
}

async fn timed<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, ExecError>>,
) -> Result<T, ExecError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| ExecError::Timeout(what))?
}

/// How the operator reaches a cluster's members: plain http, or TLS trusting the cluster's CA
/// and presenting the operator's client certificate (PEM); as root when the cluster has auth.
#[derive(Clone, Default)]
pub struct Dial {
    /// `(CA bundle, certificate, key)` under client TLS.
    pub tls: Option<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    /// `(user, password)` of root, for a cluster with `spec.auth`.
    pub credentials: Option<(String, String)>,
}

impl Dial {
    fn etcd_tls(&self) -> Option<etcd_client::TlsOptions> {
        let (ca, cert, key) = self.tls.as_ref()?;
        Some(
            etcd_client::TlsOptions::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(cert, key)),
        )
    }

    /// An admin-API client of the member at `url` (as root, with a token, when the cluster
    /// has auth on).
    async fn admin(&self, url: &str) -> Result<Admin, ExecError> {
        let fail = |e: &dyn std::fmt::Display| ExecError::Admin(url.into(), e.to_string());
        let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_string())
            .map_err(|e| fail(&e))?
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some((ca, cert, key)) = &self.tls {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                .identity(tonic::transport::Identity::from_pem(cert, key));
            endpoint = endpoint.tls_config(tls).map_err(|e| fail(&e))?;
        }
        let channel = endpoint.connect().await.map_err(|e| fail(&e))?;
        let token = match &self.credentials {
            Some((user, password)) => {
                // Boxed: an etcd client's connect future is large, and this one nests in others.
                let (c, authenticated) = Box::pin(connect_as(self, &[url.to_string()])).await?;
                if authenticated {
                    let mut auth = c.auth_client();
                    let t = timed("authenticate", async {
                        Ok(auth.authenticate(user.clone(), password.clone()).await?)
                    })
                    .await?;
                    t.token().parse().ok()
                } else {
                    None
                }
            }
            None => None,
        };
        Ok(AdminClient::with_interceptor(channel, Token(token)))
    }
}

/// Adds the auth token (if any) to every admin call.
#[derive(Clone)]
pub struct Token(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(t) = &self.0 {
            req.metadata_mut().insert("token", t.clone());
        }
        Ok(req)
    }
}

/// An admin-API client.
pub type Admin =
    AdminClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, Token>>;

/// etcd's answer to Authenticate while auth is off.
const AUTH_NOT_ENABLED: &str = "authentication is not enabled";

/// Connects an etcd client to `endpoints`: as root when the dial has credentials and the
/// cluster has auth on, else without (auth not enabled yet, or never).
pub async fn connect(dial: &Dial, endpoints: &[String]) -> Result<Client, ExecError> {
    Ok(Box::pin(connect_as(dial, endpoints)).await?.0)
}

/// [`connect`], and whether the client authenticated (the cluster has auth on).
async fn connect_as(dial: &Dial, endpoints: &[String]) -> Result<(Client, bool), ExecError> {
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(CALL_TIMEOUT);
    if let Some(tls) = dial.etcd_tls() {
        opts = opts.with_tls(tls);
    }
    if let Some((user, password)) = &dial.credentials {
        let as_root = opts.clone().with_user(user.as_str(), password.as_str());
        let tried = timed("connect", async {
            Ok(Client::connect(endpoints, Some(as_root)).await)
        })
        .await?;
        match tried {
            Ok(c) => return Ok((c, true)),
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains(AUTH_NOT_ENABLED) => {}
            Err(etcd_client::Error::GRpcStatus(s))
                if s.code() == tonic::Code::InvalidArgument || s.code() == tonic::Code::Unknown =>
            {
                return Err(ExecError::Auth(s.message().to_string()))
            }
            Err(_) => return Err(ExecError::Unreachable(endpoints.to_vec())),
        }
    }
    timed("connect", async {
        Client::connect(endpoints, Some(opts))
            .await
            .map(|c| (c, false))
            .map_err(|_| ExecError::Unreachable(endpoints.to_vec()))
    })
    .await
}

/// What the cluster's auth is after [`sync_auth`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthSync {
    /// On, as the spec asks.
    Enabled {
        /// Turned on by this call.
        changed: bool,
    },
    /// Off, as the spec asks.
    Disabled {
        /// Turned off by this call.
        changed: bool,
    },
}

/// Brings the cluster's auth to `want`: on, it makes sure `root` exists with the root role
/// and the dial's password, then enables auth; off, it disables auth as root. Idempotent.
pub async fn sync_auth(
    dial: &Dial,
    endpoints: &[String],
    want: bool,
) -> Result<AuthSync, ExecError> {
    let Some((user, password)) = dial.credentials.clone() else {
        return Ok(AuthSync::Disabled { changed: false });
    };
    // Root authenticates only while auth is on.
    let (mut c, enabled) = Box::pin(connect_as(dial, endpoints)).await?;
    match (want, enabled) {
        (true, true) => Ok(AuthSync::Enabled { changed: false }),
        (false, false) => Ok(AuthSync::Disabled { changed: false }),
        (false, true) => {
            timed("auth disable", async { Ok(c.auth_disable().await?) }).await?;
            Ok(AuthSync::Disabled { changed: true })
        }
        (true, false) => {
            let added = timed("user add", async {
                Ok(c.user_add(user.as_str(), password.as_str(), None).await)
            })
            .await?;
            match added {
                Ok(_) => {}
                // Kept from an earlier time auth was on: its password becomes the Secret's.
                Err(etcd_client::Error::GRpcStatus(s))
                    if s.message().contains("user name already exists") =>
                {
                    timed("change root password", async {
                        Ok(c.user_change_password(user.as_str(), password.as_str())
                            .await?)
                    })
                    .await?;
                }
                Err(e) => return Err(e.into()),
            }
            timed("grant root", async {
                Ok(c.user_grant_role(user.as_str(), "root").await?)
            })
            .await?;
            timed("auth enable", async { Ok(c.auth_enable().await?) }).await?;
            Ok(AuthSync::Enabled { changed: true })
        }
    }
}

/// Observes the cluster through any of `endpoints`; `ordinal_of` maps a peer URL to a pod
/// ordinal.
pub async fn observe(
    dial: &Dial,
    endpoints: &[String],
    ordinal_of: impl Fn(&str) -> Option<i32>,
) -> ClusterView {
    // One endpoint at a time: a balanced client may send the call to a member that is down.
    let mut list = None;
    for ep in endpoints {
        let Ok(mut c) = connect(dial, std::slice::from_ref(ep)).await else {
            continue;
        };
        if let Ok(l) = timed("member list", async { Ok(c.member_list().await?) }).await {
            list = Some(l);
            break;
        }
    }
    let Some(list) = list else {
        return ClusterView::default();
    };
    let cluster_id = list.header().map(|h| h.cluster_id());
    let mut views = Vec::new();
    let mut leaders: Vec<u64> = Vec::new();
    let mut cluster_versions: Vec<(u64, String)> = Vec::new();
    for m in list.members() {
        let url = m.client_urls().first().cloned();
        let (mut healthy, mut answered) = (false, false);
        let (mut applied, mut leader, mut commit) = (0, 0, 0);
        let mut version_seen = None;
        if let Some(u) = &url {
            if let Ok(mut mc) = connect(dial, std::slice::from_ref(u)).await {
                if let Ok(s) = timed("status", async { Ok(mc.status().await?) }).await {
                    answered = true;
                    healthy = s.leader() != 0;
                    applied = s.raft_applied_index();
                    commit = s.raft_index();
                    leader = s.leader();
                    if leader != 0 {
                        leaders.push(leader);
                    }
                }
            }
            if answered {
                if let Ok(v) = version(dial, u).await {
                    version_seen = Some(v.member_version);
                    cluster_versions.push((m.id(), v.cluster_version));
                }
            }
        }
        views.push(MemberView {
            member: ObservedMember {
                id: m.id(),
                ordinal: m.peer_urls().iter().find_map(|u| ordinal_of(u)),
                name: m.name().to_string(),
                is_learner: m.is_learner(),
                healthy,
                answered,
                commit_index: commit,
                applied_index: applied,
            },
            client_url: url,
            leader,
            version: version_seen,
        });
    }
    leaders.sort_unstable();
    let leader = most_common(&leaders);
    // The leader sets it; a follower may not have applied the newest yet.
    let cluster_version = cluster_versions
        .iter()
        .find(|(id, _)| Some(*id) == leader)
        .or(cluster_versions.first())
        .map(|(_, v)| v.clone());
    ClusterView {
        members: Some(views),
        leader,
        cluster_id,
        cluster_version,
    }
}

/// The value that occurs most often in `sorted` (the smallest of those tied), None when empty.
/// Not necessarily a majority: while members disagree (e.g. during an election), the leader
/// most of them report is the best guess.
fn most_common(sorted: &[u64]) -> Option<u64> {
    let mut best: Option<(u64, usize)> = None;
    for chunk in sorted.chunk_by(|a, b| a == b) {
        if best.is_none_or(|(_, n)| chunk.len() > n) {
            best = Some((chunk[0], chunk.len()));
        }
    }
    best.map(|(id, _)| id)
}

/// Pushes the expected voter count to every member that answers; returns how many took it.
pub async fn push_policy(
    dial: &Dial,
    urls: &[String],
    expected_voters: u32,
    generation: u64,
) -> usize {
    let mut ok = 0;
    for u in urls {
        let r = timed("policy push", async {
            let mut a = dial.admin(u).await?;
            a.set_membership_policy(SetMembershipPolicyRequest {
                expected_voters,
                generation,
            })
            .await
            .map_err(|e| ExecError::Admin(u.clone(), status_text(&e)))
        })
        .await;
        match r {
            Ok(_) => ok += 1,
            Err(e) => tracing::debug!("policy push: {e}"),
        }
    }
    ok
}

/// A member's version and the cluster version it has applied.
pub async fn version(dial: &Dial, url: &str) -> Result<VersionResponse, ExecError> {
    timed("version", async {
        let mut a = dial.admin(url).await?;
        Ok(a.version(VersionRequest {})
            .await
            .map_err(|e| ExecError::Admin(url.into(), status_text(&e)))?
            .into_inner())
    })
    .await
}

/// A member's lease status.
pub async fn lease_status(dial: &Dial, url: &str) -> Result<LeaseStatusResponse, ExecError> {
    timed("lease status", async {
        let mut a = dial.admin(url).await?;
        Ok(a.lease_status(LeaseStatusRequest {})
            .await
            .map_err(|e| ExecError::Admin(url.into(), status_text(&e)))?
            .into_inner())
    })
    .await
}

/// Where and how to carry out steps for one cluster.
pub struct Target<'a> {
    /// How to reach the members.
    pub dial: &'a Dial,
    /// Client URLs of the members (any may be used for Cluster calls).
    pub endpoints: &'a [String],
    /// The observed cluster.
    pub view: &'a ClusterView,
    /// Peer URL of pod `ordinal`.
    pub peer_url: &'a (dyn Fn(i32) -> String + Sync),
}

impl Target<'_> {
    fn member_urls(&self) -> Vec<String> {
        self.view
            .members
            .iter()
            .flatten()
            .filter_map(|m| m.client_url.clone())
            .collect()
    }

    fn url_of(&self, id: u64) -> Option<String> {
        self.view
            .members
            .iter()
            .flatten()
            .find(|m| m.member.id == id)
            .and_then(|m| m.client_url.clone())
    }
}

/// Carries out a membership step (StatefulSet steps are the controller's). `generation` is the
/// last policy generation used; it is advanced for every push.
pub async fn execute(
    step: &Step,
    t: &Target<'_>,
    generation: &mut u64,
) -> Result<Outcome, ExecError> {
    match step {
        Step::AddLearner { ordinal } => {
            let url = (t.peer_url)(*ordinal);
            let mut c = connect(t.dial, t.endpoints).await?;
            let r = timed("member add", async {
                Ok(c.member_add(
                    [url.as_str()],
                    Some(MemberAddOptions::new().with_is_learner()),
                )
                .await?)
            })
            .await?;
            let id = r.member().map(|m| m.id()).unwrap_or(0);
            Ok(Outcome::Done(format!(
                "added learner {id:x} for pod {ordinal} ({url})"
            )))
        }
        Step::Promote { id, voters_after } => {
            // Only pause lease reads for a promotion that can succeed now.
            let applied = |want: u64| {
                t.view
                    .members
                    .iter()
                    .flatten()
                    .find(|m| m.member.id == want)
                    .map_or(0, |m| m.member.applied_index)
            };
            let leader_applied = t.view.leader.map_or(0, applied);
            if (applied(*id) as f64) < leader_applied as f64 * LEARNER_READY_FRACTION {
                return Ok(Outcome::NotYet(format!(
                    "learner {id:x} is catching up ({} of {leader_applied})",
                    applied(*id)
                )));
            }
            *generation += 1;
            push_policy(t.dial, &t.member_urls(), *voters_after as u32, *generation).await;
            let mut c = connect(t.dial, t.endpoints).await?;
            match timed("member promote", async { Ok(c.member_promote(*id).await?) }).await {
                Ok(_) => {
                    *generation += 1;
                    push_policy(t.dial, &t.member_urls(), *voters_after as u32, *generation).await;
                    Ok(Outcome::Done(format!("promoted {id:x}")))
                }
                Err(e) if e.is_learner_not_ready() => {
                    // Not yet: lease reads may resume at the current size meanwhile.
                    *generation += 1;
                    let now = (*voters_after - 1) as u32;
                    push_policy(t.dial, &t.member_urls(), now, *generation).await;
                    Ok(Outcome::NotYet(format!("learner {id:x} is catching up")))
                }
                Err(e) => Err(e),
            }
        }
        Step::MoveLeader { from, to } => {
            let url = t
                .url_of(*from)
                .ok_or_else(|| ExecError::Unreachable(vec![format!("{from:x}")]))?;
            let mut c = connect(t.dial, &[url]).await?;
            timed("move leader", async { Ok(c.move_leader(*to).await?) }).await?;
            Ok(Outcome::Done(format!(
                "moved leadership from {from:x} to {to:x}"
            )))
        }
        Step::RemoveMember { id, voters_after }
        | Step::ReplaceLostMember {
            id, voters_after, ..
        } => {
            let is_voter = t
                .view
                .members
                .iter()
                .flatten()
                .any(|m| m.member.id == *id && !m.member.is_learner);
            let others: Vec<String> = t
                .view
                .members
                .iter()
                .flatten()
                .filter(|m| m.member.id != *id)
                .filter_map(|m| m.client_url.clone())
                .collect();
            if is_voter {
                *generation += 1;
                push_policy(t.dial, &t.member_urls(), *voters_after as u32, *generation).await;
            }
            let eps = if others.is_empty() {
                t.endpoints.to_vec()
            } else {
                others.clone()
            };
            let mut c = connect(t.dial, &eps).await?;
            match timed("member remove", async { Ok(c.member_remove(*id).await?) }).await {
                Ok(_) => {}
                // Removed already (e.g. the operator restarted mid-step).
                Err(e) if e.is_member_not_found() => {}
                Err(e) => return Err(e),
            }
            if is_voter {
                *generation += 1;
                push_policy(t.dial, &others, *voters_after as u32, *generation).await;
            }
            Ok(Outcome::Done(format!("removed {id:x}")))
        }
        Step::Steady { voters } => {
            // Keep every member's hint in line (new members, restarted ones).
            let mut stale = false;
            for u in t.member_urls() {
                match lease_status(t.dial, &u).await {
                    Ok(s) if s.expected_voters == *voters as u32 && s.generation == *generation => {
                    }
                    Ok(_) => stale = true,
                    Err(_) => {}
                }
            }
            if stale {
                *generation += 1;
                push_policy(t.dial, &t.member_urls(), *voters as u32, *generation).await;
                return Ok(Outcome::Done(format!(
                    "pushed expected voters {voters} (generation {generation})"
                )));
            }
            Ok(Outcome::Done(String::new()))
        }
        Step::ForceNewCluster { id, .. } => {
            let Some(url) = t.url_of(*id) else {
                return Ok(Outcome::NotYet(format!(
                    "survivor {id:x} has no client URL"
                )));
            };
            let mut admin = t.dial.admin(&url).await?;
            let r = timed("force new cluster", async {
                Ok(admin
                    .force_new_cluster(crate::admin_proto::ForceNewClusterRequest {
                        member_id: *id,
                    })
                    .await
                    .map_err(|e| ExecError::Admin(url.clone(), status_text(&e)))?
                    .into_inner())
            })
            .await?;
            Ok(Outcome::Done(format!(
                "member {id:x} restarts as a one-member cluster with every entry of its log (commit index {})",
                r.commit_index
            )))
        }
        other => Ok(Outcome::NotYet(format!(
            "{other:?} is not a member operation"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: tonic::Status) -> ExecError {
        ExecError::Etcd(etcd_client::Error::GRpcStatus(s))
    }

    #[test]
    fn refusals_are_told_apart_by_code() {
        let not_ready = refused(tonic::Status::failed_precondition(ETCD_LEARNER_NOT_READY));
        assert!(not_ready.is_learner_not_ready());
        assert!(!not_ready.is_member_not_found());
        let not_learner = refused(tonic::Status::failed_precondition(
            "etcdserver: can only promote a learner member",
        ));
        assert!(!not_learner.is_learner_not_ready());
        let not_found = refused(tonic::Status::not_found("etcdserver: member not found"));
        assert!(not_found.is_member_not_found());
        assert!(!not_found.is_learner_not_ready());
        assert!(
            !refused(tonic::Status::unavailable("etcdserver: unhealthy cluster"))
                .is_member_not_found()
        );
        assert!(!ExecError::Timeout("member remove").is_member_not_found());
    }

    #[test]
    fn leader_is_the_one_most_members_report() {
        assert_eq!(most_common(&[]), None);
        assert_eq!(most_common(&[5]), Some(5));
        assert_eq!(most_common(&[3, 5, 5]), Some(5));
        assert_eq!(most_common(&[3, 3, 5]), Some(3));
    }
}
