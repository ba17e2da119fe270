//! The operator's Prometheus metrics.

use prometheus::{
    Encoder, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry,
    TextEncoder,
};

/// How a membership operation ended (the `result` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationResult {
    /// Carried out.
    Ok,
    /// Refused by the planner (unsafe or impossible now).
    Refused,
    /// The cluster was not ready for it yet.
    NotYet,
    /// A call to the cluster failed.
    Error,
}

impl OperationResult {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            OperationResult::Ok => "ok",
            OperationResult::Refused => "refused",
            OperationResult::NotYet => "not_yet",
            OperationResult::Error => "error",
        }
    }
}

/// Metrics of one operator process.
pub struct Metrics {
    registry: Registry,
    /// Reconciles run.
    pub reconciles: IntCounter,
    /// Reconciles that failed, by reason.
    pub failures: IntCounterVec,
    /// Reconcile duration.
    pub duration: Histogram,
    /// Membership operations by kind and result.
    pub operations: IntCounterVec,
    /// Unix time of each MetaStore's last successful backup.
    pub backup_last_success: GaugeVec,
    /// Backups finished, by result (`succeeded`, `failed`).
    pub backups: IntCounterVec,
    /// Seconds between two scheduled backups of each MetaStore with `spec.backup`.
    pub backup_schedule_interval: GaugeVec,
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let reconciles = IntCounter::new("metastore_operator_reconciles_total", "Reconciles run.")?;
        let failures = IntCounterVec::new(
            Opts::new(
                "metastore_operator_reconcile_failures_total",
                "Reconciles that failed, by reason.",
            ),
            &["reason"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "metastore_operator_reconcile_duration_seconds",
                "Time a reconcile took.",
            )
            .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
        )?;
        let operations = IntCounterVec::new(
            Opts::new(
                "metastore_operator_membership_operations_total",
                "Membership operations, by kind and result.",
            ),
            &["kind", "result"],
        )?;
        registry.register(Box::new(reconciles.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        let backup_last_success = GaugeVec::new(
            Opts::new(
                "metastore_backup_last_success_timestamp_seconds",
                "Unix time of the last successful backup of a MetaStore.",
            ),
            &["metastore_namespace", "metastore"],
        )?;
        let backups = IntCounterVec::new(
            Opts::new(
                "metastore_operator_backups_total",
                "Backups finished, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(operations.clone()))?;
        registry.register(Box::new(backup_last_success.clone()))?;
        registry.register(Box::new(backups.clone()))?;
        let backup_schedule_interval = GaugeVec::new(
            Opts::new(
                "metastore_backup_schedule_interval_seconds",
                "Seconds between two scheduled backups of a MetaStore (spec.backup.schedule).",
            ),
            &["metastore_namespace", "metastore"],
        )?;
        registry.register(Box::new(backup_schedule_interval.clone()))?;
        Ok(Metrics {
            registry,
            reconciles,
            failures,
            duration,
            operations,
            backup_last_success,
            backups,
            backup_schedule_interval,
        })
    }

    /// Counts one membership operation of `kind` (a step kind) that ended as `result`.
    pub fn operation(&self, kind: &str, result: OperationResult) {
        self.operations
            .with_label_values(&[kind, result.as_str()])
            .inc();
    }

    /// Text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let m = Metrics::new().unwrap();
        m.reconciles.inc();
        m.failures.with_label_values(&["kube"]).inc();
        m.operations.with_label_values(&["add_learner", "ok"]).inc();
        m.duration.observe(0.2);
        let t = m.render();
        for f in [
            "metastore_operator_reconciles_total 1",
            "metastore_operator_reconcile_failures_total{reason=\"kube\"} 1",
            "metastore_operator_membership_operations_total{kind=\"add_learner\",result=\"ok\"} 1",
            "metastore_operator_reconcile_duration_seconds_count 1",
        ] {
            assert!(t.contains(f), "missing {f}");
        }
    }
}
