//! The etcd-compatible multi-version key space of a MetaStore member: revisions, ranges, puts,
//! deletes, transactions and compaction with etcd 3.5's semantics. Deterministic: no clock, and
//! the only I/O is the values database (`values`), so every member applying the same requests
//! ends in the same state.

mod codec;
mod error;
pub mod image;
pub mod persist;
mod range;
mod store;
mod txn;
mod values;

pub use codec::ValuesIn;
pub use error::MvccError;
pub use store::{Applied, Store, MAX_RESPONSE_BYTES};
pub use txn::validate_txn;
pub use values::{DiskValues, ValuesDatabase};

/// Numeric values of etcd's protobuf enums, which prost exposes as `i32` fields.
pub mod consts {
    /// `RangeRequest.SortOrder`.
    pub mod sort_order {
        /// No sorting (keys ascend as stored).
        pub const NONE: i32 = 0;
        /// Ascending.
        pub const ASCEND: i32 = 1;
        /// Descending.
        pub const DESCEND: i32 = 2;
    }
    /// `RangeRequest.SortTarget`.
    pub mod sort_target {
        /// By key.
        pub const KEY: i32 = 0;
        /// By version.
        pub const VERSION: i32 = 1;
        /// By create revision.
        pub const CREATE: i32 = 2;
        /// By mod revision.
        pub const MOD: i32 = 3;
        /// By value.
        pub const VALUE: i32 = 4;
    }
    /// `Compare.CompareResult`.
    pub mod compare_result {
        /// `=`.
        pub const EQUAL: i32 = 0;
        /// `>`.
        pub const GREATER: i32 = 1;
        /// `<`.
        pub const LESS: i32 = 2;
        /// `!=`.
        pub const NOT_EQUAL: i32 = 3;
    }
    /// `mvccpb.Event.EventType`.
    pub mod event_type {
        /// A put.
        pub const PUT: i32 = 0;
        /// A delete.
        pub const DELETE: i32 = 1;
    }
}
