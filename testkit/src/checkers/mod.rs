//! Linearizability checkers for recorded client histories.
//!
//! - [`register`]: one read/write register whose writes all write distinct values (polynomial);
//! - [`wgl`]: one register with reads, writes and compare-and-set, indeterminate operations
//!   allowed (Wing–Gong–Lowe search).

pub mod register;
pub mod wgl;
