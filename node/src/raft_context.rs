//! The context bytes this member hands to Raft, in one typed codec: a proposed entry's context
//! names its proposer (so only the proposer answers the client), a ReadIndex request's context
//! numbers its round (so the read lease and the read queue can match Raft's answer to it).

/// Big-endian `u64` words, one after another.
fn encode_words(words: &[u64]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

/// Exactly `N` big-endian `u64` words, or `None`.
fn decode_words<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (w, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *w = u64::from_be_bytes(chunk.try_into().ok()?);
    }
    Some(out)
}

/// Context of a proposed entry: the proposing member, its proposal id, and its proposal
/// sequence number. The sequence grows with every proposal the member makes, across restarts;
/// the state machine applies an entry only if its sequence is above the last one applied from
/// that member, so a proposal the network delivered twice (or an older one overtaken by a newer
/// one) is applied at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalContext {
    /// Member that proposed the entry.
    pub member: u64,
    /// The proposer's id for it (0: nobody waits for an answer).
    pub id: u64,
    /// The member's proposal sequence number (0: none, an entry from before sequences).
    pub seq: u64,
}

impl ProposalContext {
    /// 24 bytes: member, id, sequence, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        encode_words(&[self.member, self.id, self.seq])
    }

    /// `None` for any other length (entries proposed by raft-rs itself carry no context). Reads
    /// the 16-byte contexts of earlier versions too (sequence 0).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        if let Some([member, id]) = decode_words(bytes) {
            return Some(ProposalContext { member, id, seq: 0 });
        }
        let [member, id, seq] = decode_words(bytes)?;
        Some(ProposalContext { member, id, seq })
    }
}

/// Context of a ReadIndex request: the member that asked, its boot nonce (new on every start)
/// and the number of its round. raft-rs matches pending reads and heartbeat acknowledgements by
/// these bytes alone, and followers' requests reach the leader unchanged, so they must be unique
/// across members and restarts: otherwise a follower's request that collides with one of the
/// leader's rounds is dropped, and a late acknowledgement of an old round could renew the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadIndexContext {
    /// Member that started the round.
    pub member: u64,
    /// That member's boot nonce.
    pub boot: u64,
    /// The round's number on that member since it started.
    pub round: u64,
}

impl ReadIndexContext {
    /// 24 bytes: member, boot nonce, round, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        encode_words(&[self.member, self.boot, self.round])
    }

    /// `None` for any other length.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let [member, boot, round] = decode_words(bytes)?;
        Some(ReadIndexContext {
            member,
            boot,
            round,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_other_lengths_are_refused() {
        let p = ProposalContext {
            member: 7,
            id: 42,
            seq: 3,
        };
        assert_eq!(ProposalContext::decode(&p.encode()), Some(p));
        // An entry written by an earlier version: no sequence.
        let old: Vec<u8> = [7u64, 42].iter().flat_map(|w| w.to_be_bytes()).collect();
        assert_eq!(
            ProposalContext::decode(&old),
            Some(ProposalContext { seq: 0, ..p })
        );
        assert_eq!(ProposalContext::decode(&[0; 15]), None);
        assert_eq!(ProposalContext::decode(&[0; 17]), None);
        assert_eq!(ProposalContext::decode(&[]), None);
        let r = ReadIndexContext {
            member: 7,
            boot: 11,
            round: 9,
        };
        assert_eq!(ReadIndexContext::decode(&r.encode()), Some(r));
        assert_eq!(ReadIndexContext::decode(&[0; 16]), None);
        assert_eq!(ReadIndexContext::decode(&[0; 8]), None);
        // Two members, or one member across a restart, never produce the same bytes.
        let other_member = ReadIndexContext { member: 8, ..r };
        let restarted = ReadIndexContext { boot: 12, ..r };
        assert_ne!(r.encode(), other_member.encode());
        assert_ne!(r.encode(), restarted.encode());
    }
}
