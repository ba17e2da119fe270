//! The `MetaStoreBackup` custom resource (metastore.io/v1alpha1): one on-demand backup of a
//! MetaStore to S3-compatible object storage or a PersistentVolumeClaim, and what became of it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Label on scheduled backups: the MetaStore they belong to.
pub const SCHEDULE_LABEL: &str = "metastore.io/scheduled-for";

/// A backup of the MetaStore `spec.metaStore` (same namespace), taken once.
// Printer columns repeat `type_ = …`, which clippy takes for duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "metastore.io",
    version = "v1alpha1",
    kind = "MetaStoreBackup",
    namespaced,
    shortname = "msb",
    status = "MetaStoreBackupStatus",
    printcolumn(name = "MetaStore", type_ = "string", json_path = ".spec.metaStore"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Revision", type_ = "integer", json_path = ".status.revision"),
    printcolumn(name = "Size", type_ = "integer", json_path = ".status.size"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self == oldSelf",
    "message": "a MetaStoreBackup's spec cannot change; create another"
}, {
    "rule": "has(self.s3) != has(self.pvc)",
    "message": "a MetaStoreBackup needs exactly one of s3 or pvc"
}]))]
pub struct MetaStoreBackupSpec {
    /// Name of the MetaStore to back up, in this namespace.
    #[schemars(length(min = 1))]
    pub meta_store: String,
    /// An S3-compatible bucket for the snapshot…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Target>,
    /// …or a PersistentVolumeClaim (a Job mounts it and writes the file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcTarget>,
}

/// A PersistentVolumeClaim in the MetaStore's namespace that backups are written to, by a Job
/// that mounts it (ReadWriteOnce claims work while no other pod holds them elsewhere).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcTarget {
    /// Claim name.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Directory prefix in the volume (e.g. `backups/`); the file is
    /// `<prefix><namespace>/<metastore>/<backup>.db`.
    #[serde(default)]
    pub prefix: String,
}

impl PvcTarget {
    /// The file of backup `backup` of `namespace/metastore`, relative to the volume's root.
    pub fn path(&self, namespace: &str, metastore: &str, backup: &str) -> String {
        format!("{}{namespace}/{metastore}/{backup}.db", self.prefix)
    }

    /// How a backup's status names that file: `pvc://<claim>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("pvc://{}/{path}", self.claim_name)
    }
}

/// An S3-compatible bucket (AWS S3, MinIO, SeaweedFS, Ceph RGW…).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Target {
    /// Bucket name.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix (e.g. `backups/`); the object is `<prefix><namespace>/<metastore>/<backup>.db`.
    #[serde(default)]
    pub prefix: String,
    /// Endpoint URL for a non-AWS store (e.g. `http://seaweedfs.storage:8333`); path-style
    /// addressing is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret in this namespace with `accessKeyId` and `secretAccessKey`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
}

/// Where a backup stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BackupPhase {
    /// Accepted, not started.
    Pending,
    /// Streaming the snapshot to the bucket.
    Running,
    /// The object is complete.
    Succeeded,
    /// It failed; `message` says why. Not retried: create another backup.
    Failed,
}

/// What the operator reports about a backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaStoreBackupStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<BackupPhase>,
    /// `s3://bucket/key` of the snapshot, or `pvc://claim/path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_url: Option<String>,
    /// The store's revision in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<i64>,
    /// Bytes stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// SHA-256 of the object (the snapshot file's own trailer checks its contents too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// When the backup started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    /// When it succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// Why it failed, or what it is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl S3Target {
    /// The object key of backup `backup` of `namespace/metastore`.
    pub fn key(&self, namespace: &str, metastore: &str, backup: &str) -> String {
        format!("{}{namespace}/{metastore}/{backup}.db", self.prefix)
    }
}
