//! Where a cluster's TLS material lives and how its members use it (`spec.tls`): Secret names,
//! the names certificates must be valid for, the volumes that mount them and the members' TLS
//! flags. Pure, like the other builders.

use k8s_openapi::api::core::v1::{SecretVolumeSource, Volume, VolumeMount};
use kube::ResourceExt;

use crate::crd::{MetaStore, TlsMode};
use crate::names::{client_service_name, peer_service_name};

/// Where a member's client-port certificate Secret is mounted.
pub const SERVER_MOUNT: &str = "/etc/metastore/tls/server";
/// Where a member's peer certificate Secret is mounted.
pub const PEER_MOUNT: &str = "/etc/metastore/tls/peer";
/// Secret keys, in cert-manager's layout.
pub const CERT_KEY: &str = "tls.crt";
/// The private key's Secret key.
pub const KEY_KEY: &str = "tls.key";
/// The CA bundle's Secret key.
pub const CA_KEY: &str = "ca.crt";

/// True when the client port uses TLS with client certificates.
pub fn client_tls(ms: &MetaStore) -> bool {
    ms.spec.tls.as_ref().is_some_and(|t| t.client)
}

/// True when members talk to each other over mutual TLS.
pub fn peer_tls(ms: &MetaStore) -> bool {
    ms.spec.tls.as_ref().is_some_and(|t| t.peer)
}

/// `https` when `tls`, else `http`.
pub fn scheme(tls: bool) -> &'static str {
    if tls {
        "https"
    } else {
        "http"
    }
}

fn managed(ms: &MetaStore) -> bool {
    ms.spec
        .tls
        .as_ref()
        .is_some_and(|t| t.mode == TlsMode::Managed)
}

/// Name of an operator-managed Secret: `<name>-tls-<part>` (`ca`, `server`, `peer`, `operator`,
/// `client`).
pub fn managed_secret_name(ms: &MetaStore, part: &str) -> String {
    format!("{}-tls-{part}", ms.name_any())
}

fn secret(ms: &MetaStore, on: bool, part: &str, provided: Option<&String>) -> Option<String> {
    if !on {
        return None;
    }
    if managed(ms) {
        Some(managed_secret_name(ms, part))
    } else {
        provided.cloned()
    }
}

/// The Secret served on the client port (client TLS only).
pub fn server_secret(ms: &MetaStore) -> Option<String> {
    let t = ms.spec.tls.as_ref()?;
    secret(ms, t.client, "server", t.server_secret.as_ref())
}

/// The Secret members present to each other (peer TLS only).
pub fn peer_secret(ms: &MetaStore) -> Option<String> {
    let t = ms.spec.tls.as_ref()?;
    secret(ms, t.peer, "peer", t.peer_secret.as_ref())
}

/// The operator's client certificate for this cluster (client TLS only).
pub fn operator_secret(ms: &MetaStore) -> Option<String> {
    let t = ms.spec.tls.as_ref()?;
    secret(ms, t.client, "operator", t.operator_secret.as_ref())
}

/// The client certificate the operator makes for applications (Managed client TLS only).
pub fn application_secret(ms: &MetaStore) -> Option<String> {
    (managed(ms) && client_tls(ms)).then(|| managed_secret_name(ms, "client"))
}

fn peer_domain(ms: &MetaStore) -> String {
    format!(
        "{}.{}.svc",
        peer_service_name(ms),
        ms.namespace().unwrap_or_default()
    )
}

/// Names the client-port certificate must be valid for: every member pod, the client Service by
/// each of its names, and loopback (for a process in the pod).
pub fn server_names(ms: &MetaStore) -> Vec<String> {
    let ns = ms.namespace().unwrap_or_default();
    let client = client_service_name(ms);
    let pods = peer_domain(ms);
    vec![
        format!("*.{pods}"),
        format!("*.{pods}.cluster.local"),
        client.clone(),
        format!("{client}.{ns}"),
        format!("{client}.{ns}.svc"),
        format!("{client}.{ns}.svc.cluster.local"),
        "localhost".into(),
        "127.0.0.1".into(),
    ]
}

/// Names the peer certificate must be valid for: every member pod (the member identity check
/// matches a peer URL host) and the peer Service (discovery).
pub fn peer_names(ms: &MetaStore) -> Vec<String> {
    let pods = peer_domain(ms);
    vec![format!("*.{pods}"), format!("*.{pods}.cluster.local"), pods]
}

/// The members' TLS flags; `admin_cn` is the common name allowed to make admin calls (the
/// operator's certificate's).
pub fn member_flags(ms: &MetaStore, admin_cn: Option<&str>) -> Vec<String> {
    let mut flags = Vec::new();
    if server_secret(ms).is_some() {
        flags.extend([
            format!("--cert-file={SERVER_MOUNT}/{CERT_KEY}"),
            format!("--key-file={SERVER_MOUNT}/{KEY_KEY}"),
            format!("--trusted-ca-file={SERVER_MOUNT}/{CA_KEY}"),
            "--client-cert-auth".into(),
        ]);
        if let Some(cn) = admin_cn {
            flags.push(format!("--admin-cert-allowed-cn={cn}"));
        }
    }
    if peer_secret(ms).is_some() {
        flags.extend([
            format!("--peer-cert-file={PEER_MOUNT}/{CERT_KEY}"),
            format!("--peer-key-file={PEER_MOUNT}/{KEY_KEY}"),
            format!("--peer-trusted-ca-file={PEER_MOUNT}/{CA_KEY}"),
            "--peer-client-cert-auth".into(),
        ]);
    }
    flags
}

/// The Secret volumes and their read-only mounts.
pub fn volumes(ms: &MetaStore) -> (Vec<Volume>, Vec<VolumeMount>) {
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    for (name, secret, path) in [
        ("tls-server", server_secret(ms), SERVER_MOUNT),
        ("tls-peer", peer_secret(ms), PEER_MOUNT),
    ] {
        let Some(secret) = secret else { continue };
        volumes.push(Volume {
            name: name.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: name.into(),
            mount_path: path.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    (volumes, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(tls: serde_json::Value) -> MetaStore {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "metastore.io/v1alpha1",
            "kind": "MetaStore",
            "metadata": {"name": "demo", "namespace": "prod", "uid": "u-1"},
            "spec": {"replicas": 3, "tls": tls}
        }))
        .unwrap()
    }

    #[test]
    fn managed_tls_names_its_secrets_and_mounts_them() {
        let m = ms(serde_json::json!({"mode": "Managed"}));
        assert_eq!(server_secret(&m).as_deref(), Some("demo-tls-server"));
        assert_eq!(peer_secret(&m).as_deref(), Some("demo-tls-peer"));
        assert_eq!(operator_secret(&m).as_deref(), Some("demo-tls-operator"));
        assert_eq!(application_secret(&m).as_deref(), Some("demo-tls-client"));
        let flags = member_flags(&m, Some("metastore-operator"));
        for f in [
            "--client-cert-auth",
            "--peer-client-cert-auth",
            "--admin-cert-allowed-cn=metastore-operator",
            "--peer-trusted-ca-file=/etc/metastore/tls/peer/ca.crt",
        ] {
            assert!(flags.iter().any(|a| a == f), "{f} in {flags:?}");
        }
        let (v, mounts) = volumes(&m);
        assert_eq!(v.len(), 2);
        assert!(mounts.iter().all(|m| m.read_only == Some(true)));
        assert!(server_names(&m).contains(&"*.demo-peer.prod.svc".to_string()));
        assert!(server_names(&m).contains(&"demo-client.prod.svc".to_string()));
        assert!(peer_names(&m).contains(&"demo-peer.prod.svc".to_string()));
    }

    #[test]
    fn provided_and_partial_tls() {
        let m = ms(serde_json::json!({"mode": "Provided", "client": false, "peerSecret": "p"}));
        assert_eq!(server_secret(&m), None);
        assert_eq!(operator_secret(&m), None);
        assert_eq!(peer_secret(&m).as_deref(), Some("p"));
        assert!(!member_flags(&m, None)
            .iter()
            .any(|f| f == "--client-cert-auth" || f.starts_with("--cert-file")));
        assert_eq!(volumes(&m).0.len(), 1);
        let plain = ms(serde_json::Value::Null);
        assert!(member_flags(&plain, None).is_empty());
        assert!(!client_tls(&plain) && !peer_tls(&plain));
    }
}
