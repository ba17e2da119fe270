//! Growing `spec.storage.size`, pure: a StatefulSet's volume claim template cannot change, so the
//! operator asks each member's PersistentVolumeClaim for the new size itself (the StorageClass
//! must allow expansion; the API server refuses otherwise). The members' default quota follows
//! the size the volumes were given, not the size asked for, so a refused expansion never lets
//! a member's data outgrow its volume.

/// One member volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// PersistentVolumeClaim name.
    pub name: String,
    /// Bytes it requests.
    pub requested: Option<u64>,
    /// Bytes the volume has (its status).
    pub capacity: Option<u64>,
}

/// Claims that request less than `wanted`: those to expand.
pub fn to_expand(claims: &[Claim], wanted: u64) -> Vec<String> {
    claims
        .iter()
        .filter(|c| c.requested.is_some_and(|r| r < wanted))
        .map(|c| c.name.clone())
        .collect()
}

/// The volume size the members' flags assume: `wanted` once an expansion to it was accepted
/// (or before any volume exists), else the claim template's size, which every volume has.
pub fn effective_bytes(claims: &[Claim], wanted: u64, template: Option<u64>) -> u64 {
    match template {
        Some(t)
            if t < wanted
                && !claims
                    .iter()
                    .any(|c| c.requested.is_some_and(|r| r >= wanted)) =>
        {
            t
        }
        _ => wanted,
    }
}

/// The `StorageResized` condition: (true, reason, message).
pub fn condition(
    claims: &[Claim],
    wanted: u64,
    refused: Option<&str>,
) -> (bool, &'static str, String) {
    if let Some(why) = refused {
        return (
            false,
            "ExpansionRefused",
            format!(
                "the member volumes cannot grow to {wanted} bytes, so the members keep the quota of their current size: {why}"
            ),
        );
    }
    // A volume whose size is not reported (no provisioner fills it in) counts by its request.
    let done = claims
        .iter()
        .filter(|c| c.capacity.or(c.requested).is_some_and(|b| b >= wanted))
        .count();
    if done == claims.len() {
        (
            true,
            "AsRequested",
            format!("every member volume has {wanted} bytes or more"),
        )
    } else {
        (
            false,
            "Resizing",
            format!(
                "{done} of {} member volumes have grown to {wanted} bytes",
                claims.len()
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GI: u64 = 1 << 30;

    fn claim(name: &str, requested: u64, capacity: u64) -> Claim {
        Claim {
            name: name.into(),
            requested: Some(requested),
            capacity: Some(capacity),
        }
    }

    #[test]
    fn growing_volumes_and_the_size_the_members_assume() {
        let before = [claim("data-demo-0", GI, GI), claim("data-demo-1", GI, GI)];
        assert_eq!(to_expand(&before, 2 * GI), ["data-demo-0", "data-demo-1"]);
        // Not accepted yet (or refused): the members keep assuming the template's size.
        assert_eq!(effective_bytes(&before, 2 * GI, Some(GI)), GI);
        let (ok, reason, why) = condition(&before, 2 * GI, Some("storageclass does not allow"));
        assert!(!ok && reason == "ExpansionRefused" && why.contains("does not allow"));
        // Accepted: the new size counts, and a member added later (template size) is expanded.
        let during = [
            claim("data-demo-0", 2 * GI, GI),
            claim("data-demo-1", 2 * GI, 2 * GI),
            claim("data-demo-2", GI, GI),
        ];
        assert_eq!(effective_bytes(&during, 2 * GI, Some(GI)), 2 * GI);
        assert_eq!(to_expand(&during, 2 * GI), ["data-demo-2"]);
        let (ok, reason, why) = condition(&during, 2 * GI, None);
        assert!(
            !ok && reason == "Resizing" && why.starts_with("1 of 3"),
            "{why}"
        );
        let after = [claim("data-demo-0", 2 * GI, 2 * GI)];
        assert_eq!(condition(&after, 2 * GI, None).1, "AsRequested");
        let unreported = [Claim {
            capacity: None,
            ..claim("data-demo-0", GI, 0)
        }];
        assert_eq!(condition(&unreported, GI, None).1, "AsRequested");
        // No volume yet: the template is made with the size asked for.
        assert_eq!(effective_bytes(&[], 2 * GI, None), 2 * GI);
    }
}
