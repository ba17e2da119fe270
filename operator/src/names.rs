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

/// The ordinal whose data volume claim is named `claim`, if it is one of `ms`'s.
pub fn claim_ordinal(ms: &MetaStore, claim: &str) -> Option<i32> {
    let rest = claim.strip_prefix(&format!("{DATA_VOLUME}-{}-", ms.name_any()))?;
    let ordinal: i32 = rest.parse().ok()?;
    (data_claim_name(ms, ordinal) == claim).then_some(ordinal)
}
