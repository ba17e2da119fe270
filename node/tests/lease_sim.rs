//! Deterministic lease-safety tests: several raft-rs nodes in one process, each with the
//! production `ReadLease`, over a network and clocks the test controls (delay, partitions,
//! per-node clock rates within the drift bound, restarts, membership changes).
//!
//! Every step of every test checks the safety property itself: whenever a node would serve a
//! lease read, no node of a newer term has become leader and committed (a lease read then could
//! miss that leader's writes).

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use metastore_node::read_lease::reads::{
    ReadDecision, ReadLease, ReadLeaseEvent, ReadLeaseSettings,
};
use metastore_node::read_lease::tracker::max_safe_read_lease;
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2, ConfState, EntryType,
    Message, MessageType,
};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole, Storage};

const TICK: Duration = Duration::from_millis(100);
const ET: Duration = Duration::from_millis(1000);
const DRIFT: f64 = 0.1;
const STEP: Duration = Duration::from_millis(1);

fn settings() -> ReadLeaseSettings {
    ReadLeaseSettings {
        max_drift: 0.1,
        guard_clock: true,
        enabled: true,
        duration: max_safe_read_lease(ET, TICK, DRIFT),
        election_timeout: ET,
        heartbeat_interval: TICK,
        reopened: None,
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

struct Node {
    raw: RawNode<MemStorage>,
    store: MemStorage,
    lease: ReadLease,
    cs: ConfState,
    /// Local clock = base + offset + rate * global time.
    rate: f64,
    offset: Duration,
    next_tick: Duration,
    events: Vec<ReadLeaseEvent>,
    /// ReadIndex rounds of this node that Raft answered.
    answered: Vec<u64>,
    /// Global time before which the next due tick does not run (a late tick; the ones after it
    /// keep their schedule, as the production loop's do).
    hold_tick_until: Option<Duration>,
}

struct InFlight {
    at: Duration,
    msg: Message,
}

struct Sim {
    base: Instant,
    now: Duration,
    nodes: BTreeMap<u64, Node>,
    net: Vec<InFlight>,
    delay: Duration,
    cut: HashSet<(u64, u64)>,
    down: HashSet<u64>,
    votes_dropped: u64,
    /// Global time a node last could serve a lease read, per node.
    last_lease: BTreeMap<u64, Duration>,
    /// Global time a leader of each term first committed in its term.
    first_commit: BTreeMap<u64, Duration>,
    /// Epoch changes observed when conf changes were applied, per node.
    conf_expiries: u64,
    /// Voters the cluster was bootstrapped with (index 0), which joining nodes start from.
    bootstrap: Vec<u64>,
    /// Node starts so far (each gets its own boot nonce).
    boots: u64,
}

fn raft_config(id: u64, applied: u64) -> Config {
    Config {
        id,
        election_tick: (ET.as_millis() / TICK.as_millis()) as usize,
        heartbeat_tick: 1,
        check_quorum: true,
        pre_vote: true,
        applied,
        ..Default::default()
    }
}

/// Applies committed entries (only conf changes matter here); returns how many conf changes
/// expired the lease epoch.
fn apply(id: u64, n: &mut Node, entries: Vec<raft::eraftpb::Entry>, now: Instant) -> u64 {
    let mut expiries = 0;
    for e in entries {
        if e.get_entry_type() == EntryType::EntryConfChangeV2 {
            let cc = ConfChangeV2::parse_from_bytes(&e.data).unwrap();
            let after = n
                .raw
                .apply_conf_change(&cc)
                .unwrap_or_else(|err| panic!("node {id}: {err} (cs {:?})", n.cs));
            n.store.wl().set_conf_state(after.clone());
            let before_epoch = n.lease.epoch();
            n.lease
                .on_conf_change_applied(&n.cs, &after, now, &mut n.events);
            if n.lease.epoch() != before_epoch {
                expiries += 1;
            }
            n.cs = after;
        }
    }
    expiries
}

impl Sim {
    fn new(voters: &[u64]) -> Sim {
        let mut s = Sim {
            base: Instant::now(),
            now: Duration::ZERO,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            delay: Duration::from_millis(1),
            cut: HashSet::new(),
            down: HashSet::new(),
            votes_dropped: 0,
            last_lease: BTreeMap::new(),
            first_commit: BTreeMap::new(),
            conf_expiries: 0,
            bootstrap: voters.to_vec(),
            boots: 0,
        };
        for &id in voters {
            let store = MemStorage::new_with_conf_state(ConfState::from((voters.to_vec(), vec![])));
            s.add_node(id, store);
        }
        s
    }

    fn add_node(&mut self, id: u64, store: MemStorage) {
        let applied = store.initial_state().unwrap().hard_state.commit;
        let raw = RawNode::new(&raft_config(id, applied), store.clone(), &logger()).unwrap();
        let cs = store.initial_state().unwrap().conf_state;
        let local = self.base;
        let node = Node {
            raw,
            store,
            lease: ReadLease::new(settings(), local, id, 0),
            cs,
            rate: 1.0,
            offset: Duration::ZERO,
            next_tick: TICK,
            events: Vec::new(),
            answered: Vec::new(),
            hold_tick_until: None,
        };
        self.nodes.insert(id, node);
        // The node's clock starts "now" in its own terms.
        let now = self.local(id);
        // Every (re)start has a boot nonce of its own.
        self.boots += 1;
        let boot = self.boots;
        self.nodes.get_mut(&id).unwrap().lease = ReadLease::new(settings(), now, id, boot);
        let n = self.nodes.get_mut(&id).unwrap();
        n.next_tick = self.now + TICK;
    }

    /// Crash and restart `id` from its storage: the lease is forgotten.
    fn restart(&mut self, id: u64) {
        let store = self.nodes[&id].store.clone();
        let (rate, offset) = (self.nodes[&id].rate, self.nodes[&id].offset);
        self.nodes.remove(&id);
        self.net.retain(|m| m.msg.to != id);
        self.add_node(id, store);
        let n = self.nodes.get_mut(&id).unwrap();
        n.rate = rate;
        n.offset = offset;
    }

    fn local(&self, id: u64) -> Instant {
        let n = &self.nodes[&id];
        self.base + n.offset + self.now.mul_f64(n.rate)
    }

    fn partition(&mut self, a: &[u64], b: &[u64]) {
        for &x in a {
            for &y in b {
                self.cut.insert((x, y));
                self.cut.insert((y, x));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn leader(&self) -> Option<u64> {
        let ls: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(id, n)| !self.down.contains(id) && n.raw.raft.state == StateRole::Leader)
            .map(|(id, _)| *id)
            .collect();
        // The leader of the highest term.
        ls.into_iter().max_by_key(|id| self.nodes[id].raw.raft.term)
    }

    /// What a linearizable read arriving at `id` now would get.
    fn decide(&mut self, id: u64) -> ReadDecision {
        let now = self.local(id);
        let n = self.nodes.get_mut(&id).unwrap();
        n.lease.decide(&n.raw, &n.cs, now)
    }

    fn read_lease_valid(&self, id: u64) -> bool {
        let n = &self.nodes[&id];
        n.lease.lease_index(&n.raw, &n.cs, self.local(id)).is_some()
    }

    fn send(&mut self, msgs: Vec<Message>) {
        for m in msgs {
            self.net.push(InFlight {
                at: self.now + self.delay,
                msg: m,
            });
        }
    }

    fn step(&mut self) {
        self.now += STEP;
        self.deliver();
        self.tick_and_ready();
    }

    /// Delivers every message due by now.
    fn deliver(&mut self) {
        let due: Vec<Message> = {
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.net)
                .into_iter()
                .partition(|m| m.at <= self.now);
            self.net = later;
            due.into_iter().map(|m| m.msg).collect()
        };
        for m in due {
            if self.cut.contains(&(m.from, m.to))
                || self.down.contains(&m.to)
                || !self.nodes.contains_key(&m.to)
            {
                continue;
            }
            let now = self.local(m.to);
            let n = self.nodes.get_mut(&m.to).unwrap();
            if !n.lease.admit(&m, now) {
                self.votes_dropped += 1;
                continue;
            }
            if ReadLease::from_leader(&m, n.raw.raft.term) {
                n.lease.heard_from_leader(now);
            }
            let _ = n.raw.step(m);
        }
    }

    /// Ticks every node whose tick is due, runs every node's ready cycle, checks safety.
    fn tick_and_ready(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            if self.down.contains(&id) {
                continue;
            }
            let now = self.local(id);
            let local_elapsed = now - self.base;
            let global = self.now;
            let n = self.nodes.get_mut(&id).unwrap();
            if local_elapsed >= n.next_tick && n.hold_tick_until.is_none_or(|t| global >= t) {
                n.hold_tick_until = None;
                if n.lease.wants_renewal(&n.raw, &n.cs, now) {
                    n.lease.start_round(&mut n.raw, now);
                }
                n.raw.tick();
                n.next_tick += TICK;
            }
            self.ready(id);
        }
        self.check_safety();
    }

    fn ready(&mut self, id: u64) {
        let now = self.local(id);
        let n = self.nodes.get_mut(&id).unwrap();
        if !n.raw.has_ready() {
            n.lease.observe(&n.raw, &n.cs, now, &mut n.events);
            return;
        }
        // The same order as the production loop: send, snapshot, apply, persist, advance.
        let mut rd = n.raw.ready();
        let mut out = rd.take_messages();
        if !rd.snapshot().is_empty() {
            n.store.wl().apply_snapshot(rd.snapshot().clone()).unwrap();
        }
        let committed = rd.take_committed_entries();
        self.conf_expiries += apply(id, n, committed, now);
        if !rd.entries().is_empty() {
            n.store.wl().append(rd.entries()).unwrap();
        }
        if let Some(hs) = rd.hs() {
            n.store.wl().set_hardstate(hs.clone());
        }
        out.extend(rd.take_persisted_messages());
        let term = n.raw.raft.term;
        let states = rd.take_read_states();
        let answered = n.lease.on_read_states(states, term, &mut n.events);
        n.answered
            .extend(answered.into_iter().map(|(round, _)| round));
        let mut light = n.raw.advance(rd);
        if let Some(c) = light.commit_index() {
            n.store.wl().mut_hard_state().set_commit(c);
        }
        out.extend(light.take_messages());
        let committed = light.take_committed_entries();
        self.conf_expiries += apply(id, n, committed, now);
        n.raw.advance_apply();
        n.lease.observe(&n.raw, &n.cs, now, &mut n.events);
        n.lease.on_sent(&out, now, &mut n.events);
        self.send(out);
    }

    /// The property lease reads must never break.
    fn check_safety(&mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for &b in &ids {
            let nb = &self.nodes[&b].raw.raft;
            if !self.down.contains(&b)
                && nb.state == StateRole::Leader
                && nb.commit_to_current_term()
            {
                self.first_commit.entry(nb.term).or_insert(self.now);
            }
        }
        for &a in &ids {
            if self.down.contains(&a) || !self.read_lease_valid(a) {
                continue;
            }
            self.last_lease.insert(a, self.now);
            let ta = self.nodes[&a].raw.raft.term;
            for &b in &ids {
                let nb = &self.nodes[&b].raw.raft;
                assert!(
                    !(b != a
                        && !self.down.contains(&b)
                        && nb.state == StateRole::Leader
                        && nb.term > ta
                        && nb.commit_to_current_term()),
                    "at {:?}: node {a} (term {ta}) would serve a lease read while node {b} leads term {} and has committed",
                    self.now,
                    nb.term
                );
            }
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.step();
        }
    }

    fn run_until(&mut self, max: Duration, mut cond: impl FnMut(&mut Sim) -> bool) -> bool {
        let end = self.now + max;
        while self.now < end {
            if cond(self) {
                return true;
            }
            self.step();
        }
        cond(self)
    }

    /// A store for a node joining later: the same bootstrap state as everyone (voters at index
    /// 0); it learns every later change from the leader's log.
    fn joining_store(&self) -> MemStorage {
        MemStorage::new_with_conf_state(ConfState::from((self.bootstrap.clone(), vec![])))
    }

    /// Elects `id` and waits until it committed in its term. Members ignore votes during their
    /// first election timeout, so the campaign starts after it; if another node wins anyway,
    /// leadership is transferred.
    fn elect(&mut self, id: u64) {
        self.run_for(ET + TICK);
        if self.leader() != Some(id) {
            self.nodes.get_mut(&id).unwrap().raw.campaign().unwrap();
        }
        let ok = self.run_until(Duration::from_secs(10), |s| {
            if let Some(l) = s.leader() {
                if l != id && s.nodes[&l].raw.raft.lead_transferee.is_none() {
                    s.nodes.get_mut(&l).unwrap().raw.transfer_leader(id);
                }
            }
            let r = &s.nodes[&id].raw.raft;
            r.state == StateRole::Leader && r.commit_to_current_term()
        });
        assert!(ok, "node {id} was not elected");
    }

    /// Issues reads at the leader (as clients would) until one is served from the lease.
    fn wait_lease(&mut self, id: u64, max: Duration) -> bool {
        self.run_until(max, |s| matches!(s.decide(id), ReadDecision::Lease { .. }))
    }

    fn propose_conf(&mut self, leader: u64, changes: &[(u64, ConfChangeType)]) {
        let mut cc = ConfChangeV2::default();
        cc.set_transition(ConfChangeTransition::Auto);
        for (id, t) in changes {
            let mut c = ConfChangeSingle {
                node_id: *id,
                ..Default::default()
            };
            c.set_change_type(*t);
            cc.mut_changes().push(c);
        }
        self.nodes
            .get_mut(&leader)
            .unwrap()
            .raw
            .propose_conf_change(vec![], cc)
            .unwrap();
    }

    fn voters(&self, id: u64) -> Vec<u64> {
        let mut v = self.nodes[&id].cs.voters.clone();
        v.sort_unstable();
        v
    }
}

#[test]
fn single_node_lease_valid_once_leader_commits_in_its_term_and_needs_no_clock() {
    let mut s = Sim::new(&[1]);
    assert_eq!(s.decide(1), ReadDecision::ReadIndex, "not leader yet");
    s.nodes.get_mut(&1).unwrap().raw.campaign().unwrap();
    // Leader before its no-op commits: still no lease.
    let mut saw_uncommitted_leader = false;
    let ok = s.run_until(Duration::from_secs(2), |s| {
        let r = &s.nodes[&1].raw.raft;
        if r.state == StateRole::Leader && !r.commit_to_current_term() {
            saw_uncommitted_leader = true;
            assert!(!s.read_lease_valid(1));
        }
        r.state == StateRole::Leader && r.commit_to_current_term()
    });
    assert!(ok);
    let committed = s.nodes[&1].raw.raft.raft_log.committed;
    assert_eq!(s.decide(1), ReadDecision::Lease { index: committed });
    // No clock: freeze the node's clock and let an hour of global time pass.
    s.nodes.get_mut(&1).unwrap().rate = 0.0;
    s.now += Duration::from_secs(3600);
    assert!(matches!(s.decide(1), ReadDecision::Lease { .. }));
    let _ = saw_uncommitted_leader;
}

fn no_lease_without_quorum(n: u64) {
    let ids: Vec<u64> = (1..=n).collect();
    let mut s = Sim::new(&ids);
    s.elect(1);
    // Right after election no round has been acknowledged yet.
    assert_eq!(s.decide(1), ReadDecision::ReadIndex);
    // Cut the leader off from all but a minority (it plus the minority are no quorum).
    let quorum = n / 2 + 1;
    let reachable: Vec<u64> = (2..quorum).collect(); // quorum - 2 peers: leader + them < quorum
    let cut: Vec<u64> = (quorum..=n).collect();
    s.partition(&[1], &cut);
    let _ = reachable;
    for _ in 0..400 {
        // Reads keep arriving (and trigger renewal rounds); none may be served by lease.
        assert_eq!(s.decide(1), ReadDecision::ReadIndex);
        s.run_for(Duration::from_millis(5));
        if s.nodes[&1].raw.raft.state != StateRole::Leader {
            break;
        }
    }
    // Heal: a round sent after the heal renews; the first lease comes after it.
    s.heal();
    if s.leader() != Some(1) {
        s.run_for(Duration::from_secs(3));
        let l = s.leader().unwrap();
        assert!(s.wait_lease(l, Duration::from_secs(3)));
    } else {
        let healed = s.now;
        assert!(s.wait_lease(1, Duration::from_secs(3)));
        assert!(s.now > healed);
    }
}

#[test]
fn three_nodes_no_lease_before_a_quorum_acked_a_round() {
    no_lease_without_quorum(3);
}

#[test]
fn five_nodes_no_lease_before_a_quorum_acked_a_round() {
    no_lease_without_quorum(5);
}

fn isolated_leader_stops_first(n: u64, cut_after: Duration, follower_rate: f64) {
    let ids: Vec<u64> = (1..=n).collect();
    let mut s = Sim::new(&ids);
    // Followers' clocks run fast, as far as the configured drift allows.
    for id in 2..=n {
        s.nodes.get_mut(&id).unwrap().rate = follower_rate;
    }
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    s.run_for(cut_after);
    // Keep the leader's lease busy so it renews right up to the cut.
    let _ = s.decide(1);
    let term = s.nodes[&1].raw.raft.term;
    let others: Vec<u64> = (2..=n).collect();
    s.partition(&[1], &others);
    let cut_at = s.now;
    let ok = s.run_until(Duration::from_secs(10), |s| {
        let _ = s.decide(1);
        s.first_commit.keys().any(|t| *t > term)
    });
    assert!(ok, "no new leader committed");
    let new_commit = *s.first_commit.iter().find(|(t, _)| **t > term).unwrap().1;
    let last = s.last_lease[&1];
    assert!(
        last < new_commit,
        "old leader served a lease read at {last:?}, new leader committed at {new_commit:?}"
    );
    assert!(
        last >= cut_at,
        "the lease was in force when the partition began"
    );
}

#[test]
fn isolated_old_leader_stops_lease_reads_before_another_leader_commits() {
    let fast = 1.0 / (1.0 - DRIFT) - 0.001;
    for (i, cut_after) in [0u64, 37, 150, 333, 512, 777].into_iter().enumerate() {
        let rate = if i % 2 == 0 { 1.0 } else { fast };
        isolated_leader_stops_first(3, Duration::from_millis(cut_after), rate);
        isolated_leader_stops_first(5, Duration::from_millis(cut_after), rate);
    }
}

#[test]
fn leader_transfer_suspends_the_lease() {
    let mut s = Sim::new(&[1, 2, 3]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    s.nodes.get_mut(&1).unwrap().raw.transfer_leader(2);
    s.step();
    assert_eq!(
        s.decide(1),
        ReadDecision::ReadIndex,
        "lease suspect once the transfer starts"
    );
    assert!(s.run_until(Duration::from_secs(5), |s| s.leader() == Some(2)));
    assert!(!s.read_lease_valid(1));
    assert!(s.wait_lease(2, Duration::from_secs(3)));

    // A transfer whose MsgTimeoutNow has left while its target is cut off: raft-rs aborts the
    // transfer after an election timeout, but the message could still arrive whenever the
    // network delivers it and start a forced election, so the lease stays off for the rest of
    // the term. The next term's leader gets one again.
    s.partition(&[2], &[1, 3]);
    s.run_for(Duration::from_millis(300));
    let leader = s.leader().unwrap();
    assert_eq!(leader, 2);
    s.heal();
    assert!(s.wait_lease(2, Duration::from_secs(3)));
    s.partition(&[3], &[1, 2]);
    s.nodes.get_mut(&2).unwrap().raw.transfer_leader(3);
    s.step();
    let term = s.nodes[&2].raw.raft.term;
    assert!(!s.read_lease_valid(2));
    assert!(s.run_until(Duration::from_secs(5), |s| s.nodes[&2]
        .raw
        .raft
        .lead_transferee
        .is_none()));
    assert_eq!(s.leader(), Some(2), "transfer aborted, 2 still leads");
    assert!(
        !s.wait_lease(2, Duration::from_secs(3)),
        "no lease for the rest of the term a MsgTimeoutNow was sent in"
    );
    assert_eq!(s.nodes[&2].raw.raft.term, term);
    s.heal();
    s.elect(1);
    assert!(
        s.wait_lease(1, Duration::from_secs(3)),
        "a new term, a new lease"
    );
}

#[test]
fn a_transfer_cancelled_in_the_pass_that_sent_its_timeout_now_still_ends_the_lease() {
    // The transfer and the applied removal of its target land in one ready cycle: raft-rs sends
    // MsgTimeoutNow, then cancels the transfer when the removal is applied, so the leader never
    // looks like it is transferring. The network loses the appends that would tell the target
    // its removal committed and delivers the MsgTimeoutNow 500 ms late; meanwhile the leader
    // renews its lease under the new configuration. The target, still a voter in its own eyes,
    // starts a forced election the other voters grant, and commits.
    let mut s = Sim::new(&[1, 2, 3, 4]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    s.propose_conf(1, &[(3, ConfChangeType::RemoveNode)]);
    s.ready(1);
    let target = s.nodes[&1].raw.raft.raft_log.last_index();
    let mut sent = false;
    for _ in 0..2000 {
        s.now += STEP;
        s.deliver();
        let l = &s.nodes[&1].raw.raft;
        if l.raft_log.committed >= target && l.prs().get(3).is_some_and(|p| p.matched >= target) {
            // Committed, not yet applied: ask for the transfer in the same pass.
            s.nodes.get_mut(&1).unwrap().raw.transfer_leader(3);
            sent = true;
            s.tick_and_ready();
            let late = s.now + Duration::from_millis(500);
            s.net
                .retain(|m| m.msg.to != 3 || m.msg.get_msg_type() == MessageType::MsgTimeoutNow);
            for m in s.net.iter_mut().filter(|m| m.msg.to == 3) {
                m.at = late;
            }
            // And nothing from the target reaches the old leader.
            s.cut.insert((3, 1));
            break;
        }
        s.tick_and_ready();
    }
    assert!(sent, "the removal never committed");
    assert!(
        s.net
            .iter()
            .any(|m| m.msg.get_msg_type() == MessageType::MsgTimeoutNow),
        "the leader sent MsgTimeoutNow"
    );
    assert!(
        s.nodes[&1].raw.raft.lead_transferee.is_none(),
        "raft-rs cancelled the transfer when it applied the removal"
    );
    // Clients keep reading at the leader, so it keeps trying to renew its lease; whatever the
    // target does with the late message, no stale lease read (checked at every step).
    for _ in 0..30 {
        let _ = s.decide(1);
        s.run_for(Duration::from_millis(100));
    }
}

#[test]
fn membership_1_3_5_3_1_expires_lease_at_every_voter_change_and_resumes() {
    use ConfChangeType::{AddNode, RemoveNode};
    let mut s = Sim::new(&[1]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(1)));
    type Step = (Vec<(u64, ConfChangeType)>, Vec<u64>);
    let steps: Vec<Step> = vec![
        (vec![(2, AddNode), (3, AddNode)], vec![1, 2, 3]),
        (vec![(4, AddNode), (5, AddNode)], vec![1, 2, 3, 4, 5]),
        (vec![(4, RemoveNode), (5, RemoveNode)], vec![1, 2, 3]),
        (vec![(2, RemoveNode), (3, RemoveNode)], vec![1]),
    ];
    for (changes, want) in steps {
        for (id, t) in &changes {
            if *t == AddNode {
                let store = s.joining_store();
                s.add_node(*id, store);
            }
        }
        let expiries = s.conf_expiries;
        s.propose_conf(1, &changes);
        // From the proposal until the final configuration is applied, no lease is served
        // (in flight, joint, and right after each voter change until a fresh round).
        let ok = s.run_until(Duration::from_secs(10), |s| {
            let done = s.voters(1) == want && s.nodes[&1].cs.voters_outgoing.is_empty();
            if !done {
                assert_eq!(
                    s.decide(1),
                    ReadDecision::ReadIndex,
                    "lease during a change to {want:?}"
                );
            }
            done
        });
        assert!(ok, "change to {want:?} did not complete");
        assert!(
            s.conf_expiries >= expiries + 2,
            "entering and leaving joint both expire"
        );
        assert!(
            !s.read_lease_valid(1) || want == vec![1],
            "lease after the change needs a fresh round"
        );
        for (id, t) in &changes {
            if *t == RemoveNode {
                s.down.insert(*id);
            }
        }
        assert!(
            s.wait_lease(1, Duration::from_secs(5)),
            "lease resumes at {want:?}"
        );
    }

    // Growing 1 -> 3 while the new voters are unreachable: the old quorum of one must not
    // carry a lease into the new configuration.
    let mut s = Sim::new(&[1]);
    s.elect(1);
    let (a, b) = (s.joining_store(), s.joining_store());
    s.add_node(2, a);
    s.add_node(3, b);
    s.propose_conf(1, &[(2, AddNode), (3, AddNode)]);
    s.run_until(Duration::from_secs(5), |s| {
        s.voters(1) == vec![1, 2, 3] && s.nodes[&1].cs.voters_outgoing.is_empty()
    });
    s.partition(&[1], &[2, 3]);
    for _ in 0..300 {
        assert_eq!(s.decide(1), ReadDecision::ReadIndex);
        s.run_for(Duration::from_millis(5));
    }
}

#[test]
fn restarted_voter_does_not_vote_for_one_election_timeout() {
    let mut s = Sim::new(&[1, 2, 3]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    s.restart(3);
    let restarted = s.now;
    // The leader vanishes; node 2 campaigns at once and needs node 3's vote.
    s.partition(&[1], &[2, 3]);
    s.nodes.get_mut(&2).unwrap().raw.campaign().unwrap();
    let won_early = s.run_until(ET - Duration::from_millis(20), |s| {
        s.nodes[&2].raw.raft.state == StateRole::Leader
            || s.nodes[&3].raw.raft.state == StateRole::Leader
    });
    assert!(
        !won_early,
        "a leader was elected with a restarted voter's vote within its first election timeout"
    );
    assert!(
        s.votes_dropped > 0,
        "the restarted voter saw the campaign and ignored it"
    );
    // Afterwards the cluster recovers.
    assert!(s.run_until(Duration::from_secs(10), |s| s
        .leader()
        .is_some_and(|l| l != 1)));
    assert!(s.now > restarted + ET);
}

#[test]
fn policy_hint_disagreeing_with_applied_config_pauses_leases_and_stale_generations_are_ignored() {
    let mut s = Sim::new(&[1, 2, 3]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    let hint = |s: &mut Sim, v: u32, g: u64| s.nodes.get_mut(&1).unwrap().lease.set_hint(v, g);
    use metastore_node::read_lease::policy::HintOutcome;
    assert_eq!(hint(&mut s, 5, 10), HintOutcome::Applied);
    s.step();
    assert_eq!(s.decide(1), ReadDecision::ReadIndex);
    s.run_for(Duration::from_secs(2));
    assert_eq!(
        s.decide(1),
        ReadDecision::ReadIndex,
        "stays paused while the hint disagrees"
    );
    assert_eq!(hint(&mut s, 3, 9), HintOutcome::Stale);
    s.run_for(Duration::from_millis(500));
    assert_eq!(
        s.decide(1),
        ReadDecision::ReadIndex,
        "a stale generation changes nothing"
    );
    assert_eq!(hint(&mut s, 3, 11), HintOutcome::Applied);
    assert!(
        s.wait_lease(1, Duration::from_secs(3)),
        "agreement resumes lease reads"
    );
}

#[test]
fn a_followers_read_index_is_answered_even_when_the_leader_runs_a_round_with_the_same_number() {
    // Every member numbers its ReadIndex rounds from 1 and raft-rs matches reads by context
    // bytes alone: a follower's request whose context equals one of the leader's pending rounds
    // was dropped by the leader (the read stalled, then failed). Contexts now carry the member
    // and its boot nonce.
    let mut s = Sim::new(&[1, 2, 3]);
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(5)));
    // The leader starts a round and, before any acknowledgement, the follower catches up with
    // its round numbers and sends the same number.
    let now = s.local(1);
    let n = s.nodes.get_mut(&1).unwrap();
    let round = n.lease.start_round(&mut n.raw, now);
    s.ready(1);
    let now = s.local(2);
    let f = s.nodes.get_mut(&2).unwrap();
    let mut last = 0;
    while last < round {
        last = f.lease.start_round(&mut f.raw, now);
    }
    assert_eq!(
        last, round,
        "the follower's round number matches the leader's"
    );
    s.ready(2);
    let answered = s.run_until(Duration::from_secs(2), |s| {
        s.nodes[&2].answered.contains(&round) && s.nodes[&1].answered.contains(&round)
    });
    assert!(
        answered,
        "round {round}: follower answered {:?}, leader answered {:?}",
        s.nodes[&2].answered.last(),
        s.nodes[&1].answered.last()
    );
}

#[test]
fn a_late_tick_on_a_fast_follower_does_not_shorten_its_vote_refusal() {
    // raft-rs counts ticks. A follower tick due just before the leader's heartbeat arrives but
    // run just after it (a slow fsync on the follower's loop) counts as the first tick after
    // that contact, and the next tick keeps its schedule: the follower stops refusing votes
    // 60 ms (its share of the lateness) earlier than the lease bound assumes. With a clock 10 %
    // fast (inside the drift bound), that is enough for another follower to be elected and
    // commit while the cut-off old leader still serves lease reads, unless the follower
    // refuses votes by time, not by ticks.
    let mut s = Sim::new(&[1, 2, 3]);
    s.nodes.get_mut(&3).unwrap().rate = 1.0 + DRIFT;
    s.elect(1);
    assert!(s.wait_lease(1, Duration::from_secs(3)));
    // Follower 3's next tick in global time (its clock: base + now * rate).
    let slot = s.nodes[&3].next_tick.div_f64(1.0 + DRIFT);
    while s.now + STEP < slot {
        s.step();
    }
    // The tick due at `slot` runs 80 ms late; the leader's round reaches 3 60 ms after `slot`.
    s.nodes.get_mut(&3).unwrap().hold_tick_until = Some(slot + Duration::from_millis(80));
    while s.now + STEP + s.delay < slot + Duration::from_millis(60) {
        s.step();
    }
    let now = s.local(1);
    let n = s.nodes.get_mut(&1).unwrap();
    let round = n.lease.start_round(&mut n.raw, now);
    s.ready(1);
    assert!(s.run_until(Duration::from_millis(20), |s| s.nodes[&1]
        .answered
        .contains(&round)));
    s.partition(&[1], &[2, 3]);
    // Follower 2 campaigns every 5 ms; 3 votes as soon as it stops refusing.
    for i in 0..2000u32 {
        let state = s.nodes[&2].raw.raft.state;
        if i % 5 == 0 && matches!(state, StateRole::Follower | StateRole::PreCandidate) {
            let _ = s.nodes.get_mut(&2).unwrap().raw.campaign();
        }
        s.step(); // check_safety panics on a stale lease read
    }
    let new = s.leader();
    assert!(
        matches!(new, Some(2) | Some(3)),
        "a new leader was elected once the refusal ended: {new:?}"
    );
}
