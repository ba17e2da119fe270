//! Whether lease reads are allowed at all right now, and why. Pure: inputs in, decision and a
//! human-readable reason out.
//!
//! The operator's pushed `expected_voters` is a hint that can only make the member more careful:
//! when it disagrees with the applied configuration, lease reads pause. Quorum itself always comes
//! from Raft's applied configuration, never from the hint.

/// The operator's last pushed membership hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipHint {
    /// Voters the operator expects.
    pub expected_voters: u32,
    /// Ordering of pushes; older generations are ignored.
    pub generation: u64,
}

/// What happened to a pushed hint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HintOutcome {
    /// A newer generation: now in force.
    Applied,
    /// The same generation and value again: nothing changed.
    Unchanged,
    /// Older than (or conflicting with) the hint in force: ignored.
    Stale,
    /// More than [`MAX_GENERATION_STEP`] ahead of the hint in force (or of 0): refused, so one
    /// push cannot make every later one stale.
    TooFarAhead,
}

/// How far ahead of the hint in force a pushed generation may be. The operator advances the
/// generation by one per push.
pub const MAX_GENERATION_STEP: u64 = 1 << 20;

/// Facts from Raft the policy looks at.
#[derive(Debug, Clone, Copy)]
pub struct RaftFacts<'a> {
    /// Voters of the applied configuration (incoming half when joint).
    pub voters: &'a [u64],
    /// Outgoing voters while in a joint configuration, else empty.
    pub voters_outgoing: &'a [u64],
    /// A configuration change is proposed but not yet applied.
    pub conf_change_in_flight: bool,
}

/// The policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyDecision {
    /// Lease reads may be served (when the lease itself is valid).
    pub enabled: bool,
    /// Why, for humans (LeaseStatus, logs).
    pub reason: String,
}

/// The lease-read policy of one member.
#[derive(Debug, Clone)]
pub struct ReadLeasePolicy {
    switch: bool,
    hint: Option<MembershipHint>,
}

impl ReadLeasePolicy {
    /// A policy; `switch` is the `--lease-read` flag.
    pub fn new(switch: bool) -> Self {
        ReadLeasePolicy { switch, hint: None }
    }

    /// The hint in force.
    pub fn hint(&self) -> Option<MembershipHint> {
        self.hint
    }

    /// Takes a pushed hint: idempotent for the same generation, ignored when older.
    pub fn set_hint(&mut self, expected_voters: u32, generation: u64) -> HintOutcome {
        let current = self.hint.map_or(0, |h| h.generation);
        if generation > current.saturating_add(MAX_GENERATION_STEP) {
            return HintOutcome::TooFarAhead;
        }
        match self.hint {
            Some(h) if generation < h.generation => HintOutcome::Stale,
            Some(h) if generation == h.generation => {
                if h.expected_voters == expected_voters {
                    HintOutcome::Unchanged
                } else {
                    HintOutcome::Stale
                }
            }
            _ => {
                self.hint = Some(MembershipHint {
                    expected_voters,
                    generation,
                });
                HintOutcome::Applied
            }
        }
    }

    /// Decides from the current Raft facts.
    pub fn evaluate(&self, f: RaftFacts<'_>) -> PolicyDecision {
        let no = |reason: String| PolicyDecision {
            enabled: false,
            reason,
        };
        if !self.switch {
            return no("lease reads are off (--lease-read=false)".into());
        }
        if f.voters.is_empty() {
            return no("no applied configuration yet".into());
        }
        if !f.voters_outgoing.is_empty() {
            return no(format!(
                "joint configuration ({} -> {} voters) in progress",
                f.voters_outgoing.len(),
                f.voters.len()
            ));
        }
        if f.conf_change_in_flight {
            return no("a membership change is in flight".into());
        }
        let n = f.voters.len();
        if let Some(h) = self.hint {
            if h.expected_voters as usize != n {
                return no(format!(
                    "operator expects {} voters (generation {}), applied configuration has {n}",
                    h.expected_voters, h.generation
                ));
            }
        }
        let reason = if n == 1 {
            "single voter: a quorum of one, reads are local".to_string()
        } else {
            format!("{n} voters, quorum {}", n / 2 + 1)
        };
        PolicyDecision {
            enabled: true,
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(voters: &'a [u64], outgoing: &'a [u64], in_flight: bool) -> RaftFacts<'a> {
        RaftFacts {
            voters,
            voters_outgoing: outgoing,
            conf_change_in_flight: in_flight,
        }
    }

    #[test]
    fn enabled_for_every_size_from_one() {
        let p = ReadLeasePolicy::new(true);
        for n in 1..=7u64 {
            let v: Vec<u64> = (1..=n).collect();
            let d = p.evaluate(facts(&v, &[], false));
            assert!(d.enabled, "{n}: {}", d.reason);
        }
        assert!(p
            .evaluate(facts(&[1], &[], false))
            .reason
            .contains("quorum of one"));
    }

    #[test]
    fn transitions_and_the_switch_disable() {
        let p = ReadLeasePolicy::new(true);
        assert!(!p.evaluate(facts(&[1, 2, 3], &[1], false)).enabled);
        assert!(!p.evaluate(facts(&[1, 2, 3], &[], true)).enabled);
        assert!(!p.evaluate(facts(&[], &[], false)).enabled);
        assert!(
            !ReadLeasePolicy::new(false)
                .evaluate(facts(&[1], &[], false))
                .enabled
        );
    }

    #[test]
    fn hint_only_makes_it_more_careful_and_stale_generations_are_ignored() {
        let mut p = ReadLeasePolicy::new(true);
        assert_eq!(p.set_hint(3, 5), HintOutcome::Applied);
        assert_eq!(p.set_hint(3, 5), HintOutcome::Unchanged);
        // Disagreement pauses lease reads.
        let d = p.evaluate(facts(&[1], &[], false));
        assert!(!d.enabled);
        assert!(d.reason.contains("expects 3"), "{}", d.reason);
        assert!(p.evaluate(facts(&[1, 2, 3], &[], false)).enabled);
        // Older generation, or a different value at the same generation: ignored.
        assert_eq!(p.set_hint(1, 4), HintOutcome::Stale);
        assert_eq!(p.set_hint(1, 5), HintOutcome::Stale);
        assert_eq!(p.hint().unwrap().expected_voters, 3);
        // A hint that agrees never enables what the facts disable.
        assert!(!p.evaluate(facts(&[1, 2, 3], &[], true)).enabled);
        assert_eq!(p.set_hint(1, 6), HintOutcome::Applied);
        assert!(p.evaluate(facts(&[1], &[], false)).enabled);
        // A push far ahead cannot make later pushes stale.
        assert_eq!(p.set_hint(3, u64::MAX), HintOutcome::TooFarAhead);
        assert_eq!(
            p.set_hint(3, 6 + MAX_GENERATION_STEP + 1),
            HintOutcome::TooFarAhead
        );
        assert_eq!(p.hint().unwrap().generation, 6);
        assert_eq!(p.set_hint(3, 7), HintOutcome::Applied);
        assert_eq!(
            ReadLeasePolicy::new(true).set_hint(3, MAX_GENERATION_STEP + 1),
            HintOutcome::TooFarAhead
        );
    }
}
