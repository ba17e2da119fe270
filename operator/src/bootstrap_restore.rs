//! `spec.bootstrap.restore`: which object a new cluster's member 0 restores, resolved from a
//! `MetaStoreBackup` or taken from the spec's URL. The restore itself runs in the member pod (an
//! init container running `metastore-node snapshot restore s3://… --skip-if-initialized`, see
//! [`crate::builders::restore_init_container`]), so the snapshot goes straight from the bucket
//! to the member's volume and the operator never holds it.

use kube::api::Api;

use crate::backup_crd::{BackupPhase, MetaStoreBackup};
use crate::crd::{MetaStore, PvcFile, RecoveryStatus, RestoreSpec};

/// The object member 0 restores and how to reach its bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreFrom {
    /// `s3://bucket/key`.
    pub url: String,
    /// Endpoint URL of a non-AWS store.
    pub endpoint: Option<String>,
    /// Region.
    pub region: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey` (an S3 object).
    pub credentials_secret: Option<String>,
    /// The file, when the backup is on a PersistentVolumeClaim (`url` is then `pvc://…`).
    pub pvc: Option<PvcFile>,
    /// Token the restored cluster takes instead of the MetaStore's uid (a recovery replaces a
    /// cluster of the same MetaStore and must not share its cluster id).
    pub cluster_token: Option<String>,
}

impl RestoreFrom {
    /// The source of a recovery under way.
    pub fn of_recovery(r: &RecoveryStatus) -> RestoreFrom {
        RestoreFrom {
            url: r.url.clone(),
            endpoint: r.endpoint.clone(),
            region: r.region.clone(),
            credentials_secret: r.credentials_secret.clone(),
            pvc: r.pvc.clone(),
            cluster_token: Some(r.cluster_token.clone()),
        }
    }
}

/// The newest successful backup of `ms` (by completion time), as a source and a description.
pub async fn latest_backup(
    ms: &MetaStore,
    client: &kube::Client,
) -> Result<Option<(String, RestoreFrom, String)>, kube::Error> {
    let ns = kube::ResourceExt::namespace(ms).unwrap_or_default();
    let api: Api<MetaStoreBackup> = Api::namespaced(client.clone(), &ns);
    let name = kube::ResourceExt::name_any(ms);
    let backups = api.list(&Default::default()).await?.items;
    Ok(newest(&name, &backups))
}

/// Of `backups`, the newest that succeeded for MetaStore `name`: (backup name, source, how a
/// user would name it).
fn newest(name: &str, backups: &[MetaStoreBackup]) -> Option<(String, RestoreFrom, String)> {
    backups
        .iter()
        .filter(|b| b.spec.meta_store == name)
        .filter_map(|b| {
            let from = from_backup(b).ok()?;
            let st = b.status.as_ref()?;
            let done = st.completion_time.as_ref()?.0;
            Some((done, b, from))
        })
        .max_by_key(|(done, _, _)| *done)
        .map(|(done, b, from)| {
            let backup = kube::ResourceExt::name_any(b);
            let revision = b.status.as_ref().and_then(|s| s.revision).unwrap_or(0);
            let what = format!(
                "MetaStoreBackup {backup} ({}, revision {revision}, taken {done})",
                from.url
            );
            (backup, from, what)
        })
}

/// The source `spec` names directly (`url`), or `None` when it names a backup.
pub fn from_url(spec: &RestoreSpec) -> Option<RestoreFrom> {
    if let Some(f) = &spec.pvc {
        return Some(RestoreFrom {
            url: format!("pvc://{}/{}", f.claim_name, f.path),
            endpoint: None,
            region: None,
            credentials_secret: None,
            pvc: Some(f.clone()),
            cluster_token: None,
        });
    }
    Some(RestoreFrom {
        url: spec.url.clone()?,
        endpoint: spec.endpoint.clone(),
        region: spec.region.clone(),
        credentials_secret: Some(spec.credentials_secret.clone()?),
        pvc: None,
        cluster_token: None,
    })
}

/// The source a backup resource describes; why not, unless it succeeded.
pub fn from_backup(b: &MetaStoreBackup) -> Result<RestoreFrom, String> {
    let name = kube::ResourceExt::name_any(b);
    let st = b.status.clone().unwrap_or_default();
    match (st.phase, st.object_url) {
        (Some(BackupPhase::Succeeded), Some(url)) => match (&b.spec.s3, &b.spec.pvc) {
            (Some(s3), _) => Ok(RestoreFrom {
                url,
                endpoint: s3.endpoint.clone(),
                region: s3.region.clone(),
                credentials_secret: Some(s3.credentials_secret.clone()),
                pvc: None,
                cluster_token: None,
            }),
            (None, Some(pvc)) => {
                let path = url
                    .strip_prefix(&format!("pvc://{}/", pvc.claim_name))
                    .ok_or_else(|| format!("MetaStoreBackup {name}: {url} is not on {}", pvc.claim_name))?;
                Ok(RestoreFrom {
                    url: url.clone(),
                    endpoint: None,
                    region: None,
                    credentials_secret: None,
                    pvc: Some(PvcFile {
                        claim_name: pvc.claim_name.clone(),
                        path: path.to_string(),
                    }),
                    cluster_token: None,
                })
            }
            (None, None) => Err(format!("MetaStoreBackup {name} names no target")),
        },
        (phase, _) => Err(format!(
            "MetaStoreBackup {name} has not succeeded (phase {}): a cluster restores only a complete backup",
            phase.map_or("none".to_string(), |p| format!("{p:?}"))
        )),
    }
}

/// What `ms` restores, if anything: `Ok(None)` for a cluster that starts empty; `Err` says why
/// the source cannot be used yet (the cluster is not created until it can).
pub async fn resolve(ms: &MetaStore, client: &kube::Client) -> Result<Option<RestoreFrom>, String> {
    let Some(spec) = ms.spec.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) else {
        return Ok(None);
    };
    if let Some(from) = from_url(spec) {
        return Ok(Some(from));
    }
    let Some(name) = &spec.backup else {
        return Err("spec.bootstrap.restore needs exactly one of backup or url".into());
    };
    let ns = kube::ResourceExt::namespace(ms).unwrap_or_default();
    let api: Api<MetaStoreBackup> = Api::namespaced(client.clone(), &ns);
    match api.get_opt(name).await {
        Ok(Some(b)) => from_backup(&b).map(Some),
        Ok(None) => Err(format!("MetaStoreBackup {ns}/{name} not found")),
        Err(e) => Err(format!("reading MetaStoreBackup {ns}/{name}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(status: serde_json::Value) -> MetaStoreBackup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "metastore.io/v1alpha1", "kind": "MetaStoreBackup",
            "metadata": {"name": "nightly", "namespace": "prod"},
            "spec": {"metaStore": "demo", "s3": {"bucket": "b", "endpoint": "http://s3:8333",
                     "credentialsSecret": "creds"}},
            "status": status
        }))
        .unwrap()
    }

    #[test]
    fn only_a_succeeded_backup_is_restored() {
        let ok = backup(
            serde_json::json!({"phase": "Succeeded", "objectUrl": "s3://b/prod/demo/nightly.db"}),
        );
        assert_eq!(
            from_backup(&ok),
            Ok(RestoreFrom {
                url: "s3://b/prod/demo/nightly.db".into(),
                endpoint: Some("http://s3:8333".into()),
                region: None,
                credentials_secret: Some("creds".into()),
                pvc: None,
                cluster_token: None,
            })
        );
        // A backup on a claim restores from the file its URL names on that claim.
        let mut on_claim = backup(
            serde_json::json!({"phase": "Succeeded", "objectUrl": "pvc://vol/prod/demo/nightly.db"}),
        );
        on_claim.spec.s3 = None;
        on_claim.spec.pvc = Some(crate::backup_crd::PvcTarget {
            claim_name: "vol".into(),
            prefix: String::new(),
        });
        let from = from_backup(&on_claim).unwrap();
        assert_eq!(
            (from.pvc.unwrap().path.as_str(), from.credentials_secret),
            ("prod/demo/nightly.db", None)
        );
        let running = backup(serde_json::json!({"phase": "Running"}));
        assert!(from_backup(&running).unwrap_err().contains("phase Running"));
        assert!(from_backup(&backup(serde_json::json!({})))
            .unwrap_err()
            .contains("phase none"));
    }

    #[test]
    fn the_newest_successful_backup_of_this_metastore_is_chosen() {
        let named = |name: &str, of: &str, status: serde_json::Value| {
            let mut b = backup(status);
            b.metadata.name = Some(name.into());
            b.spec.meta_store = of.into();
            b
        };
        let done = |url: &str, at: &str| serde_json::json!({"phase": "Succeeded", "objectUrl": url, "revision": 7, "completionTime": at});
        let backups = vec![
            named("old", "demo", done("s3://b/old.db", "2026-01-01T00:00:00Z")),
            named("new", "demo", done("s3://b/new.db", "2026-01-03T00:00:00Z")),
            named("mid", "demo", done("s3://b/mid.db", "2026-01-02T00:00:00Z")),
            named(
                "other",
                "else",
                done("s3://b/other.db", "2026-02-01T00:00:00Z"),
            ),
            named(
                "failed",
                "demo",
                serde_json::json!({"phase": "Failed", "completionTime": "2026-03-01T00:00:00Z"}),
            ),
        ];
        let (name, from, what) = newest("demo", &backups).unwrap();
        assert_eq!(name, "new");
        assert_eq!(from.url, "s3://b/new.db");
        assert!(
            what.contains("MetaStoreBackup new (s3://b/new.db, revision 7"),
            "{what}"
        );
        assert!(newest("nobody", &backups).is_none());
    }

    #[test]
    fn a_url_is_its_own_source() {
        let spec: RestoreSpec = serde_json::from_value(serde_json::json!({
            "url": "s3://b/k.db", "credentialsSecret": "c", "region": "eu-west-1"}))
        .unwrap();
        let from = from_url(&spec).unwrap();
        assert_eq!(from.url, "s3://b/k.db");
        assert_eq!(from.region.as_deref(), Some("eu-west-1"));
        let on_pvc: RestoreSpec = serde_json::from_value(serde_json::json!({
            "pvc": {"claimName": "backups", "path": "prod/demo/nightly.db"}}))
        .unwrap();
        let from = from_url(&on_pvc).unwrap();
        assert_eq!(from.url, "pvc://backups/prod/demo/nightly.db");
        assert_eq!(from.pvc.unwrap().path, "prod/demo/nightly.db");
        let by_backup: RestoreSpec =
            serde_json::from_value(serde_json::json!({"backup": "x"})).unwrap();
        assert_eq!(from_url(&by_backup), None);
    }
}
