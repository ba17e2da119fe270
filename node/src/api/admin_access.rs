//! Who may make the calls that change or expose a whole cluster: membership changes,
//! Maintenance except Status and alarm lists, and the operator's admin service.
//!
//! With `--client-cert-auth` and `--admin-cert-allowed-cn`, only a client certificate with one
//! of the listed common names may, or the certificate of a member forwarding a call to the
//! leader (valid for the host of a member's client URL: members forward with `--cert-file`).
//! Without the allow-list any trusted certificate may, as in etcd without auth; without
//! `--client-cert-auth` nothing is proven and every caller may (plain `make run` is unchanged).

use rustls::pki_types::CertificateDer;
use tonic::{Request, Status};

use crate::node::Shared;

/// etcd's answer to a caller without the permission.
pub const PERMISSION_DENIED: &str = "etcdserver: permission denied";

/// The admin-call policy of one member, from its configuration.
#[derive(Debug, Clone, Default)]
pub struct AdminAccess {
    /// Client certificates are required and verified (`--client-cert-auth`).
    pub certificates_required: bool,
    /// Common names allowed; empty: any trusted certificate.
    pub allowed_cns: Vec<String>,
}

impl AdminAccess {
    /// True when a caller presenting `cert` may make an admin call; `member_client_urls` are the
    /// client URLs of the current members (a forwarding member proves itself by one of them).
    pub fn permits<'a>(
        &self,
        cert: Option<&CertificateDer<'_>>,
        member_client_urls: impl Iterator<Item = &'a str>,
    ) -> bool {
        if !self.certificates_required || self.allowed_cns.is_empty() {
            return true;
        }
        let Some(cert) = cert else {
            return false;
        };
        if crate::tls::common_name(cert).is_some_and(|cn| self.allowed_cns.contains(&cn)) {
            return true;
        }
        is_member_certificate(cert, member_client_urls)
    }
}

/// True when `cert` is valid for the host of one of `member_client_urls`: a member's own
/// client certificate (`--cert-file`), as a member forwarding a call presents.
pub fn is_member_certificate<'a>(
    cert: &CertificateDer<'_>,
    mut member_client_urls: impl Iterator<Item = &'a str>,
) -> bool {
    member_client_urls.any(|u| {
        url::Url::parse(u)
            .ok()
            .and_then(|u| u.host_str().map(|h| crate::tls::certificate_names(cert, h)))
            .unwrap_or(false)
    })
}

/// Refuses `req` with etcd's permission error unless its caller may make admin calls; counts
/// refusals in `metastore_admin_calls_denied_total`.
pub fn require_admin<T>(shared: &Shared, req: &Request<T>) -> Result<(), Status> {
    let access = AdminAccess {
        certificates_required: shared
            .config
            .client_tls
            .as_ref()
            .is_some_and(|t| t.client_cert_auth),
        allowed_cns: shared.config.admin_cert_allowed_cn.clone(),
    };
    if access.allowed_cns.is_empty() {
        return Ok(());
    }
    let certs = req.peer_certs();
    let cert = certs.as_ref().and_then(|c| c.first());
    let state = shared.state.read();
    let urls = state
        .members
        .values()
        .flat_map(|m| m.client_urls.iter().map(String::as_str));
    if access.permits(cert, urls) {
        return Ok(());
    }
    drop(state);
    shared.metrics.admin_calls_denied.inc();
    Err(Status::permission_denied(PERMISSION_DENIED))
}

#[cfg(test)]
mod tests {
    use super::*;
    use metastore_testkit::certs::Ca;

    fn access(cns: &[&str]) -> AdminAccess {
        AdminAccess {
            certificates_required: true,
            allowed_cns: cns.iter().map(|s| s.to_string()).collect(),
        }
    }

    const MEMBERS: [&str; 2] = ["https://10.0.0.1:2379", "https://node-b.example:2379"];

    #[test]
    fn listed_common_names_and_forwarding_members_may() {
        let ca = Ca::new("ca");
        let operator = CertificateDer::from(ca.leaf_der("metastore-operator", &["op"]));
        let tenant = CertificateDer::from(ca.leaf_der("tenant", &["tenant.example"]));
        let member = CertificateDer::from(ca.leaf_der("b", &["node-b.example"]));
        let member_ip = CertificateDer::from(ca.leaf_der("a", &["10.0.0.1"]));
        let a = access(&["metastore-operator", "admin"]);
        assert!(a.permits(Some(&operator), MEMBERS.into_iter()));
        assert!(!a.permits(Some(&tenant), MEMBERS.into_iter()));
        assert!(a.permits(Some(&member), MEMBERS.into_iter()));
        assert!(a.permits(Some(&member_ip), MEMBERS.into_iter()));
        // A member's certificate stops counting once it is no longer a member.
        assert!(!a.permits(Some(&member), MEMBERS[..1].iter().copied()));
        assert!(!a.permits(None, MEMBERS.into_iter()));
    }

    #[test]
    fn without_allow_list_or_certificates_every_caller_may() {
        let ca = Ca::new("ca");
        let tenant = CertificateDer::from(ca.leaf_der("tenant", &["tenant.example"]));
        assert!(access(&[]).permits(Some(&tenant), MEMBERS.into_iter()));
        let off = AdminAccess {
            certificates_required: false,
            allowed_cns: vec!["admin".into()],
        };
        assert!(off.permits(None, MEMBERS.into_iter()));
    }

    #[test]
    fn common_name_is_read_from_the_subject() {
        let ca = Ca::new("ca");
        let der = CertificateDer::from(ca.leaf_der("metastore-operator", &["x"]));
        assert_eq!(
            crate::tls::common_name(&der).as_deref(),
            Some("metastore-operator")
        );
        assert_eq!(
            crate::tls::common_name(&CertificateDer::from(vec![1, 2, 3])),
            None
        );
    }
}
