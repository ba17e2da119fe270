//! The names of a cluster's objects and its members' DNS names, shared by the builders.

use kube::ResourceExt;

use crate::constants::DATA_VOLUME;
use crate::crd::MetaStore;

/// Name of the headless Service that gives members stable DNS names.
pub fn peer_service_name(ms: &MetaStore) -> String {
    format!("{}-peer", ms.name_any())
}

/// Name of the Service clients use.
pub fn client_service_name(ms: &MetaStore) -> String {
    format!("{}-client", ms.name_any())
}

/// Name of the pod (and Raft member) with `ordinal`.
pub fn pod_name(ms: &MetaStore, ordinal: i32) -> String {
    format!("{}-{ordinal}", ms.name_any())
}

/// DNS name of a member pod inside the cluster.
pub fn pod_host(ms: &MetaStore, ordinal: i32) -> String {
    format!(
        "{}.{}.{}.svc",
        pod_name(ms, ordinal),
        peer_service_name(ms),
        ms.namespace().unwrap_or_default()
    )
}

/// Name of the data volume claim of the pod with `ordinal` (made by the StatefulSet controller
/// from the claim template).
pub fn data_claim_name(ms: &MetaStore, ordinal: i32) -> String {
    format!("{DATA_VOLUME}-{}", pod_name(ms, ordinal))
}

/// The ordinal of `ms`'s pod named `pod`, if it is one of its pods.
pub fn pod_ordinal(ms: &MetaStore, pod: &str) -> Option<i32> {
    let ordinal: i32 = pod
        .strip_prefix(&format!("{}-", ms.name_any()))?
        .parse()
        .ok()?;
    (pod_name(ms, ordinal) == pod).then_some(ordinal)
}

/// The ordinal whose data volume claim is named `claim`, if it is one of `ms`'s.
pub fn claim_ordinal(ms: &MetaStore, claim: &str) -> Option<i32> {
    pod_ordinal(ms, claim.strip_prefix(&format!("{DATA_VOLUME}-"))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::demo;

    #[test]
    fn ordinals_are_read_back_from_pod_and_claim_names() {
        let ms = demo();
        assert_eq!(pod_ordinal(&ms, &pod_name(&ms, 2)), Some(2));
        assert_eq!(claim_ordinal(&ms, &data_claim_name(&ms, 7)), Some(7));
        let name = ms.name_any();
        for other in [
            format!("{name}-x"),
            format!("{name}-01"),
            format!("backups-{name}-1"),
        ] {
            assert_eq!(pod_ordinal(&ms, &other), None, "{other}");
            assert_eq!(claim_ordinal(&ms, &other), None, "{other}");
        }
    }
}
