//! Leader read leases: when a linearizable read may skip the ReadIndex round, and the clock that decision trusts.

pub mod clock_guard;
pub mod clocks;
pub mod policy;
pub mod reads;
pub mod reopened;
pub mod tracker;
