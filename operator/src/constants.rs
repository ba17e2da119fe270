//! Values that more than one part of the operator relies on, and facts the node defines that the
//! operator must agree with. Kept in one place so that a change cannot miss a copy.

use std::time::Duration;

/// The operator's name: the field manager of every object it applies, the reporter of its
/// events, the `app.kubernetes.io/managed-by` value of what it creates, and the name of the
/// leader-election Lease.
pub const OPERATOR_NAME: &str = "metastore-operator";

/// Client (etcd v3 gRPC) port of a member.
pub const CLIENT_PORT: i32 = 2379;
/// Peer (Raft) port of a member.
pub const PEER_PORT: i32 = 2380;
/// Metrics and health port of a member.
pub const METRICS_PORT: i32 = 2381;

/// Label naming the application.
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
/// Label naming the instance: the MetaStore's name.
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
/// Label naming what manages an object.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Label the operator keeps on member pods: `"true"` on a voter's pod (the PodDisruptionBudget
/// counts only these), `"false"` on a learner's.
pub const LABEL_VOTER: &str = "metastore.io/voter";
/// Value of [`LABEL_NAME`] on everything that runs a MetaStore.
pub const APP_NAME: &str = "metastore";
/// Node label the default anti-affinity spreads members over.
pub const HOSTNAME_TOPOLOGY_KEY: &str = "kubernetes.io/hostname";

/// Name of the members' data volume claim template; the StatefulSet controller names a member's
/// claim `data-<pod>`.
pub const DATA_VOLUME: &str = "data";

/// Largest cluster the operator runs.
pub const MAX_REPLICAS: i32 = 9;

/// Raft heartbeat interval of a member whose spec sets none (the node's default), in ms.
pub const DEFAULT_HEARTBEAT_INTERVAL_MS: u32 = 100;
/// Raft election timeout of a member whose spec sets none (the node's default), in ms.
pub const DEFAULT_ELECTION_TIMEOUT_MS: u32 = 1000;
/// An election timeout must span at least this many heartbeats.
pub const MIN_HEARTBEATS_PER_ELECTION: u32 = 5;

/// A learner may be promoted once it has applied this fraction of the leader's log. The node
/// refuses earlier promotions (its `LEARNER_READY_FRACTION`, etcd's `readyPercentThreshold`); the
/// operator checks the same before it pauses lease reads for a promotion. The operator does not
/// depend on the node crate, so the value is repeated here: keep the two equal.
pub const LEARNER_READY_FRACTION: f64 = 0.9;

/// etcd's message for MemberPromote of a learner that has not caught up (ErrGRPCLearnerNotReady),
/// which the node returns word for word. Errors are matched by gRPC code wherever the code tells
/// them apart; this one shares FailedPrecondition with "can only promote a learner member"
/// (ErrGRPCMemberNotLearner), so etcd defines it only by its message.
pub const ETCD_LEARNER_NOT_READY: &str =
    "etcdserver: can only promote a learner member which is in sync with leader";

/// Time allowed to connect to a member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one call to a member.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Next look at a paused MetaStore.
pub const REQUEUE_PAUSED: Duration = Duration::from_secs(60);
/// Next look at a MetaStore with an invalid spec (editing the spec triggers one sooner).
pub const REQUEUE_INVALID_SPEC: Duration = Duration::from_secs(300);
/// Next look while a change is under way.
pub const REQUEUE_PROGRESSING: Duration = Duration::from_secs(2);
/// Next look after the planner refused a change.
pub const REQUEUE_REFUSED: Duration = Duration::from_secs(10);
/// Next look at a steady cluster (keeps every member's policy hint current).
pub const REQUEUE_STEADY: Duration = Duration::from_secs(30);
/// Next look after a failed reconcile or membership step.
pub const REQUEUE_AFTER_ERROR: Duration = Duration::from_secs(5);

/// How long the leader-election Lease is held without renewal, in seconds.
pub const LEADER_LEASE_SECONDS: u64 = 15;
/// Grace before the Lease's end within which the holder renews it, in seconds (must stay below
/// [`LEADER_LEASE_SECONDS`]: the lease manager panics otherwise).
pub const LEADER_LEASE_GRACE_SECONDS: u64 = 5;
