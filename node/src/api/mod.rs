//! The etcd v3 gRPC services and the operator's admin service: requests in, etcd-shaped answers out.

pub mod admin;
pub mod admin_access;
pub mod auth;
pub mod cluster;
pub mod credentials;
pub mod forward;
pub mod key_lease;
pub mod kv;
pub mod maintenance;
pub mod observe;
pub mod quota;
pub mod status;
pub mod watch;
