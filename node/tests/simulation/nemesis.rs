//! The nemesis: at random times it crashes and restarts members, stalls their loops (slow fsync,
//! busy thread), partitions the network (isolation, majority/minority splits, one way), steps a
//! member's lease clock, and moves leadership.

use metastore_node::node::LoopMsg;
use rand::Rng;
use tokio::sync::oneshot;

use super::world::{Event, World};

impl World {
    /// One nemesis action, then the next is scheduled.
    pub fn nemesis_acts(&mut self) {
        let now = self.now();
        let next = now + self.rng.gen_range(500_000..3_000_000);
        self.schedule(next, Event::Nemesis);
        self.partitions.heal(now);
        // Mostly one fault at a time, so the healthy part of the cluster can act (elect, commit)
        // while the faulty part still believes what it believed.
        if self.partitions.any(now) && self.rng.gen_bool(0.85) {
            return;
        }
        let up = self.up();
        if up.is_empty() {
            return;
        }
        let pick = |w: &mut World, from: &[u64]| from[w.rng.gen_range(0..from.len())];
        // The leader half the time: its lease is what the faults should put under pressure.
        let victim = match self.leader() {
            Some(l) if self.rng.gen_bool(0.5) => l,
            _ => pick(self, &up),
        };
        let v = self.ordinal(victim);
        let hold = self.rng.gen_range(300_000..4_000_000);
        match self.rng.gen_range(0..100) {
            0..=11 => {
                let k0 = self
                    .members
                    .get(&victim)
                    .and_then(|m| m.run.as_ref())
                    .map(|r| {
                        (
                            super::workload::read_local(r, "k0"),
                            *r.shared.applied.borrow(),
                            r.raft.raft().raft_log.committed,
                        )
                    });
                self.trace(format!("nemesis: crash m{v} {k0:?}"));
                if let Some(m) = self.members.get_mut(&victim) {
                    m.crash();
                }
                let back = now + self.rng.gen_range(100_000..3_000_000);
                self.schedule(back, Event::Restart(victim));
            }
            12..=29 => {
                let d = match self.rng.gen_range(0..4) {
                    0 => self.rng.gen_range(300_000..1_500_000),
                    _ => self.rng.gen_range(5_000..300_000),
                };
                self.trace(format!("nemesis: stall m{v} for {d} us"));
                if let Some(m) = self.members.get_mut(&victim) {
                    m.stalled_until = m.stalled_until.max(now + d);
                }
            }
            30..=49 => {
                self.trace(format!("nemesis: isolate m{v} for {hold} us"));
                let all: Vec<u64> = self.members.keys().copied().collect();
                for o in all.into_iter().filter(|o| *o != victim) {
                    self.partitions.block(victim, o, now + hold);
                    self.partitions.block(o, victim, now + hold);
                }
            }
            50..=54 => {
                let all: Vec<u64> = self.members.keys().copied().collect();
                let other = pick(self, &all);
                if other != victim {
                    let o = self.ordinal(other);
                    self.trace(format!("nemesis: m{v} -/-> m{o} for {hold} us"));
                    self.partitions.block(victim, other, now + hold);
                }
            }
            55..=59 => {
                // Deaf: it still sends (its heartbeats keep followers quiet) but hears nobody.
                self.trace(format!("nemesis: m{v} deaf for {hold} us"));
                let all: Vec<u64> = self.members.keys().copied().collect();
                for o in all.into_iter().filter(|o| *o != victim) {
                    self.partitions.block(o, victim, now + hold);
                }
            }
            60..=69 => {
                let mut all: Vec<u64> = self.members.keys().copied().collect();
                let k = all.len() / 2;
                for i in (1..all.len()).rev() {
                    let j = self.rng.gen_range(0..=i);
                    all.swap(i, j);
                }
                let (minority, majority) = all.split_at(k);
                self.trace(format!(
                    "nemesis: split {minority:x?} | {majority:x?} for {hold} us"
                ));
                for a in minority {
                    for b in majority {
                        self.partitions.block(*a, *b, now + hold);
                        self.partitions.block(*b, *a, now + hold);
                    }
                }
            }
            70..=73 => {
                let leader = self.leader();
                self.skew_clocks(leader);
            }
            74..=77 => {
                let ms: i64 = self.rng.gen_range(-40..=40);
                self.step_clock(victim, ms);
            }
            78..=97 => {
                let Some(leader) = self.leader() else { return };
                let voters = self.voters_of(leader);
                let targets: Vec<u64> = voters.into_iter().filter(|t| *t != leader).collect();
                if targets.is_empty() {
                    return;
                }
                let target = pick(self, &targets);
                self.trace(format!(
                    "nemesis: transfer m{} -> m{}",
                    self.ordinal(leader),
                    self.ordinal(target)
                ));
                let (reply, _rx) = oneshot::channel();
                if self.send_to(leader, LoopMsg::TransferLeader { target, reply }) {
                    self.poll(leader);
                }
            }
            _ => {}
        }
    }

    /// Cuts a leader off right after it renewed its lease, for long enough that the others
    /// elect a new leader — the moment its lease is longest — and sometimes also sets the clocks
    /// to the worst the drift bound allows (the leader slow, the others fast).
    pub fn ambush(&mut self, leader: u64) {
        let now = self.now();
        if self.partitions.any(now) || self.voters_of(leader).len() < 3 {
            return;
        }
        let hold = self.rng.gen_range(1_500_000..4_000_000);
        let k = self.ordinal(leader);
        self.trace(format!(
            "nemesis: ambush m{k} after a lease renewal (isolated for {hold} us)"
        ));
        if self.rng.gen_bool(0.5) {
            self.skew_clocks(Some(leader));
        }
        let all: Vec<u64> = self.members.keys().copied().collect();
        for o in all.iter().copied().filter(|o| *o != leader) {
            self.partitions.block(o, leader, now + hold);
            self.partitions.block(leader, o, now + hold);
        }
        // Sometimes the others' clocks also step back a little while they wait (each step
        // the guard notices makes the loop tick at once).
        if self.rng.gen_bool(0.5) {
            for o in all.iter().copied().filter(|o| *o != leader) {
                for _ in 0..self.rng.gen_range(1..3) {
                    let at = now + self.rng.gen_range(50_000..900_000);
                    let ms = self.rng.gen_range(20..60);
                    self.schedule(at, Event::StepClock(o, -ms));
                }
            }
        }
    }

    /// Steps `member`'s lease clock by `ms` (the guard should notice steps beyond its bound).
    pub fn step_clock(&mut self, member: u64, ms: i64) {
        let Some(m) = self.members.get(&member) else {
            return;
        };
        m.clock.lock().unwrap_or_else(|e| e.into_inner()).step_us += ms * 1000;
        let k = self.ordinal(member);
        self.trace(format!("nemesis: step m{k}'s lease clock {ms:+} ms"));
    }

    /// Clock rates at opposite ends of the bound: `slow` at −ρ, everyone else at +ρ.
    fn skew_clocks(&mut self, slow: Option<u64>) {
        let now = self.now();
        let rho = self.flags.max_drift;
        self.trace(format!(
            "nemesis: skew clocks, m{} slow",
            slow.map_or(usize::MAX, |l| self.ordinal(l))
        ));
        for (id, m) in &self.members {
            let rate = if Some(*id) == slow { -rho } else { rho };
            m.clock
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_rate(now, rate);
        }
    }

    /// `member` stops hearing the others (its own messages still go out) for `hold` µs.
    pub fn deafen(&mut self, member: u64, hold: u64) {
        let now = self.now();
        self.trace(format!(
            "nemesis: m{} deaf for {hold} us",
            self.ordinal(member)
        ));
        let all: Vec<u64> = self.members.keys().copied().collect();
        for o in all.into_iter().filter(|o| *o != member) {
            self.partitions.block(o, member, now + hold);
        }
    }

    /// Voters of the applied configuration as `member` sees it.
    pub fn voters_of(&self, member: u64) -> Vec<u64> {
        self.members
            .get(&member)
            .and_then(|m| m.run.as_ref())
            .map(|r| r.shared.status.read().voters.clone())
            .unwrap_or_default()
    }
}
