//! Member identity, in one place (as etcd keeps it in `membership/member.go`): what a member is,
//! how member and cluster ids are derived, when a member counts as started, which peer URLs are
//! valid, and the peer URLs the transport dials.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};

/// One cluster member as the replicated state knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft id.
    pub id: u64,
    /// Name (empty until the member has started).
    pub name: String,
    /// Peer URLs.
    pub peer_urls: Vec<String>,
    /// Client URLs (empty until the member has started).
    pub client_urls: Vec<String>,
    /// True for a non-voting learner.
    pub is_learner: bool,
}

impl Member {
    /// A member has started when it has published its name (bootstrap members start with theirs).
    pub fn is_started(&self) -> bool {
        !self.name.is_empty()
    }
}

/// The first 8 bytes of a SHA-1 digest, big-endian.
fn digest_u64(h: Sha1) -> u64 {
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// Member id as etcd derives it: the first 8 bytes of SHA-1 over the sorted peer URLs and the token.
pub fn member_id(peer_urls: &[String], token: &str) -> u64 {
    let mut urls = peer_urls.to_vec();
    urls.sort();
    let mut h = Sha1::new();
    h.update(urls.join("").as_bytes());
    h.update(token.as_bytes());
    // Raft reserves id 0 for "none".
    digest_u64(h).max(1)
}

/// Id for a member added at `unix_secs`, as etcd derives it: SHA-1 over the sorted peer URLs, the
/// cluster token and the time, so re-adding the same URLs later yields a new id.
pub fn new_member_id(peer_urls: &[String], token: &str, unix_secs: u64) -> u64 {
    member_id(peer_urls, &format!("{token}{unix_secs}"))
}

/// Cluster id: SHA-1 over the sorted member ids.
pub fn cluster_id(member_ids: &[u64]) -> u64 {
    let mut ids = member_ids.to_vec();
    ids.sort_unstable();
    let mut h = Sha1::new();
    for id in ids {
        h.update(id.to_be_bytes());
    }
    digest_u64(h)
}

/// Peer URLs must be absolute http(s) URLs with a host and port.
pub fn valid_peer_urls(urls: &[String]) -> bool {
    !urls.is_empty()
        && urls.iter().all(|u| {
            url::Url::parse(u).is_ok_and(|p| {
                matches!(p.scheme(), "http" | "https")
                    && p.host_str().is_some()
                    && p.port_or_known_default().is_some()
            })
        })
}

/// Peer URLs of every member, for the transport.
pub fn peer_urls(members: &BTreeMap<u64, Member>) -> BTreeMap<u64, Vec<String>> {
    members
        .values()
        .map(|m| (m.id, m.peer_urls.clone()))
        .collect()
}

/// True when two lists name the same peer URLs, in any order (how a joining member finds itself).
pub fn same_peer_urls(a: &[String], b: &[String]) -> bool {
    let (mut a, mut b) = (a.to_vec(), b.to_vec());
    a.sort();
    b.sort();
    a == b
}
