//! The context bytes this member hands to Raft, in one typed codec: a proposed entry's context
//! names its proposer (so only the proposer answers the client), a ReadIndex request's context
//! numbers its round (so the read lease and the read queue can match Raft's answer to it).

/// Context of a proposed entry: the proposing member and its proposal id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProposalContext {
    /// Member that proposed the entry.
    pub member: u64,
    /// The proposer's id for it (0: nobody waits for an answer).
    pub id: u64,
}

impl ProposalContext {
    /// 16 bytes: member then id, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut c = Vec::with_capacity(16);
        c.extend_from_slice(&self.member.to_be_bytes());
        c.extend_from_slice(&self.id.to_be_bytes());
        c
    }

    /// `None` for any other length (entries proposed by raft-rs itself carry no context).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let (member, id) = bytes.split_at_checked(8)?;
        Some(ProposalContext {
            member: u64::from_be_bytes(member.try_into().ok()?),
            id: u64::from_be_bytes(id.try_into().ok()?),
        })
    }
}

/// Context of a ReadIndex request: the number of its round on this member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReadIndexContext(pub u64);

impl ReadIndexContext {
    /// 8 bytes, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    /// `None` for any other length.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        Some(ReadIndexContext(u64::from_be_bytes(bytes.try_into().ok()?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_round_trip_and_other_lengths_are_refused() {
        let p = ProposalContext { member: 7, id: 42 };
        assert_eq!(ProposalContext::decode(&p.encode()), Some(p));
        assert_eq!(ProposalContext::decode(&[0; 15]), None);
        assert_eq!(ProposalContext::decode(&[0; 17]), None);
        assert_eq!(ProposalContext::decode(&[]), None);
        let r = ReadIndexContext(9);
        assert_eq!(ReadIndexContext::decode(&r.encode()), Some(r));
        assert_eq!(ReadIndexContext::decode(&[0; 16]), None);
    }
}
