//! The `MetaStore` custom resource (metastore.io/v1alpha1): what users ask for, and what the
//! operator reports back.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::constants::{
    DEFAULT_ELECTION_TIMEOUT_MS, DEFAULT_HEARTBEAT_INTERVAL_MS, MAX_REPLICAS,
    MIN_HEARTBEATS_PER_ELECTION,
};

/// Default node image.
pub const DEFAULT_IMAGE: &str = "metastore-node";
/// Default node image tag.
pub const DEFAULT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A MetaStore cluster.
// The CEL rules below repeat DEFAULT_HEARTBEAT_INTERVAL_MS and MIN_HEARTBEATS_PER_ELECTION as
// literals: attribute arguments must be string literals.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "metastore.io",
    version = "v1alpha1",
    kind = "MetaStore",
    namespaced,
    shortname = "ms",
    status = "MetaStoreStatus",
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Version", type_ = "string", json_path = ".status.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    validation = Rule::new("!has(self.spec.heartbeatIntervalMs) || !has(self.spec.electionTimeoutMs) || self.spec.electionTimeoutMs >= 5 * self.spec.heartbeatIntervalMs").message("spec.electionTimeoutMs must be at least 5 times spec.heartbeatIntervalMs"),
    validation = Rule::new("!has(self.spec.electionTimeoutMs) || has(self.spec.heartbeatIntervalMs) || self.spec.electionTimeoutMs >= 500").message("spec.electionTimeoutMs must be at least 5 times the default heartbeat interval (100 ms)"),
    validation = Rule::new("!has(self.spec.quotaBackendBytes) || self.spec.quotaBackendBytes * 4 <= ((has(self.spec.storage) && has(self.spec.storage.size)) ? quantity(string(self.spec.storage.size)).asInteger() : 1073741824)").message("spec.quotaBackendBytes must be at most a quarter of spec.storage.size (default 1Gi): a member's data dir holds about two snapshots and its log besides the data")
)]
#[serde(rename_all = "camelCase")]
pub struct MetaStoreSpec {
    /// Number of voting members (1 to 9; odd sizes tolerate the most failures per member).
    #[schemars(range(min = 1, max = MAX_REPLICAS))]
    pub replicas: i32,
    /// Node image repository (default `metastore-node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Node image tag (default: the operator's own version, which it was built and tested with).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Container resources of each member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Persistent storage of each member.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Linearizable reads from a leader lease.
    #[serde(default)]
    pub lease_read: LeaseReadSpec,
    /// Automatic compaction of the key history (default: keep 5 minutes, as the Kubernetes API
    /// server does for its etcd). History is held in memory and counts against the quota.
    #[serde(default)]
    pub auto_compaction: AutoCompactionSpec,
    /// Space quota of each member in bytes (etcd's `--quota-backend-bytes`): past it, writes
    /// fail with NOSPACE until space is freed. Default and most: a quarter of `storage.size`
    /// (a member's data dir holds about two snapshots and its log besides the data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1048576, max = 1125899906842624_i64))]
    pub quota_backend_bytes: Option<i64>,
    /// Extra `metastore-node` flags, each `--flag=value` (or `--flag`): an escape hatch for
    /// settings without a field here. Flags the operator sets are refused. A change restarts
    /// the members one at a time.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 1024)))]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self.all(a, a.matches('^--[a-z0-9][a-z0-9-]*(=.*)?$'))",
        "message": "each of spec.extraArgs is one flag, written --flag=value"
    }]))]
    pub extra_args: Vec<String>,
    /// Raft heartbeat interval in ms (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 5000))]
    pub heartbeat_interval_ms: Option<u32>,
    /// Raft election timeout in ms (default 1000; at least 5 heartbeats).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 50, max = 50000))]
    pub election_timeout_ms: Option<u32>,
    /// Extra settings for the member pods.
    #[serde(default)]
    pub pod_template: PodOverrides,
    /// Stop reconciling (membership and objects stay as they are).
    #[serde(default)]
    pub paused: bool,
    /// Scheduled backups to an S3-compatible bucket (default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<ScheduledBackups>,
    /// TLS on the client and peer ports (default: none). Set when the cluster is created; it
    /// cannot be added, removed or changed later (the members' URLs would change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("x-kubernetes-validations" = [{
        "rule": "self == oldSelf",
        "message": "spec.tls is set when the cluster is created and cannot change"
    }]))]
    pub tls: Option<TlsSpec>,
    /// How a new cluster starts (default: empty). Read only until the cluster exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
    /// etcd authentication (default: off). Once on, clients need a user (`etcdctl --user`, a
    /// token) with permissions, and the operator makes its membership and backup calls as
    /// `root`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,
}

/// etcd authentication of a cluster.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Authentication on (default true). `false` turns it off on the cluster; users, roles
    /// and permissions stay for the next time.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Secret with the `root` user's password under the key `password` (default: `<name>-root`,
    /// made by the operator with a random password). The operator creates `root` with it when
    /// enabling auth; change the password in the cluster and in the Secret together.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub root_secret: Option<String>,
}

/// How a new cluster starts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from a backup: member 0 restores it (an init container, before it first starts),
    /// then the cluster grows to `spec.replicas` through learners as usual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore: Option<RestoreSpec>,
}

/// The backup a new cluster starts from: a `MetaStoreBackup`, an object URL or a file on a
/// PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "(has(self.backup) ? 1 : 0) + (has(self.url) ? 1 : 0) + (has(self.pvc) ? 1 : 0) == 1",
        "message": "spec.bootstrap.restore needs exactly one of backup, url or pvc"
    },
    {
        "rule": "!has(self.url) || (self.url.startsWith('s3://') && has(self.credentialsSecret))",
        "message": "spec.bootstrap.restore.url must be s3://bucket/key, with credentialsSecret"
    }
]))]
pub struct RestoreSpec {
    /// A Succeeded `MetaStoreBackup` in this namespace (its bucket settings are used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<String>,
    /// Or the object itself, `s3://bucket/key` (as a backup's `status.objectUrl` names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// With `url`: endpoint URL of a non-AWS store (path-style addressing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// With `url`: region (default `us-east-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// With `url`: Secret in this namespace with `accessKeyId` and `secretAccessKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// Or a file on a PersistentVolumeClaim in this namespace (as a PVC backup's
    /// `status.objectUrl`, `pvc://<claim>/<path>`, names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcFile>,
}

/// A snapshot file on a PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcFile {
    /// Claim name.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Path of the file in the volume.
    #[schemars(length(min = 1))]
    pub path: String,
}

/// Backups taken on a schedule: each is a `MetaStoreBackup` named `<name>-<unix time>`, owned
/// by the MetaStore; the newest `retention` successful ones are kept, older ones are deleted
/// with their objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.s3) != has(self.pvc)",
    "message": "spec.backup needs exactly one of s3 or pvc"
}]))]
pub struct ScheduledBackups {
    /// Cron schedule in UTC: five fields (`0 3 * * *`: daily at 03:00) or six with seconds first.
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Successful backups to keep (default 7).
    #[serde(default = "seven")]
    #[schemars(range(min = 1, max = 1000))]
    pub retention: u32,
    /// Where they go: an S3-compatible bucket…
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::backup_crd::S3Target>,
    /// …or a PersistentVolumeClaim (older files of the schedule are deleted by the next
    /// backup's Job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<crate::backup_crd::PvcTarget>,
}

fn seven() -> u32 {
    7
}

/// Where certificates come from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    /// The operator makes a CA per cluster and the certificates (Secrets `<name>-tls-ca`,
    /// `-tls-server`, `-tls-peer`, `-tls-operator`, `-tls-client`) and renews them before they
    /// expire.
    Managed,
    /// Secrets you name, in cert-manager's layout (`tls.crt`, `tls.key`, `ca.crt`).
    Provided,
}

/// TLS settings of a cluster. Under client TLS, admin and membership calls are limited to the
/// operator's certificate (`--admin-cert-allowed-cn`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "self.mode != 'Provided' || !self.client || (has(self.serverSecret) && has(self.operatorSecret))",
        "message": "Provided client TLS needs spec.tls.serverSecret and spec.tls.operatorSecret"
    },
    {
        "rule": "self.mode != 'Provided' || !self.peer || has(self.peerSecret)",
        "message": "Provided peer TLS needs spec.tls.peerSecret"
    },
    {
        "rule": "self.client || self.peer",
        "message": "spec.tls needs client or peer TLS (omit spec.tls for neither)"
    }
]))]
pub struct TlsSpec {
    /// `Managed` (the operator makes and renews certificates) or `Provided`.
    pub mode: TlsMode,
    /// TLS with client certificates on the client port (default true).
    #[serde(default = "yes")]
    pub client: bool,
    /// TLS with peer certificates between members (default true).
    #[serde(default = "yes")]
    pub peer: bool,
    /// Provided: Secret served on the client port; its `ca.crt` is what client certificates must
    /// chain to. It must be valid for `*.<name>-peer.<namespace>.svc` and the client Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_secret: Option<String>,
    /// Provided: Secret members present to each other; valid for `*.<name>-peer.<namespace>.svc`
    /// and `<name>-peer.<namespace>.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret: Option<String>,
    /// Provided: the operator's client certificate; its common name is the one allowed to make
    /// admin and membership calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator_secret: Option<String>,
}

/// What happens to a member's volume.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PvcRetention {
    /// Keep the volume.
    Retain,
    /// Delete the volume.
    Delete,
}

/// Persistent storage settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "!has(oldSelf.size) || (has(self.size) && quantity(string(self.size)).compareTo(quantity(string(oldSelf.size))) >= 0)",
        "message": "spec.storage.size cannot shrink: volumes only grow"
    },
    {
        "rule": "has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName)",
        "message": "spec.storage.storageClassName is set when the cluster is created and cannot change"
    }
]))]
pub struct StorageSpec {
    /// Volume size of each member (default 1Gi). Growing it expands the members' volumes when
    /// their StorageClass allows it (`allowVolumeExpansion`), and raises the default quota
    /// with them; the `StorageResized` condition says how far it got, or why it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// Storage class (default: the cluster's default class). Set at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// Volumes of members removed by a scale-down (default `Delete`: a removed member can never
    /// reuse its data; `Retain` keeps it for inspection, and the operator deletes it before that
    /// ordinal joins again).
    #[serde(default = "delete")]
    pub retention_on_scale_down: PvcRetention,
    /// Volumes when the MetaStore is deleted (default `Retain`).
    #[serde(default = "retain")]
    pub retention_on_delete: PvcRetention,
}

fn delete() -> PvcRetention {
    PvcRetention::Delete
}

fn retain() -> PvcRetention {
    PvcRetention::Retain
}

impl Default for StorageSpec {
    fn default() -> Self {
        StorageSpec {
            size: None,
            storage_class_name: None,
            retention_on_scale_down: PvcRetention::Delete,
            retention_on_delete: PvcRetention::Retain,
        }
    }
}

/// Lease-read settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LeaseReadSpec {
    /// Serve linearizable reads from a leader lease when provably safe (default true).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Largest clock-rate difference between members, as a fraction (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 0.5))]
    pub max_clock_drift: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for LeaseReadSpec {
    fn default() -> Self {
        LeaseReadSpec {
            enabled: true,
            max_clock_drift: None,
        }
    }
}

/// How history is compacted (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "self.mode != 'Revision' || self.retention.matches('^[0-9]+$')",
    "message": "autoCompaction.retention must be a number of revisions in Revision mode"
}]))]
pub struct AutoCompactionSpec {
    /// `Periodic` (keep a duration of history) or `Revision` (keep a number of revisions).
    #[serde(default = "periodic")]
    pub mode: CompactionMode,
    /// Periodic: a duration (`90s`, `5m`, `1h`, or hours as a bare number); Revision: a count;
    /// `0` turns automatic compaction off.
    #[serde(default = "five_minutes")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(ms|s|m|h)?$"))]
    pub retention: String,
}

/// Compaction modes.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CompactionMode {
    /// Keep a duration of history.
    Periodic,
    /// Keep a number of revisions.
    Revision,
}

fn periodic() -> CompactionMode {
    CompactionMode::Periodic
}

fn five_minutes() -> String {
    "5m".into()
}

impl Default for AutoCompactionSpec {
    fn default() -> Self {
        AutoCompactionSpec {
            mode: CompactionMode::Periodic,
            retention: five_minutes(),
        }
    }
}

/// Pod-level overrides.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Affinity (default: prefer spreading members over nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Tolerations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node selector.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Priority class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetaStoreStatus {
    /// Generation of the spec last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Voting members (the scale subresource's replicas).
    #[serde(default)]
    pub replicas: i32,
    /// Voters that are healthy (learners are not counted).
    #[serde(default)]
    pub ready_replicas: i32,
    /// Label selector of the member pods (for the scale subresource).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// Raft cluster id (hex) once bootstrapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// Members as the cluster reports them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Name of the leader.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The membership step under way, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_operation: Option<String>,
    /// Running, Scaling, Degraded, Creating or Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Generation of the last membership hint pushed to the members.
    #[serde(default)]
    pub policy_generation: u64,
    /// Available, Progressing, Degraded, FaultTolerant, MetaStoreUpgrading.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// The cluster version: the lowest MetaStore version every member runs (set by the leader
    /// once every member runs it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Set while the lost cluster is being replaced by one restored from a backup (the user
    /// opted in with `metastore.io/recover`); cleared once the restored cluster answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryStatus>,
}

/// A recovery from a backup under way: where the new cluster comes from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryStatus {
    /// The MetaStoreBackup restored.
    pub backup: String,
    /// Its object, `s3://bucket/key`.
    pub url: String,
    /// Endpoint URL of a non-AWS store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Secret with `accessKeyId` and `secretAccessKey` (an S3 backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// The file, for a backup on a PersistentVolumeClaim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcFile>,
    /// Token of the new cluster: a cluster id of its own, so a member of the lost cluster that
    /// comes back cannot be taken for one of it.
    pub cluster_token: String,
    /// When the user's opt-in was acted on.
    pub started: Time,
}

/// One member.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Raft member id (hex).
    pub id: String,
    /// Pod name (empty until the member has started).
    pub name: String,
    /// leader, follower or learner.
    pub role: String,
    /// Answers the Maintenance Status call and knows a leader.
    pub healthy: bool,
    /// Applied Raft index.
    #[serde(default)]
    pub applied_index: u64,
    /// The MetaStore version it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl MetaStoreSpec {
    /// Checks what the schema cannot: returns a message naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(format!(
                "spec.replicas must be between 1 and {MAX_REPLICAS}, got {}",
                self.replicas
            ));
        }
        let hb = self
            .heartbeat_interval_ms
            .unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_MS);
        let et = self
            .election_timeout_ms
            .unwrap_or(DEFAULT_ELECTION_TIMEOUT_MS);
        if et < MIN_HEARTBEATS_PER_ELECTION * hb {
            return Err(format!(
                "spec.electionTimeoutMs ({et}) must be at least {MIN_HEARTBEATS_PER_ELECTION} times spec.heartbeatIntervalMs ({hb})"
            ));
        }
        if let Some(r) = self.bootstrap.as_ref().and_then(|b| b.restore.as_ref()) {
            if r.backup.is_some() == r.url.is_some() {
                return Err("spec.bootstrap.restore needs exactly one of backup or url".into());
            }
            if let Some(url) = &r.url {
                if !url.starts_with("s3://") || r.credentials_secret.is_none() {
                    return Err(
                        "spec.bootstrap.restore.url must be s3://bucket/key, with credentialsSecret"
                            .into(),
                    );
                }
            }
        }
        if let Some(t) = &self.tls {
            if t.mode == TlsMode::Provided
                && t.client
                && (t.server_secret.is_none() || t.operator_secret.is_none())
            {
                return Err(
                    "Provided client TLS needs spec.tls.serverSecret and spec.tls.operatorSecret"
                        .into(),
                );
            }
            if t.mode == TlsMode::Provided && t.peer && t.peer_secret.is_none() {
                return Err("Provided peer TLS needs spec.tls.peerSecret".into());
            }
            if !t.client && !t.peer {
                return Err("spec.tls needs client or peer TLS (omit spec.tls for neither)".into());
            }
        }
        if let Some(b) = &self.backup {
            crate::cron_schedule::parse(&b.schedule)
                .map_err(|e| format!("spec.backup.schedule {:?}: {e}", b.schedule))?;
            if b.retention == 0 {
                return Err("spec.backup.retention must be at least 1".into());
            }
        }
        if let Some(d) = self.lease_read.max_clock_drift {
            if !(0.0..=0.5).contains(&d) || d.is_nan() {
                return Err(format!(
                    "spec.leaseRead.maxClockDrift must be between 0 and 0.5, got {d}"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    fn spec(replicas: i32) -> MetaStoreSpec {
        serde_json::from_value(serde_json::json!({ "replicas": replicas })).unwrap()
    }

    #[test]
    fn defaults_fill_in_from_a_minimal_spec() {
        let s = spec(3);
        assert!(s.lease_read.enabled);
        assert_eq!(s.storage.retention_on_delete, PvcRetention::Retain);
        assert_eq!(s.storage.retention_on_scale_down, PvcRetention::Delete);
        assert!(!s.paused);
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn bad_specs_are_refused_with_the_field_named() {
        assert!(spec(0).validate().unwrap_err().contains("spec.replicas"));
        assert!(spec(10).validate().unwrap_err().contains("spec.replicas"));
        let mut s = spec(3);
        s.heartbeat_interval_ms = Some(200);
        s.election_timeout_ms = Some(500);
        assert!(s.validate().unwrap_err().contains("electionTimeoutMs"));
        let mut s = spec(3);
        s.lease_read.max_clock_drift = Some(0.9);
        assert!(s.validate().unwrap_err().contains("maxClockDrift"));
        assert!(serde_json::from_value::<MetaStoreSpec>(serde_json::json!({})).is_err());
        let tls = |t: serde_json::Value| {
            serde_json::from_value::<MetaStoreSpec>(serde_json::json!({"replicas": 3, "tls": t}))
                .unwrap()
                .validate()
        };
        assert_eq!(tls(serde_json::json!({"mode": "Managed"})), Ok(()));
        let backup = |schedule: &str| {
            serde_json::from_value::<MetaStoreSpec>(serde_json::json!({"replicas": 1, "backup": {
                "schedule": schedule, "s3": {"bucket": "b", "credentialsSecret": "c"}}}))
            .unwrap()
            .validate()
        };
        assert_eq!(backup("0 3 * * *"), Ok(()));
        assert_eq!(backup("*/5 * * * * *"), Ok(()));
        assert!(backup("every day")
            .unwrap_err()
            .contains("spec.backup.schedule"));
        let restore = |r: serde_json::Value| {
            serde_json::from_value::<MetaStoreSpec>(
                serde_json::json!({"replicas": 3, "bootstrap": {"restore": r}}),
            )
            .unwrap()
            .validate()
        };
        assert_eq!(restore(serde_json::json!({"backup": "nightly"})), Ok(()));
        let url = serde_json::json!({"url": "s3://b/k.db", "credentialsSecret": "c"});
        assert_eq!(restore(url), Ok(()));
        assert!(restore(serde_json::json!({}))
            .unwrap_err()
            .contains("exactly one"));
        assert!(restore(
            serde_json::json!({"backup": "x", "url": "s3://b/k", "credentialsSecret": "c"})
        )
        .unwrap_err()
        .contains("exactly one"));
        assert!(restore(serde_json::json!({"url": "s3://b/k"}))
            .unwrap_err()
            .contains("credentialsSecret"));
        assert!(
            restore(serde_json::json!({"url": "/tmp/x", "credentialsSecret": "c"}))
                .unwrap_err()
                .contains("s3://")
        );
        assert!(tls(serde_json::json!({"mode": "Provided", "peer": false}))
            .unwrap_err()
            .contains("serverSecret"));
        assert!(
            tls(serde_json::json!({"mode": "Provided", "client": false}))
                .unwrap_err()
                .contains("peerSecret")
        );
        assert!(
            tls(serde_json::json!({"mode": "Managed", "client": false, "peer": false}))
                .unwrap_err()
                .contains("client or peer")
        );
    }

    #[test]
    fn crd_has_scale_printer_columns_short_name_and_validation() {
        let crd = serde_json::to_value(MetaStore::crd()).unwrap();
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "ms");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(
            v["subresources"]["scale"]["specReplicasPath"],
            ".spec.replicas"
        );
        assert!(v["subresources"]["status"].is_object());
        let cols: Vec<&str> = v["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            cols,
            ["Replicas", "Ready", "Leader", "Version", "Phase", "Age"]
        );
        let spec_schema = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        assert_eq!(
            spec_schema["properties"]["replicas"]["minimum"].as_f64(),
            Some(1.0)
        );
        assert_eq!(
            spec_schema["properties"]["replicas"]["maximum"].as_f64(),
            Some(9.0)
        );
        assert_eq!(spec_schema["required"][0], "replicas");
        let rules = v["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
            .as_array()
            .unwrap();
        assert!(rules
            .iter()
            .any(|r| r["rule"].as_str().unwrap().contains("electionTimeoutMs")));
    }
}
