//! The membership planner: from what is observed (the cluster's Raft members, the StatefulSet,
//! the spec) to the one next step. Pure, so every situation — including an operator crash after
//! any step — is a table-driven test. Members map to pod ordinals through their peer URLs.
//!
//! Scale-up, one member at a time: add learner (ordinal k) → StatefulSet to k+1 → wait until the
//! pod runs → promote. Scale-down: move leadership off the newest member if it leads → remove it
//! → StatefulSet to k. Each step is safe to repeat and safe to resume from.

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
}

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
    /// Nothing to do: `voters` voters, all as asked.
    Steady {
        /// Voters.
        voters: usize,
    },
}

/// Decides the next step.
pub fn plan(o: &Observed) -> Step {
    if o.spec_replicas < 1 {
        return Step::Refuse(format!(
            "spec.replicas is {}: a MetaStore keeps at least one member (delete the resource to remove the cluster)",
            o.spec_replicas
        ));
    }
    if o.sts_replicas == 0 {
        return Step::Bootstrap;
    }
    let Some(members) = &o.members else {
        return Step::Wait("waiting for the cluster to answer".into());
    };
    if let Some(m) = members.iter().find(|m| m.ordinal.is_none()) {
        return Step::Refuse(format!(
            "member {:x} ({}) is not one of this StatefulSet's pods; remove it by hand (etcdctl member remove {:x})",
            m.id, m.name, m.id
        ));
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
        return Step::AddLearner {
            ordinal: max_ord + 1,
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
