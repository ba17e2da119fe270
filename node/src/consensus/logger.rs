//! Routes raft-rs's `slog` records into `tracing`, so one subscriber filters every log line.

use slog::{Drain, Level, OwnedKVList, Record};

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, r: &Record, _: &OwnedKVList) -> Result<(), slog::Never> {
        match r.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{}", r.msg()),
            Level::Warning => tracing::warn!(target: "raft", "{}", r.msg()),
            Level::Info => tracing::info!(target: "raft", "{}", r.msg()),
            Level::Debug => tracing::debug!(target: "raft", "{}", r.msg()),
            Level::Trace => tracing::trace!(target: "raft", "{}", r.msg()),
        }
        Ok(())
    }
}

/// A logger for raft-rs that writes through `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain.fuse(), slog::o!())
}
