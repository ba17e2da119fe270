//! The MetaStoreBackup controller: takes each new backup once — the MetaStore's snapshot
//! streamed into its bucket, or written to a PersistentVolumeClaim by a Job (see
//! [`crate::backup_job`]) — and reports it in status, Events and
//! `metastore_backup_last_success_timestamp_seconds`. A backup found Running after an operator
//! restart is taken again from the start (the unfinished upload was aborted or never completed).

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::backup::{bucket, upload_snapshot, S3Credentials, Uploaded};
use crate::backup_crd::{BackupPhase, MetaStoreBackup, MetaStoreBackupStatus, PvcTarget, S3Target};
use crate::backup_job::{self, JobOutcome};
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

/// The MetaStore to back up, or why there is none.
async fn metastore(b: &MetaStoreBackup, ctx: &Context, ns: &str) -> Result<MetaStore, String> {
    let mss: Api<MetaStore> = Api::namespaced(ctx.client.clone(), ns);
    mss.get_opt(&b.spec.meta_store)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("MetaStore {ns}/{} not found", b.spec.meta_store))
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
    let status = b.status.clone().unwrap_or_default();
    if matches!(
        status.phase,
        Some(BackupPhase::Succeeded | BackupPhase::Failed)
    ) {
        return Ok(Action::await_change());
    }
    let name = b.name_any();
    let ns = b
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let api: Api<MetaStoreBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let started = status.start_time.unwrap_or_else(now);
    let ms = match metastore(&b, &ctx, &ns).await {
        Ok(ms) => ms,
        Err(why) => return fail(&api, &ctx, &b, started, why).await,
    };
    let result = match (&b.spec.s3, &b.spec.pvc) {
        (Some(s3), _) => to_bucket(&b, &ctx, &api, &ms, s3, started.clone()).await?,
        (None, Some(pvc)) => match to_claim(&b, &ctx, &api, &ms, pvc, started.clone()).await? {
            Some(r) => r,
            None => return Ok(Action::requeue(JOB_POLL)),
        },
        (None, None) => Err("the backup names no target (s3 or pvc)".to_string()),
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
        Err(why) => fail(&api, &ctx, &b, started, why).await,
    }
}

/// How often a backup Job is looked at while it runs.
const JOB_POLL: std::time::Duration = std::time::Duration::from_secs(2);

/// Marks the backup Failed (not retried: create another).
async fn fail(
    api: &Api<MetaStoreBackup>,
    ctx: &Context,
    b: &MetaStoreBackup,
    started: Time,
    why: String,
) -> Result<Action, Error> {
    let status = MetaStoreBackupStatus {
        phase: Some(BackupPhase::Failed),
        start_time: Some(started),
        completion_time: Some(now()),
        message: Some(why.clone()),
        ..Default::default()
    };
    patch_status(api, &b.name_any(), &status).await?;
    ctx.metrics.backups.with_label_values(&["failed"]).inc();
    event(ctx, b, EventType::Warning, "BackupFailed", why).await;
    Ok(Action::await_change())
}

async fn running(
    api: &Api<MetaStoreBackup>,
    b: &MetaStoreBackup,
    started: Time,
    message: String,
) -> Result<(), Error> {
    let status = MetaStoreBackupStatus {
        phase: Some(BackupPhase::Running),
        start_time: Some(started),
        message: Some(message),
        ..Default::default()
    };
    patch_status(api, &b.name_any(), &status).await
}

/// Streams the snapshot into the bucket, here and now.
async fn to_bucket(
    b: &MetaStoreBackup,
    ctx: &Context,
    api: &Api<MetaStoreBackup>,
    ms: &MetaStore,
    s3: &S3Target,
    started: Time,
) -> Result<Result<Uploaded, String>, Error> {
    let ns = b.namespace().unwrap_or_default();
    let creds = match credentials(ctx, &ns, &s3.credentials_secret).await {
        Ok(c) => c,
        Err(why) => return Ok(Err(why)),
    };
    let mut tls = tls_secrets::ensure(ms, &ctx.client).await?;
    tls.dial.credentials = crate::auth_secret::ensure(ms, &ctx.client).await?;
    running(
        api,
        b,
        started,
        "streaming the snapshot to the bucket".into(),
    )
    .await?;
    let endpoints = builders::member_client_urls(ms);
    let key = s3.key(&ns, &ms.name_any(), &b.name_any());
    let url = format!("s3://{}/{key}", s3.bucket);
    let result = match bucket(s3, &creds) {
        Ok(store) => upload_snapshot(&tls.dial, &endpoints, &store, &key, url).await,
        Err(e) => Err(e),
    };
    Ok(result.map_err(|e| e.to_string()))
}

/// Runs the backup as a Job that mounts the claim; `None` while it runs.
async fn to_claim(
    b: &MetaStoreBackup,
    ctx: &Context,
    api: &Api<MetaStoreBackup>,
    ms: &MetaStore,
    pvc: &PvcTarget,
    started: Time,
) -> Result<Option<Result<Uploaded, String>>, Error> {
    let ns = b.namespace().unwrap_or_default();
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let name = backup_job::job_name(b);
    let Some(job) = jobs.get_opt(&name).await? else {
        // Make sure the operator's certificate exists before a pod mounts it.
        tls_secrets::ensure(ms, &ctx.client).await?;
        let scheduled = b.labels().contains_key(crate::backup_crd::SCHEDULE_LABEL);
        let keep = ms
            .spec
            .backup
            .as_ref()
            .filter(|s| scheduled && s.pvc.as_ref() == Some(pvc))
            .map(|s| s.retention);
        jobs.create(
            &Default::default(),
            &backup_job::backup_job(b, ms, pvc, keep),
        )
        .await?;
        running(
            api,
            b,
            started,
            format!("Job {name} writes the snapshot to PVC {}", pvc.claim_name),
        )
        .await?;
        return Ok(None);
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await?;
    let url = pvc.url(&pvc.path(&ns, &ms.name_any(), &b.name_any()));
    Ok(match backup_job::outcome(&job, &listed.items, &url) {
        JobOutcome::Running => None,
        JobOutcome::Saved(up) => Some(Ok(up)),
        JobOutcome::Failed(why) => Some(Err(why)),
    })
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
