//! Cross-checks the clock the lease is measured on (`Instant`, i.e. `CLOCK_MONOTONIC` through
//! libc) against an independent reference (`CLOCK_MONOTONIC_RAW`, read with a raw system call).
//!
//! The lease argument (docs/lease-reads.md) assumes the leader's clock never runs slower than
//! real time by more than `max_drift`. A step backwards, or a rate outside the bound — a buggy
//! clock source, a misbehaving time daemon, an `LD_PRELOAD` time shim — would silently stretch
//! the lease. The guard compares how far both clocks moved since an anchor; when they disagree by
//! more than the drift bound (plus a small tolerance for the two reads not being simultaneous)
//! the caller expires the lease and falls back to ReadIndex. A process pause (SIGSTOP, a VM
//! freeze) moves both clocks alike and is not an anomaly: the lease simply ran out meanwhile.
//!
//! Pure: the caller supplies both readings (`read_lease::clocks` reads them), so tests drive it
//! with made-up clocks.

use std::time::{Duration, Instant};

/// Slack for the two clocks not being read at the same instant (preemption between the reads).
pub const READ_TOLERANCE: Duration = Duration::from_millis(5);

/// Reference readings around one lease-clock reading further apart than this are not used to
/// judge the rate (the thread was descheduled between them).
pub const MAX_BRACKET: Duration = Duration::from_millis(1);

/// The windows the two clocks are compared over; each anchor moves forward after its window of
/// reference time. The long one lets a small rate error add up past the read tolerance; the
/// short one keeps a step from hiding in the tolerance the long window has accumulated (`ρ × 1 s`
/// by its end: a 100 ms step back late in the window would otherwise go unnoticed).
pub const WINDOWS: [Duration; 2] = [Duration::from_millis(100), Duration::from_secs(1)];

/// A disagreement between the lease clock and the reference clock beyond the drift bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockAnomaly {
    /// The lease clock went backwards by this much.
    Backward(Duration),
    /// The lease clock advanced this much less than the reference (runs slow, or stepped back
    /// by less than the time since the anchor).
    Slow(Duration),
    /// The lease clock advanced this much more than the reference (runs fast or jumped forward).
    Forward(Duration),
}

impl ClockAnomaly {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        match self {
            ClockAnomaly::Backward(_) => "backward",
            ClockAnomaly::Slow(_) => "slow",
            ClockAnomaly::Forward(_) => "forward",
        }
    }

    /// True when the lease clock lost time: the direction that could stretch a lease.
    pub fn lost_time(&self) -> bool {
        !matches!(self, ClockAnomaly::Forward(_))
    }

    /// Size of the disagreement.
    pub fn amount(&self) -> Duration {
        match *self {
            ClockAnomaly::Backward(d) | ClockAnomaly::Slow(d) | ClockAnomaly::Forward(d) => d,
        }
    }
}

/// The guard's state: one anchor pair of readings per window.
#[derive(Debug)]
pub struct ClockGuard {
    max_drift: f64,
    anchors: [Option<(Instant, Duration)>; 2],
}

impl ClockGuard {
    /// A guard tolerating rate differences up to `max_drift` (e.g. 0.1).
    pub fn new(max_drift: f64) -> Self {
        ClockGuard {
            max_drift,
            anchors: [None; 2],
        }
    }

    /// Takes a lease-clock reading with reference readings just before and after it. When the
    /// two reference readings are far apart (the thread was preempted between them) the rates
    /// are not compared, only monotonicity is checked.
    pub fn observe_bracketed(
        &mut self,
        lease_now: Instant,
        before: Duration,
        after: Duration,
    ) -> Option<ClockAnomaly> {
        if after.saturating_sub(before) <= MAX_BRACKET {
            return self.observe(lease_now, before);
        }
        // The newest anchor is the latest reading the lease clock must not fall behind.
        let l0 = self.anchors.iter().flatten().map(|(l, _)| *l).max()?;
        let back = lease_now.checked_duration_since(l0).is_none();
        back.then(|| {
            self.anchors = [Some((lease_now, after)); 2];
            ClockAnomaly::Backward(l0 - lease_now)
        })
    }

    /// Takes a pair of readings (lease clock, reference clock); reports an anomaly when they
    /// disagree beyond the bound. After an anomaly the guard re-anchors on these readings.
    pub fn observe(&mut self, lease_now: Instant, reference: Duration) -> Option<ClockAnomaly> {
        let mut anomaly = None;
        for (i, window) in WINDOWS.iter().enumerate() {
            let Some((l0, r0)) = self.anchors[i] else {
                self.anchors[i] = Some((lease_now, reference));
                continue;
            };
            let Some(d_ref) = reference.checked_sub(r0) else {
                // The reference itself never goes back; if it did, trust neither and start over.
                self.anchors = [Some((lease_now, reference)); 2];
                return None;
            };
            anomaly = anomaly.or_else(|| self.compare(l0, lease_now, d_ref));
            if d_ref >= *window {
                self.anchors[i] = Some((lease_now, reference));
            }
        }
        if anomaly.is_some() {
            self.anchors = [Some((lease_now, reference)); 2];
        }
        anomaly
    }

    /// The anomaly, if any, between an anchor `l0` and `lease_now` when the reference moved
    /// `d_ref` meanwhile.
    fn compare(&self, l0: Instant, lease_now: Instant, d_ref: Duration) -> Option<ClockAnomaly> {
        match lease_now.checked_duration_since(l0) {
            None => Some(ClockAnomaly::Backward(l0 - lease_now)),
            Some(d_lease) => {
                let tol = READ_TOLERANCE + d_ref.mul_f64(self.max_drift);
                if d_lease + tol < d_ref {
                    Some(ClockAnomaly::Slow(d_ref - d_lease))
                } else if d_lease > d_ref + tol {
                    Some(ClockAnomaly::Forward(d_lease - d_ref))
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// Feeds a guard readings where the lease clock runs at `rate` times the reference, every
    /// `step` of reference time, for `total`; returns the first anomaly.
    fn run(rate: f64, step: u64, total: u64) -> Option<ClockAnomaly> {
        let t0 = Instant::now();
        let mut g = ClockGuard::new(0.1);
        let mut r = 0;
        while r <= total {
            let lease = t0 + ms(r).mul_f64(rate);
            if let Some(a) = g.observe(lease, ms(r) + ms(1000)) {
                return Some(a);
            }
            r += step;
        }
        None
    }

    #[test]
    fn clocks_that_agree_within_the_drift_bound_are_fine() {
        assert_eq!(run(1.0, 7, 10_000), None);
        assert_eq!(run(0.95, 10, 10_000), None);
        assert_eq!(run(1.05, 10, 10_000), None);
        // A pause moves both clocks alike.
        assert_eq!(run(1.0, 3_000, 12_000), None);
    }

    #[test]
    fn a_slow_lease_clock_is_caught_quickly() {
        match run(0.5, 5, 10_000) {
            Some(ClockAnomaly::Slow(d)) => assert!(d <= ms(20), "caught late: {d:?}"),
            other => panic!("not caught: {other:?}"),
        }
        assert!(matches!(run(0.8, 50, 10_000), Some(ClockAnomaly::Slow(_))));
    }

    #[test]
    fn a_fast_lease_clock_is_reported() {
        assert!(matches!(
            run(1.5, 10, 10_000),
            Some(ClockAnomaly::Forward(_))
        ));
    }

    #[test]
    fn steps_are_caught_in_either_direction() {
        let t0 = Instant::now() + ms(10_000);
        let mut g = ClockGuard::new(0.1);
        assert_eq!(g.observe(t0, ms(100)), None);
        assert_eq!(g.observe(t0 + ms(50), ms(150)), None);
        // Back 2 s.
        let a = g.observe(t0 + ms(50) - ms(2000), ms(160)).unwrap();
        assert!(a.lost_time());
        assert_eq!(a.label(), "backward");
        // Back less than the time since the anchor: the lease clock still moved forward, but
        // 40 ms too little.
        let a0 = t0 + ms(50) - ms(2000);
        assert_eq!(g.observe(a0 + ms(50), ms(210)), None);
        assert_eq!(
            g.observe(a0 + ms(60), ms(260)),
            Some(ClockAnomaly::Slow(ms(40)))
        );
        // Forward 3 s.
        let a = g.observe(a0 + ms(60) + ms(3040), ms(300)).unwrap();
        assert_eq!(a.label(), "forward");
        assert!(!a.lost_time());
        assert!(a.amount() >= ms(2990));
    }

    #[test]
    fn a_preempted_sample_only_checks_monotonicity() {
        let t0 = Instant::now();
        let mut g = ClockGuard::new(0.1);
        assert_eq!(g.observe(t0, ms(0)), None);
        // 50 ms on the lease clock, but the reference readings straddle 40 ms of preemption.
        assert_eq!(g.observe_bracketed(t0 + ms(50), ms(50), ms(90)), None);
        assert!(matches!(
            g.observe_bracketed(t0 - ms(10), ms(100), ms(140)),
            Some(ClockAnomaly::Backward(_))
        ));
    }

    #[test]
    fn a_step_back_late_in_the_long_window_is_caught() {
        // 950 ms into a one-second window its tolerance is 5 ms + 10 % of 950 ms: a 100 ms step
        // back fits in it. The short window's does not hold it.
        let t0 = Instant::now();
        let mut g = ClockGuard::new(0.1);
        let mut r = 0;
        while r < 950 {
            assert_eq!(g.observe(t0 + ms(r), ms(r)), None);
            r += 10;
        }
        let a = g.observe(t0 + ms(950) - ms(100), ms(950));
        assert!(a.is_some_and(|a| a.lost_time()), "{a:?}");
    }
}
