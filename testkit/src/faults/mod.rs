//! The fault-injection suite's machinery (docs/reliability.md): a [`nemesis`] that applies
//! seeded fault schedules to a real cluster, and the client [`workloads`] whose recordings the
//! suite checks.

pub mod nemesis;
pub mod workloads;
