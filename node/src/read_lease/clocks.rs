//! The two clocks the read lease reads: the lease clock (`Instant`, shifted in tests by an offset
//! file) and the independent reference (`CLOCK_MONOTONIC_RAW` by raw system call) that the clock
//! guard compares it with. The I/O half of the clock guard.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Reads `CLOCK_MONOTONIC_RAW` with a direct system call. The raw clock is not slewed by time
/// daemons, and the direct call bypasses any interposed `clock_gettime` (vDSO or preload), so it
/// is independent of the clock `Instant` uses. `None` if the call fails.
pub fn reference_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, which is all
    // clock_gettime(2) requires; the clock id is a constant the kernel knows.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clock_gettime,
            libc::CLOCK_MONOTONIC_RAW,
            &mut ts as *mut libc::timespec,
        )
    };
    if rc != 0 || ts.tv_sec < 0 || ts.tv_nsec < 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The clock lease decisions read: `Instant::now()`, plus (test only) an offset read from a file
/// the fault-injection suite writes, so it can step one member's lease clock forwards or
/// backwards while the process runs. (An `LD_PRELOAD` time shim cannot do this to a Rust
/// process: std's timed waits pass absolute `CLOCK_MONOTONIC` deadlines to `futex(2)` through a
/// raw system call, so a shifted `clock_gettime` makes every timed wait sleep for the shift.)
#[derive(Debug)]
pub struct LeaseClock {
    offset_file: Option<PathBuf>,
    offset_ms: i64,
    read_at: Option<Instant>,
}

/// How often the offset file is re-read.
const OFFSET_REFRESH: Duration = Duration::from_millis(10);

impl LeaseClock {
    /// A clock; `offset_file` only with `--unsafe-test-clock-offset-file`.
    pub fn new(offset_file: Option<PathBuf>) -> Self {
        LeaseClock {
            offset_file,
            offset_ms: 0,
            read_at: None,
        }
    }

    /// Now, on the lease clock.
    pub fn now(&mut self) -> Instant {
        let real = Instant::now();
        let Some(path) = &self.offset_file else {
            return real;
        };
        if self
            .read_at
            .is_none_or(|t| real.saturating_duration_since(t) >= OFFSET_REFRESH)
        {
            self.read_at = Some(real);
            // A missing or half-written file keeps the last offset.
            if let Some(ms) = std::fs::read_to_string(path)
                .ok()
                .and_then(|s| s.trim().parse::<i64>().ok())
            {
                self.offset_ms = ms;
            }
        }
        let shift = Duration::from_millis(self.offset_ms.unsigned_abs());
        let shifted = if self.offset_ms >= 0 {
            real.checked_add(shift)
        } else {
            real.checked_sub(shift)
        };
        shifted.unwrap_or(real)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_offset_shifts_the_lease_clock() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("offset");
        let mut c = LeaseClock::new(Some(f.clone()));
        let a = c.now();
        std::fs::write(&f, "-2000").unwrap();
        std::thread::sleep(OFFSET_REFRESH * 2);
        let b = c.now();
        assert!(b < a, "stepped back");
        std::fs::write(&f, "3000").unwrap();
        std::thread::sleep(OFFSET_REFRESH * 2);
        assert!(c.now() > a + Duration::from_millis(2900));
        assert!(LeaseClock::new(None).now() <= Instant::now());
    }

    #[test]
    fn the_reference_clock_reads() {
        let a = reference_now().expect("CLOCK_MONOTONIC_RAW");
        let b = reference_now().expect("CLOCK_MONOTONIC_RAW");
        assert!(b >= a);
    }
}
