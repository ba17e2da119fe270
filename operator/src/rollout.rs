//! Quorum-aware rolling restarts (version upgrades and every other template change), pure: the
//! StatefulSet updates its pods `OnDelete`, and the operator restarts one member at a time —
//! never while a member on the old template is unhealthy, followers first (highest ordinal
//! first), each waited for until it is back, healthy and caught up; then leadership moves to an
//! updated member and the old leader restarts last. Version changes follow etcd's rules: no
//! downgrade across a minor version, no skipped minor version.

/// Most entries an updated member may trail the leader's commit index by and count as caught
/// up (writes go on during a roll).
pub const MAX_LAG: u64 = 1000;

/// One member as the roll sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollMember {
    /// Raft id.
    pub id: u64,
    /// Pod ordinal.
    pub ordinal: i32,
    /// Its name, for messages.
    pub name: String,
    /// Answers its Status call and knows a leader.
    pub healthy: bool,
    /// Applied index it reports.
    pub applied_index: u64,
    /// Its pod runs an older template than the StatefulSet's.
    pub outdated: bool,
}

/// What the roll does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RollStep {
    /// Restart a member on the new template (delete its pod).
    Restart {
        /// Member id.
        id: u64,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Move leadership to an updated member before restarting the leader.
    MoveLeader {
        /// The leader.
        from: u64,
        /// An updated, caught-up voter.
        to: u64,
    },
    /// A restarted member is not back yet.
    Wait(String),
    /// Unsafe or not allowed now.
    Refuse(String),
}

/// The next roll step, None when every member runs the current template (and the version
/// asked for is allowed). `members` are the
/// voters (a learner in flight is finished before any roll); `leader_commit` is the leader's
/// commit index.
pub fn next(
    members: &[RollMember],
    leader: Option<u64>,
    leader_commit: u64,
    versions: (Option<&str>, &str),
) -> Option<RollStep> {
    // A version the rules refuse is never put in the template, so no pod is outdated by it:
    // it is reported all the same.
    let (cluster, target) = versions;
    if let Some(why) = cluster.and_then(|c| version_change_refusal(c, target)) {
        return Some(RollStep::Refuse(why));
    }
    if !members.iter().any(|m| m.outdated) {
        return None;
    }
    if let Some(m) = members.iter().find(|m| m.outdated && !m.healthy) {
        return Some(RollStep::Refuse(format!(
            "cannot restart members on the new template (version {target}): member {} is \
             unhealthy, and restarting another one now could lose quorum; bring it back (or let \
             the operator replace it) and the roll goes on",
            m.name
        )));
    }
    let Some(leader) = leader else {
        return Some(RollStep::Wait("no leader".into()));
    };
    if let Some(m) = members
        .iter()
        .find(|m| !m.outdated && (!m.healthy || m.applied_index + MAX_LAG < leader_commit))
    {
        return Some(RollStep::Wait(format!(
            "member {} restarted on the new template and is catching up (applied {} of {})",
            m.name, m.applied_index, leader_commit
        )));
    }
    if let Some(f) = members
        .iter()
        .filter(|m| m.outdated && m.id != leader)
        .max_by_key(|m| m.ordinal)
    {
        return Some(RollStep::Restart {
            id: f.id,
            ordinal: f.ordinal,
        });
    }
    // Only the leader is left on the old template.
    let old = members.iter().find(|m| m.id == leader)?;
    match members
        .iter()
        .filter(|m| !m.outdated)
        .max_by_key(|m| (m.applied_index, std::cmp::Reverse(m.ordinal)))
    {
        Some(to) => Some(RollStep::MoveLeader {
            from: leader,
            to: to.id,
        }),
        // One member: nobody to hand over to.
        None => Some(RollStep::Restart {
            id: old.id,
            ordinal: old.ordinal,
        }),
    }
}

/// `(major, minor)` of a `major.minor.patch` tag (a leading `v` and a suffix allowed); None
/// for a tag that is not a version (a digest, `latest`): no rule is checked then.
fn major_minor(tag: &str) -> Option<(u64, u64)> {
    let core = tag.strip_prefix('v').unwrap_or(tag);
    let core = core.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    Some((major, minor))
}

/// Why moving a cluster at version `cluster` to image tag `target` is not allowed (the same
/// rules every member enforces at start): another major version, a lower minor version, or a
/// minor version more than one ahead.
pub fn version_change_refusal(cluster: &str, target: &str) -> Option<String> {
    let (c, t) = (major_minor(cluster)?, major_minor(target)?);
    if t.0 != c.0 {
        return Some(format!(
            "spec.version {target} is another major version than the cluster's {cluster}: not supported"
        ));
    }
    if t.1 < c.1 {
        return Some(format!(
            "spec.version {target} would downgrade the cluster from {cluster}: downgrades across minor versions are refused (members of {cluster} wrote entries {target} cannot read)"
        ));
    }
    if t.1 > c.1 + 1 {
        return Some(format!(
            "spec.version {target} skips a minor version: the cluster runs {cluster}; upgrade to {}.{}.x first",
            c.0,
            c.1 + 1
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ordinal: i32, outdated: bool) -> RollMember {
        RollMember {
            id: 100 + ordinal as u64,
            ordinal,
            name: format!("ms-{ordinal}"),
            healthy: true,
            applied_index: 500,
            outdated,
        }
    }

    const V: (Option<&str>, &str) = (Some("0.1.0"), "0.2.0");

    #[test]
    fn nothing_to_do_when_every_pod_is_current() {
        assert_eq!(next(&[m(0, false), m(1, false)], Some(100), 500, V), None);
    }

    #[test]
    fn followers_first_highest_ordinal_first_then_the_leader_after_handing_over() {
        let leader = Some(101);
        let mut ms = vec![m(0, true), m(1, true), m(2, true)];
        assert_eq!(
            next(&ms, leader, 500, V),
            Some(RollStep::Restart {
                id: 102,
                ordinal: 2
            })
        );
        // Member 2 restarted: not back yet, then behind, then caught up.
        ms[2].outdated = false;
        ms[2].healthy = false;
        assert!(matches!(next(&ms, leader, 500, V), Some(RollStep::Wait(_))));
        ms[2].healthy = true;
        ms[2].applied_index = 10;
        let w = next(&ms, leader, 5000, V);
        assert!(
            matches!(&w, Some(RollStep::Wait(why)) if why.contains("catching up")),
            "{w:?}"
        );
        ms[2].applied_index = 4990;
        assert_eq!(
            next(&ms, leader, 5000, V),
            Some(RollStep::Restart {
                id: 100,
                ordinal: 0
            })
        );
        ms[0].outdated = false;
        // Only the leader is old: leadership goes to the most caught-up updated member.
        ms[0].applied_index = 4999;
        assert_eq!(
            next(&ms, leader, 5000, V),
            Some(RollStep::MoveLeader { from: 101, to: 100 })
        );
        // Once it moved, the old leader is a follower and restarts.
        assert_eq!(
            next(&ms, Some(100), 5000, V),
            Some(RollStep::Restart {
                id: 101,
                ordinal: 1
            })
        );
    }

    #[test]
    fn a_single_member_restarts_in_place() {
        assert_eq!(
            next(&[m(0, true)], Some(100), 500, V),
            Some(RollStep::Restart {
                id: 100,
                ordinal: 0
            })
        );
    }

    #[test]
    fn refused_while_an_old_member_is_down_and_without_a_leader_waits() {
        let mut ms = vec![m(0, true), m(1, true), m(2, true)];
        ms[1].healthy = false;
        let r = next(&ms, Some(100), 500, V);
        assert!(
            matches!(&r, Some(RollStep::Refuse(why)) if why.contains("ms-1 is unhealthy")),
            "{r:?}"
        );
        let ms = vec![m(0, true), m(1, true)];
        assert!(matches!(next(&ms, None, 500, V), Some(RollStep::Wait(_))));
    }

    #[test]
    fn version_rules_as_the_members_enforce_them() {
        assert_eq!(version_change_refusal("0.1.0", "0.2.0"), None);
        assert_eq!(version_change_refusal("0.2.0", "0.2.5"), None);
        assert_eq!(version_change_refusal("0.2.0", "latest"), None);
        assert!(version_change_refusal("0.1.0", "0.3.0")
            .unwrap()
            .contains("upgrade to 0.2.x first"));
        assert!(version_change_refusal("0.2.0", "v0.1.9")
            .unwrap()
            .contains("downgrade"));
        assert!(version_change_refusal("0.2.0", "1.2.0")
            .unwrap()
            .contains("major"));
        for outdated in [true, false] {
            assert!(matches!(
                next(&[m(0, outdated)], Some(100), 1, (Some("0.1.0"), "0.3.0")),
                Some(RollStep::Refuse(_))
            ));
        }
    }
}
