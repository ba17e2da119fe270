//! etcd's authentication: users, roles and key-range permissions replicated through Raft
//! ([`state`]), the permissions each request needs ([`checks`]), passwords ([`password`]) and
//! tokens ([`tokens`]).

pub mod checks;
pub mod error;
pub mod password;
pub mod ranges;
pub mod state;
pub mod tokens;

pub use error::AuthError;
pub use state::{AuthChange, AuthState, Caller};
