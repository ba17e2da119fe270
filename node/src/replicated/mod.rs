//! The replicated state: commands carried in Raft entries, the state machine they are applied to, and the member list.

pub mod command;
pub mod kv_hash;
pub mod member;
pub mod membership;
pub mod state_machine;
pub mod version;

#[cfg(test)]
mod fuzz_tests;
