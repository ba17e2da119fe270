//! The operator's membership protocol (DESIGN §5), driving the cluster 1→3→5→3→1 one member at
//! a time: scale up = MemberAdd as learner through the leader, start the member with what the
//! cluster told it, wait until it caught up, promote, push the new size; scale down = move
//! leadership off the highest ordinal, push the transition, MemberRemove, stop the member, push
//! the new size. Each step checks the cluster's state first, so a step retried after a lost
//! answer (or a crash) resumes where it stood. The size hint is re-pushed on every pass.

use metastore_node::consensus::bootstrap::JoinInfo;
use metastore_node::node::{LoopMsg, NodeError};
use metastore_node::replicated::command::{ApplyResult, Command};
use metastore_node::replicated::member::Member;
use metastore_node::replicated::membership::MemberChange;
use rand::Rng;
use tokio::sync::oneshot;

use super::member::peer_url;
use super::world::{Event, World};

/// The sizes the operator walks through, over and over.
const SIZES: [usize; 4] = [3, 5, 3, 1];
const PASS_US: u64 = 250_000;

/// Where the current scaling step stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Nothing to do before this time.
    Idle { until: u64 },
    /// Add the next ordinal as a learner.
    AddLearner,
    /// Wait for the learner `id` to catch up, then promote it.
    Promote { id: u64 },
    /// Move leadership off `id`, then remove it.
    Remove { id: u64 },
}

/// The operator's state.
pub struct Operator {
    step: Step,
    target: usize,
    /// The size hint in force and its generation.
    expected: u32,
    generation: u64,
    waiting: Option<oneshot::Receiver<Result<ApplyResult, NodeError>>>,
    /// Scaling steps completed.
    pub completed: u64,
}

impl Default for Operator {
    fn default() -> Self {
        Operator {
            step: Step::Idle { until: 1_000_000 },
            target: 0,
            expected: 1,
            generation: 1,
            waiting: None,
            completed: 0,
        }
    }
}

impl World {
    /// One reconcile pass.
    pub fn operator_acts(&mut self) {
        let now = self.now();
        self.schedule(now + PASS_US, Event::Operator);
        self.push_hint();
        if let Some(rx) = self.operator.waiting.as_mut() {
            match rx.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => return,
                Ok(r) => {
                    self.trace(format!("operator: answer {:?}", r.map(|r| r.is_ok())));
                    self.operator.waiting = None;
                }
                Err(_) => self.operator.waiting = None,
            }
        }
        let Some(leader) = self.leader() else { return };
        let voters = self.voters_of(leader);
        let members = match self.members.get(&leader).and_then(|m| m.run.as_ref()) {
            Some(r) => r.shared.state.read().members.clone(),
            None => return,
        };
        self.publish_attributes(&members);
        match self.operator.step {
            Step::Idle { until } if now < until => {}
            Step::Idle { .. } => {
                let target = SIZES[self.operator.target % SIZES.len()];
                if voters.len() < target {
                    self.operator.step = Step::AddLearner;
                } else if voters.len() > target {
                    // The highest ordinal goes first, as a StatefulSet shrinks.
                    let Some(id) = voters.iter().copied().max_by_key(|v| self.ordinal(*v)) else {
                        return;
                    };
                    self.operator.step = Step::Remove { id };
                    self.set_hint(target as u32);
                } else {
                    self.operator.target += 1;
                    self.operator.completed += 1;
                    // Short at one voter (nothing there for the lease to get wrong).
                    let dwell = match target {
                        1 => self.rng.gen_range(500_000..2_000_000),
                        _ => self.rng.gen_range(4_000_000..12_000_000),
                    };
                    self.operator.step = Step::Idle { until: now + dwell };
                    self.trace(format!("operator: size {target} reached"));
                }
            }
            Step::AddLearner => {
                // A learner of ours already in the list: it was added (the answer may have been
                // lost); start it if it is not running.
                if let Some(m) = members.values().find(|m| m.is_learner) {
                    let id = m.id;
                    if !self.members.contains_key(&id) {
                        let join = JoinInfo {
                            member_id: id,
                            cluster_id: self.cluster_id(leader),
                            members: members.clone(),
                        };
                        self.trace(format!("operator: start learner {id:x}"));
                        if let Err(e) = self.add_member(true, Some(join)) {
                            self.fail(format!("starting a learner: {e}"));
                        }
                    }
                    self.operator.step = Step::Promote { id };
                    return;
                }
                let k = self.next_ordinal;
                let id = self.rng.gen::<u64>() | 1;
                let change = MemberChange::Add(Member {
                    id,
                    name: String::new(),
                    peer_urls: vec![peer_url(k)],
                    client_urls: vec![],
                    is_learner: true,
                });
                self.trace(format!("operator: add learner m{k} {id:x}"));
                self.change_membership(leader, change);
            }
            Step::Promote { id } => {
                let Some(m) = members.get(&id) else {
                    // Lost (e.g. a new leader never saw the add): start over.
                    self.operator.step = Step::AddLearner;
                    return;
                };
                if !m.is_learner {
                    self.set_hint(voters.len() as u32);
                    self.operator.step = Step::Idle { until: now };
                    return;
                }
                let commit = self.commit_of(leader);
                let caught_up = self
                    .members
                    .get(&id)
                    .and_then(|m| m.run.as_ref())
                    .is_some_and(|r| *r.shared.applied.borrow() + 10 >= commit);
                if caught_up {
                    self.trace(format!("operator: promote {id:x}"));
                    self.change_membership(leader, MemberChange::Promote(id));
                }
            }
            Step::Remove { id } => {
                if !members.contains_key(&id) {
                    self.trace(format!("operator: {id:x} removed, stopping it"));
                    if let Some(m) = self.members.get_mut(&id) {
                        m.removed = true;
                        m.crash();
                    }
                    self.set_hint(voters.len() as u32);
                    self.operator.step = Step::Idle { until: now };
                    return;
                }
                if leader == id {
                    let Some(to) = voters
                        .iter()
                        .copied()
                        .filter(|v| *v != id)
                        .min_by_key(|v| self.ordinal(*v))
                    else {
                        return;
                    };
                    self.trace(format!("operator: move leader off {id:x}"));
                    let (reply, _rx) = oneshot::channel();
                    if self.send_to(leader, LoopMsg::TransferLeader { target: to, reply }) {
                        self.poll(leader);
                    }
                    return;
                }
                self.trace(format!("operator: remove {id:x}"));
                self.change_membership(leader, MemberChange::Remove(id));
            }
        }
    }

    /// What every member's server does once it runs: publish its name and client URLs (a
    /// member counts as started, and may be promoted, only after that).
    fn publish_attributes(&mut self, members: &std::collections::BTreeMap<u64, Member>) {
        for id in self.up() {
            if members.get(&id).is_none_or(|m| !m.name.is_empty()) {
                continue;
            }
            let Some(cfg) = self.members.get(&id).map(|m| m.config.clone()) else {
                continue;
            };
            let change = MemberChange::Publish {
                id,
                name: cfg.name.clone(),
                client_urls: cfg.advertise_client_urls.clone(),
            };
            let (reply, _rx) = oneshot::channel();
            let pid = self.clients.next_proposal;
            self.clients.next_proposal += 1;
            let data = Command::Member(change).encode();
            if self.send_to(
                id,
                LoopMsg::Propose {
                    id: pid,
                    data,
                    reply,
                },
            ) {
                self.poll(id);
            }
        }
    }

    fn change_membership(&mut self, leader: u64, change: MemberChange) {
        let (reply, rx) = oneshot::channel();
        let id = self.clients.next_proposal;
        self.clients.next_proposal += 1;
        self.operator.waiting = Some(rx);
        if self.send_to(leader, LoopMsg::ChangeMembership { id, change, reply }) {
            self.poll(leader);
        }
    }

    /// A new size hint, pushed at once with a new generation.
    fn set_hint(&mut self, expected: u32) {
        self.operator.expected = expected;
        self.operator.generation += 1;
        self.trace(format!(
            "operator: hint {expected} voters (generation {})",
            self.operator.generation
        ));
        self.push_hint();
    }

    /// Pushes the hint in force to every running member.
    fn push_hint(&mut self) {
        let (expected_voters, generation) = (self.operator.expected, self.operator.generation);
        for id in self.up() {
            let (reply, _rx) = oneshot::channel();
            let msg = LoopMsg::SetPolicy {
                expected_voters,
                generation,
                reply,
            };
            if self.send_to(id, msg) {
                self.poll(id);
            }
        }
    }

    fn cluster_id(&self, member: u64) -> u64 {
        self.members
            .get(&member)
            .and_then(|m| m.run.as_ref())
            .map_or(0, |r| r.shared.state.read().cluster_id)
    }

    fn commit_of(&self, member: u64) -> u64 {
        self.members
            .get(&member)
            .and_then(|m| m.run.as_ref())
            .map_or(0, |r| r.raft.raft().raft_log.committed)
    }
}
