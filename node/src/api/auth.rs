//! etcd's Auth service: users, roles and permissions changed through Raft (passwords hashed
//! here first, as etcd does), read after a linearizable barrier, and tokens issued by
//! Authenticate.

use crate::etcd_auth_proto::authpb::Permission as PbPermission;
use crate::etcd_auth_proto::etcdserverpb::auth_server::Auth as PbAuthService;
use crate::etcd_auth_proto::etcdserverpb::ResponseHeader as PbResponseHeader;
use crate::etcd_auth_proto::etcdserverpb::*;
use tonic::{Request, Response, Status};

use crate::api::credentials::caller_of;
use crate::api::observe::observed;
use crate::api::status::{auth_status, node_status, propose_status, unexpected_response};
use crate::auth::state::{PermKind, Permission};
use crate::auth::tokens::Tokens;
use crate::auth::{password, AuthChange, AuthError, Caller};
use crate::node::NodeHandle;
use crate::replicated::command::{Command, CommandResponse};

/// Most Authenticate retries when the auth state changed between the password check and the
/// token (etcd loops the same way).
const AUTHENTICATE_TRIES: usize = 3;

/// The Auth service of one member.
pub struct AuthService {
    node: NodeHandle,
    /// bcrypt is slow on purpose: at most this many hashes run at once, so password requests
    /// cannot take every core from the Raft loop.
    hashing: tokio::sync::Semaphore,
}

impl AuthService {
    /// Serves Auth requests through `node`.
    pub fn new(node: NodeHandle) -> Self {
        AuthService {
            node,
            hashing: tokio::sync::Semaphore::new(2),
        }
    }

    fn header(&self) -> Option<PbResponseHeader> {
        let h = self.node.shared.header(None);
        Some(PbResponseHeader {
            cluster_id: h.cluster_id,
            member_id: h.member_id,
            revision: h.revision,
            raft_term: h.raft_term,
        })
    }

    /// Proposes `change` for `caller`; returns the auth revision after it and any token.
    async fn change(
        &self,
        caller: Caller,
        change: AuthChange,
    ) -> Result<(u64, Option<String>), Status> {
        match self
            .node
            .propose(Command::Auth { caller, change })
            .await
            .map_err(|e| propose_status(&e))?
        {
            CommandResponse::Auth {
                revision, token, ..
            } => Ok((revision, token)),
            _ => Err(unexpected_response()),
        }
    }

    /// The caller of `req`, refused early unless it is an admin (the check at apply decides;
    /// this one spares a hash for a caller who would be refused anyway).
    async fn admin<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        crate::api::credentials::require_root(&self.node, req).await
    }

    /// The caller of `req`, after a linearizable barrier, for a read of the auth state.
    async fn reader<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        self.node
            .linearizable_barrier()
            .await
            .map_err(|e| node_status(&e))?;
        caller_of(&self.node, req).await
    }

    async fn hash(&self, pw: String) -> Result<String, Status> {
        let cost = self.node.shared.config.auth.bcrypt_cost;
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("server stopping"))?;
        tokio::task::spawn_blocking(move || password::hash(&pw, cost))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(format!("hashing the password: {e}")))
    }

    async fn password_matches(&self, pw: String, hash: String) -> Result<bool, Status> {
        let _permit = self
            .hashing
            .acquire()
            .await
            .map_err(|_| Status::unavailable("server stopping"))?;
        tokio::task::spawn_blocking(move || password::matches(&pw, &hash))
            .await
            .map_err(|e| Status::internal(e.to_string()))
    }

    async fn authenticate(&self, r: AuthenticateRequest) -> Result<String, Status> {
        let shared = &self.node.shared;
        for _ in 0..AUTHENTICATE_TRIES {
            self.node
                .linearizable_barrier()
                .await
                .map_err(|e| node_status(&e))?;
            // Checked here, not in the log: the password never leaves this member.
            let (hash, checked_at) = {
                let state = shared.state.read();
                let auth = &state.auth;
                if !auth.enabled {
                    return Err(auth_status(&AuthError::AuthNotEnabled));
                }
                match auth.users.get(&r.name) {
                    None => return Err(auth_status(&AuthError::AuthFailed)),
                    Some(u) if u.no_password => {
                        return Err(auth_status(&AuthError::NoPasswordUser))
                    }
                    Some(u) => (u.password_hash.clone(), auth.revision),
                }
            };
            if !self.password_matches(r.password.clone(), hash).await? {
                shared.metrics.auth_failures.inc();
                return Err(auth_status(&AuthError::AuthFailed));
            }
            let tokens = shared.config.auth.tokens.clone();
            let change = AuthChange::Authenticate {
                name: r.name.clone(),
                prefix: tokens.new_prefix(),
            };
            let (revision, token) = self.change(Caller::anonymous(), change).await?;
            if revision != checked_at {
                // Users or roles changed in between: check the password again.
                continue;
            }
            return match tokens.as_ref() {
                Tokens::Simple(_) => token.ok_or_else(unexpected_response),
                Tokens::Jwt(jwt) => jwt.sign(&r.name, revision).map_err(|e| auth_status(&e)),
            };
        }
        Err(Status::unavailable(
            "etcdserver: auth changed during authentication; try again",
        ))
    }
}

#[tonic::async_trait]
impl PbAuthService for AuthService {
    async fn auth_enable(
        &self,
        req: Request<AuthEnableRequest>,
    ) -> Result<Response<AuthEnableResponse>, Status> {
        observed(&self.node.shared.metrics, "AuthEnable", async {
            let caller = caller_of(&self.node, &req).await?;
            self.change(caller, AuthChange::Enable).await?;
            Ok(AuthEnableResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn auth_disable(
        &self,
        req: Request<AuthDisableRequest>,
    ) -> Result<Response<AuthDisableResponse>, Status> {
        observed(&self.node.shared.metrics, "AuthDisable", async {
            let caller = caller_of(&self.node, &req).await?;
            self.change(caller, AuthChange::Disable).await?;
            Ok(AuthDisableResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn auth_status(
        &self,
        req: Request<AuthStatusRequest>,
    ) -> Result<Response<AuthStatusResponse>, Status> {
        observed(&self.node.shared.metrics, "AuthStatus", async {
            let caller = self.reader(&req).await?;
            let state = self.node.shared.state.read();
            state
                .auth
                .check_admin(&caller)
                .map_err(|e| auth_status(&e))?;
            Ok(AuthStatusResponse {
                header: self.header(),
                enabled: state.auth.enabled,
                auth_revision: state.auth.revision,
            })
        })
        .await
    }

    async fn authenticate(
        &self,
        req: Request<AuthenticateRequest>,
    ) -> Result<Response<AuthenticateResponse>, Status> {
        let r = req.into_inner();
        observed(&self.node.shared.metrics, "Authenticate", async {
            let token = self.authenticate(r).await?;
            Ok(AuthenticateResponse {
                header: self.header(),
                token,
            })
        })
        .await
    }

    async fn user_add(
        &self,
        req: Request<AuthUserAddRequest>,
    ) -> Result<Response<AuthUserAddResponse>, Status> {
        observed(&self.node.shared.metrics, "UserAdd", async {
            let caller = self.admin(&req).await?;
            let r = req.into_inner();
            let no_password = r.options.as_ref().is_some_and(|o| o.no_password);
            let password_hash = if no_password || r.name.is_empty() {
                String::new()
            } else if !r.hashed_password.is_empty() {
                return Err(Status::invalid_argument(
                    "metastore: a pre-hashed password is not accepted; send the password",
                ));
            } else {
                self.hash(r.password).await?
            };
            let change = AuthChange::UserAdd {
                name: r.name,
                password_hash,
                no_password,
            };
            self.change(caller, change).await?;
            Ok(AuthUserAddResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn user_get(
        &self,
        req: Request<AuthUserGetRequest>,
    ) -> Result<Response<AuthUserGetResponse>, Status> {
        observed(&self.node.shared.metrics, "UserGet", async {
            let caller = self.reader(&req).await?;
            let state = self.node.shared.state.read();
            let user = state
                .auth
                .user_get(&caller, &req.get_ref().name)
                .map_err(|e| auth_status(&e))?;
            Ok(AuthUserGetResponse {
                header: self.header(),
                roles: user.roles.iter().cloned().collect(),
            })
        })
        .await
    }

    async fn user_list(
        &self,
        req: Request<AuthUserListRequest>,
    ) -> Result<Response<AuthUserListResponse>, Status> {
        observed(&self.node.shared.metrics, "UserList", async {
            let caller = self.reader(&req).await?;
            let state = self.node.shared.state.read();
            state
                .auth
                .check_admin(&caller)
                .map_err(|e| auth_status(&e))?;
            Ok(AuthUserListResponse {
                header: self.header(),
                users: state.auth.users.keys().cloned().collect(),
            })
        })
        .await
    }

    async fn user_delete(
        &self,
        req: Request<AuthUserDeleteRequest>,
    ) -> Result<Response<AuthUserDeleteResponse>, Status> {
        observed(&self.node.shared.metrics, "UserDelete", async {
            let caller = caller_of(&self.node, &req).await?;
            let name = req.into_inner().name;
            self.change(caller, AuthChange::UserDelete { name }).await?;
            Ok(AuthUserDeleteResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn user_change_password(
        &self,
        req: Request<AuthUserChangePasswordRequest>,
    ) -> Result<Response<AuthUserChangePasswordResponse>, Status> {
        observed(&self.node.shared.metrics, "UserChangePassword", async {
            let caller = self.admin(&req).await?;
            let r = req.into_inner();
            if !r.hashed_password.is_empty() {
                return Err(Status::invalid_argument(
                    "metastore: a pre-hashed password is not accepted; send the password",
                ));
            }
            // etcd: an empty new password is stored as no hash (nothing matches it).
            let password_hash = if r.password.is_empty() {
                String::new()
            } else {
                self.hash(r.password).await?
            };
            let change = AuthChange::UserChangePassword {
                name: r.name,
                password_hash,
            };
            self.change(caller, change).await?;
            Ok(AuthUserChangePasswordResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn user_grant_role(
        &self,
        req: Request<AuthUserGrantRoleRequest>,
    ) -> Result<Response<AuthUserGrantRoleResponse>, Status> {
        observed(&self.node.shared.metrics, "UserGrantRole", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            let change = AuthChange::UserGrantRole {
                user: r.user,
                role: r.role,
            };
            self.change(caller, change).await?;
            Ok(AuthUserGrantRoleResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn user_revoke_role(
        &self,
        req: Request<AuthUserRevokeRoleRequest>,
    ) -> Result<Response<AuthUserRevokeRoleResponse>, Status> {
        observed(&self.node.shared.metrics, "UserRevokeRole", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            let change = AuthChange::UserRevokeRole {
                user: r.name,
                role: r.role,
            };
            self.change(caller, change).await?;
            Ok(AuthUserRevokeRoleResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn role_add(
        &self,
        req: Request<AuthRoleAddRequest>,
    ) -> Result<Response<AuthRoleAddResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleAdd", async {
            let caller = caller_of(&self.node, &req).await?;
            let name = req.into_inner().name;
            self.change(caller, AuthChange::RoleAdd { name }).await?;
            Ok(AuthRoleAddResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn role_get(
        &self,
        req: Request<AuthRoleGetRequest>,
    ) -> Result<Response<AuthRoleGetResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleGet", async {
            let caller = self.reader(&req).await?;
            let state = self.node.shared.state.read();
            let role = state
                .auth
                .role_get(&caller, &req.get_ref().role)
                .map_err(|e| auth_status(&e))?;
            let mut resp = permission_list(&role.permissions);
            resp.header = self.header();
            Ok(resp)
        })
        .await
    }

    async fn role_list(
        &self,
        req: Request<AuthRoleListRequest>,
    ) -> Result<Response<AuthRoleListResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleList", async {
            let caller = self.reader(&req).await?;
            let state = self.node.shared.state.read();
            state
                .auth
                .check_admin(&caller)
                .map_err(|e| auth_status(&e))?;
            Ok(AuthRoleListResponse {
                header: self.header(),
                roles: state.auth.roles.keys().cloned().collect(),
            })
        })
        .await
    }

    async fn role_delete(
        &self,
        req: Request<AuthRoleDeleteRequest>,
    ) -> Result<Response<AuthRoleDeleteResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleDelete", async {
            let caller = caller_of(&self.node, &req).await?;
            let name = req.into_inner().role;
            self.change(caller, AuthChange::RoleDelete { name }).await?;
            Ok(AuthRoleDeleteResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn role_grant_permission(
        &self,
        req: Request<AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<AuthRoleGrantPermissionResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleGrantPermission", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            let permission = match r.perm {
                None => None,
                Some(p) => Some(Permission {
                    kind: PermKind::from_i32(p.perm_type)
                        .ok_or_else(|| auth_status(&AuthError::InvalidAuthMgmt))?,
                    key: p.key,
                    range_end: p.range_end,
                }),
            };
            let change = AuthChange::RoleGrantPermission {
                role: r.name,
                permission,
            };
            self.change(caller, change).await?;
            Ok(AuthRoleGrantPermissionResponse {
                header: self.header(),
            })
        })
        .await
    }

    async fn role_revoke_permission(
        &self,
        req: Request<AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<AuthRoleRevokePermissionResponse>, Status> {
        observed(&self.node.shared.metrics, "RoleRevokePermission", async {
            let caller = caller_of(&self.node, &req).await?;
            let r = req.into_inner();
            let change = AuthChange::RoleRevokePermission {
                role: r.role,
                key: r.key,
                range_end: r.range_end,
            };
            self.change(caller, change).await?;
            Ok(AuthRoleRevokePermissionResponse {
                header: self.header(),
            })
        })
        .await
    }
}

/// A RoleGet response listing `perms`.
fn permission_list(perms: &[Permission]) -> AuthRoleGetResponse {
    AuthRoleGetResponse {
        header: None,
        perm: perms
            .iter()
            .map(|p| PbPermission {
                perm_type: p.kind.as_i32(),
                key: p.key.clone(),
                range_end: p.range_end.clone(),
            })
            .collect(),
    }
}
