//! The TLS Secrets of a cluster (`spec.tls`) and what the operator needs from them: in Managed
//! mode, a CA per cluster and the server, peer, operator and application certificates, made
//! when missing and reissued when due for renewal or no longer from the cluster's CA; in
//! Provided mode, the operator's certificate read from the Secret the user named. Returns how
//! to dial the members and which common name may make admin calls.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use time::OffsetDateTime;

use crate::builders;
use crate::certs::{self, Pem, Usage, OPERATOR_COMMON_NAME};
use crate::constants::OPERATOR_NAME;
use crate::context::Error;
use crate::crd::{MetaStore, TlsMode};
use crate::executor::Dial;
use crate::tls_layout::{self, CA_KEY, CERT_KEY, KEY_KEY};

/// What a reconcile needs from the cluster's TLS material.
#[derive(Clone, Default)]
pub struct TlsReady {
    /// How to reach the members.
    pub dial: Dial,
    /// The common name members allow to make admin calls (the operator's), under client TLS.
    pub admin_cn: Option<String>,
    /// Certificates (re)issued by this reconcile, by Secret name.
    pub issued: Vec<String>,
}

/// The UTF-8 value of `key` in Secret `s`.
pub(crate) fn field(s: &Secret, key: &str) -> Option<String> {
    s.data
        .as_ref()?
        .get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

fn tls_error(what: String) -> Error {
    Error::Tls(what)
}

/// Makes sure the cluster's TLS Secrets exist and are current; see the module doc.
pub async fn ensure(ms: &MetaStore, client: &kube::Client) -> Result<TlsReady, Error> {
    let Some(spec) = ms.spec.tls.as_ref() else {
        return Ok(TlsReady::default());
    };
    let ns = ms
        .namespace()
        .ok_or_else(|| Error::NoNamespace(ms.name_any()))?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut ready = TlsReady::default();
    if spec.mode == TlsMode::Managed {
        issue_managed(ms, &secrets, &mut ready).await?;
    }
    let Some(name) = tls_layout::operator_secret(ms) else {
        return Ok(ready);
    };
    let s = secrets.get_opt(&name).await?.ok_or_else(|| {
        tls_error(format!(
            "Secret {ns}/{name} (the operator's certificate) not found"
        ))
    })?;
    let (Some(cert), Some(key), Some(ca)) =
        (field(&s, CERT_KEY), field(&s, KEY_KEY), field(&s, CA_KEY))
    else {
        return Err(tls_error(format!(
            "Secret {ns}/{name} needs {CERT_KEY}, {KEY_KEY} and {CA_KEY}"
        )));
    };
    ready.admin_cn =
        Some(certs::common_name(&cert).ok_or_else(|| {
            tls_error(format!("Secret {ns}/{name}: {CERT_KEY} has no common name"))
        })?);
    ready.dial = Dial {
        tls: Some((ca.into_bytes(), cert.into_bytes(), key.into_bytes())),
        credentials: None,
    };
    Ok(ready)
}

async fn apply(
    ms: &MetaStore,
    secrets: &Api<Secret>,
    name: &str,
    data: [(&str, &str); 3],
) -> Result<(), Error> {
    let secret = Secret {
        metadata: builders::meta(ms, name.to_string()),
        type_: Some("kubernetes.io/tls".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Default::default()
    };
    secrets
        .patch(
            name,
            &PatchParams::apply(OPERATOR_NAME).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    Ok(())
}

async fn issue_managed(
    ms: &MetaStore,
    secrets: &Api<Secret>,
    ready: &mut TlsReady,
) -> Result<(), Error> {
    let now = OffsetDateTime::now_utc();
    let cluster = format!("{}/{}", ms.namespace().unwrap_or_default(), ms.name_any());
    let ca_name = tls_layout::managed_secret_name(ms, "ca");
    let existing = secrets.get_opt(&ca_name).await?;
    let ca = match existing.as_ref().and_then(|s| {
        Some(Pem {
            cert: field(s, CERT_KEY)?,
            key: field(s, KEY_KEY)?,
        })
    }) {
        Some(ca) => ca,
        None => {
            let ca = certs::new_ca(&cluster, now).map_err(|e| tls_error(e.to_string()))?;
            apply(
                ms,
                secrets,
                &ca_name,
                [(CERT_KEY, &ca.cert), (KEY_KEY, &ca.key), (CA_KEY, &ca.cert)],
            )
            .await?;
            ready.issued.push(ca_name);
            ca
        }
    };
    let name = ms.name_any();
    let leaves = [
        (
            tls_layout::server_secret(ms),
            name.clone(),
            tls_layout::server_names(ms),
            Usage::ServerAndClient,
        ),
        (
            tls_layout::peer_secret(ms),
            format!("{name}-peer"),
            tls_layout::peer_names(ms),
            Usage::ServerAndClient,
        ),
        (
            tls_layout::operator_secret(ms),
            OPERATOR_COMMON_NAME.to_string(),
            vec![],
            Usage::Client,
        ),
        (
            tls_layout::application_secret(ms),
            format!("{name}-client"),
            vec![],
            Usage::Client,
        ),
    ];
    for (secret, cn, sans, usage) in leaves {
        let Some(secret) = secret else { continue };
        let current = secrets.get_opt(&secret).await?;
        let fresh = current.as_ref().is_some_and(|s| {
            field(s, CA_KEY).as_deref() == Some(ca.cert.as_str())
                && field(s, KEY_KEY).is_some()
                && field(s, CERT_KEY).is_some_and(|c| !certs::needs_renewal(&c, now))
        });
        if fresh {
            continue;
        }
        let leaf =
            certs::issue(&ca, &cn, &sans, usage, now).map_err(|e| tls_error(e.to_string()))?;
        apply(
            ms,
            secrets,
            &secret,
            [
                (CERT_KEY, &leaf.cert),
                (KEY_KEY, &leaf.key),
                (CA_KEY, &ca.cert),
            ],
        )
        .await?;
        ready.issued.push(secret);
    }
    Ok(())
}
