//! The MetaStoreBackup controller: takes each new backup once — the MetaStore's snapshot
//! streamed into its bucket — and reports it in status, Events and
//! `metastore_backup_last_success_timestamp_seconds`. A backup found Running after an operator
//! restart is taken again from the start (the unfinished upload was aborted or never completed).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::backup::{bucket, upload_snapshot, S3Credentials};
use crate::backup_crd::{BackupPhase, MetaStoreBackup, MetaStoreBackupStatus};
use crate::builders;
use crate::constants::{OPERATOR_NAME, REQUEUE_AFTER_ERROR};
use crate::context::{Context, Error};
use crate::crd::MetaStore;
use crate::tls_secrets::{self, field};

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn patch_status(
    api: &Api<MetaStoreBackup>,
    name: &str,
    status: &MetaStoreBackupStatus,
) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "metastore.io/v1alpha1",
        "kind": "MetaStoreBackup",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(OPERATOR_NAME).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

async fn event(ctx: &Context, b: &MetaStoreBackup, type_: EventType, reason: &str, note: String) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Backup".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &b.object_ref(&())).await {
        tracing::warn!("cannot publish event: {e}");
    }
}

/// Why a backup cannot be taken, before any upload starts.
async fn prepare(
    b: &MetaStoreBackup,
    ctx: &Context,
    ns: &str,
) -> Result<(MetaStore, S3Credentials), String> {
    let mss: Api<MetaStore> = Api::namespaced(ctx.client.clone(), ns);
    let ms = mss
        .get_opt(&b.spec.meta_store)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("MetaStore {ns}/{} not found", b.spec.meta_store))?;
    Ok((
        ms,
        credentials(ctx, ns, &b.spec.s3.credentials_secret).await?,
    ))
}

/// The bucket credentials in Secret `ns/name` (keys `accessKeyId`, `secretAccessKey`).
pub async fn credentials(ctx: &Context, ns: &str, name: &str) -> Result<S3Credentials, String> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let s = secrets
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("credentials Secret {ns}/{name} not found"))?;
    match (field(&s, "accessKeyId"), field(&s, "secretAccessKey")) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
        }),
        _ => Err(format!(
            "credentials Secret {ns}/{name} needs accessKeyId and secretAccessKey"
        )),
    }
}

/// One reconcile of one MetaStoreBackup.
pub async fn reconcile(b: Arc<MetaStoreBackup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let phase = b.status.as_ref().and_then(|s| s.phase);
    if matches!(phase, Some(BackupPhase::Succeeded | BackupPhase::Failed)) {
        return Ok(Action::await_change());
    }
    let name = b.name_any();
    let ns = b
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let api: Api<MetaStoreBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let started = now();
    let fail = |message: String| MetaStoreBackupStatus {
        phase: Some(BackupPhase::Failed),
        start_time: Some(started.clone()),
        completion_time: Some(now()),
        message: Some(message),
        ..Default::default()
    };
    let (ms, creds) = match prepare(&b, &ctx, &ns).await {
        Ok(p) => p,
        Err(why) => {
            patch_status(&api, &name, &fail(why.clone())).await?;
            event(&ctx, &b, EventType::Warning, "BackupFailed", why).await;
            ctx.metrics.backups.with_label_values(&["failed"]).inc();
            return Ok(Action::await_change());
        }
    };
    let tls = tls_secrets::ensure(&ms, &ctx.client).await?;
    patch_status(
        &api,
        &name,
        &MetaStoreBackupStatus {
            phase: Some(BackupPhase::Running),
            start_time: Some(started.clone()),
            message: Some("streaming the snapshot to the bucket".into()),
            ..Default::default()
        },
    )
    .await?;
    let replicas = ms
        .status
        .as_ref()
        .map_or(ms.spec.replicas, |s| s.replicas)
        .max(1);
    let endpoints: Vec<String> = (0..replicas)
        .map(|k| builders::client_url(&ms, k))
        .collect();
    let key = b.spec.s3.key(&ns, &ms.name_any(), &name);
    let url = format!("s3://{}/{key}", b.spec.s3.bucket);
    let result = match bucket(&b.spec.s3, &creds) {
        Ok(store) => upload_snapshot(&tls.dial, &endpoints, &store, &key, url).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(up) => {
            let status = MetaStoreBackupStatus {
                phase: Some(BackupPhase::Succeeded),
                object_url: Some(up.object_url.clone()),
                revision: Some(up.revision),
                size: Some(up.size as i64),
                sha256: Some(up.sha256),
                start_time: Some(started),
                completion_time: Some(now()),
                message: None,
            };
            patch_status(&api, &name, &status).await?;
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            ctx.metrics
                .backup_last_success
                .with_label_values(&[&ns, &ms.name_any()])
                .set(secs);
            ctx.metrics.backups.with_label_values(&["succeeded"]).inc();
            event(
                &ctx,
                &b,
                EventType::Normal,
                "BackupSucceeded",
                format!(
                    "{} at revision {} ({} bytes)",
                    up.object_url, up.revision, up.size
                ),
            )
            .await;
            Ok(Action::await_change())
        }
        Err(e) => {
            let why = e.to_string();
            patch_status(&api, &name, &fail(why.clone())).await?;
            ctx.metrics.backups.with_label_values(&["failed"]).inc();
            event(&ctx, &b, EventType::Warning, "BackupFailed", why).await;
            Ok(Action::await_change())
        }
    }
}

/// Backs off after a failed reconcile (the API server, not the backup, failed).
pub fn error_policy(_b: Arc<MetaStoreBackup>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("backup reconcile failed: {e}");
    Action::requeue(REQUEUE_AFTER_ERROR)
}

/// Runs the backup controller until shutdown (in `namespace`, or all).
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let api: Api<MetaStoreBackup> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!("backup controller: {e}");
            }
        })
        .await;
}
