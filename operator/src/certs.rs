//! Certificates for operator-managed TLS (`spec.tls.mode: Managed`), made with `rcgen`: a CA
//! per cluster and leaf certificates it signs, in cert-manager's Secret layout (`tls.crt`,
//! `tls.key`, `ca.crt`), and when a leaf is due for renewal. Pure: no API calls.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration, OffsetDateTime};

/// How long a cluster CA is valid. It is not renewed automatically (see docs/security.md).
pub const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a leaf certificate is valid.
pub const LEAF_VALIDITY: Duration = Duration::days(90);
/// A leaf is renewed once less than this is left (a third of its life).
pub const RENEW_BEFORE: Duration = Duration::days(30);
/// Common name of the operator's own client certificate (allowed to make admin calls).
pub const OPERATOR_COMMON_NAME: &str = "metastore-operator";

/// A certificate that cannot be made or read.
#[derive(Debug, thiserror::Error)]
#[error("certificate: {0}")]
pub struct CertError(pub String);

fn err(e: impl std::fmt::Display) -> CertError {
    CertError(e.to_string())
}

/// A certificate and its private key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pem {
    /// The certificate.
    pub cert: String,
    /// Its private key (PKCS#8).
    pub key: String,
}

/// What a leaf is for (its extended key usages).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// Served by a member and presented when it dials (members forward and dial peers).
    ServerAndClient,
    /// Presented by a client only.
    Client,
}

/// A new self-signed CA for the cluster `cluster` (namespace/name), valid from `now`.
pub fn new_ca(cluster: &str, now: OffsetDateTime) -> Result<Pem, CertError> {
    let mut p = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, format!("MetaStore CA {cluster}"));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = now - Duration::hours(1);
    p.not_after = now + CA_VALIDITY;
    let key = KeyPair::generate().map_err(err)?;
    let cert = p.self_signed(&key).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

/// A leaf for `common_name` and the subject alternative names `sans` (DNS names, wildcards or
/// IP addresses), signed by `ca`, valid from `now` for [`LEAF_VALIDITY`].
pub fn issue(
    ca: &Pem,
    common_name: &str,
    sans: &[String],
    usage: Usage,
    now: OffsetDateTime,
) -> Result<Pem, CertError> {
    let ca_key = KeyPair::from_pem(&ca.key).map_err(err)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert, ca_key).map_err(err)?;
    let mut p = CertificateParams::new(sans.to_vec()).map_err(err)?;
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = match usage {
        Usage::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    p.not_before = now - Duration::hours(1);
    p.not_after = now + LEAF_VALIDITY;
    let key = KeyPair::generate().map_err(err)?;
    let cert = p.signed_by(&key, &issuer).map_err(err)?;
    Ok(Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn parse<T>(
    pem: &str,
    f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> T,
) -> Option<T> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
    let cert = p.parse_x509().ok()?;
    Some(f(&cert))
}

/// When the certificate `pem` (the first in it) stops being valid, in Unix seconds.
pub fn not_after(pem: &str) -> Option<i64> {
    parse(pem, |c| c.validity().not_after.timestamp())
}

/// The subject common name of the certificate `pem`.
pub fn common_name(pem: &str) -> Option<String> {
    parse(pem, |c| {
        c.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok().map(String::from))
    })
    .flatten()
}

/// True when the leaf `pem` must be (re)issued at `now`: unreadable, or less than
/// [`RENEW_BEFORE`] left.
pub fn needs_renewal(pem: &str, now: OffsetDateTime) -> bool {
    not_after(pem).is_none_or(|t| t - now.unix_timestamp() < RENEW_BEFORE.whole_seconds())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    fn der(pem: &str) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
    }

    #[test]
    fn leaves_chain_to_the_ca_and_name_their_hosts() {
        let ca = new_ca("prod/demo", now()).unwrap();
        let sans = vec![
            "*.demo-peer.prod.svc".to_string(),
            "demo-peer.prod.svc".to_string(),
            "127.0.0.1".to_string(),
        ];
        let leaf = issue(&ca, "demo", &sans, Usage::ServerAndClient, now()).unwrap();
        assert_eq!(common_name(&leaf.cert).as_deref(), Some("demo"));
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&ca.cert)).unwrap();
        let anchors = roots.roots;
        let cert = der(&leaf.cert);
        let ee = webpki::EndEntityCert::try_from(&cert).unwrap();
        let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            now().unix_timestamp() as u64 + 60,
        ));
        let algs = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        ee.verify_for_usage(
            algs.all,
            &anchors,
            &[],
            at,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .unwrap();
        for host in [
            "demo-2.demo-peer.prod.svc",
            "demo-peer.prod.svc",
            "127.0.0.1",
        ] {
            let name = ServerName::try_from(host).unwrap();
            assert!(ee.verify_is_valid_for_subject_name(&name).is_ok(), "{host}");
        }
        let other = ServerName::try_from("demo-2.other-peer.prod.svc").unwrap();
        assert!(ee.verify_is_valid_for_subject_name(&other).is_err());
        // Another cluster's CA does not vouch for it.
        let stranger = new_ca("prod/other", now()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(der(&stranger.cert)).unwrap();
        assert!(ee
            .verify_for_usage(
                algs.all,
                &roots.roots,
                &[],
                at,
                webpki::KeyUsage::server_auth(),
                None,
                None
            )
            .is_err());
    }

    #[test]
    fn leaves_are_renewed_a_third_before_they_expire() {
        let ca = new_ca("prod/demo", now()).unwrap();
        let leaf = issue(&ca, OPERATOR_COMMON_NAME, &[], Usage::Client, now()).unwrap();
        assert_eq!(
            not_after(&leaf.cert),
            Some((now() + LEAF_VALIDITY).unix_timestamp())
        );
        assert!(!needs_renewal(&leaf.cert, now()));
        assert!(!needs_renewal(&leaf.cert, now() + Duration::days(59)));
        assert!(needs_renewal(&leaf.cert, now() + Duration::days(61)));
        assert!(needs_renewal("not a certificate", now()));
        assert_eq!(
            common_name(&leaf.cert).as_deref(),
            Some(OPERATOR_COMMON_NAME)
        );
    }
}
