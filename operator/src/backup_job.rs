//! Backups to a PersistentVolumeClaim. The operator cannot mount a volume, so a Job does: its
//! pod runs `metastore-node snapshot save /backup/<path> --endpoints …` with the operator's
//! client certificate, writes the file whole or not at all, and leaves a JSON summary (revision,
//! size, sha256) in its termination message, which becomes the backup's status. A scheduled
//! backup's Job also deletes the schedule's older files beyond the retention.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec,
    PodTemplateSpec, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::backup_crd::{MetaStoreBackup, PvcTarget};
use crate::builders::{self, NODE_BINARY, RUN_AS_USER};
use crate::crd::MetaStore;
use crate::tls_layout;

/// Where the Job mounts the backup claim and the operator's certificate.
const BACKUP_MOUNT: &str = "/backup";
const TLS_MOUNT: &str = "/tls";
/// The kubelet's default termination message file.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// The Job of backup `b`: `<backup>-backup`.
pub fn job_name(b: &MetaStoreBackup) -> String {
    format!("{}-backup", b.name_any())
}

/// The Job that writes backup `b` of `ms` to `pvc`; `prune_keep`: a scheduled backup keeps
/// that many of the schedule's files.
pub fn backup_job(
    b: &MetaStoreBackup,
    ms: &MetaStore,
    pvc: &PvcTarget,
    prune_keep: Option<u32>,
) -> Job {
    let ns = b.namespace().unwrap_or_default();
    let path = pvc.path(&ns, &ms.name_any(), &b.name_any());
    let endpoints = builders::member_client_urls(ms);
    let mut args = vec![
        "snapshot".to_string(),
        "save".into(),
        format!("{BACKUP_MOUNT}/{path}"),
        format!("--endpoints={}", endpoints.join(",")),
        format!("--summary-file={TERMINATION_LOG}"),
    ];
    let mut volumes = vec![Volume {
        name: "backup".into(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: pvc.claim_name.clone(),
            read_only: Some(false),
        }),
        ..Default::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "backup".into(),
        mount_path: BACKUP_MOUNT.into(),
        ..Default::default()
    }];
    if let Some(secret) = tls_layout::operator_secret(ms) {
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "tls".into(),
            mount_path: TLS_MOUNT.into(),
            read_only: Some(true),
            ..Default::default()
        });
        args.extend([
            format!("--cacert={TLS_MOUNT}/ca.crt"),
            format!("--cert={TLS_MOUNT}/tls.crt"),
            format!("--key={TLS_MOUNT}/tls.key"),
        ]);
    }
    if let Some(keep) = prune_keep {
        args.push(format!("--prune-keep={keep}"));
        args.push(format!("--prune-prefix={}-", ms.name_any()));
    }
    let mut labels = builders::labels(ms);
    labels.insert("metastore.io/backup".into(), b.name_any());
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(b)),
            namespace: Some(ns),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner(b)]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // One retry (a member restarting mid-stream), then the backup fails.
            backoff_limit: Some(1),
            active_deadline_seconds: Some(6 * 3600),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    // Not the members' labels: their Services and PodDisruptionBudget must
                    // not select this pod.
                    labels: Some([("metastore.io/backup".to_string(), b.name_any())].into()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![Container {
                        name: "save".into(),
                        image: Some(builders::member_image(ms)),
                        command: Some(vec![NODE_BINARY.into()]),
                        args: Some(args),
                        volume_mounts: Some(mounts),
                        security_context: Some(builders::container_security()),
                        // The summary on success; the error (the log's tail) on failure.
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        fs_group: Some(RUN_AS_USER),
                        run_as_non_root: Some(true),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn owner(b: &MetaStoreBackup) -> OwnerReference {
    OwnerReference {
        api_version: MetaStoreBackup::api_version(&()).into(),
        kind: MetaStoreBackup::kind(&()).into(),
        name: b.name_any(),
        uid: b.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Where a backup Job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobOutcome {
    /// Still running (or not started).
    Running,
    /// Done: its pod's summary.
    Saved(crate::backup::Uploaded),
    /// Failed, and why.
    Failed(String),
}

/// What the Job and its pods say; `url` names the file. Pure.
pub fn outcome(job: &Job, pods: &[Pod], url: &str) -> JobOutcome {
    let st = job.status.clone().unwrap_or_default();
    let message = |want: &str| {
        pods.iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some(want))
            .filter_map(|p| {
                let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
                cs.state.as_ref()?.terminated.as_ref()?.message.clone()
            })
            .next_back()
    };
    if st.succeeded.unwrap_or(0) > 0 {
        #[derive(serde::Deserialize)]
        struct Summary {
            revision: i64,
            size: u64,
            sha256: String,
        }
        return match message("Succeeded").and_then(|m| serde_json::from_str::<Summary>(&m).ok()) {
            Some(s) => JobOutcome::Saved(crate::backup::Uploaded {
                object_url: url.to_string(),
                revision: s.revision,
                size: s.size,
                sha256: s.sha256,
            }),
            None => JobOutcome::Failed(format!(
                "Job {} succeeded but its pod left no summary",
                job.name_any()
            )),
        };
    }
    let failed = st
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    match failed {
        Some(c) => {
            let why = message("Failed").map(|m| m.trim().to_string());
            JobOutcome::Failed(format!(
                "Job {} failed ({}): {}",
                job.name_any(),
                c.reason.clone().unwrap_or_default(),
                why.unwrap_or_else(|| c.message.clone().unwrap_or_default())
            ))
        }
        None => JobOutcome::Running,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::demo;

    fn backup(name: &str) -> MetaStoreBackup {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "metastore.io/v1alpha1", "kind": "MetaStoreBackup",
            "metadata": {"name": name, "namespace": "default", "uid": "b-1"},
            "spec": {"metaStore": "demo", "pvc": {"claimName": "backups", "prefix": "ms/"}},
        }))
        .unwrap()
    }

    #[test]
    fn the_job_saves_into_the_claim_with_the_operator_certificate() {
        let mut ms = demo();
        ms.spec.tls = serde_json::from_value(serde_json::json!({"mode": "Managed"})).unwrap();
        let b = backup("nightly");
        let pvc = b.spec.pvc.clone().unwrap();
        let job = backup_job(&b, &ms, &pvc, Some(3));
        assert_eq!(job.metadata.name.as_deref(), Some("nightly-backup"));
        assert_eq!(
            job.metadata.owner_references.as_ref().unwrap()[0].kind,
            "MetaStoreBackup"
        );
        let spec = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let c = &spec.containers[0];
        let args = c.args.clone().unwrap();
        let name = ms.name_any();
        assert_eq!(
            args[..3],
            [
                "snapshot",
                "save",
                &*format!("/backup/ms/default/{name}/nightly.db")
            ]
        );
        assert!(args.contains(&format!("--summary-file={TERMINATION_LOG}")));
        assert!(args.contains(&"--cert=/tls/tls.crt".to_string()));
        assert!(args.contains(&format!("--prune-prefix={name}-")));
        assert!(args.contains(&"--prune-keep=3".to_string()));
        let vols = spec.volumes.unwrap();
        assert_eq!(
            vols[0].persistent_volume_claim.as_ref().unwrap().claim_name,
            "backups"
        );
        assert_eq!(
            vols[1].secret.as_ref().unwrap().secret_name.as_deref(),
            tls_layout::operator_secret(&ms).as_deref()
        );
    }

    fn job(status: serde_json::Value) -> Job {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "j"}, "status": status}))
            .unwrap()
    }

    fn pod(phase: &str, message: &str) -> Pod {
        serde_json::from_value(
            serde_json::json!({"status": {"phase": phase, "containerStatuses": [{
            "name": "save", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"terminated": {"exitCode": 0, "message": message}}}]}}),
        )
        .unwrap()
    }

    #[test]
    fn the_outcome_comes_from_the_job_and_its_pod() {
        let url = "pvc://backups/x.db";
        assert_eq!(
            outcome(&job(serde_json::json!({"active": 1})), &[], url),
            JobOutcome::Running
        );
        let done = job(serde_json::json!({"succeeded": 1}));
        let summary = r#"{"revision":42,"size":1000,"sha256":"ab"}"#;
        let JobOutcome::Saved(s) = outcome(&done, &[pod("Succeeded", summary)], url) else {
            panic!()
        };
        assert_eq!((s.revision, s.size, s.object_url.as_str()), (42, 1000, url));
        assert!(matches!(outcome(&done, &[], url), JobOutcome::Failed(_)));
        let failed = job(serde_json::json!({"failed": 2, "conditions": [
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]}));
        let JobOutcome::Failed(why) = outcome(
            &failed,
            &[pod("Failed", "error: no member answered\n")],
            url,
        ) else {
            panic!()
        };
        assert!(
            why.contains("BackoffLimitExceeded") && why.contains("no member answered"),
            "{why}"
        );
    }
}
