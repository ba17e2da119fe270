//! etcd-style automatic compaction. `periodic`: keep `retention` (a duration) of history, by
//! sampling the revision every retention/10 and compacting to the sample that is `retention` old.
//! `revision`: every five minutes, compact to `current - retention`. This module is the policy;
//! `compactor` runs it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How history is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AutoCompaction {
    /// Never compact automatically.
    Off,
    /// Keep this much time of history.
    Periodic(Duration),
    /// Keep this many revisions of history.
    Revision(i64),
}

/// Parses etcd's `--auto-compaction-mode` and `--auto-compaction-retention` (periodic: `90s`,
/// `5m`, `1h`, or a bare number of hours; revision: a count; `0` = off).
pub fn parse(mode: &str, retention: &str) -> Result<AutoCompaction, String> {
    let r = retention.trim();
    match mode {
        "periodic" => {
            let d = if let Ok(hours) = r.parse::<f64>() {
                Duration::from_secs_f64(hours.max(0.0) * 3600.0)
            } else {
                let (num, unit) =
                    r.split_at(r.find(|c: char| c.is_alphabetic()).unwrap_or(r.len()));
                let n: f64 = num
                    .parse()
                    .map_err(|_| format!("--auto-compaction-retention: {r:?} is not a duration"))?;
                let secs = match unit {
                    "ms" => n / 1000.0,
                    "s" => n,
                    "m" => n * 60.0,
                    "h" => n * 3600.0,
                    _ => {
                        return Err(format!(
                            "--auto-compaction-retention: unknown unit in {r:?}"
                        ))
                    }
                };
                Duration::from_secs_f64(secs.max(0.0))
            };
            Ok(if d.is_zero() {
                AutoCompaction::Off
            } else {
                AutoCompaction::Periodic(d)
            })
        }
        "revision" => {
            let n: i64 = r.parse().map_err(|_| {
                format!("--auto-compaction-retention: {r:?} is not a revision count")
            })?;
            Ok(if n <= 0 {
                AutoCompaction::Off
            } else {
                AutoCompaction::Revision(n)
            })
        }
        other => Err(format!(
            "--auto-compaction-mode must be periodic or revision, got {other:?}"
        )),
    }
}

/// Periodic mode's bookkeeping: revision samples and the compaction target they give.
#[derive(Debug, Default)]
pub struct Sampler {
    samples: VecDeque<(Instant, i64)>,
}

impl Sampler {
    /// Records the revision at `now`; returns the revision to compact to, if one is `retention` old.
    pub fn sample(&mut self, now: Instant, revision: i64, retention: Duration) -> Option<i64> {
        self.samples.push_back((now, revision));
        let mut target = None;
        while let Some((t, r)) = self.samples.front().copied() {
            if now.duration_since(t) >= retention {
                target = Some(r);
                self.samples.pop_front();
            } else {
                break;
            }
        }
        target
    }
}

impl AutoCompaction {
    /// How often the compactor wakes up and how much history periodic mode keeps; `None` when
    /// automatic compaction is off.
    pub fn schedule(&self) -> Option<(Duration, Duration)> {
        match *self {
            AutoCompaction::Off => None,
            AutoCompaction::Periodic(d) => Some(((d / 10).max(Duration::from_millis(100)), d)),
            AutoCompaction::Revision(_) => Some((Duration::from_secs(300), Duration::ZERO)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_etcds_forms() {
        assert_eq!(parse("periodic", "0"), Ok(AutoCompaction::Off));
        assert_eq!(
            parse("periodic", "1"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            parse("periodic", "90s"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(90)))
        );
        assert_eq!(
            parse("periodic", "5m"),
            Ok(AutoCompaction::Periodic(Duration::from_secs(300)))
        );
        assert_eq!(
            parse("revision", "1000"),
            Ok(AutoCompaction::Revision(1000))
        );
        assert!(parse("revision", "1h").is_err());
        assert!(parse("sometimes", "1").is_err());
        assert!(parse("periodic", "3 fortnights").is_err());
    }

    #[test]
    fn periodic_compacts_to_the_revision_retention_ago() {
        let t0 = Instant::now();
        let mut s = Sampler::default();
        let ret = Duration::from_secs(10);
        for i in 0..10 {
            assert_eq!(
                s.sample(t0 + Duration::from_secs(i), 100 + i as i64, ret),
                None
            );
        }
        assert_eq!(s.sample(t0 + Duration::from_secs(10), 110, ret), Some(100));
        assert_eq!(s.sample(t0 + Duration::from_secs(12), 112, ret), Some(102));
    }
}
