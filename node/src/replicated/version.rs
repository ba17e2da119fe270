//! Versions and the rules between them, as etcd has them: each member runs a version, the cluster
//! runs the lowest version every member supports (decided by the leader and set through Raft),
//! a member never runs under a cluster version it does not know (no downgrade across a minor
//! version) nor two minor versions ahead of it (no skipped minor), and a new entry kind is
//! written only once the cluster version says every member can read it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A `major.minor.patch` version. Ordered by major, then minor, then patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// Major.
    pub major: u64,
    /// Minor.
    pub minor: u64,
    /// Patch.
    pub patch: u64,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// The same major and minor version, patch 0: what a cluster version is made of.
    pub fn minor_only(self) -> Self {
        Version::new(self.major, self.minor, 0)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// A version string that is not `major.minor.patch`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a version (major.minor.patch)")]
pub struct BadVersion(pub String);

impl FromStr for Version {
    type Err = BadVersion;

    /// Parses `major.minor.patch`, ignoring a leading `v` and a `-pre`/`+build` suffix.
    fn from_str(s: &str) -> Result<Self, BadVersion> {
        let bad = || BadVersion(s.to_string());
        let core = s.strip_prefix('v').unwrap_or(s);
        let core = core.split(['-', '+']).next().unwrap_or_default();
        let mut parts = core.split('.').map(|p| p.parse::<u64>().map_err(|_| bad()));
        let v = Version::new(
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
            parts.next().ok_or_else(bad)??,
        );
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(v)
    }
}

/// The cluster version of a cluster that never set one: the first release, which had no
/// cluster-version entry.
pub const FIRST: Version = Version::new(0, 1, 0);

/// The version this build says it is: `METASTORE_BUILD_VERSION` at build time (how the upgrade
/// tests build an older or newer member from one source), else the crate's version.
const BUILD_VERSION: &str = match option_env!("METASTORE_BUILD_VERSION") {
    Some(v) => v,
    None => env!("CARGO_PKG_VERSION"),
};

/// This member's version.
pub fn member_version() -> Version {
    // The build refuses versions that do not parse (a test below), so this never falls back in
    // a tested build.
    BUILD_VERSION.parse().unwrap_or(FIRST)
}

/// Why a member cannot run under a cluster version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The member is older than the cluster.
    #[error("the cluster runs version {cluster} and this member is {member}: a member cannot run under a newer cluster version (downgrades across minor versions are refused); run {cluster} or newer")]
    Downgrade {
        /// Cluster version.
        cluster: Version,
        /// This member's version.
        member: Version,
    },
    /// The member is more than one minor version ahead of the cluster.
    #[error("the cluster runs version {cluster} and this member is {member}: upgrades go one minor version at a time; upgrade every member to {next} first")]
    SkippedMinor {
        /// Cluster version.
        cluster: Version,
        /// This member's version.
        member: Version,
        /// The version to upgrade to first.
        next: Version,
    },
    /// Another major version.
    #[error(
        "the cluster runs version {cluster} and this member is {member}: major versions do not mix"
    )]
    Major {
        /// Cluster version.
        cluster: Version,
        /// This member's version.
        member: Version,
    },
}

/// Whether a member of version `member` may run in a cluster at version `cluster`.
pub fn check_compatible(cluster: Version, member: Version) -> Result<(), VersionError> {
    if member.major != cluster.major {
        return Err(VersionError::Major { cluster, member });
    }
    if member.minor < cluster.minor {
        return Err(VersionError::Downgrade { cluster, member });
    }
    if member.minor > cluster.minor + 1 {
        return Err(VersionError::SkippedMinor {
            cluster,
            member,
            next: Version::new(cluster.major, cluster.minor + 1, 0),
        });
    }
    Ok(())
}

/// The cluster version the leader should set, given the current one and the versions every
/// member reports (`None` for one that did not answer): the lowest member version (minor
/// precision), when it is higher than the current one. Nothing while any member is unknown: a
/// member that is down may be the old one.
pub fn next_cluster_version(current: Version, members: &[Option<Version>]) -> Option<Version> {
    let mut lowest: Option<Version> = None;
    for m in members {
        let m = (*m)?.minor_only();
        lowest = Some(lowest.map_or(m, |l| l.min(m)));
    }
    lowest.filter(|l| *l > current)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        s.parse().unwrap()
    }

    #[test]
    fn this_build_has_a_version() {
        assert_eq!(BUILD_VERSION.parse::<Version>(), Ok(member_version()));
    }

    #[test]
    fn parses_and_orders() {
        assert_eq!(v("0.2.1"), Version::new(0, 2, 1));
        assert_eq!(v("v1.2.3-rc.1"), Version::new(1, 2, 3));
        assert!(v("0.10.0") > v("0.9.9"));
        assert!(v("1.0.0") > v("0.99.0"));
        assert_eq!(v("0.2.7").to_string(), "0.2.7");
        for bad in ["", "1", "1.2", "1.2.x", "1.2.3.4", "a.b.c"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
    }

    #[test]
    fn one_minor_ahead_at_most_and_never_behind() {
        assert_eq!(check_compatible(v("0.1.0"), v("0.1.5")), Ok(()));
        assert_eq!(check_compatible(v("0.1.0"), v("0.2.0")), Ok(()));
        let e = check_compatible(v("0.1.0"), v("0.3.0")).unwrap_err();
        assert!(e
            .to_string()
            .contains("upgrade every member to 0.2.0 first"));
        let e = check_compatible(v("0.2.0"), v("0.1.9")).unwrap_err();
        assert!(matches!(e, VersionError::Downgrade { .. }), "{e}");
        assert!(e.to_string().contains("downgrades"));
        assert!(check_compatible(v("0.2.0"), v("1.2.0")).is_err());
    }

    #[test]
    fn the_cluster_version_rises_only_when_every_member_knows_it() {
        let cur = v("0.1.0");
        assert_eq!(
            next_cluster_version(cur, &[Some(v("0.2.1")), Some(v("0.2.0"))]),
            Some(v("0.2.0"))
        );
        // One member still old, or silent: no change.
        assert_eq!(
            next_cluster_version(cur, &[Some(v("0.2.0")), Some(v("0.1.3"))]),
            None
        );
        assert_eq!(next_cluster_version(cur, &[Some(v("0.2.0")), None]), None);
        // Never lowered.
        assert_eq!(next_cluster_version(v("0.2.0"), &[Some(v("0.1.0"))]), None);
        assert_eq!(next_cluster_version(cur, &[]), None);
    }
}
