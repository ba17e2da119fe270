//! Which members' pods say their data is gone. A member that started once and restarts with an
//! empty data dir (its volume was lost and the StatefulSet made a new, empty one) is refused by
//! the node as "already started", because its Raft state (votes) is gone; the pod crash-loops
//! and, with `terminationMessagePolicy: FallbackToLogsOnError`, the kubelet puts that error in
//! the container's termination message, where the operator reads it. Pure.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::crd::MetaStore;
use crate::names::pod_ordinal;

/// The words of the node's refusal (metastore-node `JoinError::AlreadyStarted`).
pub const DATA_LOST_MARKER: &str = "already started in this cluster and its data dir is empty";

/// Ordinals of `ms`'s pods (not being deleted) whose container last stopped on that refusal.
pub fn data_lost_ordinals(ms: &MetaStore, pods: &[Pod]) -> Vec<i32> {
    let mut lost: Vec<i32> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| says_data_lost(p))
        .filter_map(|p| pod_ordinal(ms, &p.name_any()))
        .collect();
    lost.sort_unstable();
    lost
}

fn says_data_lost(pod: &Pod) -> bool {
    let statuses = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten());
    statuses
        .flat_map(|c| [c.last_state.as_ref(), c.state.as_ref()])
        .flatten()
        .filter_map(|s| s.terminated.as_ref()?.message.as_deref())
        .any(|m| m.contains(DATA_LOST_MARKER))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::demo;

    fn pod(name: &str, message: Option<&str>, deleting: bool) -> Pod {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default"},
            "status": {"containerStatuses": [{
                "name": "metastore", "image": "i", "imageID": "", "ready": false,
                "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": message}},
            }]},
        }))
        .unwrap();
        if deleting {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
        }
        p
    }

    #[test]
    fn only_live_pods_of_this_cluster_that_report_the_refusal() {
        let ms = demo();
        let name = ms.name_any();
        let refusal = format!(
            "metastore-node: error: cannot join the existing cluster: member 5f30 ({name}-1) {DATA_LOST_MARKER}: its Raft state is lost"
        );
        let pods = vec![
            pod(&format!("{name}-0"), Some("some other error"), false),
            pod(&format!("{name}-1"), Some(&refusal), false),
            pod(&format!("{name}-2"), Some(&refusal), true),
            pod(&format!("{name}-x"), Some(&refusal), false),
            pod(&format!("{name}-3"), None, false),
        ];
        assert_eq!(data_lost_ordinals(&ms, &pods), vec![1]);
    }
}
