//! The reconcile loop: read → validate → apply the built objects (server-side apply, one field
//! manager) → observe the members → plan one membership step → carry it out → status and events.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use crate::builders;
use crate::constants::{
    MAX_REPLICAS, OPERATOR_NAME, REQUEUE_AFTER_ERROR, REQUEUE_INVALID_SPEC, REQUEUE_PAUSED,
    REQUEUE_PROGRESSING, REQUEUE_REFUSED, REQUEUE_STEADY,
};
use crate::crd::{MetaStore, MetaStoreStatus};
use crate::executor::{self, ClusterView, Outcome, Target};
use crate::metrics::{Metrics, OperationResult};
use crate::planner::{plan, Observed, Step};
use crate::status::build_status;

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

/// Pod ordinal of a member from its peer URL.
pub fn ordinal_of(ms: &MetaStore, url: &str) -> Option<i32> {
    (0..=4 * MAX_REPLICAS).find(|k| builders::peer_url(ms, *k) == url)
}

async fn apply<K>(api: &Api<K>, name: &str, obj: &K) -> Result<K, kube::Error>
where
    K: Resource + Clone + Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply(OPERATOR_NAME).force(),
        &Patch::Apply(obj),
    )
    .await
}

async fn event(ctx: &Context, ms: &MetaStore, warning: bool, reason: &str, note: String) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, &ms.object_ref(&())).await {
        tracing::warn!("cannot publish event: {e}");
    }
}

fn step_kind(step: &Step) -> &'static str {
    match step {
        Step::Bootstrap => "bootstrap",
        Step::ScaleStatefulSet { .. } => "scale_statefulset",
        Step::AddLearner { .. } => "add_learner",
        Step::Promote { .. } => "promote",
        Step::MoveLeader { .. } => "move_leader",
        Step::RemoveMember { .. } => "remove_member",
        Step::Wait(_) => "wait",
        Step::Refuse(_) => "refuse",
        Step::Steady { .. } => "steady",
    }
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
    let r = reconcile_inner(&ms, &ctx).await;
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    if let Err(e) = &r {
        ctx.metrics.failures.with_label_values(&[e.reason()]).inc();
    }
    r
}

async fn reconcile_inner(ms: &MetaStore, ctx: &Context) -> Result<Action, Error> {
    let name = ms.name_any();
    let ns = ms
        .namespace()
        .ok_or_else(|| Error::NoNamespace(name.clone()))?;
    let client = ctx.client.clone();
    let mss: Api<MetaStore> = Api::namespaced(client.clone(), &ns);
    let policy_generation = ms.status.as_ref().map_or(0, |s| s.policy_generation);

    if ms.spec.paused {
        let view = ClusterView::default();
        let status = build_status(
            ms,
            &view,
            &Step::Wait("paused".into()),
            None,
            None,
            policy_generation,
        );
        patch_status(&mss, &name, status).await?;
        return Ok(Action::requeue(REQUEUE_PAUSED));
    }
    if let Err(why) = ms.spec.validate() {
        event(ctx, ms, true, "InvalidSpec", why.clone()).await;
        let status = build_status(
            ms,
            &ClusterView::default(),
            &Step::Wait("invalid spec".into()),
            None,
            Some(&why),
            policy_generation,
        );
        patch_status(&mss, &name, status).await?;
        return Ok(Action::requeue(REQUEUE_INVALID_SPEC));
    }

    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    apply(
        &services,
        &builders::peer_service_name(ms),
        &builders::peer_service(ms),
    )
    .await?;
    apply(
        &services,
        &builders::client_service_name(ms),
        &builders::client_service(ms),
    )
    .await?;

    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &ns);
    let sts = sets.get_opt(&name).await?;
    let sts_replicas = sts.as_ref().and_then(|s| s.spec.replicas).unwrap_or(0);

    let endpoints: Vec<String> = (0..sts_replicas.max(1))
        .map(|k| builders::client_url(ms, k))
        .collect();
    let view = if sts_replicas > 0 {
        executor::observe(&endpoints, |u| ordinal_of(ms, u)).await
    } else {
        ClusterView::default()
    };
    let bootstrapped =
        view.cluster_id.is_some() || ms.status.as_ref().is_some_and(|s| s.cluster_id.is_some());
    let observed = Observed {
        spec_replicas: ms.spec.replicas,
        sts_replicas,
        members: view
            .members
            .as_ref()
            .map(|m| m.iter().map(|v| v.member.clone()).collect()),
        leader: view.leader,
    };
    let mut step = plan(&observed);
    let mut generation = policy_generation;
    let mut operation = None;
    let mut requeue = REQUEUE_PROGRESSING;

    let voters = view
        .members
        .iter()
        .flatten()
        .filter(|m| !m.member.is_learner)
        .count()
        .max(1) as i32;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
    apply(&pdbs, &name, &builders::pod_disruption_budget(ms, voters)).await?;

    let sts_target = match &step {
        Step::Bootstrap => 1,
        Step::ScaleStatefulSet { replicas, .. } => *replicas,
        _ => sts_replicas,
    };
    let applied = apply(
        &sets,
        &name,
        &builders::stateful_set(ms, sts_target, bootstrapped),
    )
    .await?;
    // Not steady while pods are still being replaced by a template change (e.g. the switch to
    // joining right after bootstrap): judged on the object as just applied.
    if matches!(step, Step::Steady { .. }) && rolling_out(&applied) {
        step = Step::Wait("member pods are being updated".into());
    }
    let kind = step_kind(&step);

    match &step {
        Step::Bootstrap => {
            operation = Some("bootstrapping a one-member cluster".to_string());
            event(
                ctx,
                ms,
                false,
                "Bootstrap",
                "created the first member".into(),
            )
            .await;
            ctx.metrics.operation(kind, OperationResult::Ok);
        }
        Step::ScaleStatefulSet { replicas, reason } => {
            let msg = format!("StatefulSet {sts_replicas} → {replicas} replicas ({reason})");
            event(ctx, ms, false, "StatefulSetScaled", msg.clone()).await;
            ctx.metrics.operation(kind, OperationResult::Ok);
            operation = Some(msg);
        }
        Step::Wait(why) => operation = Some(why.clone()),
        Step::Refuse(why) => {
            event(ctx, ms, true, "ScaleRefused", why.clone()).await;
            ctx.metrics.operation(kind, OperationResult::Refused);
            requeue = REQUEUE_REFUSED;
        }
        _ => {
            if let Step::AddLearner { ordinal } = &step {
                // A volume left by an earlier member at this ordinal holds a removed member's
                // data, which the node refuses: the new member starts empty.
                let pvcs: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
                    Api::namespaced(client.clone(), &ns);
                let claim = builders::data_claim_name(ms, *ordinal);
                if pvcs.get_opt(&claim).await?.is_some() {
                    pvcs.delete(&claim, &Default::default()).await?;
                    event(
                        ctx,
                        ms,
                        false,
                        "StaleVolumeDeleted",
                        format!("deleted {claim} left by a removed member"),
                    )
                    .await;
                }
            }
            let peer = |k: i32| builders::peer_url(ms, k);
            let t = Target {
                endpoints: &endpoints,
                view: &view,
                peer_url: &peer,
            };
            match executor::execute(&step, &t, &mut generation).await {
                Ok(Outcome::Done(what)) => {
                    if !what.is_empty() {
                        let reason = match &step {
                            Step::AddLearner { .. } => "MemberAdded",
                            Step::Promote { .. } => "MemberPromoted",
                            Step::MoveLeader { .. } => "LeaderMoved",
                            Step::RemoveMember { .. } => "MemberRemoved",
                            _ => "MembershipPolicyPushed",
                        };
                        event(ctx, ms, false, reason, what.clone()).await;
                        if !matches!(step, Step::Steady { .. }) {
                            operation = Some(what);
                        }
                    }
                    ctx.metrics.operation(kind, OperationResult::Ok);
                    if matches!(step, Step::Steady { .. }) {
                        requeue = REQUEUE_STEADY;
                    }
                }
                Ok(Outcome::NotYet(why)) => {
                    ctx.metrics.operation(kind, OperationResult::NotYet);
                    operation = Some(why);
                }
                Err(e) => {
                    let msg = format!("{kind} failed: {e}");
                    event(ctx, ms, true, "MembershipStepFailed", msg.clone()).await;
                    ctx.metrics.operation(kind, OperationResult::Error);
                    operation = Some(msg);
                    requeue = REQUEUE_AFTER_ERROR;
                }
            }
        }
    }
    let status = build_status(ms, &view, &step, operation, None, generation);
    patch_status(&mss, &name, status).await?;
    Ok(Action::requeue(requeue))
}

async fn patch_status(
    api: &Api<MetaStore>,
    name: &str,
    status: MetaStoreStatus,
) -> Result<(), Error> {
    let body = serde_json::json!({
        "apiVersion": "metastore.io/v1alpha1",
        "kind": "MetaStore",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(OPERATOR_NAME).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
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
    use crate::crd::MetaStoreSpec;

    fn ms() -> MetaStore {
        let spec: MetaStoreSpec =
            serde_json::from_value(serde_json::json!({"replicas": 3})).unwrap();
        let mut m = MetaStore::new("demo", spec);
        m.metadata.namespace = Some("prod".into());
        m.metadata.generation = Some(4);
        m
    }

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
