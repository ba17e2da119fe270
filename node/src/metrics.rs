//! Prometheus metrics of one member, registered in a registry of its own.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// All metrics a member exports on `/metrics`.
pub struct Metrics {
    registry: Registry,
    /// Current Raft term.
    pub raft_term: IntGauge,
    /// 1 when this member is the leader.
    pub is_leader: IntGauge,
    /// 1 when this member knows a leader.
    pub has_leader: IntGauge,
    /// Id of the known leader (0 when none).
    pub leader_id: IntGauge,
    /// Times the known leader changed.
    pub leader_changes: IntCounter,
    /// Raft commit index.
    pub commit_index: IntGauge,
    /// Applied index.
    pub applied_index: IntGauge,
    /// Proposals submitted by this member's clients.
    pub proposals_submitted: IntCounter,
    /// Proposals that failed (dropped, timed out).
    pub proposals_failed: IntCounter,
    /// Committed proposals not applied: delivered twice, or overtaken by a newer one from the
    /// same member.
    pub proposals_duplicate: IntCounter,
    /// Waiting proposals proposed again under a new leader.
    pub proposals_repeated: IntCounter,
    /// Authenticate requests refused for a wrong password.
    pub auth_failures: IntCounter,
    /// Time of one durable write of the Raft log (entries + hard state, one fsync).
    pub fsync_seconds: Histogram,
    /// Time to apply one batch of committed entries.
    pub apply_seconds: Histogram,
    /// Client requests refused because `--max-raft-queue` were already waiting.
    pub raft_queue_refused: IntCounter,
    /// Peer messages dropped for the same reason (Raft resends them).
    pub peer_messages_dropped: IntCounter,
    /// Peer messages dropped before raft-rs saw them, by reason (see `consensus::message_guard`).
    pub peer_messages_rejected: IntCounterVec,
    /// Admin and membership calls refused for a client certificate not allowed to make them.
    pub admin_calls_denied: IntCounter,
    /// Watch creates refused because the stream had `--max-watchers-per-stream` watchers.
    pub watchers_refused: IntCounter,
    /// Snapshots from peers refused: over the size limit, or one already being received.
    pub snapshots_refused: IntCounter,
    /// Snapshots saved by this member.
    pub snapshots_saved: IntCounter,
    /// Time to write one local snapshot (off the Raft thread).
    pub snapshot_write_seconds: Histogram,
    /// Time of one pass of the Raft loop (handling what was queued, ticking, the ready cycle):
    /// while it runs the member neither heartbeats nor answers peers.
    pub raft_loop_turn_seconds: Histogram,
    /// The longest pass of the Raft loop since the member started, in milliseconds.
    pub raft_loop_longest_pause_ms: IntGauge,
    /// The most CPU time one pass of the Raft loop used, in milliseconds (a pause far longer
    /// than this was spent waiting for the disk or a core).
    pub raft_loop_longest_cpu_ms: IntGauge,
    /// Snapshots received from the leader and installed.
    pub snapshots_installed: IntCounter,
    /// Of those, the ones that brought the leader's values database file (an image).
    pub snapshot_images_installed: IntCounter,
    /// Client gRPC requests by method and gRPC code.
    pub grpc_requests: IntCounterVec,
    /// Linearizable and serializable reads by the path that served them.
    pub reads: IntCounterVec,
    /// 1 while a lease read would be served now.
    pub read_lease_valid: IntGauge,
    /// 1 while the policy allows lease reads.
    pub read_lease_policy_enabled: IntGauge,
    /// Lease renewals (a quorum acknowledged a round).
    pub read_lease_renewals: IntCounter,
    /// Early lease expirations by reason.
    pub read_lease_expirations: IntCounterVec,
    /// (Pre)vote requests dropped by a restarted voter during its first election timeout.
    pub votes_ignored: IntCounter,
    /// Followers' ReadIndex requests this leader answered from its lease (no heartbeat round).
    pub read_index_answered_by_lease: IntCounter,
    /// Disagreements between the lease clock and the reference clock, by kind.
    pub clock_anomalies: IntCounterVec,
    /// Time from issuing a ReadIndex to it being answered.
    pub read_index_seconds: Histogram,
    /// Voters of the applied configuration.
    pub cluster_voters: IntGauge,
    /// Learners of the applied configuration.
    pub cluster_learners: IntGauge,
    /// 1 when this member is a learner.
    pub is_learner: IntGauge,
}

fn buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0001, 2.0, 16).unwrap_or_default()
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let gauge = |n: &str, h: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(n, h)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |n: &str, h: &str| -> Result<IntCounter, prometheus::Error> {
            let c = IntCounter::new(n, h)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let histogram = |n: &str, h: &str| -> Result<Histogram, prometheus::Error> {
            let x = Histogram::with_opts(HistogramOpts::new(n, h).buckets(buckets()))?;
            registry.register(Box::new(x.clone()))?;
            Ok(x)
        };
        let m = Metrics {
            raft_term: gauge("metastore_raft_term", "Current Raft term.")?,
            is_leader: gauge(
                "metastore_raft_is_leader",
                "1 when this member is the leader.",
            )?,
            has_leader: gauge(
                "metastore_raft_has_leader",
                "1 when this member knows a leader.",
            )?,
            leader_id: gauge(
                "metastore_raft_leader_id",
                "Raft id of the known leader, 0 if none.",
            )?,
            leader_changes: counter(
                "metastore_raft_leader_changes_total",
                "Times the known leader changed.",
            )?,
            commit_index: gauge("metastore_raft_commit_index", "Raft commit index.")?,
            applied_index: gauge("metastore_raft_applied_index", "Applied index.")?,
            proposals_submitted: counter(
                "metastore_proposals_submitted_total",
                "Proposals submitted through this member.",
            )?,
            proposals_failed: counter(
                "metastore_proposals_failed_total",
                "Proposals that were dropped or timed out.",
            )?,
            proposals_duplicate: counter(
                "metastore_proposals_duplicate_total",
                "Committed proposals not applied because they were delivered twice or overtaken by a newer one from the same member.",
            )?,
            proposals_repeated: counter(
                "metastore_proposals_repeated_total",
                "Waiting proposals proposed again when a new leader was elected (a copy applied twice is skipped).",
            )?,
            auth_failures: counter(
                "metastore_auth_failures_total",
                "Authenticate requests refused for a wrong user name or password.",
            )?,
            fsync_seconds: histogram(
                "metastore_wal_fsync_duration_seconds",
                "Duration of one durable Raft log write (one fsync).",
            )?,
            apply_seconds: histogram(
                "metastore_apply_duration_seconds",
                "Duration of applying one batch of committed entries.",
            )?,
            raft_queue_refused: counter(
                "metastore_raft_queue_refused_total",
                "Client requests refused with 'too many requests': --max-raft-queue were already waiting for the Raft loop.",
            )?,
            peer_messages_dropped: counter(
                "metastore_peer_messages_dropped_total",
                "Peer messages dropped because --max-raft-queue were already waiting for the Raft loop (Raft resends them).",
            )?,
            peer_messages_rejected: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "metastore_peer_messages_rejected_total",
                        "Peer messages dropped before Raft saw them, by reason: unknown_sender, \
                         identity_mismatch, local_kind, forwarded_conf_change, malformed, not_from_leader, \
                         inconsistent_with_log, removed_leader (a leader removed from the \
                         configuration, about to stop).",
                    ),
                    &["reason"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            admin_calls_denied: counter(
                "metastore_admin_calls_denied_total",
                "Admin and membership calls refused: the client certificate's common name is not in --admin-cert-allowed-cn.",
            )?,
            watchers_refused: counter(
                "metastore_watchers_refused_total",
                "Watch creates canceled because the stream already had --max-watchers-per-stream watchers.",
            )?,
            snapshots_refused: counter(
                "metastore_snapshots_refused_total",
                "Snapshots from peers refused: larger than 2 x quota + 256 MiB, or another one was being received.",
            )?,
            snapshots_saved: counter(
                "metastore_snapshots_saved_total",
                "State-machine snapshots saved by this member.",
            )?,
            snapshot_write_seconds: histogram(
                "metastore_snapshot_save_duration_seconds",
                "Duration of writing one local snapshot (done off the Raft thread).",
            )?,
            raft_loop_turn_seconds: histogram(
                "metastore_raft_loop_turn_duration_seconds",
                "Duration of one pass of the Raft loop (queued messages, tick, ready cycle); the member cannot heartbeat meanwhile.",
            )?,
            raft_loop_longest_pause_ms: gauge(
                "metastore_raft_loop_longest_pause_milliseconds",
                "Longest pass of the Raft loop since the member started.",
            )?,
            raft_loop_longest_cpu_ms: gauge(
                "metastore_raft_loop_longest_cpu_milliseconds",
                "Most CPU time one pass of the Raft loop used since the member started (a longer pause waited for the disk or a core).",
            )?,
            snapshots_installed: counter(
                "metastore_snapshots_installed_total",
                "Snapshots received from the leader and installed.",
            )?,
            snapshot_images_installed: counter(
                "metastore_snapshot_images_installed_total",
                "Installed snapshots that brought the leader's values database file (an image).",
            )?,
            grpc_requests: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "metastore_grpc_requests_total",
                        "Client gRPC requests by method and code.",
                    ),
                    &["method", "code"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            reads: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "metastore_read_total",
                        "Reads by the path that served them.",
                    ),
                    &["path"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            read_lease_valid: gauge(
                "metastore_lease_valid",
                "1 while a linearizable read would be served from the leader lease.",
            )?,
            read_lease_policy_enabled: gauge(
                "metastore_lease_policy_enabled",
                "1 while the lease-read policy allows lease reads.",
            )?,
            read_lease_renewals: counter(
                "metastore_lease_renewals_total",
                "Lease renewals: a quorum of voters acknowledged a round.",
            )?,
            read_lease_expirations: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "metastore_lease_expirations_total",
                        "Leases ended early, by reason.",
                    ),
                    &["reason"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            clock_anomalies: {
                let c = IntCounterVec::new(
                    Opts::new(
                        "metastore_clock_anomalies_total",
                        "Times the lease clock disagreed with the raw monotonic clock beyond \
                         --max-clock-drift, by kind (backward, slow, forward); each ends the \
                         lease and sends reads through ReadIndex for an election timeout.",
                    ),
                    &["kind"],
                )?;
                registry.register(Box::new(c.clone()))?;
                c
            },
            read_index_answered_by_lease: counter(
                "metastore_lease_read_index_answers_total",
                "Followers' ReadIndex requests the leader answered from its lease, without a \
                 heartbeat round.",
            )?,
            votes_ignored: counter(
                "metastore_votes_ignored_total",
                "(Pre)vote requests a restarted voter ignored during its first election timeout.",
            )?,
            read_index_seconds: histogram(
                "metastore_read_index_duration_seconds",
                "Time from issuing a ReadIndex until it is answered.",
            )?,
            cluster_voters: gauge(
                "metastore_cluster_voters",
                "Voters of the applied Raft configuration.",
            )?,
            cluster_learners: gauge(
                "metastore_cluster_learners",
                "Learners of the applied Raft configuration.",
            )?,
            is_learner: gauge(
                "metastore_server_is_learner",
                "1 when this member is a learner.",
            )?,
            registry,
        };
        Ok(m)
    }

    /// Counts one client request.
    pub fn observe_grpc(&self, method: &str, code: tonic::Code) {
        self.grpc_requests
            .with_label_values(&[method, &format!("{code:?}")])
            .inc();
    }

    /// Counts a handler's outcome and wraps it as a gRPC response.
    pub fn observed<T>(
        &self,
        method: &str,
        r: Result<T, tonic::Status>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let code = r
            .as_ref()
            .map(|_| tonic::Code::Ok)
            .unwrap_or_else(|s| s.code());
        self.observe_grpc(method, code);
        r.map(tonic::Response::new)
    }

    /// Renders the text exposition format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut buf) {
            tracing::warn!("encoding metrics failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_registered_metrics() {
        let m = Metrics::new().unwrap();
        m.raft_term.set(3);
        m.observe_grpc("Range", tonic::Code::Ok);
        m.reads.with_label_values(&["read_index"]).inc();
        let text = m.render();
        assert!(text.contains("metastore_raft_term 3"));
        assert!(text.contains("metastore_grpc_requests_total{code=\"Ok\",method=\"Range\"} 1"));
        assert!(text.contains("metastore_read_total{path=\"read_index\"} 1"));
    }
}
