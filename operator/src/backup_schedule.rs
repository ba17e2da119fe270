//! Scheduled backups (`spec.backup`): when the next `MetaStoreBackup` is due, which old ones to
//! prune (pure, below), and the reconcile step that creates and prunes them.

use std::time::Duration;

use croner::Cron;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::ResourceExt;

use crate::backup::{bucket, delete_object};
use crate::backup_controller::credentials;
use crate::backup_crd::{BackupPhase, MetaStoreBackup, MetaStoreBackupSpec};
use crate::context::{Context, Error};
use crate::crd::MetaStore;
pub use crate::cron_schedule::{next_after, parse};

pub use crate::backup_crd::SCHEDULE_LABEL;

/// A scheduled backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    /// Its name.
    pub name: String,
    /// When it was created.
    pub created: Timestamp,
    /// Its phase, if reported.
    pub phase: Option<BackupPhase>,
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulePlan {
    /// Create a backup now.
    pub create: bool,
    /// Backups to delete (with their objects), oldest first.
    pub prune: Vec<String>,
    /// When to look again.
    pub wait: Duration,
}

/// The plan for `existing` at `now`: a backup is due when the schedule fired since the newest
/// one was created (or since `since`, the MetaStore's creation, when there is none); finished
/// backups older than the newest `retention` successful ones are pruned (an unfinished one is
/// never pruned).
pub fn plan(
    cron: &Cron,
    since: Timestamp,
    existing: &[Existing],
    retention: usize,
    now: Timestamp,
) -> SchedulePlan {
    let mut sorted: Vec<&Existing> = existing.iter().collect();
    sorted.sort_by_key(|e| std::cmp::Reverse(e.created));
    let last = sorted.first().map_or(since, |e| e.created);
    let due = next_after(cron, last);
    let create = due.is_some_and(|d| d <= now);
    let mut kept_successes = 0;
    let mut prune = Vec::new();
    for e in &sorted {
        match e.phase {
            Some(BackupPhase::Succeeded) if kept_successes < retention => kept_successes += 1,
            Some(BackupPhase::Succeeded) | Some(BackupPhase::Failed)
                if kept_successes >= retention =>
            {
                prune.push(e.name.clone())
            }
            _ => {}
        }
    }
    prune.reverse();
    let next = if create { next_after(cron, now) } else { due };
    let wait = next
        .map(|n| n.duration_since(now).unsigned_abs())
        .map_or(Duration::from_secs(3600), |d| {
            Duration::from_secs(d.as_secs().max(1))
        });
    SchedulePlan {
        create,
        prune,
        wait,
    }
}

/// Seconds between two firings of `cron` after `now` (what "twice the schedule" is measured in).
pub fn interval(cron: &Cron, now: Timestamp) -> Option<f64> {
    let first = next_after(cron, now)?;
    let second = next_after(cron, first)?;
    Some(second.duration_since(first).as_secs_f64())
}

/// Creates the backup that is due and prunes old ones; returns when to look again (`None`
/// without a schedule). Exports the schedule's interval, and the newest success among the
/// scheduled backups (so the gauge survives an operator restart), for the
/// `MetaStoreBackupTooOld` alert.
pub async fn run(ms: &MetaStore, ctx: &Context) -> Result<Option<Duration>, Error> {
    let Some(spec) = &ms.spec.backup else {
        return Ok(None);
    };
    let Ok(cron) = parse(&spec.schedule) else {
        return Ok(None); // refused by validation already
    };
    let name = ms.name_any();
    let ns = ms
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let api: Api<MetaStoreBackup> = Api::namespaced(ctx.client.clone(), &ns);
    let list = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await?;
    let existing: Vec<Existing> = list
        .items
        .iter()
        .map(|b| Existing {
            name: b.name_any(),
            created: b
                .metadata
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::UNIX_EPOCH, |t| t.0),
            phase: b.status.as_ref().and_then(|s| s.phase),
        })
        .collect();
    let labels = [ns.as_str(), name.as_str()];
    if let Some(secs) = interval(&cron, Timestamp::now()) {
        ctx.metrics
            .backup_schedule_interval
            .with_label_values(&labels)
            .set(secs);
    }
    let newest_success = list
        .items
        .iter()
        .filter_map(|b| b.status.as_ref())
        .filter(|s| s.phase == Some(BackupPhase::Succeeded))
        .filter_map(|s| s.completion_time.as_ref())
        .map(|t| t.0.as_millisecond() as f64 / 1000.0)
        .reduce(f64::max);
    if let Some(t) = newest_success {
        let gauge = ctx.metrics.backup_last_success.with_label_values(&labels);
        if gauge.get() < t {
            gauge.set(t);
        }
    }
    let since = ms
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::UNIX_EPOCH, |t| t.0);
    let now = Timestamp::now();
    let p = plan(&cron, since, &existing, spec.retention as usize, now);
    if p.create {
        let backup_name = format!("{name}-{}", now.as_second());
        let mut b = MetaStoreBackup::new(
            &backup_name,
            MetaStoreBackupSpec {
                meta_store: name.clone(),
                s3: spec.s3.clone(),
                pvc: spec.pvc.clone(),
            },
        );
        b.metadata.namespace = Some(ns.clone());
        b.metadata.labels = Some([(SCHEDULE_LABEL.to_string(), name.clone())].into());
        b.metadata.owner_references =
            crate::builders::meta(ms, backup_name.clone()).owner_references;
        match api.create(&PostParams::default(), &b).await {
            Ok(_) => tracing::info!(backup = %backup_name, "scheduled backup created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    if !p.prune.is_empty() {
        // In a bucket the operator deletes the object itself; on a claim the next backup's Job
        // deletes the schedule's older files (`--prune-keep`).
        let store = match &spec.s3 {
            Some(s3) => match credentials(ctx, &ns, &s3.credentials_secret).await {
                Ok(creds) => bucket(s3, &creds).ok().map(|b| (s3, b)),
                Err(_) => None,
            },
            None => None,
        };
        for old in &p.prune {
            // The object first: deleting the resource first could leak the object.
            if let Some((s3, store)) = &store {
                let key = s3.key(&ns, &name, old);
                if let Err(e) = delete_object(store, &key).await {
                    tracing::warn!(backup = %old, "cannot delete the object {key}: {e}");
                    continue;
                }
            }
            let _ = api.delete(old, &DeleteParams::default()).await;
            tracing::info!(backup = %old, "pruned an old scheduled backup");
        }
    }
    Ok(Some(p.wait))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn backup(name: &str, created: i64, phase: Option<BackupPhase>) -> Existing {
        Existing {
            name: name.into(),
            created: ts(created),
            phase,
        }
    }

    #[test]
    fn the_interval_is_the_time_between_two_firings() {
        assert_eq!(interval(&parse("0 3 * * *").unwrap(), ts(0)), Some(86400.0));
        assert_eq!(interval(&parse("*/5 * * * * *").unwrap(), ts(0)), Some(5.0));
    }

    #[test]
    fn five_and_six_field_schedules_fire_when_due() {
        let daily = parse("0 3 * * *").unwrap();
        // 1970-01-01T00:00:00Z → next 03:00.
        assert_eq!(next_after(&daily, ts(0)), Some(ts(3 * 3600)));
        let every10s = parse("*/10 * * * * *").unwrap();
        assert_eq!(next_after(&every10s, ts(100)), Some(ts(110)));
        assert!(parse("every day").is_err());
        // Nothing yet: due once the schedule fired since the MetaStore was created.
        let p = plan(&every10s, ts(100), &[], 2, ts(105));
        assert!(!p.create);
        assert_eq!(p.wait, Duration::from_secs(5));
        let p = plan(&every10s, ts(100), &[], 2, ts(111));
        assert!(p.create);
        assert_eq!(p.wait, Duration::from_secs(9));
        // The newest backup counts, not the MetaStore's age.
        let p = plan(&every10s, ts(0), &[backup("a", 112, None)], 2, ts(115));
        assert!(!p.create);
    }

    #[test]
    fn the_newest_successes_are_kept_and_nothing_unfinished_is_pruned() {
        use BackupPhase::*;
        let cron = parse("*/10 * * * * *").unwrap();
        let existing = [
            backup("b1", 10, Some(Succeeded)),
            backup("b2", 20, Some(Failed)),
            backup("b3", 30, Some(Succeeded)),
            backup("b4", 40, Some(Succeeded)),
            backup("b5", 50, Some(Running)),
            backup("b6", 60, Some(Failed)),
        ];
        let p = plan(&cron, ts(0), &existing, 2, ts(61));
        assert_eq!(p.prune, vec!["b1", "b2"]);
        let p = plan(&cron, ts(0), &existing, 5, ts(61));
        assert!(p.prune.is_empty());
    }
}
