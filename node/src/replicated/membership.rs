//! Membership changes as pure logic: what a Cluster API request means, whether it is safe to make
//! now (etcd's checks and errors), the raft-rs configuration change it becomes, and how applying it
//! changes the replicated member list. The Raft loop supplies the facts; nothing here does I/O.

use std::collections::{BTreeMap, BTreeSet};

use raft::eraftpb::{ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2};
use serde::{Deserialize, Serialize};

use crate::replicated::member::{valid_peer_urls, Member};

/// A learner may be promoted once it has replicated this fraction of the leader's log (etcd's
/// `readyPercentThreshold`).
pub const LEARNER_READY_FRACTION: f64 = 0.9;

/// A change to the cluster's membership, as replicated in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberChange {
    /// Add a member (voter or learner); its name and client URLs come later, when it publishes.
    Add(Member),
    /// Make a learner a voter.
    Promote(u64),
    /// Remove a member for good; its id can never come back.
    Remove(u64),
    /// Change a member's peer URLs.
    UpdatePeerUrls {
        /// Member.
        id: u64,
        /// New peer URLs.
        peer_urls: Vec<String>,
    },
    /// A started member announces its name and client URLs (etcd's attribute publish).
    Publish {
        /// Member.
        id: u64,
        /// Its `--name`.
        name: String,
        /// Its advertised client URLs.
        client_urls: Vec<String>,
    },
}

impl MemberChange {
    /// Encodes the change for an entry (or a ConfChangeV2's context).
    pub fn encode(&self) -> Vec<u8> {
        // Serializing plain data into a Vec cannot fail.
        bincode::serialize(self).unwrap_or_default()
    }

    /// Decodes a change.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        bincode::deserialize(bytes).map_err(|e| e.to_string())
    }

    /// True when the change alters Raft's configuration (and so needs a ConfChangeV2).
    pub fn is_conf_change(&self) -> bool {
        matches!(
            self,
            MemberChange::Add(_) | MemberChange::Promote(_) | MemberChange::Remove(_)
        )
    }
}

/// A refused membership request, with etcd's gRPC code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// Unknown member id.
    #[error("etcdserver: member not found")]
    NotFound,
    /// A member with that id exists (or existed and was removed).
    #[error("etcdserver: member ID already exist")]
    IdExists,
    /// Another member already uses one of the peer URLs.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// Empty or unparsable peer URLs.
    #[error("etcdserver: given member URLs are invalid")]
    BadUrls,
    /// The change would leave too few started voters for a quorum.
    #[error("etcdserver: re-configuration failed due to not enough started members")]
    NotEnoughStarted,
    /// Promote of a voter.
    #[error("etcdserver: can only promote a learner member")]
    NotLearner,
    /// Promote of a learner that has not caught up.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// Adding a learner while the cluster has as many as allowed.
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// Removing a voter while some voters are unreachable would break the active quorum.
    #[error("etcdserver: unhealthy cluster")]
    Unhealthy,
    /// Another configuration change has not been applied yet.
    #[error("etcdserver: a membership change is already in progress; retry after it is applied")]
    InProgress,
    /// Raft refused the change when applying it.
    #[error("etcdserver: membership change rejected by raft: {0}")]
    Rejected(String),
}

/// What the leader knows about one member's replication.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerProgress {
    /// Highest log index known to be replicated on it.
    pub matched: u64,
    /// It answered within the last election timeout.
    pub recent_active: bool,
}

/// The facts a membership request is checked against (the leader's view).
#[derive(Debug, Clone, Default)]
pub struct ClusterFacts<'a> {
    /// Applied member list.
    pub members: Option<&'a BTreeMap<u64, Member>>,
    /// Ids removed for good.
    pub removed: Option<&'a BTreeSet<u64>>,
    /// This member (the leader).
    pub me: u64,
    /// Replication progress by member id (leader's tracker).
    pub progress: BTreeMap<u64, PeerProgress>,
    /// A configuration change is proposed and not yet applied.
    pub conf_change_pending: bool,
    /// Most learners allowed at once.
    pub max_learners: usize,
}

fn members<'a>(f: &ClusterFacts<'a>) -> impl Iterator<Item = &'a Member> + 'a {
    f.members.into_iter().flat_map(|m| m.values())
}

fn voters<'a>(f: &ClusterFacts<'a>) -> impl Iterator<Item = &'a Member> + 'a {
    members(f).filter(|m| !m.is_learner)
}

fn url_taken(f: &ClusterFacts<'_>, urls: &[String], except: Option<u64>) -> bool {
    members(f)
        .filter(|m| Some(m.id) != except)
        .any(|m| m.peer_urls.iter().any(|u| urls.contains(u)))
}

/// Checks a request against the cluster as the leader sees it, as etcd's strict reconfiguration
/// check does. `Ok` means it may be proposed now.
pub fn check(change: &MemberChange, f: &ClusterFacts<'_>) -> Result<(), MembershipError> {
    if change.is_conf_change() && f.conf_change_pending {
        return Err(MembershipError::InProgress);
    }
    let find = |id: u64| members(f).find(|m| m.id == id);
    match change {
        MemberChange::Add(m) => {
            if !valid_peer_urls(&m.peer_urls) {
                return Err(MembershipError::BadUrls);
            }
            if find(m.id).is_some() || f.removed.is_some_and(|r| r.contains(&m.id)) {
                return Err(MembershipError::IdExists);
            }
            if url_taken(f, &m.peer_urls, None) {
                return Err(MembershipError::PeerUrlExists);
            }
            if m.is_learner {
                if members(f).filter(|m| m.is_learner).count() >= f.max_learners {
                    return Err(MembershipError::TooManyLearners);
                }
            } else {
                // The new voter has not started: the started ones must still make a quorum —
                // except growing one started member to two, which etcd allows (restores).
                let n = voters(f).count() + 1;
                let up = voters(f).filter(|m| m.is_started()).count();
                if up < n / 2 + 1 && !(up == 1 && n == 2) {
                    return Err(MembershipError::NotEnoughStarted);
                }
            }
            Ok(())
        }
        MemberChange::Promote(id) => {
            let m = find(*id).ok_or(MembershipError::NotFound)?;
            if !m.is_learner {
                return Err(MembershipError::NotLearner);
            }
            let leader = f.progress.get(&f.me).map_or(0, |p| p.matched);
            let learner = f.progress.get(id).map_or(0, |p| p.matched);
            if (learner as f64) < (leader as f64) * LEARNER_READY_FRACTION {
                return Err(MembershipError::LearnerNotReady);
            }
            let n = voters(f).count() + 1;
            let up = voters(f).filter(|m| m.is_started()).count() + 1;
            if up < n / 2 + 1 {
                return Err(MembershipError::NotEnoughStarted);
            }
            Ok(())
        }
        MemberChange::Remove(id) => {
            let m = find(*id).ok_or(MembershipError::NotFound)?;
            if m.is_learner {
                return Ok(());
            }
            let rest: Vec<&Member> = voters(f).filter(|v| v.id != *id).collect();
            let up = rest.iter().filter(|v| v.is_started()).count();
            if rest.is_empty() || up < rest.len() / 2 + 1 {
                return Err(MembershipError::NotEnoughStarted);
            }
            // A member that is down is not part of the active quorum: removing it is safe.
            let target_active = *id == f.me || f.progress.get(id).is_some_and(|p| p.recent_active);
            if !target_active {
                return Ok(());
            }
            let active = rest
                .iter()
                .filter(|v| v.id == f.me || f.progress.get(&v.id).is_some_and(|p| p.recent_active))
                .count();
            if active < rest.len() / 2 + 1 {
                return Err(MembershipError::Unhealthy);
            }
            Ok(())
        }
        MemberChange::UpdatePeerUrls { id, peer_urls } => {
            if !valid_peer_urls(peer_urls) {
                return Err(MembershipError::BadUrls);
            }
            find(*id).ok_or(MembershipError::NotFound)?;
            if url_taken(f, peer_urls, Some(*id)) {
                return Err(MembershipError::PeerUrlExists);
            }
            Ok(())
        }
        MemberChange::Publish { id, .. } => {
            find(*id).ok_or(MembershipError::NotFound)?;
            Ok(())
        }
    }
}

/// The raft-rs configuration change for a membership change (None for metadata-only changes).
/// Simple changes of one member use raft-rs's simple path; the context carries the whole change
/// so every member applies the same metadata.
pub fn conf_change(change: &MemberChange) -> Option<ConfChangeV2> {
    let (id, kind) = match change {
        MemberChange::Add(m) if m.is_learner => (m.id, ConfChangeType::AddLearnerNode),
        MemberChange::Add(m) => (m.id, ConfChangeType::AddNode),
        MemberChange::Promote(id) => (*id, ConfChangeType::AddNode),
        MemberChange::Remove(id) => (*id, ConfChangeType::RemoveNode),
        _ => return None,
    };
    let mut single = ConfChangeSingle::default();
    single.node_id = id;
    single.set_change_type(kind);
    let mut cc = ConfChangeV2::default();
    cc.set_transition(ConfChangeTransition::Auto);
    cc.set_changes(vec![single].into());
    cc.context = change.encode().into();
    Some(cc)
}

/// Applies a change to the replicated member list. Deterministic: every member gets the same
/// result. Returns false when the change no longer fits (e.g. the member is gone) and was skipped.
pub fn apply(
    change: &MemberChange,
    members: &mut BTreeMap<u64, Member>,
    removed: &mut BTreeSet<u64>,
) -> bool {
    match change {
        MemberChange::Add(m) => {
            if members.contains_key(&m.id) || removed.contains(&m.id) {
                return false;
            }
            members.insert(m.id, m.clone());
        }
        MemberChange::Promote(id) => match members.get_mut(id) {
            Some(m) => m.is_learner = false,
            None => return false,
        },
        MemberChange::Remove(id) => {
            if members.remove(id).is_none() {
                return false;
            }
            removed.insert(*id);
        }
        MemberChange::UpdatePeerUrls { id, peer_urls } => match members.get_mut(id) {
            Some(m) => m.peer_urls = peer_urls.clone(),
            None => return false,
        },
        MemberChange::Publish {
            id,
            name,
            client_urls,
        } => match members.get_mut(id) {
            Some(m) => {
                m.name = name.clone();
                m.client_urls = client_urls.clone();
            }
            None => return false,
        },
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replicated::member::new_member_id;

    fn member(id: u64, name: &str, learner: bool) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("http://127.0.0.{id}:2380")],
            client_urls: vec![],
            is_learner: learner,
        }
    }

    fn cluster(ms: &[Member]) -> BTreeMap<u64, Member> {
        ms.iter().map(|m| (m.id, m.clone())).collect()
    }

    fn facts<'a>(
        ms: &'a BTreeMap<u64, Member>,
        removed: &'a BTreeSet<u64>,
        active: &[u64],
    ) -> ClusterFacts<'a> {
        ClusterFacts {
            members: Some(ms),
            removed: Some(removed),
            me: 1,
            progress: ms
                .keys()
                .map(|id| {
                    (
                        *id,
                        PeerProgress {
                            matched: 100,
                            recent_active: active.contains(id),
                        },
                    )
                })
                .collect(),
            conf_change_pending: false,
            max_learners: 1,
        }
    }

    #[test]
    fn add_checks_urls_ids_learners_and_started_quorum() {
        let ms = cluster(&[member(1, "a", false)]);
        let removed: BTreeSet<u64> = [9].into();
        let f = facts(&ms, &removed, &[1]);
        let add = |id, url: &str, learner| {
            MemberChange::Add(Member {
                id,
                name: String::new(),
                peer_urls: vec![url.to_string()],
                client_urls: vec![],
                is_learner: learner,
            })
        };
        assert_eq!(check(&add(2, "http://127.0.0.2:2380", true), &f), Ok(()));
        assert_eq!(
            check(&add(2, "not a url", true), &f),
            Err(MembershipError::BadUrls)
        );
        assert_eq!(
            check(&add(2, "http://127.0.0.1:2380", true), &f),
            Err(MembershipError::PeerUrlExists)
        );
        assert_eq!(
            check(&add(1, "http://127.0.0.2:2380", true), &f),
            Err(MembershipError::IdExists)
        );
        assert_eq!(
            check(&add(9, "http://127.0.0.2:2380", true), &f),
            Err(MembershipError::IdExists),
            "a removed id never comes back"
        );
        // 1 started voter + 1 new voter: etcd allows it (quorum 2 until the new one starts).
        assert_eq!(check(&add(2, "http://127.0.0.2:2380", false), &f), Ok(()));
        // 2 voters, one not started, + 1: only 1 of 3 started.
        let half = cluster(&[member(1, "a", false), member(3, "", false)]);
        assert_eq!(
            check(
                &add(2, "http://127.0.0.2:2380", false),
                &facts(&half, &removed, &[1])
            ),
            Err(MembershipError::NotEnoughStarted)
        );
        let ms2 = cluster(&[member(1, "a", false), member(2, "", true)]);
        let f2 = facts(&ms2, &removed, &[1, 2]);
        assert_eq!(
            check(&add(3, "http://127.0.0.3:2380", true), &f2),
            Err(MembershipError::TooManyLearners)
        );
        let mut pending = f.clone();
        pending.conf_change_pending = true;
        assert_eq!(
            check(&add(2, "http://127.0.0.2:2380", true), &pending),
            Err(MembershipError::InProgress)
        );
    }

    #[test]
    fn promote_needs_a_started_learner_in_sync() {
        let ms = cluster(&[member(1, "a", false), member(2, "b", true)]);
        let removed = BTreeSet::new();
        let mut f = facts(&ms, &removed, &[1, 2]);
        assert_eq!(check(&MemberChange::Promote(2), &f), Ok(()));
        assert_eq!(
            check(&MemberChange::Promote(1), &f),
            Err(MembershipError::NotLearner)
        );
        assert_eq!(
            check(&MemberChange::Promote(5), &f),
            Err(MembershipError::NotFound)
        );
        f.progress.insert(
            2,
            PeerProgress {
                matched: 50,
                recent_active: true,
            },
        );
        assert_eq!(
            check(&MemberChange::Promote(2), &f),
            Err(MembershipError::LearnerNotReady)
        );
        // A learner that has not replicated anything yet.
        let unstarted = cluster(&[member(1, "a", false), member(2, "", true)]);
        let mut f = facts(&unstarted, &removed, &[1]);
        f.progress.insert(2, PeerProgress::default());
        assert_eq!(
            check(&MemberChange::Promote(2), &f),
            Err(MembershipError::LearnerNotReady)
        );
    }

    #[test]
    fn remove_protects_the_last_voter_and_the_active_quorum() {
        let removed = BTreeSet::new();
        let one = cluster(&[member(1, "a", false)]);
        assert_eq!(
            check(&MemberChange::Remove(1), &facts(&one, &removed, &[1])),
            Err(MembershipError::NotEnoughStarted)
        );
        let three = cluster(&[
            member(1, "a", false),
            member(2, "b", false),
            member(3, "c", false),
        ]);
        // All up: fine.
        assert_eq!(
            check(
                &MemberChange::Remove(3),
                &facts(&three, &removed, &[1, 2, 3])
            ),
            Ok(())
        );
        // 3 is down: removing it is safe.
        assert_eq!(
            check(&MemberChange::Remove(3), &facts(&three, &removed, &[1, 2])),
            Ok(())
        );
        // 2 is down: removing 3 (up) would leave {1, 2} with only 1 active.
        assert_eq!(
            check(&MemberChange::Remove(3), &facts(&three, &removed, &[1, 3])),
            Err(MembershipError::Unhealthy)
        );
        // Learners can always go.
        let with_learner = cluster(&[member(1, "a", false), member(2, "", true)]);
        assert_eq!(
            check(
                &MemberChange::Remove(2),
                &facts(&with_learner, &removed, &[1])
            ),
            Ok(())
        );
    }

    #[test]
    fn apply_is_deterministic_and_removed_ids_stay_removed() {
        let mut ms = cluster(&[member(1, "a", false)]);
        let mut removed = BTreeSet::new();
        assert!(apply(
            &MemberChange::Add(member(2, "", true)),
            &mut ms,
            &mut removed
        ));
        assert!(apply(
            &MemberChange::Publish {
                id: 2,
                name: "b".into(),
                client_urls: vec!["http://127.0.0.2:2379".into()]
            },
            &mut ms,
            &mut removed
        ));
        assert!(apply(&MemberChange::Promote(2), &mut ms, &mut removed));
        assert!(!ms[&2].is_learner);
        assert_eq!(ms[&2].name, "b");
        assert!(apply(&MemberChange::Remove(2), &mut ms, &mut removed));
        assert!(removed.contains(&2));
        assert!(!apply(
            &MemberChange::Add(member(2, "", true)),
            &mut ms,
            &mut removed
        ));
        assert!(!apply(&MemberChange::Promote(7), &mut ms, &mut removed));
    }

    #[test]
    fn conf_changes_carry_the_change_and_ids_differ_over_time() {
        let cc = conf_change(&MemberChange::Add(member(2, "", true))).unwrap();
        assert_eq!(
            cc.changes[0].get_change_type(),
            ConfChangeType::AddLearnerNode
        );
        assert_eq!(
            MemberChange::decode(&cc.context).unwrap(),
            MemberChange::Add(member(2, "", true))
        );
        assert!(conf_change(&MemberChange::Publish {
            id: 1,
            name: "a".into(),
            client_urls: vec![]
        })
        .is_none());
        let urls = vec!["http://127.0.0.2:2380".to_string()];
        assert_ne!(new_member_id(&urls, "t", 1), new_member_id(&urls, "t", 2));
    }
}
