//! Waking the StatefulSet controller when a pod it owes does not come.
//!
//! The StatefulSet controller requeues a StatefulSet whose sync failed with a per-key
//! exponential backoff (5 ms doubling, up to 1000 s: client-go's default controller rate
//! limiter), and it does not watch claims (Kubernetes 1.37's
//! `pkg/controller/statefulset/stateful_set.go` handles pod and StatefulSet events only). After a
//! disaster recovery, its syncs fail many times in a row ("pvc … is being deleted" while the lost
//! members' volumes go, "read version … is not as new as written version …" while its cache
//! trails its own writes), so when the last claim is finally gone its next try can be a quarter
//! of an hour away, with the pod the operator waits for never created. Any change to the
//! StatefulSet object requeues it at once; the operator makes one (an annotation on the
//! StatefulSet's own metadata, which no pod sees) while a pod is missing, at most every
//! [`NUDGE_EVERY`].

use std::time::Duration;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;

/// Annotation on the StatefulSet: when the operator last nudged it.
pub const NUDGED_AT: &str = "metastore.io/statefulset-nudged-at";

/// Least time between two nudges of one StatefulSet.
pub const NUDGE_EVERY: Duration = Duration::from_secs(30);

/// The ordinals below the StatefulSet's replicas that have no pod (of `pods`, this StatefulSet's).
pub fn missing_ordinals(sts: &StatefulSet, pods: &[Pod]) -> Vec<i32> {
    let name = sts.metadata.name.as_deref().unwrap_or_default();
    let replicas = sts.spec.replicas.unwrap_or(0);
    (0..replicas)
        .filter(|k| {
            let pod = format!("{name}-{k}");
            !pods
                .iter()
                .any(|p| p.metadata.name.as_deref() == Some(pod.as_str()))
        })
        .collect()
}

/// Whether to nudge `sts` now: a pod is missing and the last nudge (if any) is at least
/// [`NUDGE_EVERY`] old. A StatefulSet being deleted is left alone.
pub fn nudge_due(sts: &StatefulSet, pods: &[Pod], now: Timestamp) -> bool {
    if sts.metadata.deletion_timestamp.is_some() || missing_ordinals(sts, pods).is_empty() {
        return false;
    }
    let last = sts
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(NUDGED_AT))
        .and_then(|t| t.parse::<Timestamp>().ok());
    // A nudge stamped in the future (a clock step) counts as old.
    match last.map(|t| Duration::try_from(now.duration_since(t))) {
        Some(Ok(since)) => since >= NUDGE_EVERY,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;

    fn sts(replicas: i32, nudged: Option<&str>) -> StatefulSet {
        let mut s = StatefulSet::default();
        s.metadata.name = Some("demo".into());
        s.spec = StatefulSetSpec {
            replicas: Some(replicas),
            ..Default::default()
        };
        if let Some(t) = nudged {
            s.metadata.annotations = Some([(NUDGED_AT.to_string(), t.to_string())].into());
        }
        s
    }

    fn pods(names: &[&str]) -> Vec<Pod> {
        names
            .iter()
            .map(|n| {
                let mut p = Pod::default();
                p.metadata.name = Some(n.to_string());
                p
            })
            .collect()
    }

    #[test]
    fn a_missing_pod_is_nudged_for_at_most_every_thirty_seconds() {
        let now: Timestamp = "2026-12-04T14:01:46Z".parse().unwrap();
        let all = pods(&["demo-0", "demo-1"]);
        let one = pods(&["demo-0", "other-1"]);
        assert_eq!(missing_ordinals(&sts(2, None), &all), Vec::<i32>::new());
        assert_eq!(missing_ordinals(&sts(2, None), &one), vec![1]);
        assert!(!nudge_due(&sts(2, None), &all, now), "nothing missing");
        assert!(nudge_due(&sts(2, None), &one, now), "never nudged");
        let recent = sts(2, Some("2026-12-04T14:01:30Z"));
        assert!(!nudge_due(&recent, &one, now), "nudged 16 s ago");
        let old = sts(2, Some("2026-12-04T14:01:16Z"));
        assert!(nudge_due(&old, &one, now), "nudged 30 s ago");
        assert!(nudge_due(&sts(2, Some("garbage")), &one, now));
        let mut going = sts(2, None);
        going.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        assert!(!nudge_due(&going, &one, now), "being deleted");
    }
}
