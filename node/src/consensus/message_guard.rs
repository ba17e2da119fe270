//! What a peer message must satisfy before raft-rs sees it. raft-rs trusts its peers: a message
//! no correct member sends (a heartbeat committing past the end of the log, entries that are not
//! contiguous, term 0 or a term about to overflow, a snapshot with an invalid configuration, a
//! proposal carrying a membership change) panics it or corrupts the log. Each check here drops
//! such a message with a reason the metrics count; none drops what a correct raft-rs peer sends
//! in this member's protocol. Pure: the message and what the member knows in, a verdict out.
//! (The hazards come from an audit of raft-rs 0.7; the references are to its sources.)

use std::collections::{BTreeMap, HashSet};

use raft::eraftpb::{ConfState, EntryType, Message, MessageType};
use raft::{Raft, StateRole, Storage};

use crate::replicated::member::Member;

/// Why a peer message was dropped (the `reason` label of
/// `metastore_peer_messages_rejected_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not from a member of the configuration this member has applied (or from 0, or from itself).
    UnknownSender,
    /// With peer certificates required: `from` is not a member the connection's certificate is
    /// valid for (by the host of one of its peer URLs).
    IdentityMismatch,
    /// A kind of message only a member sends to itself (ticks, local reports).
    LocalKind,
    /// A forwarded proposal carrying a membership change: those are proposed on the leader only.
    ForwardedConfChange,
    /// Fields no correct member sets that way: term 0 or near overflow, an empty proposal, a
    /// forwarded request carrying a term, a snapshot with an invalid index, term or configuration.
    Malformed,
    /// Leader traffic at this member's term from a member that is not the leader it knows.
    NotFromLeader,
    /// Contradicts this member's log in a way raft-rs cannot survive (see [`check_against_raft`]).
    InconsistentWithLog,
    /// This member leads a configuration it was removed from (it stops shortly): raft-rs would
    /// panic committing without its own progress (raft.rs 943).
    RemovedLeader,
}

impl Rejection {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Rejection::UnknownSender => "unknown_sender",
            Rejection::IdentityMismatch => "identity_mismatch",
            Rejection::LocalKind => "local_kind",
            Rejection::ForwardedConfChange => "forwarded_conf_change",
            Rejection::Malformed => "malformed",
            Rejection::NotFromLeader => "not_from_leader",
            Rejection::InconsistentWithLog => "inconsistent_with_log",
            Rejection::RemovedLeader => "removed_leader",
        }
    }
}

impl Rejection {
    /// Counts the drop of `m` for this reason (and logs it at debug level).
    pub fn record(self, metrics: &crate::metrics::Metrics, m: &Message) {
        metrics
            .peer_messages_rejected
            .with_label_values(&[self.label()])
            .inc();
        tracing::debug!(from = m.from, kind = ?m.get_msg_type(), reason = self.label(), "dropped a peer message");
    }
}

/// The kinds of message members send each other (raft-rs's traffic between peers). Leader
/// transfers are started on the leader itself, so no member forwards a `MsgTransferLeader`.
fn is_peer_kind(t: MessageType) -> bool {
    use MessageType::*;
    matches!(
        t,
        MsgAppend
            | MsgAppendResponse
            | MsgRequestVote
            | MsgRequestVoteResponse
            | MsgRequestPreVote
            | MsgRequestPreVoteResponse
            | MsgSnapshot
            | MsgHeartbeat
            | MsgHeartbeatResponse
            | MsgTimeoutNow
            | MsgReadIndex
            | MsgReadIndexResp
            | MsgPropose
    )
}

/// Who the connection a message came on proves it is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Peer certificates are not required: anyone who reaches the port.
    Unproven,
    /// The leaf certificate the peer presented (peer mutual TLS).
    Certificate(rustls::pki_types::CertificateDer<'static>),
    /// Peer certificates are required and none came (cannot happen behind the TLS acceptor).
    Missing,
}

/// True when `member`'s peer URLs include a host the identity is valid for.
fn proves(identity: &Identity, member: &Member) -> bool {
    match identity {
        Identity::Unproven => true,
        Identity::Missing => false,
        Identity::Certificate(der) => member.peer_urls.iter().any(|u| {
            url::Url::parse(u)
                .ok()
                .and_then(|u| u.host_str().map(|h| crate::tls::certificate_names(der, h)))
                .unwrap_or(false)
        }),
    }
}

/// Checks what can be checked without the Raft log, where the message arrives: the sender is a
/// member (`members`: the applied configuration, learners included) other than `me`, proven by
/// the connection's `identity`, the kind is one peers send, and a forwarded proposal carries no
/// membership change.
pub fn check_sender(
    m: &Message,
    me: u64,
    members: &BTreeMap<u64, Member>,
    identity: &Identity,
) -> Result<(), Rejection> {
    let Some(sender) = members.get(&m.from).filter(|_| m.from != 0 && m.from != me) else {
        return Err(Rejection::UnknownSender);
    };
    if !proves(identity, sender) {
        return Err(Rejection::IdentityMismatch);
    }
    if !is_peer_kind(m.get_msg_type()) {
        return Err(Rejection::LocalKind);
    }
    if m.get_msg_type() == MessageType::MsgPropose
        && m.get_entries().iter().any(|e| {
            matches!(
                e.get_entry_type(),
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2
            )
        })
    {
        return Err(Rejection::ForwardedConfChange);
    }
    Ok(())
}

/// A term no correct cluster reaches; above it raft-rs's `term + 1` would overflow.
const TERM_CEILING: u64 = u64::MAX / 2;

/// Checks `m` against the Raft state `r` it is about to be stepped into (call it on the Raft
/// thread, right before `step`, so both see the same state).
pub fn check_against_raft<S: Storage>(r: &Raft<S>, m: &Message) -> Result<(), Rejection> {
    use MessageType::*;
    let t = m.get_msg_type();
    // A read index this member forwarded to the leader it knew comes back when that is itself
    // (raft-rs answers it as its own read); nothing else comes from itself.
    if m.from == 0 || (m.from == r.id && t != MessageType::MsgReadIndex) {
        return Err(Rejection::UnknownSender);
    }
    if m.term >= TERM_CEILING {
        return Err(Rejection::Malformed);
    }
    if r.state == StateRole::Leader && r.prs().get(r.id).is_none() {
        return Err(Rejection::RemovedLeader);
    }
    match t {
        // Forwarded by a follower: no term (raft-rs panics forwarding one that has it), and
        // what the leader indexes into (raft.rs 2024, 2125).
        MsgPropose | MsgReadIndex => {
            let entries_ok = if t == MsgPropose {
                !m.get_entries().is_empty()
            } else {
                m.get_entries().len() == 1
            };
            return if m.term == 0 && entries_ok {
                Ok(())
            } else {
                Err(Rejection::Malformed)
            };
        }
        // raft-rs treats term 0 as a local message and skips its term handling (raft.rs 1326).
        _ if m.term == 0 => return Err(Rejection::Malformed),
        _ => {}
    }
    // An older term only gets a canned reply; its content is never used.
    if m.term < r.term {
        return Ok(());
    }
    let last = r.raft_log.last_index();
    let same = m.term == r.term;
    let foreign_leader = same && r.leader_id != 0 && m.from != r.leader_id;
    match t {
        MsgAppend => {
            if foreign_leader {
                return Err(Rejection::NotFromLeader);
            }
            // Past our log with log term 0 matches anything (raft_log.rs 256).
            if m.index > last && m.log_term == 0 {
                return Err(Rejection::InconsistentWithLog);
            }
            let mut prev = m.log_term;
            for (i, e) in m.get_entries().iter().enumerate() {
                let contiguous = m.index.checked_add(1 + i as u64) == Some(e.index);
                if !contiguous || e.term < prev || e.term > m.term {
                    return Err(Rejection::InconsistentWithLog);
                }
                prev = e.term;
            }
            Ok(())
        }
        MsgHeartbeat if foreign_leader => Err(Rejection::NotFromLeader),
        // commit_to past the last index is fatal (raft_log.rs 294). A correct leader sends at
        // most what this member acknowledged.
        MsgHeartbeat if m.commit > last => Err(Rejection::InconsistentWithLog),
        MsgSnapshot => {
            if foreign_leader {
                return Err(Rejection::NotFromLeader);
            }
            let md = m.get_snapshot().get_metadata();
            if md.index == 0
                || md.index >= TERM_CEILING
                || md.term == 0
                || md.term > m.term
                || !conf_state_ok(md.get_conf_state())
            {
                return Err(Rejection::Malformed);
            }
            // At the commit index a leader's log matches ours; raft-rs would replace a committed
            // log with a different one (older snapshots it ignores).
            let committed = r.raft_log.committed;
            if md.index == committed && r.raft_log.term(committed).ok() != Some(md.term) {
                return Err(Rejection::InconsistentWithLog);
            }
            Ok(())
        }
        MsgTimeoutNow | MsgReadIndexResp if !(same && m.from == r.leader_id) => {
            Err(Rejection::NotFromLeader)
        }
        // A follower's answer about entries this leader never had (tracker/progress.rs 143, 194;
        // a snapshot request past the log would make the leader build snapshots for nothing).
        MsgAppendResponse if r.state == StateRole::Leader && same => {
            let past = (!m.reject && m.index > last)
                || (m.reject && m.request_snapshot == 0 && m.reject_hint > last)
                || m.request_snapshot > last;
            if past {
                Err(Rejection::InconsistentWithLog)
            } else {
                Ok(())
            }
        }
        _ => Ok(()),
    }
}

/// A configuration raft-rs can restore (raft.rs 2632, 2643): voters, no id 0, no id in two
/// roles, joint-only fields only while joint.
fn conf_state_ok(cs: &ConfState) -> bool {
    let set = |v: &[u64]| v.iter().copied().collect::<HashSet<u64>>();
    let voters = set(cs.get_voters());
    let learners = set(cs.get_learners());
    let outgoing = set(cs.get_voters_outgoing());
    let next = set(cs.get_learners_next());
    !voters.is_empty()
        && ![&voters, &learners, &outgoing, &next]
            .iter()
            .any(|s| s.contains(&0))
        && voters.is_disjoint(&learners)
        && learners.is_disjoint(&outgoing)
        && next.is_subset(&outgoing)
        && next.is_disjoint(&voters)
        && next.is_disjoint(&learners)
        && (!outgoing.is_empty() || (!cs.auto_leave && next.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::eraftpb::{ConfChange, Entry, Snapshot};
    use raft::storage::MemStorage;
    use raft::RawNode;
    use rand::{Rng, SeedableRng};

    fn node(id: u64) -> RawNode<MemStorage> {
        // As a member bootstraps: a first snapshot at index 1, term 1.
        let store = MemStorage::new();
        let mut first = Snapshot::default();
        first.mut_metadata().index = 1;
        first.mut_metadata().term = 1;
        first.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        store.wl().apply_snapshot(first).unwrap();
        let cfg = raft::Config {
            id,
            election_tick: 10,
            heartbeat_tick: 1,
            check_quorum: true,
            pre_vote: true,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RawNode::new(&cfg, store, &logger).unwrap()
    }

    /// Persists and applies what the node has ready, as the Raft loop does.
    fn drain(raw: &mut RawNode<MemStorage>) {
        while raw.has_ready() {
            let rd = raw.ready();
            let store = raw.raft.raft_log.store().clone();
            if !rd.snapshot().is_empty() {
                let _ = store.wl().apply_snapshot(rd.snapshot().clone());
            }
            store.wl().append(rd.entries()).unwrap();
            if let Some(hs) = rd.hs() {
                store.wl().set_hardstate(hs.clone());
            }
            let light = raw.advance(rd);
            if let Some(c) = light.commit_index() {
                store.wl().mut_hard_state().commit = c;
            }
            raw.advance_apply();
        }
    }

    /// Node 1, leader of {1, 2, 3} at term 2 with a few entries.
    fn leader() -> RawNode<MemStorage> {
        let mut raw = node(1);
        raw.campaign().unwrap();
        drain(&mut raw);
        let mut grant = msg(
            MessageType::MsgRequestPreVoteResponse,
            2,
            1,
            raw.raft.term + 1,
        );
        raw.step(grant.clone()).unwrap();
        drain(&mut raw);
        grant.set_msg_type(MessageType::MsgRequestVoteResponse);
        grant.term = raw.raft.term;
        raw.step(grant).unwrap();
        drain(&mut raw);
        assert_eq!(raw.raft.state, StateRole::Leader);
        for i in 0..3u8 {
            raw.propose(vec![], vec![i]).unwrap();
            drain(&mut raw);
        }
        raw
    }

    /// Node 2, follower of 1 at term 2 with the same entries.
    fn follower() -> RawNode<MemStorage> {
        let mut raw = node(2);
        let mut app = msg(MessageType::MsgAppend, 1, 2, 2);
        app.index = 1;
        app.log_term = 1;
        app.commit = 3;
        app.set_entries((2..=4).map(|i| entry(i, 2)).collect::<Vec<_>>().into());
        raw.step(app).unwrap();
        drain(&mut raw);
        assert_eq!(raw.raft.leader_id, 1);
        assert_eq!(raw.raft.raft_log.last_index(), 4);
        raw
    }

    fn msg(t: MessageType, from: u64, to: u64, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = to;
        m.term = term;
        m
    }

    fn entry(index: u64, term: u64) -> Entry {
        let mut e = Entry::default();
        e.index = index;
        e.term = term;
        e
    }

    fn members() -> BTreeMap<u64, Member> {
        (1..=3)
            .map(|id| {
                let m = Member {
                    id,
                    name: format!("m{id}"),
                    peer_urls: vec![],
                    client_urls: vec![],
                    is_learner: false,
                };
                (id, m)
            })
            .collect()
    }

    #[test]
    fn senders_must_be_other_members_sending_peer_kinds() {
        let ms = members();
        let ok = msg(MessageType::MsgAppend, 1, 2, 2);
        assert_eq!(check_sender(&ok, 2, &ms, &Identity::Unproven), Ok(()));
        for from in [0, 2, 9] {
            let m = msg(MessageType::MsgAppend, from, 2, 2);
            assert_eq!(
                check_sender(&m, 2, &ms, &Identity::Unproven),
                Err(Rejection::UnknownSender)
            );
        }
        for t in [
            MessageType::MsgHup,
            MessageType::MsgBeat,
            MessageType::MsgUnreachable,
            MessageType::MsgSnapStatus,
            MessageType::MsgCheckQuorum,
            MessageType::MsgTransferLeader,
        ] {
            let m = msg(t, 1, 2, 2);
            assert_eq!(
                check_sender(&m, 2, &ms, &Identity::Unproven),
                Err(Rejection::LocalKind),
                "{t:?}"
            );
        }
        let mut prop = msg(MessageType::MsgPropose, 1, 2, 0);
        prop.set_entries(vec![entry(0, 0)].into());
        assert_eq!(check_sender(&prop, 2, &ms, &Identity::Unproven), Ok(()));
        let mut cc = entry(0, 0);
        cc.set_entry_type(EntryType::EntryConfChange);
        cc.data = protobuf::Message::write_to_bytes(&ConfChange::default())
            .unwrap()
            .into();
        prop.set_entries(vec![cc].into());
        assert_eq!(
            check_sender(&prop, 2, &ms, &Identity::Unproven),
            Err(Rejection::ForwardedConfChange)
        );
    }

    #[test]
    fn the_messages_that_panic_raft_rs_are_refused_and_correct_traffic_passes() {
        let f = follower();
        let r = &f.raft;
        let check = |m: &Message| check_against_raft(r, m);
        // Heartbeat committing past the log (the reported crash), and a correct one.
        let mut hb = msg(MessageType::MsgHeartbeat, 1, 2, 2);
        hb.commit = 1_000_000_000_000;
        assert_eq!(check(&hb), Err(Rejection::InconsistentWithLog));
        hb.commit = 4;
        assert_eq!(check(&hb), Ok(()));
        // The same from a member that is not the leader of this term.
        hb.from = 3;
        assert_eq!(check(&hb), Err(Rejection::NotFromLeader));
        // An older term is answered without using its content.
        hb.term = 1;
        hb.commit = u64::MAX;
        assert_eq!(check(&hb), Ok(()));
        // Term 0 and terms about to overflow.
        assert_eq!(
            check(&msg(MessageType::MsgRequestVote, 3, 2, 0)),
            Err(Rejection::Malformed)
        );
        assert_eq!(
            check(&msg(MessageType::MsgRequestVote, 3, 2, u64::MAX)),
            Err(Rejection::Malformed)
        );
        // Appends: contiguous entries with monotone terms pass, even duplicates below commit.
        let mut app = msg(MessageType::MsgAppend, 1, 2, 2);
        app.index = 2;
        app.log_term = 2;
        app.set_entries(vec![entry(3, 2), entry(4, 2), entry(5, 2)].into());
        assert_eq!(check(&app), Ok(()));
        app.set_entries(vec![entry(3, 2), entry(5, 2)].into());
        assert_eq!(check(&app), Err(Rejection::InconsistentWithLog));
        app.set_entries(vec![entry(3, 2), entry(4, 1)].into());
        assert_eq!(check(&app), Err(Rejection::InconsistentWithLog));
        app.set_entries(vec![entry(3, 3)].into());
        assert_eq!(check(&app), Err(Rejection::InconsistentWithLog));
        app.set_entries(vec![].into());
        app.index = 100;
        app.log_term = 0;
        app.commit = 100;
        assert_eq!(check(&app), Err(Rejection::InconsistentWithLog));
        // Forwarded proposals and reads: no term, entries as the leader expects.
        let mut prop = msg(MessageType::MsgPropose, 3, 2, 0);
        assert_eq!(check(&prop), Err(Rejection::Malformed));
        prop.set_entries(vec![entry(0, 0)].into());
        assert_eq!(check(&prop), Ok(()));
        prop.term = 2;
        assert_eq!(check(&prop), Err(Rejection::Malformed));
        let ri = msg(MessageType::MsgReadIndex, 3, 2, 0);
        assert_eq!(check(&ri), Err(Rejection::Malformed));
        // Snapshots: a valid index, term and configuration.
        let mut snap = msg(MessageType::MsgSnapshot, 1, 2, 2);
        let mut s = Snapshot::default();
        s.mut_metadata().index = 10;
        s.mut_metadata().term = 2;
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        snap.set_snapshot(s.clone());
        assert_eq!(check(&snap), Ok(()));
        s.mut_metadata().mut_conf_state().voters = vec![];
        snap.set_snapshot(s.clone());
        assert_eq!(check(&snap), Err(Rejection::Malformed));
        s.mut_metadata().mut_conf_state().voters = vec![1, 2, 3];
        s.mut_metadata().mut_conf_state().learners = vec![3];
        snap.set_snapshot(s.clone());
        assert_eq!(check(&snap), Err(Rejection::Malformed));
        s.mut_metadata().mut_conf_state().learners = vec![];
        s.mut_metadata().term = 0;
        snap.set_snapshot(s);
        assert_eq!(check(&snap), Err(Rejection::Malformed));

        // On the leader: acknowledgements of entries it never had.
        let l = leader();
        let last = l.raft.raft_log.last_index();
        let mut ack = msg(MessageType::MsgAppendResponse, 2, 1, l.raft.term);
        ack.index = last;
        assert_eq!(check_against_raft(&l.raft, &ack), Ok(()));
        ack.index = u64::MAX;
        assert_eq!(
            check_against_raft(&l.raft, &ack),
            Err(Rejection::InconsistentWithLog)
        );
        ack.index = last;
        ack.reject = true;
        ack.reject_hint = u64::MAX;
        assert_eq!(
            check_against_raft(&l.raft, &ack),
            Err(Rejection::InconsistentWithLog)
        );
    }

    /// Random messages built from boundary values, stepped into a follower and a leader (each
    /// step persisted and applied like the Raft loop does): whatever the guard lets through
    /// must not panic raft-rs.
    #[test]
    fn nothing_the_guard_admits_panics_raft_rs() {
        let seeds: u64 = std::env::var("GUARD_FUZZ_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4);
        for seed in 0..seeds {
            fuzz_round(seed);
        }
    }

    fn fuzz_round(seed: u64) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let values = |rng: &mut rand::rngs::StdRng| -> u64 {
            const V: [u64; 10] = [0, 1, 2, 3, 4, 5, 7, 100, TERM_CEILING - 1, u64::MAX];
            V[rng.gen_range(0..V.len())]
        };
        let kinds = [
            MessageType::MsgAppend,
            MessageType::MsgAppendResponse,
            MessageType::MsgRequestVote,
            MessageType::MsgRequestVoteResponse,
            MessageType::MsgRequestPreVote,
            MessageType::MsgRequestPreVoteResponse,
            MessageType::MsgSnapshot,
            MessageType::MsgHeartbeat,
            MessageType::MsgHeartbeatResponse,
            MessageType::MsgTimeoutNow,
            MessageType::MsgReadIndex,
            MessageType::MsgReadIndexResp,
            MessageType::MsgPropose,
            MessageType::MsgTransferLeader,
            MessageType::MsgHup,
        ];
        let (mut admitted, mut refused) = (0, 0);
        for round in 0..200 {
            let (mut raw, me) = if round % 2 == 0 {
                (follower(), 2)
            } else {
                (leader(), 1)
            };
            let mut history: Vec<String> = Vec::new();
            for _ in 0..100 {
                let t = kinds[rng.gen_range(0..kinds.len())];
                let from = [0, 1, 2, 3, 9][rng.gen_range(0..5)];
                // Mostly near the node's term, so messages reach past the term checks.
                let term = if rng.gen_bool(0.7) {
                    raw.raft.term + rng.gen_range(0..2)
                } else {
                    values(&mut rng)
                };
                let mut m = msg(t, from, me, term);
                m.index = if rng.gen_bool(0.5) {
                    raw.raft.raft_log.last_index() + rng.gen_range(0..3) - 1
                } else {
                    values(&mut rng)
                };
                m.log_term = values(&mut rng);
                m.commit = values(&mut rng);
                m.reject = rng.gen_bool(0.3);
                m.reject_hint = values(&mut rng);
                if rng.gen_bool(0.1) {
                    m.request_snapshot = values(&mut rng);
                }
                let n = rng.gen_range(0..4);
                let first = m.index.wrapping_add(1);
                let ents: Vec<Entry> = (0..n)
                    .map(|i| {
                        let idx = if rng.gen_bool(0.8) {
                            first.wrapping_add(i)
                        } else {
                            values(&mut rng)
                        };
                        let t = if rng.gen_bool(0.8) {
                            term
                        } else {
                            values(&mut rng)
                        };
                        entry(idx, t)
                    })
                    .collect();
                m.set_entries(ents.into());
                if t == MessageType::MsgSnapshot {
                    let mut s = Snapshot::default();
                    s.mut_metadata().index = values(&mut rng);
                    s.mut_metadata().term = values(&mut rng).min(term);
                    let cs = s.mut_metadata().mut_conf_state();
                    cs.voters = if rng.gen_bool(0.8) {
                        vec![1, 2, 3]
                    } else {
                        vec![]
                    };
                    if rng.gen_bool(0.2) {
                        cs.learners = vec![[0, 3, 4][rng.gen_range(0..3)]];
                    }
                    m.set_snapshot(s);
                }
                if check_sender(&m, me, &members(), &Identity::Unproven).is_err() {
                    refused += 1;
                    continue;
                }
                if check_against_raft(&raw.raft, &m).is_err() {
                    refused += 1;
                    continue;
                }
                admitted += 1;
                let shown = format!("{m:?}");
                history.push(format!(
                    "[term {} lead {} last {} commit {} state {:?}] {shown}",
                    raw.raft.term,
                    raw.raft.leader_id,
                    raw.raft.raft_log.last_index(),
                    raw.raft.raft_log.committed,
                    raw.raft.state
                ));
                let stepped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = raw.step(m);
                    drain(&mut raw);
                    if rng.gen_bool(0.2) {
                        raw.tick();
                        drain(&mut raw);
                    }
                }));
                assert!(
                    stepped.is_ok(),
                    "seed {seed}: raft-rs panicked on an admitted {shown}; admitted before:\n{}",
                    history.join("\n")
                );
            }
        }
        // The mix exercised both sides of the guard.
        assert!(
            admitted > 1000 && refused > 1000,
            "seed {seed}: {admitted} {refused}"
        );
    }
}
