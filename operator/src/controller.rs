//! The controller: watches MetaStores and what they own, runs one reconcile (`reconcile.rs`, in
//! phases) per change or requeue, counts them in the metrics and backs off after failures.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::Client;

use crate::builders;
use crate::constants::{MAX_REPLICAS, OPERATOR_NAME, REQUEUE_AFTER_ERROR};
use crate::crd::MetaStore;
use crate::metrics::Metrics;

/// A reconcile that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The resource has no namespace.
    #[error("MetaStore {0} has no namespace")]
    NoNamespace(String),
}

impl Error {
    /// The `reason` label of the failures counter.
    fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube_api",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// Shared by every reconcile.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Event recorder.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

impl Context {
    /// A context for `client`, reporting events as `instance`.
    pub fn new(client: Client, metrics: Arc<Metrics>, instance: Option<String>) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: OPERATOR_NAME.into(),
                instance,
            },
        );
        Context {
            client,
            recorder,
            metrics,
        }
    }
}

/// Highest pod ordinal [`ordinal_of`] looks for: a peer URL beyond it counts as a member that is
/// not one of the StatefulSet's pods.
const MAX_ORDINAL: i32 = 4 * MAX_REPLICAS;

/// Pod ordinal of a member from its peer URL.
pub fn ordinal_of(ms: &MetaStore, url: &str) -> Option<i32> {
    (0..=MAX_ORDINAL).find(|k| builders::peer_url(ms, *k) == url)
}

/// True while the StatefulSet controller has not rolled its pods onto the current template.
pub fn rolling_out(s: &StatefulSet) -> bool {
    let replicas = s.spec.replicas.unwrap_or(1);
    let Some(st) = s.status.as_ref() else {
        return true;
    };
    st.observed_generation.unwrap_or(0) < s.metadata.generation.unwrap_or(0)
        || (st.update_revision.is_some() && st.current_revision != st.update_revision)
        || st.updated_replicas.unwrap_or(0) < replicas
        || st.ready_replicas.unwrap_or(0) < replicas
}

/// One reconcile of one MetaStore.
pub async fn reconcile(ms: Arc<MetaStore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.metrics.reconciles.inc();
    let r = crate::reconcile::run(&ms, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &r {
        ctx.metrics.failures.with_label_values(&[e.reason()]).inc();
    }
    r
}

/// Backs off after a failed reconcile.
pub fn error_policy(_ms: Arc<MetaStore>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!("reconcile failed: {e}");
    Action::requeue(REQUEUE_AFTER_ERROR)
}

/// Runs the controller until shutdown, watching MetaStores (in `namespace`, or all) and the
/// objects they own.
pub async fn run(ctx: Arc<Context>, namespace: Option<String>) {
    let client = ctx.client.clone();
    let (mss, sets, svcs): (Api<MetaStore>, Api<StatefulSet>, Api<Service>) = match &namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    Controller::new(mss, watcher::Config::default())
        .owns(sets, watcher::Config::default())
        .owns(svcs, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            match r {
                Ok((obj, _)) => tracing::debug!(name = %obj.name, "reconciled"),
                Err(e) => tracing::debug!("controller: {e}"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::demo as ms;

    #[test]
    fn rollouts_are_seen_until_the_controller_catches_up() {
        let mut s: StatefulSet = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "demo", "generation": 3},
            "spec": {"replicas": 1, "serviceName": "demo-peer", "selector": {},
                     "template": {}},
            "status": {"replicas": 1, "observedGeneration": 2, "readyReplicas": 1,
                       "updatedReplicas": 1, "currentRevision": "a", "updateRevision": "a"}
        }))
        .unwrap();
        assert!(rolling_out(&s), "template changed, not yet observed");
        s.status.as_mut().unwrap().observed_generation = Some(3);
        s.status.as_mut().unwrap().update_revision = Some("b".into());
        assert!(rolling_out(&s), "pods still on the old revision");
        s.status.as_mut().unwrap().current_revision = Some("b".into());
        assert!(!rolling_out(&s));
        s.status.as_mut().unwrap().ready_replicas = Some(0);
        assert!(rolling_out(&s), "a pod not ready");
    }

    #[test]
    fn ordinals_come_from_peer_urls() {
        let m = ms();
        assert_eq!(
            ordinal_of(&m, "http://demo-2.demo-peer.prod.svc:2380"),
            Some(2)
        );
        assert_eq!(
            ordinal_of(&m, "http://other-2.demo-peer.prod.svc:2380"),
            None
        );
    }
}
