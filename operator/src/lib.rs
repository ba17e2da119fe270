//! The MetaStore operator: the `MetaStore` custom resource, pure builders of the Kubernetes
//! objects that run it, a pure membership planner, and the executor and controller around them.

/// Generated client of the node's admin API (`node/proto/admin.proto`).
#[allow(missing_docs, clippy::all)]
pub mod admin_proto {
    tonic::include_proto!("metastore.admin");
}

pub mod builders;
pub mod crd;
pub mod executor;
pub mod planner;
