//! Test certificates made with `rcgen`: a CA that issues leaf certificates into PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate authority for tests.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    /// A new self-signed CA called `name`.
    pub fn new(name: &str) -> Ca {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        Ca {
            issuer: CertifiedIssuer::self_signed(p, KeyPair::generate().expect("CA key"))
                .expect("CA certificate"),
        }
    }

    /// A leaf certificate (common name `name`, subject alternative names `sans`) in DER, for
    /// tests that inspect certificates without files.
    pub fn leaf_der(&self, name: &str, sans: &[&str]) -> Vec<u8> {
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("leaf key");
        p.signed_by(&key, &self.issuer)
            .expect("leaf certificate")
            .der()
            .to_vec()
    }

    /// Writes `<name>.crt` and `<name>.key` (common name `name`, subject alternative names
    /// `sans`: IP addresses or DNS names) and this CA as `ca.crt` into `dir`; returns the
    /// certificate and key paths. The key is written first, so a reader never sees a new
    /// certificate without its key.
    pub fn issue(&self, dir: &Path, name: &str, sans: &[&str]) -> (PathBuf, PathBuf) {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let mut p = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf params");
        p.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().expect("leaf key");
        let cert = p.signed_by(&key, &self.issuer).expect("leaf certificate");
        let (c, k) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&k, key.serialize_pem()).expect("write key");
        std::fs::write(&c, cert.pem()).expect("write certificate");
        std::fs::write(dir.join("ca.crt"), self.issuer.pem()).expect("write CA");
        (c, k)
    }
}
