//! Virtual time: one global clock (µs since the simulation began) and, per member, a lease clock
//! that runs at its own rate from its own phase and can be stepped, plus a reference clock at the
//! same rate that steps never touch (what the clock guard compares with).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use metastore_node::consensus::loop_env::LoopClocks;

/// Global time, shared by the world and every member's clocks.
#[derive(Clone, Default)]
pub struct GlobalTime(Arc<AtomicU64>);

impl GlobalTime {
    /// Now, µs.
    pub fn now(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Advances to `t` (never backwards).
    pub fn set(&self, t: u64) {
        self.0.fetch_max(t, Ordering::Relaxed);
    }
}

/// One member's hardware: a rate error within ±ρ, a phase, and steps applied to the lease clock
/// only (a misbehaving monotonic clock the guard should notice).
#[derive(Debug, Clone, Copy)]
pub struct ClockParams {
    /// Rate error: the clock advances `1 + rate` seconds per real second.
    pub rate: f64,
    /// Where this clock stood when the simulation began, µs.
    pub phase_us: f64,
    /// Net steps applied to the lease clock, µs.
    pub step_us: i64,
}

impl ClockParams {
    /// Hardware time at global `t`, µs.
    fn hardware_us(&self, t: u64) -> f64 {
        self.phase_us + t as f64 * (1.0 + self.rate)
    }

    /// The lease clock at global `t`, µs from the simulation's base instant.
    pub fn lease_us(&self, t: u64) -> f64 {
        self.hardware_us(t) + self.step_us as f64
    }

    /// Changes the rate from global `t` on, without a jump in the reading.
    pub fn set_rate(&mut self, t: u64, rate: f64) {
        self.phase_us += t as f64 * (self.rate - rate);
        self.rate = rate;
    }

    /// The first global time at which the lease clock reads at least `lease_us`.
    pub fn global_at(&self, lease_us: f64) -> u64 {
        let t = (lease_us - self.step_us as f64 - self.phase_us) / (1.0 + self.rate);
        t.max(0.0).ceil() as u64
    }
}

/// A member's clocks as its Raft loop sees them.
pub struct SimClocks {
    /// The simulation's base instant (lease clock zero).
    pub base: Instant,
    /// Global time.
    pub time: GlobalTime,
    /// This member's hardware (shared with the world, which steps it).
    pub params: Arc<Mutex<ClockParams>>,
}

impl SimClocks {
    fn params(&self) -> ClockParams {
        *self.params.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl LoopClocks for SimClocks {
    fn lease_now(&mut self) -> Instant {
        let us = self.params().lease_us(self.time.now()).max(0.0);
        self.base + Duration::from_micros(us as u64)
    }

    fn reference_now(&mut self) -> Option<Duration> {
        let p = self.params();
        Some(Duration::from_micros(p.hardware_us(self.time.now()) as u64))
    }
}
