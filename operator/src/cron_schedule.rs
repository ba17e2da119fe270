//! Cron schedules in UTC (five fields, or six with seconds first), for `spec.backup`.

use croner::Cron;
use k8s_openapi::jiff::{tz::TimeZone, Timestamp};

/// Parses a cron schedule.
pub fn parse(schedule: &str) -> Result<Cron, String> {
    schedule.parse::<Cron>().map_err(|e| e.to_string())
}

/// The first time after `after` the schedule fires.
pub fn next_after(cron: &Cron, after: Timestamp) -> Option<Timestamp> {
    let z = after.to_zoned(TimeZone::UTC);
    cron.find_next_occurrence(&z, false)
        .ok()
        .map(|n| n.timestamp())
}
