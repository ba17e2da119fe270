//! The membership planner: from what is observed (the cluster's Raft members, the StatefulSet,
//! the spec) to the one next step. Pure, so every situation — including an operator crash after
//! any step — is a table-driven test. Members map to pod ordinals through their peer URLs.
//!
//! Scale-up, one member at a time: add learner (ordinal k) → StatefulSet to k+1 → wait until the
//! pod runs → promote. Scale-down: move leadership off the newest member if it leads → remove it
//! → StatefulSet to k. Each step is safe to repeat and safe to resume from.

use std::time::Duration;

use crate::rollout::{self, RollMember, RollStep};

/// A member as the cluster reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedMember {
    /// Raft id.
    pub id: u64,
    /// Pod ordinal, from the peer URL (None: not a pod of this StatefulSet).
    pub ordinal: Option<i32>,
    /// Name (empty until the member has started).
    pub name: String,
    /// Non-voting learner.
    pub is_learner: bool,
    /// Answered its Status call and knows a leader.
    pub healthy: bool,
    /// Answered its Status call (with or without a leader).
    pub answered: bool,
    /// Commit index it reported (0 if it did not answer).
    pub commit_index: u64,
    /// Applied index it reported (0 if it did not answer).
    pub applied_index: u64,
}

/// Everything the planner looks at.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    /// Desired voters.
    pub spec_replicas: i32,
    /// Replicas of the StatefulSet (0 when it does not exist yet).
    pub sts_replicas: i32,
    /// Members, or None when no member answered.
    pub members: Option<Vec<ObservedMember>>,
    /// Current leader's id, if known.
    pub leader: Option<u64>,
    /// The user opted in to disaster recovery (`metastore.io/recover`).
    pub recover: bool,
    /// The Degraded reason the status showed before this look: an opt-in acts only on the
    /// recovery plan the user was shown ([`QUORUM_LOST`] or [`NO_MEMBER_ANSWERS`]).
    pub reported: Option<String>,
    /// The cluster has existed (its id is known), so a silent cluster is down, not starting.
    pub bootstrapped: bool,
    /// How long the cluster has been without quorum (zero while it has one).
    pub unavailable_for: Duration,
    /// The newest successful backup of this cluster, as the user would name it.
    pub latest_backup: Option<String>,
    /// A restore from a backup replaces the cluster, and the old cluster's StatefulSet or
    /// volumes are still there.
    pub old_cluster_left: bool,
    /// Ordinals whose pod reports that its member's data is gone (the member started once and
    /// its data dir is now empty, so it cannot rejoin as itself).
    pub data_lost: Vec<i32>,
    /// Ordinals whose pod runs an older template than the StatefulSet's (it updates pods
    /// `OnDelete`: the operator restarts them, one at a time).
    pub outdated: Vec<i32>,
    /// The cluster version the members report.
    pub cluster_version: Option<String>,
    /// The version (image tag) the spec asks for.
    pub target_version: String,
}

/// Degraded reason while quorum is lost and a voter survives.
pub const QUORUM_LOST: &str = "QuorumLost";
/// Degraded reason while no member of an existing cluster answers.
pub const NO_MEMBER_ANSWERS: &str = "NoMemberAnswers";
/// How long an existing cluster stays silent before the operator offers to restore it: a
/// cluster restarting (a large store replays its log) is not reported as lost.
pub const SILENCE_BEFORE_RESTORE_PLAN: Duration = Duration::from_secs(30);

/// The next step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Create the StatefulSet with one member, which bootstraps the cluster.
    Bootstrap,
    /// Set the StatefulSet's replicas.
    ScaleStatefulSet {
        /// New replicas.
        replicas: i32,
        /// Why.
        reason: String,
    },
    /// MemberAdd as a learner, with the peer URL of pod `ordinal`.
    AddLearner {
        /// Pod ordinal.
        ordinal: i32,
    },
    /// MemberPromote (after pushing the new expected voter count).
    Promote {
        /// Member id.
        id: u64,
        /// Voters after it.
        voters_after: usize,
    },
    /// MoveLeader before removing the leader's member.
    MoveLeader {
        /// Current leader.
        from: u64,
        /// New leader.
        to: u64,
    },
    /// MemberRemove (after pushing the new expected voter count).
    RemoveMember {
        /// Member id.
        id: u64,
        /// Voters after it.
        voters_after: usize,
    },
    /// Something is under way; look again soon.
    Wait(String),
    /// The requested change is unsafe now, or impossible; report Degraded and do nothing.
    Refuse(String),
    /// Quorum is lost: what recovery would do, waiting for the user's opt-in.
    QuorumLost(String),
    /// Opted in: restart the most up-to-date surviving voter as a one-voter cluster (it keeps
    /// every entry of its log); the cluster then grows back through learners.
    ForceNewCluster {
        /// The survivor's member id.
        id: u64,
        /// Its pod ordinal.
        ordinal: i32,
    },
    /// No member of an existing cluster answers: what restoring the latest backup would do,
    /// waiting for the user's opt-in.
    NoMemberAnswers(String),
    /// Opted in: replace the lost cluster with one restored from the latest backup — delete
    /// the StatefulSet and every member's volume, then bootstrap from the backup.
    RestoreLatestBackup,
    /// MemberRemove of a member whose data is gone (the others keep a quorum); the scale-up
    /// path then adds it back at its ordinal with an empty volume.
    ReplaceLostMember {
        /// Member id.
        id: u64,
        /// Its pod ordinal.
        ordinal: i32,
        /// Voters after it.
        voters_after: usize,
    },
    /// Restart a member on the StatefulSet's current template (delete its pod), one at a time.
    RestartMember {
        /// Member id.
        id: u64,
        /// Pod ordinal.
        ordinal: i32,
    },
    /// Nothing to do: `voters` voters, all as asked.
    Steady {
        /// Voters.
        voters: usize,
    },
}

impl Step {
    /// A recovery plan waiting for the user's opt-in: its Degraded (and Event) reason and
    /// message.
    pub fn awaiting_opt_in(&self) -> Option<(&'static str, &str)> {
        match self {
            Step::QuorumLost(why) => Some((QUORUM_LOST, why)),
            Step::NoMemberAnswers(why) => Some((NO_MEMBER_ANSWERS, why)),
            _ => None,
        }
    }
}

/// Decides the next step.
pub fn plan(o: &Observed) -> Step {
    if o.spec_replicas < 1 {
        return Step::Refuse(format!(
            "spec.replicas is {}: a MetaStore keeps at least one member (delete the resource to remove the cluster)",
            o.spec_replicas
        ));
    }
    if o.old_cluster_left {
        return Step::RestoreLatestBackup;
    }
    if o.sts_replicas == 0 {
        return Step::Bootstrap;
    }
    let Some(members) = &o.members else {
        return no_member_answers(o)
            .unwrap_or_else(|| Step::Wait("waiting for the cluster to answer".into()));
    };
    if let Some(m) = members.iter().find(|m| m.ordinal.is_none()) {
        return Step::Refuse(format!(
            "member {:x} ({}) is not one of this StatefulSet's pods; remove it by hand (etcdctl member remove {:x})",
            m.id, m.name, m.id
        ));
    }
    if let Some(step) = lost_quorum(o, members) {
        return step;
    }
    if let Some(step) = replace_lost_member(o, members) {
        return step;
    }
    let ord = |m: &ObservedMember| m.ordinal.unwrap_or(0);
    let max_ord = members.iter().map(ord).max().unwrap_or(0);
    let mut voters: Vec<&ObservedMember> = members.iter().filter(|m| !m.is_learner).collect();
    voters.sort_by_key(|m| ord(m));
    let n = voters.len();
    let want = o.spec_replicas as usize;

    // A member was removed but its pod still runs (or the operator stopped right after removing).
    if o.sts_replicas > max_ord + 1 {
        return Step::ScaleStatefulSet {
            replicas: max_ord + 1,
            reason: format!("member {} was removed", o.sts_replicas - 1),
        };
    }

    // Pods on an older template restart first: a learner's pod started meanwhile would take
    // the old one (after bootstrap, the founding flags).
    if let Some(step) = roll(o, members, &voters) {
        return step;
    }

    // A learner in flight: finish (or undo) the scale-up it belongs to.
    if let Some(l) = members.iter().find(|m| m.is_learner) {
        if want <= n {
            return Step::RemoveMember {
                id: l.id,
                voters_after: n,
            };
        }
        if o.sts_replicas < ord(l) + 1 {
            return Step::ScaleStatefulSet {
                replicas: ord(l) + 1,
                reason: format!("start learner {}", ord(l)),
            };
        }
        if !l.healthy || l.name.is_empty() {
            return Step::Wait(format!("learner {} is starting", ord(l)));
        }
        return Step::Promote {
            id: l.id,
            voters_after: n + 1,
        };
    }

    let unhealthy: Vec<&ObservedMember> = voters.iter().copied().filter(|m| !m.healthy).collect();
    if want > n {
        if let Some(u) = unhealthy.first() {
            return Step::Refuse(format!(
                "cannot scale up to {want}: member {} is unhealthy; adding a member now would put quorum at risk",
                display(u)
            ));
        }
        if o.leader.is_none() {
            return Step::Wait("no leader".into());
        }
        // The lowest free ordinal: after a recovery from a survivor above 0, the ordinals below
        // it are filled first.
        let ordinal = (0..).find(|k| !members.iter().any(|m| ord(m) == *k));
        return Step::AddLearner {
            ordinal: ordinal.unwrap_or(max_ord + 1),
        };
    }
    if want < n {
        let Some(target) = voters.last() else {
            return Step::Wait("no voters reported".into());
        };
        if let Some(u) = unhealthy.iter().find(|u| u.id != target.id) {
            return Step::Refuse(format!(
                "cannot scale down to {want}: member {} is unhealthy; removing {} now would put quorum at risk",
                display(u),
                display(target)
            ));
        }
        let Some(leader) = o.leader else {
            return Step::Wait("no leader".into());
        };
        if leader == target.id {
            let Some(to) = voters.iter().find(|m| m.id != target.id && m.healthy) else {
                return Step::Wait("no healthy member to move leadership to".into());
            };
            return Step::MoveLeader {
                from: target.id,
                to: to.id,
            };
        }
        return Step::RemoveMember {
            id: target.id,
            voters_after: n - 1,
        };
    }
    if o.sts_replicas < max_ord + 1 {
        return Step::ScaleStatefulSet {
            replicas: max_ord + 1,
            reason: "every member needs its pod".into(),
        };
    }
    Step::Steady { voters: n }
}

/// Pods on an older template are restarted one at a time (see [`crate::rollout`]), before
/// any scaling: new members then start on the current template too.
fn roll(o: &Observed, members: &[ObservedMember], voters: &[&ObservedMember]) -> Option<Step> {
    let roll_members: Vec<RollMember> = voters
        .iter()
        .filter_map(|m| {
            let ordinal = m.ordinal?;
            Some(RollMember {
                id: m.id,
                ordinal,
                name: display(m),
                healthy: m.healthy,
                applied_index: m.applied_index,
                outdated: o.outdated.contains(&ordinal),
            })
        })
        .collect();
    let leader_commit = o
        .leader
        .and_then(|l| members.iter().find(|m| m.id == l))
        .map_or(0, |m| m.commit_index);
    let versions = (o.cluster_version.as_deref(), o.target_version.as_str());
    Some(
        match rollout::next(&roll_members, o.leader, leader_commit, versions)? {
            RollStep::Restart { id, ordinal } => Step::RestartMember { id, ordinal },
            RollStep::MoveLeader { from, to } => Step::MoveLeader { from, to },
            RollStep::Wait(why) => Step::Wait(why),
            RollStep::Refuse(why) => Step::Refuse(why),
        },
    )
}

/// Quorum lost for good looks like this: no leader, and fewer voters answering than a quorum.
/// The plan names the most up-to-date surviving voter (highest commit index, then lowest
/// ordinal); it is carried out only with the user's opt-in.
fn lost_quorum(o: &Observed, members: &[ObservedMember]) -> Option<Step> {
    let voters: Vec<&ObservedMember> = members.iter().filter(|m| !m.is_learner).collect();
    let answering: Vec<&ObservedMember> = voters.iter().copied().filter(|m| m.answered).collect();
    if o.leader.is_some() || voters.is_empty() || answering.len() * 2 > voters.len() {
        return None;
    }
    let Some(survivor) = answering
        .iter()
        .max_by_key(|m| (m.commit_index, std::cmp::Reverse(m.ordinal)))
    else {
        return Some(Step::Wait("no voter answers".into()));
    };
    let ordinal = survivor.ordinal?;
    if o.recover && o.reported.as_deref() == Some(QUORUM_LOST) {
        return Some(Step::ForceNewCluster {
            id: survivor.id,
            ordinal,
        });
    }
    let names =
        |ms: &[&ObservedMember]| ms.iter().map(|m| display(m)).collect::<Vec<_>>().join(", ");
    let silent: Vec<&ObservedMember> = voters.iter().copied().filter(|m| !m.answered).collect();
    Some(Step::QuorumLost(format!(
        "quorum lost: {} of {} voters answer ({}), {} do not. If their volumes are gone for good, \
         annotate the MetaStore with metastore.io/recover=true: the operator restarts {} (commit \
         index {}, the most up-to-date survivor) as a one-member cluster with --force-new-cluster \
         and grows it back to {} members. Writes only the lost members held are lost.",
        answering.len(),
        voters.len(),
        names(&answering),
        names(&silent),
        display(survivor),
        survivor.commit_index,
        o.spec_replicas
    )))
}

/// A started member whose pod says its data is gone cannot rejoin as itself (its votes are
/// lost). While the others keep a quorum without it, it is removed, one member at a time; the
/// scale-up path then re-adds its ordinal as a learner on a new, empty volume.
fn replace_lost_member(o: &Observed, members: &[ObservedMember]) -> Option<Step> {
    let lost = members.iter().find(|m| {
        !m.answered && !m.name.is_empty() && m.ordinal.is_some_and(|k| o.data_lost.contains(&k))
    })?;
    let ordinal = lost.ordinal?;
    let voters: Vec<&ObservedMember> = members.iter().filter(|m| !m.is_learner).collect();
    if lost.is_learner {
        return Some(Step::ReplaceLostMember {
            id: lost.id,
            ordinal,
            voters_after: voters.len(),
        });
    }
    let after = voters.len() - 1;
    let healthy_others = voters
        .iter()
        .filter(|m| m.id != lost.id && m.healthy)
        .count();
    if o.leader.is_none() || after == 0 || healthy_others * 2 <= after {
        return Some(Step::Refuse(format!(
            "member {} lost its data, but only {healthy_others} other voters are healthy: it is \
             replaced once the other {after} voters are healthy (removing it now could lose quorum)",
            display(lost)
        )));
    }
    Some(Step::ReplaceLostMember {
        id: lost.id,
        ordinal,
        voters_after: after,
    })
}

/// An existing cluster silent for [`SILENCE_BEFORE_RESTORE_PLAN`]: every member down, or every
/// volume gone. The plan restores the latest backup; it is carried out only with the user's
/// opt-in, given after this plan was shown.
fn no_member_answers(o: &Observed) -> Option<Step> {
    if !o.bootstrapped || o.unavailable_for < SILENCE_BEFORE_RESTORE_PLAN {
        return None;
    }
    let silent = format!(
        "no member has answered for {} s",
        o.unavailable_for.as_secs()
    );
    let Some(backup) = &o.latest_backup else {
        return Some(Step::NoMemberAnswers(format!(
            "{silent}, and this cluster has no successful backup to restore. If the members' \
             volumes are gone for good, the data is lost: delete the MetaStore and create it \
             again, or restore one from a backup made elsewhere (spec.bootstrap.restore)."
        )));
    };
    if o.recover && o.reported.as_deref() == Some(NO_MEMBER_ANSWERS) {
        return Some(Step::RestoreLatestBackup);
    }
    Some(Step::NoMemberAnswers(format!(
        "{silent}. If every member's volume is gone for good, annotate the MetaStore with \
         metastore.io/recover=true: the operator deletes the StatefulSet and every member's \
         volume, restores {backup} into a new one-member cluster and grows it back to {} \
         members. Writes after that backup are lost.",
        o.spec_replicas
    )))
}

fn display(m: &ObservedMember) -> String {
    if m.name.is_empty() {
        format!("{:x}", m.id)
    } else {
        m.name.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Member `ordinal` with id 100+ordinal.
    fn voter(ordinal: i32) -> ObservedMember {
        ObservedMember {
            id: 100 + ordinal as u64,
            ordinal: Some(ordinal),
            name: format!("ms-{ordinal}"),
            is_learner: false,
            healthy: true,
            answered: true,
            commit_index: 50,
            applied_index: 50,
        }
    }

    fn learner(ordinal: i32, started: bool) -> ObservedMember {
        ObservedMember {
            is_learner: true,
            name: if started {
                format!("ms-{ordinal}")
            } else {
                String::new()
            },
            healthy: started,
            ..voter(ordinal)
        }
    }

    fn obs(spec: i32, sts: i32, members: Vec<ObservedMember>, leader: u64) -> Observed {
        Observed {
            spec_replicas: spec,
            sts_replicas: sts,
            members: Some(members),
            leader: (leader != 0).then_some(leader),
            bootstrapped: true,
            ..Default::default()
        }
    }

    #[test]
    fn pods_on_an_old_template_restart_one_at_a_time_before_any_scaling() {
        let rolling = |spec: i32, outdated: Vec<i32>| Observed {
            outdated,
            cluster_version: Some("0.1.0".into()),
            target_version: "0.2.0".into(),
            ..obs(spec, 3, vec![voter(0), voter(1), voter(2)], 100)
        };
        // Followers first, highest ordinal first, even with a scale-up asked for.
        for spec in [3, 5] {
            assert_eq!(
                plan(&rolling(spec, vec![0, 1, 2])),
                Step::RestartMember {
                    id: 102,
                    ordinal: 2
                }
            );
        }
        // The leader last, after handing over.
        assert_eq!(
            plan(&rolling(3, vec![0])),
            Step::MoveLeader { from: 100, to: 101 }
        );
        let mut down = rolling(3, vec![0, 1, 2]);
        if let Some(ms) = down.members.as_mut() {
            ms[1].healthy = false;
        }
        assert!(matches!(plan(&down), Step::Refuse(why) if why.contains("ms-1 is unhealthy")));
        let skip = Observed {
            target_version: "0.3.0".into(),
            ..rolling(3, vec![2])
        };
        assert!(matches!(plan(&skip), Step::Refuse(why) if why.contains("skips a minor")));
        assert_eq!(plan(&rolling(3, vec![])), Step::Steady { voters: 3 });
        // A learner added as the template changed waits for the roll.
        let o = Observed {
            outdated: vec![0],
            ..obs(3, 1, vec![voter(0), learner(1, false)], 100)
        };
        assert_eq!(
            plan(&o),
            Step::RestartMember {
                id: 100,
                ordinal: 0
            }
        );
    }

    /// Opted in after being shown the plan `reported`.
    fn opted_in(o: Observed, reported: &str) -> Observed {
        Observed {
            recover: true,
            reported: Some(reported.into()),
            ..o
        }
    }

    fn voters(n: i32) -> Vec<ObservedMember> {
        (0..n).map(voter).collect()
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, Observed, Step)> = vec![
            (
                "new resource: bootstrap one member",
                Observed {
                    spec_replicas: 3,
                    ..Default::default()
                },
                Step::Bootstrap,
            ),
            (
                "pods starting, nobody answers yet",
                Observed {
                    spec_replicas: 1,
                    sts_replicas: 1,
                    members: None,
                    leader: None,
                    ..Default::default()
                },
                Step::Wait("waiting for the cluster to answer".into()),
            ),
            ("steady at 1", obs(1, 1, voters(1), 100), Step::Steady { voters: 1 }),
            // 1 → 3
            ("1→3: add learner 1", obs(3, 1, voters(1), 100), Step::AddLearner { ordinal: 1 }),
            (
                "crash after add: learner added, pod not created",
                obs(3, 1, [voters(1), vec![learner(1, false)]].concat(), 100),
                Step::ScaleStatefulSet { replicas: 2, reason: "start learner 1".into() },
            ),
            (
                "pod created, not started yet",
                obs(3, 2, [voters(1), vec![learner(1, false)]].concat(), 100),
                Step::Wait("learner 1 is starting".into()),
            ),
            (
                "crash after start: pod running, not promoted",
                obs(3, 2, [voters(1), vec![learner(1, true)]].concat(), 100),
                Step::Promote { id: 101, voters_after: 2 },
            ),
            ("2 voters, want 3: add learner 2", obs(3, 2, voters(2), 100), Step::AddLearner { ordinal: 2 }),
            ("steady at 3", obs(3, 3, voters(3), 101), Step::Steady { voters: 3 }),
            // 3 → 5
            ("3→5: add learner 3", obs(5, 3, voters(3), 100), Step::AddLearner { ordinal: 3 }),
            (
                "learner 4 running",
                obs(5, 5, [voters(4), vec![learner(4, true)]].concat(), 100),
                Step::Promote { id: 104, voters_after: 5 },
            ),
            ("steady at 5", obs(5, 5, voters(5), 102), Step::Steady { voters: 5 }),
            // 5 → 3
            (
                "5→3: remove the newest member",
                obs(3, 5, voters(5), 100),
                Step::RemoveMember { id: 104, voters_after: 4 },
            ),
            (
                "it leads: move leadership off it first",
                obs(3, 5, voters(5), 104),
                Step::MoveLeader { from: 104, to: 100 },
            ),
            (
                "crash after remove: member gone, StatefulSet not shrunk",
                obs(3, 5, voters(4), 100),
                Step::ScaleStatefulSet { replicas: 4, reason: "member 4 was removed".into() },
            ),
            (
                "next one",
                obs(3, 4, voters(4), 100),
                Step::RemoveMember { id: 103, voters_after: 3 },
            ),
            // 3 → 1
            ("3→1", obs(1, 3, voters(3), 100), Step::RemoveMember { id: 102, voters_after: 2 }),
            (
                "2→1 with the last member leading",
                obs(1, 2, voters(2), 101),
                Step::MoveLeader { from: 101, to: 100 },
            ),
            ("back at 1", obs(1, 1, voters(1), 100), Step::Steady { voters: 1 }),
            // Spec changes mid-operation.
            (
                "scale-up abandoned while a learner is pending: remove it",
                obs(3, 4, [voters(3), vec![learner(3, true)]].concat(), 100),
                Step::RemoveMember { id: 103, voters_after: 3 },
            ),
            (
                "abandoned learner's pod goes after its removal",
                obs(3, 4, voters(3), 100),
                Step::ScaleStatefulSet { replicas: 3, reason: "member 3 was removed".into() },
            ),
            // Unhealthy members.
            (
                "scale-up refused with an unhealthy voter",
                obs(5, 3, vec![voter(0), ObservedMember { healthy: false, ..voter(1) }, voter(2)], 100),
                Step::Refuse("cannot scale up to 5: member ms-1 is unhealthy; adding a member now would put quorum at risk".into()),
            ),
            (
                "scale-down refused when another voter is unhealthy",
                obs(1, 3, vec![voter(0), ObservedMember { healthy: false, ..voter(1) }, voter(2)], 100),
                Step::Refuse("cannot scale down to 1: member ms-1 is unhealthy; removing ms-2 now would put quorum at risk".into()),
            ),
            (
                "removing the unhealthy member itself is fine",
                obs(2, 3, vec![voter(0), voter(1), ObservedMember { healthy: false, ..voter(2) }], 100),
                Step::RemoveMember { id: 102, voters_after: 2 },
            ),
            ("no leader: wait", obs(5, 3, voters(3), 0), Step::Wait("no leader".into())),
            // Bad requests.
            (
                "scale to 0",
                obs(0, 3, voters(3), 100),
                Step::Refuse("spec.replicas is 0: a MetaStore keeps at least one member (delete the resource to remove the cluster)".into()),
            ),
            (
                "a member that is not ours",
                obs(3, 3, [voters(3), vec![ObservedMember { ordinal: None, ..voter(7) }]].concat(), 100),
                Step::Refuse("member 6b (ms-7) is not one of this StatefulSet's pods; remove it by hand (etcdctl member remove 6b)".into()),
            ),
            (
                "StatefulSet shrunk by hand below the members: restore it",
                obs(3, 2, voters(3), 100),
                Step::ScaleStatefulSet { replicas: 3, reason: "every member needs its pod".into() },
            ),
        ];
        for (name, o, want) in cases {
            assert_eq!(plan(&o), want, "{name}");
        }
    }

    #[test]
    fn lost_quorum_is_reported_and_recovered_only_with_the_opt_in() {
        let gone = |k: i32| ObservedMember {
            healthy: false,
            answered: false,
            commit_index: 0,
            ..voter(k)
        };
        let alone = |k: i32, commit: u64| ObservedMember {
            healthy: false,
            commit_index: commit,
            ..voter(k)
        };
        // Two survivors of five: the one with the higher commit index is chosen.
        let mut o = obs(
            5,
            5,
            vec![gone(0), alone(1, 70), gone(2), alone(3, 90), gone(4)],
            0,
        );
        let Step::QuorumLost(msg) = plan(&o) else {
            panic!("{:?}", plan(&o));
        };
        assert!(
            msg.contains("2 of 5 voters answer (ms-1, ms-3), ms-0, ms-2, ms-4 do not"),
            "{msg}"
        );
        assert!(msg.contains("metastore.io/recover=true"), "{msg}");
        assert!(msg.contains("restarts ms-3 (commit index 90"), "{msg}");
        // An opt-in given before this plan was shown (for another one) does not act on it.
        o.recover = true;
        assert!(matches!(plan(&o), Step::QuorumLost(_)), "{:?}", plan(&o));
        o.reported = Some(NO_MEMBER_ANSWERS.into());
        assert!(matches!(plan(&o), Step::QuorumLost(_)), "{:?}", plan(&o));
        o.reported = Some(QUORUM_LOST.into());
        assert_eq!(
            plan(&o),
            Step::ForceNewCluster {
                id: 103,
                ordinal: 3
            }
        );
        // A tie goes to the lowest ordinal.
        let o = opted_in(
            obs(
                5,
                5,
                vec![alone(0, 9), alone(1, 9), gone(2), gone(3), gone(4)],
                0,
            ),
            QUORUM_LOST,
        );
        assert_eq!(
            plan(&o),
            Step::ForceNewCluster {
                id: 100,
                ordinal: 0
            }
        );
        // Not lost: a majority answers (an election is under way), or a leader is known.
        let o = opted_in(
            obs(3, 3, vec![alone(0, 9), alone(1, 9), gone(2)], 0),
            QUORUM_LOST,
        );
        assert_ne!(
            plan(&Observed {
                members: Some(vec![alone(0, 9), alone(1, 9), alone(2, 9)]),
                ..o.clone()
            }),
            Step::ForceNewCluster {
                id: 100,
                ordinal: 0
            }
        );
        assert!(!matches!(
            plan(&obs(3, 3, vec![voter(0), gone(1), gone(2)], 100)),
            Step::QuorumLost(_)
        ));
        // A learner is never the survivor.
        let o = obs(
            3,
            3,
            vec![
                gone(0),
                gone(1),
                ObservedMember {
                    is_learner: true,
                    ..alone(2, 99)
                },
            ],
            0,
        );
        assert_eq!(
            plan(&opted_in(o, QUORUM_LOST)),
            Step::Wait("no voter answers".into())
        );
    }

    #[test]
    fn a_member_whose_data_is_gone_is_replaced_while_the_others_keep_a_quorum() {
        let lost = |k: i32| ObservedMember {
            healthy: false,
            answered: false,
            ..voter(k)
        };
        let o = Observed {
            data_lost: vec![1],
            ..obs(3, 3, vec![voter(0), lost(1), voter(2)], 100)
        };
        assert_eq!(
            plan(&o),
            Step::ReplaceLostMember {
                id: 101,
                ordinal: 1,
                voters_after: 2
            }
        );
        // Then it comes back at its ordinal, as a learner on an empty volume.
        let after = Observed {
            data_lost: vec![1],
            ..obs(3, 3, vec![voter(0), voter(2)], 100)
        };
        assert_eq!(plan(&after), Step::AddLearner { ordinal: 1 });
        // A learner just added there has not started (no name): it is not the lost member.
        let learner = ObservedMember {
            is_learner: true,
            name: String::new(),
            ..lost(1)
        };
        let adding = Observed {
            data_lost: vec![1],
            ..obs(3, 3, vec![voter(0), learner, voter(2)], 100)
        };
        assert!(!matches!(plan(&adding), Step::ReplaceLostMember { .. }));
        // A member whose pod still answers is not replaced, whatever an old pod said.
        let answering = Observed {
            data_lost: vec![1],
            ..obs(3, 3, voters(3), 100)
        };
        assert_eq!(plan(&answering), Step::Steady { voters: 3 });
        // Not while another voter is unhealthy too (removing it could lose quorum).
        let risky = Observed {
            data_lost: vec![1],
            ..obs(
                5,
                5,
                vec![
                    voter(0),
                    lost(1),
                    lost(2),
                    voter(3),
                    ObservedMember {
                        healthy: false,
                        ..voter(4)
                    },
                ],
                100,
            )
        };
        let Step::Refuse(why) = plan(&risky) else {
            panic!("{:?}", plan(&risky));
        };
        assert!(why.contains("member ms-1 lost its data"), "{why}");
    }

    #[test]
    fn a_silent_cluster_is_restored_from_its_latest_backup_only_with_the_opt_in() {
        let silent = |secs: u64| Observed {
            members: None,
            unavailable_for: Duration::from_secs(secs),
            latest_backup: Some("MetaStoreBackup nightly (revision 42)".into()),
            ..obs(3, 3, vec![], 0)
        };
        let waiting = Step::Wait("waiting for the cluster to answer".into());
        // Restarting members are not a lost cluster.
        assert_eq!(plan(&silent(5)), waiting);
        assert_eq!(plan(&opted_in(silent(5), NO_MEMBER_ANSWERS)), waiting);
        // A cluster still being created is not either.
        let creating = Observed {
            bootstrapped: false,
            ..silent(300)
        };
        assert_eq!(plan(&opted_in(creating, NO_MEMBER_ANSWERS)), waiting);
        // Silent long enough: the plan names the backup, and acts only on an opt-in given
        // after it was shown.
        let Step::NoMemberAnswers(msg) = plan(&silent(31)) else {
            panic!("{:?}", plan(&silent(31)));
        };
        assert!(msg.contains("no member has answered for 31 s"), "{msg}");
        assert!(
            msg.contains("restores MetaStoreBackup nightly (revision 42)"),
            "{msg}"
        );
        assert!(msg.contains("grows it back to 3 members"), "{msg}");
        let early = Observed {
            recover: true,
            ..silent(31)
        };
        assert!(matches!(plan(&early), Step::NoMemberAnswers(_)));
        assert!(matches!(
            plan(&opted_in(silent(31), QUORUM_LOST)),
            Step::NoMemberAnswers(_)
        ));
        assert_eq!(
            plan(&opted_in(silent(31), NO_MEMBER_ANSWERS)),
            Step::RestoreLatestBackup
        );
        // Without a backup there is nothing to restore: the status says so, the opt-in is moot.
        let none = Observed {
            latest_backup: None,
            ..opted_in(silent(60), NO_MEMBER_ANSWERS)
        };
        let Step::NoMemberAnswers(msg) = plan(&none) else {
            panic!("{:?}", plan(&none));
        };
        assert!(msg.contains("no successful backup"), "{msg}");
        // Until the old StatefulSet and volumes are gone, the restore keeps removing them (an
        // operator stopped in the middle resumes); then it bootstraps from the backup.
        let resuming = Observed {
            old_cluster_left: true,
            ..silent(0)
        };
        assert_eq!(plan(&resuming), Step::RestoreLatestBackup);
        let cleared = Observed {
            sts_replicas: 0,
            bootstrapped: false,
            ..silent(0)
        };
        assert_eq!(plan(&cleared), Step::Bootstrap);
    }

    /// After a survivor at ordinal 2 forced a new cluster, the pods below it are filled first and
    /// the cluster ends steady at 3 with ordinals 0, 1, 2.
    #[test]
    fn regrows_around_a_survivor_above_ordinal_0() {
        let mut members = vec![voter(2)];
        let sts = 3;
        for _ in 0..20 {
            match plan(&obs(3, sts, members.clone(), 102)) {
                Step::Steady { voters } => {
                    assert_eq!(voters, 3);
                    let mut ords: Vec<i32> = members.iter().map(|m| m.ordinal.unwrap()).collect();
                    ords.sort();
                    assert_eq!(ords, [0, 1, 2]);
                    return;
                }
                Step::AddLearner { ordinal } => {
                    assert!(ordinal < 2, "fills the hole below the survivor");
                    members.push(learner(ordinal, true));
                }
                Step::Promote { id, .. } => {
                    members.iter_mut().find(|m| m.id == id).unwrap().is_learner = false
                }
                s => panic!("unexpected {s:?}"),
            }
        }
        panic!("did not converge");
    }

    /// Walks 1→3→5→3→1 applying each step to a model, as the executor would, and checks the walk
    /// only ever changes one thing at a time and ends steady at the target.
    #[test]
    fn walks_every_transition_to_a_steady_state() {
        let mut members = voters(1);
        let mut sts = 1;
        let mut leader = 100;
        for target in [3, 5, 3, 1] {
            for _ in 0..50 {
                let o = obs(target, sts, members.clone(), leader);
                match plan(&o) {
                    Step::Steady { voters } => {
                        assert_eq!(voters, target as usize);
                        break;
                    }
                    Step::AddLearner { ordinal } => members.push(learner(ordinal, false)),
                    Step::ScaleStatefulSet { replicas, .. } => {
                        sts = replicas;
                        for m in &mut members {
                            if m.ordinal.unwrap() < sts && m.is_learner {
                                m.name = format!("ms-{}", m.ordinal.unwrap());
                                m.healthy = true;
                            }
                        }
                    }
                    Step::Wait(_) => {
                        for m in &mut members {
                            if m.is_learner && m.ordinal.unwrap() < sts {
                                m.name = format!("ms-{}", m.ordinal.unwrap());
                                m.healthy = true;
                            }
                        }
                    }
                    Step::Promote { id, .. } => {
                        members.iter_mut().find(|m| m.id == id).unwrap().is_learner = false
                    }
                    Step::MoveLeader { to, .. } => leader = to,
                    Step::RemoveMember { id, .. } => {
                        assert_ne!(id, leader, "never removes the leader");
                        members.retain(|m| m.id != id)
                    }
                    s => panic!("unexpected {s:?}"),
                }
                let n = members.iter().filter(|m| !m.is_learner).count();
                assert!(n >= 1);
                assert!(members.iter().filter(|m| m.is_learner).count() <= 1);
            }
            assert_eq!(sts, target, "StatefulSet follows the members");
        }
    }
}
