//! Rules on the store settings that need the member's flags to check (the CRD's CEL rules say
//! the same to the API server): the quota fits the volume, and `extraArgs` never sets a flag the
//! operator sets.

use crate::builders::{managed_flags, quantity_bytes, quota_for_volume, volume_size};
use crate::crd::MetaStoreSpec;

/// Checks `spec.quotaBackendBytes` and `spec.extraArgs`; the message names the field.
pub fn validate(spec: &MetaStoreSpec) -> Result<(), String> {
    if let Some(q) = spec.quota_backend_bytes {
        let volume = quantity_bytes(&volume_size(spec)).unwrap_or(0);
        if q < 1 || q as u64 > quota_for_volume(volume) {
            return Err(format!(
                "spec.quotaBackendBytes ({q}) must be at most a quarter of spec.storage.size ({volume} bytes): a member's data dir holds about two snapshots and its log besides the data"
            ));
        }
    }
    let managed = managed_flags(spec);
    for a in &spec.extra_args {
        let flag = a.split('=').next().unwrap_or_default();
        if !flag.starts_with("--") || flag.len() < 3 {
            return Err(format!(
                "spec.extraArgs: {a:?} is not a flag (write --flag=value)"
            ));
        }
        if managed.iter().any(|m| m == flag) {
            return Err(format!(
                "spec.extraArgs: {flag} is set by the operator (use the MetaStore's fields)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn spec(replicas: i32) -> MetaStoreSpec {
        serde_json::from_value(serde_json::json!({ "replicas": replicas })).unwrap()
    }

    #[test]
    fn quota_within_the_volume_and_no_managed_flag_in_extra_args() {
        let mut s = spec(3);
        s.quota_backend_bytes = Some(512 << 20);
        assert!(validate(&s).unwrap_err().contains("quotaBackendBytes"));
        s.storage.size = Some(Quantity("4Gi".into()));
        assert_eq!(validate(&s), Ok(()));
        let mut s = spec(3);
        s.extra_args = vec!["--snapshot-count=5000".into(), "--max-txn-ops=256".into()];
        assert_eq!(validate(&s), Ok(()));
        s.extra_args.push("--data-dir=/tmp".into());
        assert!(validate(&s)
            .unwrap_err()
            .contains("--data-dir is set by the operator"));
        s.extra_args = vec!["snapshot-count".into()];
        assert!(validate(&s).unwrap_err().contains("not a flag"));
    }
}
