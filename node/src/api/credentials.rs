//! Who a request comes from, as etcd decides it: a token in the gRPC metadata (`token`, or
//! `authorization` as the gateway sends it) wins; else, with `--client-cert-auth`, the client
//! certificate's common name; else nobody. Only consulted while auth is enabled: with auth
//! off tokens are ignored (etcd 3.5.10 on).

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;
use tonic::{Request, Status};

use crate::api::status::{auth_status, node_status};
use crate::auth::tokens::{SimpleTokens, Tokens};
use crate::auth::{AuthError, Caller};
use crate::node::{NodeError, NodeHandle};

/// Metadata keys a token may come in.
const TOKEN_KEYS: [&str; 2] = ["token", "authorization"];

/// Metadata a member forwarding a request to the leader names its caller with (believed only
/// from a member's certificate, when client certificates are verified).
pub const FORWARDED_USER: &str = "metastore-forwarded-user";

/// The token a request carries, if any (a `Bearer ` prefix is dropped, as etcd 3.5.32 does).
pub fn token_of(metadata: &MetadataMap) -> Option<String> {
    TOKEN_KEYS.iter().find_map(|k| {
        let v = metadata.get(*k)?.to_str().ok()?;
        let v = v.strip_prefix("Bearer ").unwrap_or(v).trim();
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// Resolves the caller of `req` on this member.
pub async fn caller_of<T>(node: &NodeHandle, req: &Request<T>) -> Result<Caller, Status> {
    let token = token_of(req.metadata());
    if token.is_none() && !node.shared.state.read().auth.enabled {
        return Ok(Caller::anonymous());
    }
    let cert_user = if token.is_none() {
        cert_user(node, req)
    } else {
        None
    };
    caller_from(node, token.as_deref(), cert_user).await
}

/// For the calls that change or expose a whole cluster: the certificate policy
/// ([`crate::api::admin_access`]), then, with auth on, a caller holding the root role.
pub async fn require_admin<T>(node: &NodeHandle, req: &Request<T>) -> Result<Caller, Status> {
    crate::api::admin_access::require_admin(&node.shared, req)?;
    require_root(node, req).await
}

/// With auth on, a caller holding the root role (anyone while auth is off).
pub async fn require_root<T>(node: &NodeHandle, req: &Request<T>) -> Result<Caller, Status> {
    let caller = caller_of(node, req).await?;
    node.shared
        .state
        .read()
        .auth
        .check_admin(&caller)
        .map_err(|e| auth_status(&e))?;
    Ok(caller)
}

/// For calls any authenticated user may make (Status, MemberList, the alarm list, as etcd
/// 3.5.32 decides): with auth on, a known caller.
pub async fn require_user<T>(node: &NodeHandle, req: &Request<T>) -> Result<Caller, Status> {
    let caller = caller_of(node, req).await?;
    node.shared
        .state
        .read()
        .auth
        .check_user(&caller)
        .map_err(|e| auth_status(&e))?;
    Ok(caller)
}

/// What a member forwarding `req` to the leader passes on so the leader sees the same
/// caller: its token, or the user its certificate named.
#[derive(Debug, Clone, Default)]
pub struct OnBehalf {
    token: Option<String>,
    user: Option<String>,
}

impl OnBehalf {
    /// The credentials of `req`, for forwarding.
    pub fn of<T>(node: &NodeHandle, req: &Request<T>) -> OnBehalf {
        let token = token_of(req.metadata());
        let user = if token.is_none() {
            cert_user(node, req)
        } else {
            None
        };
        OnBehalf { token, user }
    }

    /// The caller they name now (a watch stream checks each create).
    pub async fn caller(&self, node: &NodeHandle) -> Result<Caller, Status> {
        caller_from(node, self.token.as_deref(), self.user.clone()).await
    }

    /// Adds them to a forwarded request.
    pub fn apply(&self, metadata: &mut MetadataMap) {
        if let Some(v) = self.token.as_ref().and_then(|t| t.parse().ok()) {
            metadata.insert("token", v);
        }
        if let Some(v) = self.user.as_ref().and_then(|u| u.parse().ok()) {
            metadata.insert(FORWARDED_USER, v);
        }
    }
}

/// The user a verified client certificate names, with `--client-cert-auth` (a forwarding
/// member's certificate speaks for the caller it names in [`FORWARDED_USER`]).
fn cert_user<T>(node: &NodeHandle, req: &Request<T>) -> Option<String> {
    let shared = &node.shared;
    if !shared
        .config
        .client_tls
        .as_ref()
        .is_some_and(|t| t.client_cert_auth)
    {
        return None;
    }
    let certs = req.peer_certs()?;
    let cert = certs.first()?;
    if let Some(user) = req
        .metadata()
        .get(FORWARDED_USER)
        .and_then(|v| v.to_str().ok())
    {
        let state = shared.state.read();
        let urls = state
            .members
            .values()
            .flat_map(|m| m.client_urls.iter().map(String::as_str));
        let from_member = crate::api::admin_access::is_member_certificate(cert, urls);
        if from_member {
            return Some(user.to_string());
        }
    }
    crate::tls::common_name(cert)
}

/// The caller named by `token` or, without one, by a certificate's `cert_user`.
pub async fn caller_from(
    node: &NodeHandle,
    token: Option<&str>,
    cert_user: Option<String>,
) -> Result<Caller, Status> {
    let shared = &node.shared;
    let Some(token) = token else {
        let state = shared.state.read();
        return Ok(match cert_user {
            Some(user) if state.auth.enabled => Caller {
                user: Some(user),
                revision: state.auth.revision,
            },
            _ => Caller::anonymous(),
        });
    };
    let invalid = || auth_status(&AuthError::InvalidAuthToken);
    match shared.config.auth.tokens.as_ref() {
        Tokens::Simple(simple) => {
            let index = SimpleTokens::index_of(token).map_err(|e| auth_status(&e))?;
            // The token exists once this member applied the entry that issued it.
            let deadline = Instant::now() + shared.config.request_timeout.min(TOKEN_WAIT);
            match node.wait_applied(index, deadline).await {
                Ok(()) => {}
                Err(NodeError::Timeout) => return Err(invalid()),
                Err(e) => return Err(node_status(&e)),
            }
            let user = simple.user(token, Instant::now());
            let state = shared.state.read();
            if !state.auth.enabled {
                return Ok(Caller::anonymous());
            }
            let user = user.ok_or_else(invalid)?;
            Ok(Caller {
                user: Some(user),
                revision: state.auth.revision,
            })
        }
        Tokens::Jwt(jwt) => {
            if !shared.state.read().auth.enabled {
                return Ok(Caller::anonymous());
            }
            let (user, revision) = jwt.verify(token).map_err(|e| auth_status(&e))?;
            Ok(Caller {
                user: Some(user),
                revision,
            })
        }
    }
}

/// Longest wait for the entry a simple token names (a token naming an entry far ahead is
/// forged or from another cluster).
const TOKEN_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_come_from_either_key_without_a_bearer_prefix() {
        let mut m = MetadataMap::new();
        assert_eq!(token_of(&m), None);
        m.insert("authorization", "Bearer abc.5".parse().unwrap());
        assert_eq!(token_of(&m).as_deref(), Some("abc.5"));
        m.insert("token", "xyz.6".parse().unwrap());
        assert_eq!(token_of(&m).as_deref(), Some("xyz.6"));
    }
}
