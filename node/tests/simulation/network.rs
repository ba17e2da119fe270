//! The simulated network: per-message delay (with a long tail), drop, duplication, reordering by
//! delay, partitions both ways or one way, and `MsgTimeoutNow` held back on purpose.

use std::collections::BTreeMap;

use raft::eraftpb::{Message, MessageType};
use rand::rngs::StdRng;
use rand::Rng;

/// A blocked direction `from → to`, until a global time.
#[derive(Debug, Default)]
pub struct Partitions {
    blocked: BTreeMap<(u64, u64), u64>,
}

impl Partitions {
    /// Blocks `from → to` until `until`.
    pub fn block(&mut self, from: u64, to: u64, until: u64) {
        let e = self.blocked.entry((from, to)).or_insert(until);
        *e = (*e).max(until);
    }

    /// True when `from → to` is blocked at `now`.
    pub fn is_blocked(&self, from: u64, to: u64, now: u64) -> bool {
        self.blocked.get(&(from, to)).is_some_and(|&u| now < u)
    }

    /// True while some partition holds.
    pub fn any(&self, now: u64) -> bool {
        self.blocked.values().any(|u| now < *u)
    }

    /// Forgets partitions that have healed.
    pub fn heal(&mut self, now: u64) {
        self.blocked.retain(|_, u| now < *u);
    }
}

/// What happens to one message.
#[derive(Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after each of these delays (µs); two entries: duplicated.
    Deliver(Vec<u64>),
    /// Lost.
    Dropped,
}

/// How hostile the network is.
#[derive(Debug, Clone)]
pub struct NetworkProfile {
    /// Probability a message is lost.
    pub drop: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Probability of a long delay.
    pub tail: f64,
    /// Normal delay range, µs.
    pub delay_us: (u64, u64),
    /// Long delay range, µs.
    pub tail_us: (u64, u64),
    /// Probability a `MsgTimeoutNow` is held back, and for how long (µs).
    pub hold_timeout_now: f64,
    /// Hold range for `MsgTimeoutNow`, µs.
    pub timeout_now_us: (u64, u64),
}

impl NetworkProfile {
    /// The default hostile profile.
    pub fn hostile() -> Self {
        NetworkProfile {
            drop: 0.01,
            duplicate: 0.01,
            tail: 0.02,
            delay_us: (100, 4_000),
            tail_us: (20_000, 700_000),
            hold_timeout_now: 0.5,
            timeout_now_us: (200_000, 3_000_000),
        }
    }

    /// Decides a message's fate.
    pub fn fate(&self, m: &Message, rng: &mut StdRng) -> Fate {
        if rng.gen_bool(self.drop) {
            return Fate::Dropped;
        }
        let delay = |rng: &mut StdRng| {
            if m.get_msg_type() == MessageType::MsgTimeoutNow && rng.gen_bool(self.hold_timeout_now)
            {
                rng.gen_range(self.timeout_now_us.0..self.timeout_now_us.1)
            } else if rng.gen_bool(self.tail) {
                rng.gen_range(self.tail_us.0..self.tail_us.1)
            } else {
                rng.gen_range(self.delay_us.0..self.delay_us.1)
            }
        };
        let mut out = vec![delay(rng)];
        if rng.gen_bool(self.duplicate) {
            out.push(delay(rng));
        }
        Fate::Deliver(out)
    }
}
