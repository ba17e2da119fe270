//! The MetaStore's status as a pure function of what a reconcile observed and decided: members
//! and their roles, the phase, and the Available / Progressing / Degraded conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::builders;
use crate::crd::{MemberStatus, MetaStore, MetaStoreStatus, RecoveryStatus};
use crate::executor::ClusterView;
use crate::planner::Step;

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let since = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(k8s_openapi::jiff::Timestamp::now()));
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        last_transition_time: since,
        observed_generation: generation,
    }
}

/// What `replicas` voters tolerate: (odd, reason, message). An even count is allowed but
/// tolerates no more failures than one voter fewer, and needs one more member to agree.
pub fn fault_tolerance(replicas: i32) -> (bool, &'static str, String) {
    let n = replicas.max(1);
    let tolerates = n - builders::quorum(n);
    if n % 2 == 1 {
        (
            true,
            "OddVoters",
            format!("{n} voters tolerate {tolerates} failed member(s)"),
        )
    } else {
        (
            false,
            "EvenVoters",
            format!(
                "{n} voters tolerate {tolerates} failed member(s), no more than {} would, and every write waits for {} of them: use an odd count",
                n - 1,
                builders::quorum(n)
            ),
        )
    }
}

/// True when an even `replicas` is still to be warned about: the status does not yet say so
/// (FaultTolerant False) for this generation. Reconciles run often; the Warning event is sent
/// once per spec change, not every time.
pub fn even_voters_warning_due(ms: &MetaStore) -> bool {
    if ms.spec.replicas % 2 != 0 {
        return false;
    }
    let gen = ms.metadata.generation;
    !ms.status.as_ref().is_some_and(|st| {
        st.conditions.iter().any(|c| {
            c.type_ == "FaultTolerant" && c.status == "False" && c.observed_generation == gen
        })
    })
}

/// Builds the status from what was observed and decided. Pure.
pub fn build_status(
    ms: &MetaStore,
    view: &ClusterView,
    step: &Step,
    operation: Option<String>,
    held: Option<(&str, &str)>,
    policy_generation: u64,
    recovery: Option<RecoveryStatus>,
) -> MetaStoreStatus {
    let old = ms.status.clone().unwrap_or_default();
    let gen = ms.metadata.generation;
    let members: Vec<MemberStatus> = view
        .members
        .iter()
        .flatten()
        .map(|m| MemberStatus {
            id: format!("{:x}", m.member.id),
            name: m.member.name.clone(),
            role: if m.member.is_learner {
                "learner".into()
            } else if Some(m.member.id) == view.leader {
                "leader".into()
            } else {
                "follower".into()
            },
            healthy: m.member.healthy,
            applied_index: m.member.applied_index,
            version: m.version.clone(),
        })
        .collect();
    let voters = members.iter().filter(|m| m.role != "learner").count() as i32;
    let ready = members
        .iter()
        .filter(|m| m.role != "learner" && m.healthy)
        .count() as i32;
    let leader = members
        .iter()
        .find(|m| m.role == "leader")
        .map(|m| m.name.clone());
    let available = leader.is_some() && voters >= 1 && ready * 2 > voters;
    let steady = matches!(step, Step::Steady { .. });
    let refused = match step {
        Step::Refuse(why) => Some(("UnsafeChangeRefused", why.clone())),
        s => s
            .awaiting_opt_in()
            .map(|(reason, why)| (reason, why.to_string())),
    };
    let degraded = held
        .map(|(reason, why)| (reason, why.to_string()))
        .or(refused);
    let phase = if ms.spec.paused {
        "Paused"
    } else if degraded.is_some() {
        "Degraded"
    } else if view.members.is_none() {
        "Creating"
    } else if !steady {
        "Scaling"
    } else {
        "Running"
    };
    let progress_msg = match (&operation, step) {
        (Some(op), _) => op.clone(),
        (None, Step::Steady { voters }) => format!("{voters} voters, as requested"),
        (None, s) => format!("{s:?}"),
    };
    let conditions = vec![
        condition(
            "Available",
            available,
            if available {
                "QuorumHealthy"
            } else {
                "NoQuorum"
            },
            format!(
                "{ready} of {voters} voters healthy; leader {}",
                leader.clone().unwrap_or_else(|| "none".into())
            ),
            gen,
            &old.conditions,
        ),
        condition(
            "Progressing",
            !steady && degraded.is_none(),
            if steady { "Steady" } else { "MembershipChange" },
            progress_msg,
            gen,
            &old.conditions,
        ),
        condition(
            "Degraded",
            degraded.is_some(),
            degraded.as_ref().map_or("AsExpected", |(reason, _)| reason),
            degraded.clone().map(|(_, why)| why).unwrap_or_default(),
            gen,
            &old.conditions,
        ),
    ];
    let mut conditions = conditions;
    let (odd, reason, why) = fault_tolerance(ms.spec.replicas);
    conditions.push(condition(
        "FaultTolerant",
        odd,
        reason,
        why,
        gen,
        &old.conditions,
    ));
    MetaStoreStatus {
        observed_generation: gen,
        replicas: voters,
        ready_replicas: ready,
        selector: Some(builders::selector_string(ms)),
        // A recovery from a backup makes a new cluster: the lost one's id is not carried over.
        cluster_id: view
            .cluster_id
            .map(|c| format!("{c:x}"))
            .or(old.cluster_id.filter(|_| recovery.is_none())),
        members,
        leader,
        current_operation: if steady {
            None
        } else {
            operation.or_else(|| Some(format!("{step:?}")))
        },
        phase: Some(phase.into()),
        policy_generation,
        conditions,
        version: view.cluster_version.clone().or(old.version),
        recovery,
    }
}

/// Where a roll onto the StatefulSet's template stands.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    /// Member pods on an older template.
    pub outdated: usize,
    /// Member pods.
    pub pods: usize,
    /// The version the spec asks for.
    pub target: String,
}

/// Adds the `MetaStoreUpgrading` condition: True while member pods run an older template (a
/// version change or any other), with how far the roll got; the phase says `Upgrading` then,
/// unless the roll is refused (`Degraded`).
pub fn with_rollout(mut status: MetaStoreStatus, ms: &MetaStore, r: &Rollout) -> MetaStoreStatus {
    let old = ms.status.clone().unwrap_or_default();
    let rolling = r.outdated > 0;
    let (reason, message) = if rolling {
        (
            "RollingRestart",
            format!(
                "{} of {} member pods run the current template (version {}; cluster version {}); members restart one at a time, followers first",
                r.pods - r.outdated.min(r.pods),
                r.pods,
                r.target,
                status.version.as_deref().unwrap_or("unknown")
            ),
        )
    } else {
        (
            "UpToDate",
            format!(
                "every member pod runs the current template (version {})",
                r.target
            ),
        )
    };
    status.conditions.push(condition(
        "MetaStoreUpgrading",
        rolling,
        reason,
        message,
        ms.metadata.generation,
        &old.conditions,
    ));
    if rolling
        && status.phase.as_deref() != Some("Degraded")
        && status.phase.as_deref() != Some("Paused")
    {
        status.phase = Some("Upgrading".into());
    }
    status
}

/// Adds the `AuthEnabled` condition for a cluster with `spec.auth`: whether authentication is
/// on, as the last look at the cluster found (unknown looks keep the old condition).
pub fn with_auth(
    mut status: MetaStoreStatus,
    ms: &MetaStore,
    auth: Option<&Result<crate::executor::AuthSync, String>>,
) -> MetaStoreStatus {
    use crate::executor::AuthSync;
    let old = ms.status.clone().unwrap_or_default();
    let Some(spec) = ms.spec.auth.as_ref() else {
        return status;
    };
    let secret = crate::auth_secret::secret_name(ms).unwrap_or_default();
    let (on, reason, message) = match auth {
        Some(Ok(AuthSync::Enabled { .. })) => (
            true,
            "Enabled",
            format!("clients need a user; the operator acts as root (password in Secret {secret})"),
        ),
        Some(Ok(AuthSync::Disabled { .. })) => (
            false,
            "Disabled",
            "authentication is off (spec.auth.enabled is false)".to_string(),
        ),
        Some(Err(e)) => (
            false,
            if spec.enabled {
                "Enabling"
            } else {
                "Disabling"
            },
            format!("not yet as spec.auth asks: {e}"),
        ),
        None => match old.conditions.iter().find(|c| c.type_ == "AuthEnabled") {
            Some(c) => {
                status.conditions.push(c.clone());
                return status;
            }
            None => (
                false,
                "Pending",
                "waiting for a healthy cluster".to_string(),
            ),
        },
    };
    status.conditions.push(condition(
        "AuthEnabled",
        on,
        reason,
        message,
        ms.metadata.generation,
        &old.conditions,
    ));
    status
}

/// Adds the `StorageResized` condition: whether every member volume has `spec.storage.size`,
/// is growing to it, or cannot (see [`crate::volume_expansion`]).
pub fn with_storage(
    mut status: MetaStoreStatus,
    ms: &MetaStore,
    claims: &[crate::volume_expansion::Claim],
    refused: Option<&str>,
) -> MetaStoreStatus {
    let Some(wanted) = builders::quantity_bytes(&builders::volume_size(&ms.spec)) else {
        return status;
    };
    let old = ms.status.clone().unwrap_or_default();
    let (ok, reason, message) = crate::volume_expansion::condition(claims, wanted, refused);
    status.conditions.push(condition(
        "StorageResized",
        ok,
        reason,
        message,
        ms.metadata.generation,
        &old.conditions,
    ));
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::MemberView;

    #[test]
    fn a_roll_shows_in_a_condition_and_the_phase() {
        let m = ms();
        let st = MetaStoreStatus {
            phase: Some("Running".into()),
            version: Some("0.1.0".into()),
            ..Default::default()
        };
        let r = Rollout {
            outdated: 2,
            pods: 3,
            target: "0.2.0".into(),
        };
        let s = with_rollout(st.clone(), &m, &r);
        let c = s
            .conditions
            .iter()
            .find(|c| c.type_ == "MetaStoreUpgrading")
            .unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", "RollingRestart")
        );
        assert!(c.message.starts_with("1 of 3 member pods"), "{}", c.message);
        assert_eq!(s.phase.as_deref(), Some("Upgrading"));
        let degraded = MetaStoreStatus {
            phase: Some("Degraded".into()),
            ..st.clone()
        };
        assert_eq!(
            with_rollout(degraded, &m, &r).phase.as_deref(),
            Some("Degraded")
        );
        let done = with_rollout(st, &m, &Rollout { outdated: 0, ..r });
        assert_eq!(done.phase.as_deref(), Some("Running"));
        assert_eq!(done.conditions[0].status, "False");
    }
    use crate::planner::ObservedMember;
    use crate::testing::demo as ms;

    #[test]
    fn an_even_count_is_warned_about_once_per_generation() {
        let mut m = ms();
        m.spec.replicas = 4;
        m.metadata.generation = Some(2);
        assert!(even_voters_warning_due(&m), "not reported yet");
        let (odd, reason, why) = fault_tolerance(4);
        let reported = condition("FaultTolerant", odd, reason, why, Some(2), &[]);
        m.status = Some(MetaStoreStatus {
            conditions: vec![reported.clone()],
            ..Default::default()
        });
        assert!(!even_voters_warning_due(&m), "reported for this generation");
        m.metadata.generation = Some(3);
        assert!(
            even_voters_warning_due(&m),
            "a new spec is warned about again"
        );
        m.spec.replicas = 3;
        assert!(!even_voters_warning_due(&m), "odd counts never");
    }

    fn member(id: u64, learner: bool, healthy: bool) -> MemberView {
        MemberView {
            member: ObservedMember {
                id,
                ordinal: Some(id as i32),
                name: format!("demo-{id}"),
                is_learner: learner,
                healthy,
                answered: true,
                commit_index: 10,
                applied_index: 10,
            },
            client_url: None,
            leader: 0,
            version: Some("0.2.0".into()),
        }
    }

    #[test]
    fn status_reports_members_roles_and_conditions() {
        let m = ms();
        let view = ClusterView {
            members: Some(vec![
                member(0, false, true),
                member(1, false, true),
                member(2, true, false),
            ]),
            leader: Some(1),
            cluster_id: Some(0xabc),
            cluster_version: Some("0.2.0".into()),
        };
        let s = build_status(
            &m,
            &view,
            &Step::Promote {
                id: 2,
                voters_after: 3,
            },
            Some("promoting".into()),
            None,
            7,
            None,
        );
        assert_eq!((s.replicas, s.ready_replicas), (2, 2));
        assert_eq!(s.leader.as_deref(), Some("demo-1"));
        assert_eq!(s.members[2].role, "learner");
        assert_eq!(s.cluster_id.as_deref(), Some("abc"));
        assert_eq!(s.version.as_deref(), Some("0.2.0"));
        assert_eq!(s.members[0].version.as_deref(), Some("0.2.0"));
        assert_eq!(s.phase.as_deref(), Some("Scaling"));
        assert_eq!(s.observed_generation, Some(4));
        assert_eq!(s.policy_generation, 7);
        let cond = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t)
                .unwrap()
                .status
                .clone()
        };
        assert_eq!(cond("Available"), "True");
        assert_eq!(cond("Progressing"), "True");
        assert_eq!(cond("Degraded"), "False");

        let steady = build_status(&m, &view, &Step::Steady { voters: 2 }, None, None, 7, None);
        assert_eq!(steady.phase.as_deref(), Some("Running"));
        assert!(steady.current_operation.is_none());

        let refused = build_status(
            &m,
            &view,
            &Step::Refuse("member demo-0 is unhealthy".into()),
            None,
            None,
            7,
            None,
        );
        assert_eq!(refused.phase.as_deref(), Some("Degraded"));
        let d = refused
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str()),
            ("True", "UnsafeChangeRefused")
        );
        assert!(d.message.contains("unhealthy"));

        let no_quorum = ClusterView {
            members: Some(vec![
                member(0, false, true),
                member(1, false, false),
                member(2, false, false),
            ]),
            leader: None,
            cluster_id: None,
            cluster_version: None,
        };
        let s = build_status(
            &m,
            &no_quorum,
            &Step::Wait("no leader".into()),
            None,
            None,
            0,
            None,
        );
        let a = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Available")
            .unwrap();
        assert_eq!(
            (a.status.as_str(), a.reason.as_str()),
            ("False", "NoQuorum")
        );

        let invalid = build_status(
            &m,
            &ClusterView::default(),
            &Step::Wait("x".into()),
            None,
            Some(("InvalidSpec", "spec.replicas bad")),
            0,
            None,
        );
        let d = invalid
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(d.reason, "InvalidSpec");
    }

    #[test]
    fn even_voter_counts_are_explained() {
        assert!(fault_tolerance(3).0);
        assert_eq!(fault_tolerance(1).2, "1 voters tolerate 0 failed member(s)");
        let (odd, reason, why) = fault_tolerance(4);
        assert!(!odd && reason == "EvenVoters");
        assert!(
            why.contains("4 voters tolerate 1 failed member(s), no more than 3 would"),
            "{why}"
        );
        assert!(why.contains("waits for 3 of them"), "{why}");
    }

    #[test]
    fn a_recovery_from_a_backup_drops_the_lost_cluster_id_until_the_new_one_answers() {
        let mut m = ms();
        m.status = Some(MetaStoreStatus {
            cluster_id: Some("abc".into()),
            ..Default::default()
        });
        let recovery = RecoveryStatus {
            backup: "nightly".into(),
            url: "s3://b/k.db".into(),
            endpoint: None,
            region: None,
            credentials_secret: Some("c".into()),
            pvc: None,
            cluster_token: "t".into(),
            started: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
        };
        let wait = Step::Wait("x".into());
        let s = build_status(
            &m,
            &ClusterView::default(),
            &wait,
            None,
            None,
            0,
            Some(recovery.clone()),
        );
        assert_eq!((s.cluster_id, s.recovery), (None, Some(recovery)));
        let s = build_status(&m, &ClusterView::default(), &wait, None, None, 0, None);
        assert_eq!(s.cluster_id.as_deref(), Some("abc"));
        let lost = build_status(
            &m,
            &ClusterView::default(),
            &Step::NoMemberAnswers("gone".into()),
            None,
            None,
            0,
            None,
        );
        let d = lost
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .unwrap();
        assert_eq!(
            (d.status.as_str(), d.reason.as_str(), d.message.as_str()),
            ("True", crate::planner::NO_MEMBER_ANSWERS, "gone")
        );
    }
}
